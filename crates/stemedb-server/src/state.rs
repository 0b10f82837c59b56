//! The state every handler shares: the store, metrics, limits, content defense and the admin
//! token. It sits below every handler module and imports none of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stemedb_store::Store;

use crate::config::RateLimits;
use crate::defense::{AgentWeights, BreakerConfig, BreakerState, Defense, Policy};
use crate::metrics::Metrics;

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single-envelope body, bytes.
    pub single_body: usize,
    /// Largest batch body, bytes.
    pub batch_body: usize,
    /// Longest a request may run.
    pub request_timeout: Duration,
    /// Most `/v1` data requests in flight.
    pub max_concurrent: usize,
    /// Per-client rates.
    pub rates: RateLimits,
    /// Proxies trusted to name the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Most index rows one query request may examine.
    pub scan_budget: usize,
}

impl Limits {
    /// The documented defaults.
    pub fn defaults() -> Limits {
        use crate::config::*;
        Limits {
            single_body: DEFAULT_BODY_LIMIT_BYTES,
            batch_body: DEFAULT_BATCH_BODY_LIMIT_BYTES,
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            max_concurrent: DEFAULT_MAX_CONCURRENT_REQUESTS,
            rates: RateLimits {
                write_per_sec: DEFAULT_RATE_LIMIT_WRITE_PER_SEC,
                query_per_sec: DEFAULT_RATE_LIMIT_QUERY_PER_SEC,
                read_per_sec: DEFAULT_RATE_LIMIT_READ_PER_SEC,
            },
            trusted_proxies: Vec::new(),
            scan_budget: DEFAULT_SCAN_BUDGET,
        }
    }
}

pub(crate) struct Inner {
    metrics: Metrics,
    store: Arc<Store>,
    limits: Limits,
    defense: Arc<Defense>,
    // BLAKE3 of the admin token; `None`: the admin API is off.
    admin_token: Option<blake3::Hash>,
    // True while the server accepts traffic; false once shutdown has begun.
    accepting: AtomicBool,
}

impl AppState {
    /// New state around a metrics registry and an open store, with the default policy and no
    /// admin API.
    pub fn new(metrics: Metrics, store: Arc<Store>, limits: Limits) -> AppState {
        let agents = store.agents().unwrap_or_default();
        let defense = Defense::new(Policy::default(), BreakerConfig::default(), agents);
        AppState::with_defense(metrics, store, limits, Arc::new(defense), None)
    }

    /// New state with content defense and, if `admin_token` is set, the admin API.
    pub fn with_defense(
        metrics: Metrics,
        store: Arc<Store>,
        limits: Limits,
        defense: Arc<Defense>,
        admin_token: Option<&str>,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                metrics,
                store,
                limits,
                defense,
                admin_token: admin_token.map(|t| blake3::hash(t.as_bytes())),
                accepting: AtomicBool::new(true),
            }),
        }
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> AppState {
        AppState { inner }
    }

    /// A weak handle on the state (for threads that must not keep it alive).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// True while the server accepts traffic (false once shutdown has begun).
    pub fn accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }

    /// Policy, agent registry view and breakers.
    pub fn defense(&self) -> &Defense {
        &self.inner.defense
    }

    /// Logs a breaker's change of state and counts it.
    pub(crate) fn breaker_changed(&self, t: crate::defense::Transition) {
        let to = match t.to {
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Closed => "closed",
        };
        let agent = hex::encode(t.agent);
        match t.to {
            BreakerState::Open => tracing::warn!(%agent, "agent circuit breaker opened"),
            _ => tracing::info!(%agent, state = to, "agent circuit breaker changed state"),
        }
        let m = self.metrics();
        m.breaker_transitions.with_label_values(&[to]).inc();
        m.breakers_open.set(self.inner.defense.open_count() as i64);
    }

    /// Sets `stemedb_quarantine_size` from the store.
    pub fn refresh_quarantine_size(&self) {
        if let Ok((_, total)) = self.inner.store.quarantine_list(None, 0) {
            self.metrics().quarantine_size.set(total as i64);
        }
    }

    /// The admin token's hash, if the admin API is on.
    pub fn admin_token_hash(&self) -> Option<&blake3::Hash> {
        self.inner.admin_token.as_ref()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// A shared handle to the store, for blocking tasks.
    pub fn store_arc(&self) -> Arc<Store> {
        self.inner.store.clone()
    }

    /// Request limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Agent trust weights for the lenses (the registry's).
    pub fn weights(&self) -> Arc<dyn AgentWeights> {
        self.inner.defense.clone()
    }

    /// Marks the server as draining: `/v1/ready` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}
