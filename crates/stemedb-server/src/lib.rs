//! `stemedb-server`: the HTTP face of StemeDB.
//!
//! Architecture Invariant: this is the only crate that knows HTTP. It maps core error classes to
//! statuses in one place (`problem::status_of`) and never reaches into storage tables directly.

mod admin;
mod api;
pub mod app;
pub mod config;
pub mod conn;
pub mod control;
mod dashboard;
pub mod datadir;
pub mod defense;
mod extract;
pub mod hardening;
mod ingest;
pub mod metrics;
pub mod problem;
mod query;
pub mod state;
mod verifier;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

pub use app::{AppState, app};
pub use config::{Config, ConfigLayer, LogFormat};
pub use datadir::{DataDir, DataDirError};
use stemedb_store::{Store, StoreOptions};
use stemedb_wal::WalOptions;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory could not be created or is in use by another process.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The store refused to open (corruption, a recovery below the signed high-water mark, an
    /// I/O error, a bad option); the message says which and what to do.
    #[error(transparent)]
    Open(#[from] stemedb_store::OpenError),
    /// A start-up read of the store failed.
    #[error("{what}: {source}")]
    Store {
        /// What was being read.
        what: &'static str,
        /// The store's error.
        #[source]
        source: stemedb_store::StoreError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another start-up step failed on an operating-system call.
    #[error("{what}: {source}")]
    Io {
        /// Which step.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics registry could not be built.
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The log filter does not parse, or a logger is already installed.
    #[error("{0}")]
    Logging(String),
    /// A blocking task (opening or closing the store) panicked.
    #[error("{what} task failed: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// Its panic.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Installs the global tracing subscriber for `format` with `filter` (tracing `EnvFilter` syntax).
pub fn init_tracing(format: LogFormat, filter: &str) -> Result<(), ServeError> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| ServeError::Logging(format!("bad log filter {filter:?}: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| ServeError::Logging(format!("cannot install logger: {e}")))
}

/// Runs the server until SIGTERM or Ctrl-C, then drains for at most the configured grace time.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let data_dir = DataDir::open(&config.data_dir)?;
    let metrics = metrics::Metrics::new()?;
    let store_opts = StoreOptions {
        wal: WalOptions {
            segment_bytes: config.wal_segment_bytes,
            fail_fsync_after: config.fault_fsync_after,
        },
        origin: config.log_origin.clone(),
        checkpoint_interval_ms: config.checkpoint_interval_ms,
        key_path: config.checkpoint_key.clone(),
        cache_bytes: config.cache_mb.saturating_mul(1024 * 1024),
        memtable_rows: config.memtable_rows,
        memtable_ms: config.memtable_ms,
        memtable_max_frozen_rows: config.memtable_max_frozen,
        compaction_fanout: config.compaction_fanout,
        compaction_chunk_rows: config.compaction_chunk_rows,
        fail_checkpoint_after: config.fault_checkpoint_after,
        ..StoreOptions::default()
    };
    if let Some(n) = config.fault_fsync_after {
        tracing::warn!(after = n, "TEST HOOK: WAL fsyncs will fail after this many");
    }
    if let Some(n) = config.fault_checkpoint_after {
        tracing::warn!(
            after = n,
            "TEST HOOK: durable checkpoints will fail after this many"
        );
    }
    let dir = data_dir.path().to_path_buf();
    let observer: Arc<dyn stemedb_store::Observer> = Arc::new(metrics.clone());
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, store_opts, observer))
        .await
        .map_err(|source| ServeError::Task {
            what: "store open",
            source,
        })??;
    let store = Arc::new(store);
    let head = store.head();
    metrics.tree_size.set(head.size as i64);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Io {
        what: "listener address",
        source,
    })?;
    let limits = app::Limits {
        single_body: config.body_limit_bytes,
        batch_body: config.batch_body_limit_bytes,
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        max_concurrent: config.max_concurrent_requests,
        rates: config.rate_limits,
        trusted_proxies: config.trusted_proxies.clone(),
        scan_budget: config.scan_budget,
    };
    let agents = store.agents().map_err(|source| ServeError::Store {
        what: "agent registry",
        source,
    })?;
    let defense = defense::Defense::new(config.policy.clone(), config.breaker, agents);
    if config.admin_token.is_none() {
        tracing::warn!(
            "admin API disabled: STEMEDB_ADMIN_TOKEN is not set (quarantine review, agents and breakers answer 403)"
        );
    }
    let control = control::start(data_dir.path(), store.clone());
    let state = AppState::with_defense(
        metrics,
        store.clone(),
        limits,
        Arc::new(defense),
        config.admin_token.as_ref().map(|t| t.0.as_str()),
    );
    state.refresh_quarantine_size();
    let shutdown_state = state.clone();
    let router = app(state);
    // Registered before "listening" is logged, so a SIGTERM from then on always drains.
    let signals = shutdown_signal()?;
    tracing::info!(
        listen = %local,
        data_dir = %data_dir.path().display(),
        version = env!("CARGO_PKG_VERSION"),
        "stemedb listening"
    );
    let limits = conn::ConnLimits {
        max_connections: config.max_connections,
        header_timeout: Duration::from_millis(config.header_timeout_ms),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
    };
    let shutdown = async move {
        signals.await;
        shutdown_state.begin_shutdown();
        tracing::info!(
            grace_ms = config.shutdown_grace_ms,
            "shutdown signal: draining"
        );
    };
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    conn::serve(listener, router, limits, shutdown, grace).await;
    // Answer what is queued, make a final durable checkpoint, then release the directory.
    let closing = store.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|source| ServeError::Task {
            what: "store close",
            source,
        })?;
    drop(control);
    tracing::info!("stemedb stopped");
    drop(data_dir);
    Ok(())
}

/// Registers the SIGTERM and Ctrl-C handlers now and returns a future that ends at the first
/// of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, ServeError> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServeError::Io {
            what: "cannot listen for SIGTERM",
            source,
        })?;
    Ok(async move {
        let ctrl_c = async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async move {
            term.recv().await;
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
    })
}
