//! Server configuration: one struct, documented defaults, one precedence order.
//!
//! Precedence, highest first: command-line flag, `STEMEDB_*` environment variable, TOML config
//! file (`--config` / `STEMEDB_CONFIG`), built-in default. The CLI resolves flag-or-env (clap does
//! both) into `ConfigLayer`, reads the file into another `ConfigLayer`, and `Config::resolve`
//! merges them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

pub use crate::defense::{AgentPolicy, BreakerConfig, DenyPattern, Policy};

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./stemedb-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:18180";
/// Default time allowed to drain in-flight requests after SIGTERM or Ctrl-C.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Default WAL segment size.
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 10 * 1024 * 1024;
/// Default request body limit for a single envelope.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Default request body limit for a batch.
pub const DEFAULT_BATCH_BODY_LIMIT_BYTES: usize = 16 * 1024 * 1024;
/// Most envelopes in one batch request.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Default durable-checkpoint interval.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 3_000;
/// Default time a request may take before it is answered 503 `timeout`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Default most requests in flight at once (beyond it: 503 `overloaded`).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Default per-client-IP rate of `/v1/assert` requests (a batch counts once), per second.
pub const DEFAULT_RATE_LIMIT_WRITE_PER_SEC: u32 = 100_000;
/// Default per-client-IP rate of `/v1/query` requests, per second.
pub const DEFAULT_RATE_LIMIT_QUERY_PER_SEC: u32 = 100_000;
/// Default per-client-IP rate of the other `/v1` reads (assertions, checkpoint, proofs).
pub const DEFAULT_RATE_LIMIT_READ_PER_SEC: u32 = 100_000;

/// Default allowance for an agent clock running ahead: 5 minutes.
pub const DEFAULT_MAX_FUTURE_SKEW_MS: u64 = 5 * 60 * 1000;
/// Default soft payload limit (the hard limit is the statement's 72 KiB).
pub const DEFAULT_SOFT_SIZE_BYTES: usize = 32 * 1024;
/// Default bad outcomes (quarantines plus refusals) within the window that open a breaker.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 50;
/// Default breaker window.
pub const DEFAULT_BREAKER_WINDOW_MS: u64 = 60_000;
/// Default time an open breaker refuses before one probe may pass.
pub const DEFAULT_BREAKER_COOLDOWN_MS: u64 = 30_000;

/// A secret setting: compared, never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Secret, String> {
        Ok(Secret(s.to_string()))
    }
}

/// Default redb page cache, MiB.
pub const DEFAULT_CACHE_MB: usize = 256;
/// Default index rows one query request may examine (design §6).
pub const DEFAULT_SCAN_BUDGET: usize = stemedb_store::DEFAULT_SCAN_BUDGET;
/// Default time a client has to send a complete request head (design §7).
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default time a connection may carry no traffic before it is closed (design §7).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default most TCP connections open at once (design §7).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default memtable size that hands it to the merger, assertions (design §4).
pub const DEFAULT_MEMTABLE_ROWS: usize = 100_000;
/// Default memtable age that hands it to the merger, ms.
pub const DEFAULT_MEMTABLE_MS: u64 = 1_000;
/// Default frozen assertions past which writers wait for the merger.
pub const DEFAULT_MEMTABLE_MAX_FROZEN: usize = 1_000_000;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format must be text or json, got {other:?}")),
        }
    }
}

/// A trusted proxy: an IP address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyNet(pub ipnet::IpNet);

impl FromStr for ProxyNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.contains('/') {
            s.parse()
                .map(ProxyNet)
                .map_err(|e| format!("{s:?} is not a CIDR block: {e}"))
        } else {
            s.parse::<std::net::IpAddr>()
                .map(|ip| ProxyNet(ip.into()))
                .map_err(|e| format!("{s:?} is not an IP address: {e}"))
        }
    }
}

impl TryFrom<String> for ProxyNet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// One source of settings; `None` means "this source does not set it".
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// Where the server keeps its data (`STEMEDB_DATA_DIR`, `data_dir`).
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (`STEMEDB_LISTEN`, `listen`).
    pub listen: Option<SocketAddr>,
    /// `text` or `json` (`STEMEDB_LOG_FORMAT`, `log_format`).
    pub log_format: Option<LogFormat>,
    /// A tracing filter such as `info` or `stemedb_server=debug` (`STEMEDB_LOG`, `log`).
    pub log: Option<String>,
    /// Milliseconds to drain requests on shutdown (`STEMEDB_SHUTDOWN_GRACE_MS`, `shutdown_grace_ms`).
    pub shutdown_grace_ms: Option<u64>,
    /// Origin line of signed checkpoints (`STEMEDB_LOG_ORIGIN`, `log_origin`).
    pub log_origin: Option<String>,
    /// WAL segment size in bytes (`STEMEDB_WAL_SEGMENT_BYTES`, `wal_segment_bytes`).
    pub wal_segment_bytes: Option<u64>,
    /// Body limit of a single-envelope request (`STEMEDB_BODY_LIMIT_BYTES`, `body_limit_bytes`).
    pub body_limit_bytes: Option<usize>,
    /// Body limit of a batch request (`STEMEDB_BATCH_BODY_LIMIT_BYTES`, `batch_body_limit_bytes`).
    pub batch_body_limit_bytes: Option<usize>,
    /// Durable checkpoint interval (`STEMEDB_CHECKPOINT_INTERVAL_MS`, `checkpoint_interval_ms`).
    pub checkpoint_interval_ms: Option<u64>,
    /// Checkpoint signing key, PKCS#8 PEM (`STEMEDB_CHECKPOINT_KEY`, `checkpoint_key`).
    pub checkpoint_key: Option<PathBuf>,
    /// Test hook: fail every WAL fsync after this many (`STEMEDB_FAULT_FSYNC_AFTER`,
    /// `fault_fsync_after`). Never set it in production.
    pub fault_fsync_after: Option<u64>,
    /// Request timeout (`STEMEDB_REQUEST_TIMEOUT_MS`, `request_timeout_ms`).
    pub request_timeout_ms: Option<u64>,
    /// Most requests in flight (`STEMEDB_MAX_CONCURRENT_REQUESTS`, `max_concurrent_requests`).
    pub max_concurrent_requests: Option<usize>,
    /// `/v1/assert` requests per second per client IP, 0 = unlimited
    /// (`STEMEDB_RATE_LIMIT_WRITE_PER_SEC`, `rate_limit_write_per_sec`).
    pub rate_limit_write_per_sec: Option<u32>,
    /// `/v1/query` requests per second per client IP, 0 = unlimited
    /// (`STEMEDB_RATE_LIMIT_QUERY_PER_SEC`, `rate_limit_query_per_sec`).
    pub rate_limit_query_per_sec: Option<u32>,
    /// Other `/v1` reads per second per client IP, 0 = unlimited
    /// (`STEMEDB_RATE_LIMIT_READ_PER_SEC`, `rate_limit_read_per_sec`).
    pub rate_limit_read_per_sec: Option<u32>,
    /// Proxies whose `X-Forwarded-For` names the client (`STEMEDB_TRUSTED_PROXIES`,
    /// comma-separated; `trusted_proxies`, a list). IPs or CIDR blocks.
    pub trusted_proxies: Option<Vec<ProxyNet>>,
    /// redb page cache in MiB (`STEMEDB_CACHE_MB`, `cache_mb`).
    pub cache_mb: Option<usize>,
    /// Index rows one query may examine (`STEMEDB_SCAN_BUDGET`, `scan_budget`).
    pub scan_budget: Option<usize>,
    /// Time allowed for a request head, ms (`STEMEDB_HEADER_TIMEOUT_MS`, `header_timeout_ms`).
    pub header_timeout_ms: Option<u64>,
    /// Time a connection may be idle, ms (`STEMEDB_IDLE_TIMEOUT_MS`, `idle_timeout_ms`).
    pub idle_timeout_ms: Option<u64>,
    /// Most open connections (`STEMEDB_MAX_CONNECTIONS`, `max_connections`).
    pub max_connections: Option<usize>,
    /// Memtable size that freezes it for the merger (`STEMEDB_MEMTABLE_ROWS`, `memtable_rows`).
    pub memtable_rows: Option<usize>,
    /// Memtable age that freezes it, ms (`STEMEDB_MEMTABLE_MS`, `memtable_ms`).
    pub memtable_ms: Option<u64>,
    /// Frozen assertions past which writers wait (`STEMEDB_MEMTABLE_MAX_FROZEN`,
    /// `memtable_max_frozen`).
    pub memtable_max_frozen: Option<usize>,
    /// Test hook: fail durable checkpoints after this many (`STEMEDB_FAULT_CHECKPOINT_AFTER`,
    /// `fault_checkpoint_after`). Never set it in production.
    pub fault_checkpoint_after: Option<u64>,
    /// Bearer token of `/v1/admin/` (`STEMEDB_ADMIN_TOKEN`, `admin_token`); unset: admin off.
    pub admin_token: Option<Secret>,
    /// Unknown agents: open, quarantine-unknown, reject-unknown (`STEMEDB_AGENT_POLICY`,
    /// `agent_policy`).
    pub agent_policy: Option<AgentPolicy>,
    /// `ts` this far ahead of the server clock is quarantined, ms; 0 off
    /// (`STEMEDB_MAX_FUTURE_SKEW_MS`, `max_future_skew_ms`).
    pub max_future_skew_ms: Option<u64>,
    /// `ts` this far behind the server clock is quarantined, ms; 0 off
    /// (`STEMEDB_MAX_PAST_SKEW_MS`, `max_past_skew_ms`).
    pub max_past_skew_ms: Option<u64>,
    /// Payloads larger than this are quarantined, bytes; 0 off (`STEMEDB_SOFT_SIZE_BYTES`,
    /// `soft_size_bytes`).
    pub soft_size_bytes: Option<usize>,
    /// `field:regex` patterns that quarantine (`STEMEDB_DENY_PATTERN`: one; `deny_patterns`: a
    /// list; the flag may repeat).
    pub deny_patterns: Option<Vec<DenyPattern>>,
    /// Bad outcomes in the window that open an agent's breaker; 0 off
    /// (`STEMEDB_BREAKER_THRESHOLD`, `breaker_threshold`).
    pub breaker_threshold: Option<u32>,
    /// Breaker window, ms (`STEMEDB_BREAKER_WINDOW_MS`, `breaker_window_ms`).
    pub breaker_window_ms: Option<u64>,
    /// Breaker cool-down, ms (`STEMEDB_BREAKER_COOLDOWN_MS`, `breaker_cooldown_ms`).
    pub breaker_cooldown_ms: Option<u64>,
}

impl ConfigLayer {
    /// Reads a TOML config file's text. Unknown keys are an error, so typos do not pass silently.
    pub fn from_toml(text: &str) -> Result<ConfigLayer, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// This layer, with unset values taken from `lower`.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            log_format: self.log_format.or(lower.log_format),
            log: self.log.or(lower.log),
            shutdown_grace_ms: self.shutdown_grace_ms.or(lower.shutdown_grace_ms),
            log_origin: self.log_origin.or(lower.log_origin),
            wal_segment_bytes: self.wal_segment_bytes.or(lower.wal_segment_bytes),
            body_limit_bytes: self.body_limit_bytes.or(lower.body_limit_bytes),
            batch_body_limit_bytes: self.batch_body_limit_bytes.or(lower.batch_body_limit_bytes),
            checkpoint_interval_ms: self.checkpoint_interval_ms.or(lower.checkpoint_interval_ms),
            checkpoint_key: self.checkpoint_key.or(lower.checkpoint_key),
            fault_fsync_after: self.fault_fsync_after.or(lower.fault_fsync_after),
            request_timeout_ms: self.request_timeout_ms.or(lower.request_timeout_ms),
            max_concurrent_requests: self
                .max_concurrent_requests
                .or(lower.max_concurrent_requests),
            rate_limit_write_per_sec: self
                .rate_limit_write_per_sec
                .or(lower.rate_limit_write_per_sec),
            rate_limit_query_per_sec: self
                .rate_limit_query_per_sec
                .or(lower.rate_limit_query_per_sec),
            rate_limit_read_per_sec: self
                .rate_limit_read_per_sec
                .or(lower.rate_limit_read_per_sec),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            cache_mb: self.cache_mb.or(lower.cache_mb),
            scan_budget: self.scan_budget.or(lower.scan_budget),
            header_timeout_ms: self.header_timeout_ms.or(lower.header_timeout_ms),
            idle_timeout_ms: self.idle_timeout_ms.or(lower.idle_timeout_ms),
            max_connections: self.max_connections.or(lower.max_connections),
            memtable_rows: self.memtable_rows.or(lower.memtable_rows),
            memtable_ms: self.memtable_ms.or(lower.memtable_ms),
            memtable_max_frozen: self.memtable_max_frozen.or(lower.memtable_max_frozen),
            fault_checkpoint_after: self.fault_checkpoint_after.or(lower.fault_checkpoint_after),
            admin_token: self.admin_token.or(lower.admin_token),
            agent_policy: self.agent_policy.or(lower.agent_policy),
            max_future_skew_ms: self.max_future_skew_ms.or(lower.max_future_skew_ms),
            max_past_skew_ms: self.max_past_skew_ms.or(lower.max_past_skew_ms),
            soft_size_bytes: self.soft_size_bytes.or(lower.soft_size_bytes),
            deny_patterns: self.deny_patterns.or(lower.deny_patterns),
            breaker_threshold: self.breaker_threshold.or(lower.breaker_threshold),
            breaker_window_ms: self.breaker_window_ms.or(lower.breaker_window_ms),
            breaker_cooldown_ms: self.breaker_cooldown_ms.or(lower.breaker_cooldown_ms),
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Data directory (created if absent, locked while the server runs).
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Tracing filter.
    pub log: String,
    /// Drain time on shutdown, milliseconds.
    pub shutdown_grace_ms: u64,
    /// Origin line of signed checkpoints.
    pub log_origin: String,
    /// WAL segment size, bytes.
    pub wal_segment_bytes: u64,
    /// Body limit of a single-envelope request, bytes.
    pub body_limit_bytes: usize,
    /// Body limit of a batch request, bytes.
    pub batch_body_limit_bytes: usize,
    /// Durable checkpoint interval, milliseconds.
    pub checkpoint_interval_ms: u64,
    /// Checkpoint signing key; `None` means `server.key` in the data directory.
    pub checkpoint_key: Option<PathBuf>,
    /// Test hook: fail WAL fsyncs after this many.
    pub fault_fsync_after: Option<u64>,
    /// Request timeout, milliseconds.
    pub request_timeout_ms: u64,
    /// Most requests in flight.
    pub max_concurrent_requests: usize,
    /// Per-client rate limits, requests per second (0 = unlimited).
    pub rate_limits: RateLimits,
    /// Proxies trusted to name the client in `X-Forwarded-For`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// redb page cache, MiB.
    pub cache_mb: usize,
    /// Index rows one query request may examine (at least 1).
    pub scan_budget: usize,
    /// Time allowed for a request head, milliseconds.
    pub header_timeout_ms: u64,
    /// Time a connection may carry no traffic, milliseconds.
    pub idle_timeout_ms: u64,
    /// Most TCP connections open at once (at least 1).
    pub max_connections: usize,
    /// Memtable size that freezes it for the merger, assertions.
    pub memtable_rows: usize,
    /// Memtable age that freezes it, milliseconds.
    pub memtable_ms: u64,
    /// Frozen assertions past which writers wait.
    pub memtable_max_frozen: usize,
    /// Test hook: fail durable checkpoints after this many.
    pub fault_checkpoint_after: Option<u64>,
    /// Admin bearer token; `None`: the admin API is off.
    pub admin_token: Option<Secret>,
    /// Content-defense rules.
    pub policy: Policy,
    /// Per-agent circuit breakers.
    pub breaker: BreakerConfig,
}

/// Per-client-IP request rates by endpoint class, per second; 0 turns a limit off. The burst is
/// one second's worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `/v1/assert`.
    pub write_per_sec: u32,
    /// `/v1/query`.
    pub query_per_sec: u32,
    /// `/v1/assertions/{id}`, `/v1/checkpoint*`, `/v1/proof/*`.
    pub read_per_sec: u32,
}

impl Config {
    /// Merges flag-or-env settings over file settings over defaults.
    pub fn resolve(flags_and_env: ConfigLayer, file: ConfigLayer) -> Config {
        let l = flags_and_env.over(file);
        Config {
            data_dir: l
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: l.listen.unwrap_or_else(default_listen),
            log_format: l.log_format.unwrap_or_default(),
            log: l.log.unwrap_or_else(|| "info".to_string()),
            shutdown_grace_ms: l.shutdown_grace_ms.unwrap_or(DEFAULT_SHUTDOWN_GRACE_MS),
            log_origin: l
                .log_origin
                .unwrap_or_else(|| stemedb_store::DEFAULT_ORIGIN.to_string()),
            wal_segment_bytes: l.wal_segment_bytes.unwrap_or(DEFAULT_WAL_SEGMENT_BYTES),
            body_limit_bytes: l.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT_BYTES),
            batch_body_limit_bytes: l
                .batch_body_limit_bytes
                .unwrap_or(DEFAULT_BATCH_BODY_LIMIT_BYTES),
            checkpoint_interval_ms: l
                .checkpoint_interval_ms
                .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_MS),
            checkpoint_key: l.checkpoint_key,
            fault_fsync_after: l.fault_fsync_after,
            request_timeout_ms: l.request_timeout_ms.unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            max_concurrent_requests: l
                .max_concurrent_requests
                .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS),
            rate_limits: RateLimits {
                write_per_sec: l
                    .rate_limit_write_per_sec
                    .unwrap_or(DEFAULT_RATE_LIMIT_WRITE_PER_SEC),
                query_per_sec: l
                    .rate_limit_query_per_sec
                    .unwrap_or(DEFAULT_RATE_LIMIT_QUERY_PER_SEC),
                read_per_sec: l
                    .rate_limit_read_per_sec
                    .unwrap_or(DEFAULT_RATE_LIMIT_READ_PER_SEC),
            },
            trusted_proxies: l
                .trusted_proxies
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.0)
                .collect(),
            cache_mb: l.cache_mb.unwrap_or(DEFAULT_CACHE_MB),
            scan_budget: l.scan_budget.unwrap_or(DEFAULT_SCAN_BUDGET).max(1),
            header_timeout_ms: l
                .header_timeout_ms
                .unwrap_or(DEFAULT_HEADER_TIMEOUT_MS)
                .max(1),
            idle_timeout_ms: l.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS).max(1),
            max_connections: l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1),
            memtable_rows: l.memtable_rows.unwrap_or(DEFAULT_MEMTABLE_ROWS).max(1),
            memtable_ms: l.memtable_ms.unwrap_or(DEFAULT_MEMTABLE_MS).max(1),
            memtable_max_frozen: l
                .memtable_max_frozen
                .unwrap_or(DEFAULT_MEMTABLE_MAX_FROZEN)
                .max(1),
            fault_checkpoint_after: l.fault_checkpoint_after,
            admin_token: l.admin_token.filter(|t| !t.0.is_empty()),
            policy: Policy {
                max_future_skew_ms: l.max_future_skew_ms.unwrap_or(DEFAULT_MAX_FUTURE_SKEW_MS),
                max_past_skew_ms: l.max_past_skew_ms.unwrap_or(0),
                soft_size_bytes: l.soft_size_bytes.unwrap_or(DEFAULT_SOFT_SIZE_BYTES),
                deny: l.deny_patterns.unwrap_or_default(),
                agent_policy: l.agent_policy.unwrap_or_default(),
            },
            breaker: BreakerConfig {
                threshold: l.breaker_threshold.unwrap_or(DEFAULT_BREAKER_THRESHOLD),
                window: Duration::from_millis(
                    l.breaker_window_ms
                        .unwrap_or(DEFAULT_BREAKER_WINDOW_MS)
                        .max(1),
                ),
                cooldown: Duration::from_millis(
                    l.breaker_cooldown_ms.unwrap_or(DEFAULT_BREAKER_COOLDOWN_MS),
                ),
            },
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 18180))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listen_matches_the_documented_constant() {
        assert_eq!(default_listen().to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn flags_and_env_beat_the_file_which_beats_defaults() {
        let file = ConfigLayer::from_toml(
            "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:1\"\nlog_format = \"json\"\n",
        )
        .expect("valid toml");
        let flags = ConfigLayer {
            data_dir: Some("/from/flag".into()),
            ..ConfigLayer::default()
        };
        let c = Config::resolve(flags, file);
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:1");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log, "info");
        assert_eq!(c.shutdown_grace_ms, DEFAULT_SHUTDOWN_GRACE_MS);
        let d = Config::resolve(ConfigLayer::default(), ConfigLayer::default());
        assert_eq!(d.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn unknown_or_mistyped_file_keys_are_errors() {
        assert!(ConfigLayer::from_toml("data_dri = \"x\"").is_err());
        assert!(ConfigLayer::from_toml("listen = \"nope\"").is_err());
        assert!(ConfigLayer::from_toml("log_format = \"xml\"").is_err());
        assert!(ConfigLayer::from_toml("trusted_proxies = [\"10.0.0.0/33\"]").is_err());
        let ok =
            ConfigLayer::from_toml("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]").expect("valid");
        assert_eq!(ok.trusted_proxies.map(|v| v.len()), Some(2));
    }
}
