//! `stemedb-server`: the HTTP face of StemeDB.
//!
//! Architecture Invariant: this is the only crate that knows HTTP. It maps core error classes to
//! statuses in one place (`problem::status_of`) and never reaches into storage tables directly.

pub mod app;
pub mod config;
pub mod datadir;
pub mod metrics;
pub mod problem;

use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

pub use app::{AppState, app};
pub use config::{Config, ConfigLayer, LogFormat};
pub use datadir::DataDir;

/// Installs the global tracing subscriber for `format` with `filter` (tracing `EnvFilter` syntax).
pub fn init_tracing(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("bad log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))
}

/// Runs the server until SIGTERM or Ctrl-C, then drains for at most the configured grace time.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = DataDir::open(&config.data_dir)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr().context("listener address")?;
    let state = AppState::new(metrics::Metrics::new().context("metrics registry")?);
    tracing::info!(
        listen = %local,
        data_dir = %data_dir.path().display(),
        version = env!("CARGO_PKG_VERSION"),
        "stemedb listening"
    );

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let shutdown_state = state.clone();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        shutdown_state.begin_shutdown();
        let _ = stop_tx.send(true);
    });
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.context("server error")?,
        _ = async {
            let _ = stop_rx.wait_for(|stop| *stop).await;
            tracing::info!(grace_ms = config.shutdown_grace_ms, "shutdown signal: draining");
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("drain did not finish within the grace time; closing remaining connections");
        }
    }
    tracing::info!("stemedb stopped");
    drop(data_dir);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
