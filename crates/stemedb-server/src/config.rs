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
/// Default frozen assertions past which writers wait for the merger. At about 1 KiB of memtable
/// per assertion, 250,000 frozen plus a full active memtable keep the server within 1 GiB with
/// redb's 256 MiB page cache (measured at 10M; `docs/performance.md`).
pub const DEFAULT_MEMTABLE_MAX_FROZEN: usize = 250_000;
/// Default number of index runs of one size tier compacted into one (design §4, decision 0020).
pub const DEFAULT_COMPACTION_FANOUT: usize = 4;
/// Default rows a compaction copies per write transaction.
pub const DEFAULT_COMPACTION_CHUNK_ROWS: usize = 200_000;

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

/// Declares `ConfigLayer`, every setting once: its help (also the flag's `--help` text), its
/// flag and environment variable, and its type. The file key is the field name. `over` and the
/// flags (`#[command(flatten)]` in the CLI) come from the same list, so a setting cannot be
/// missing from one of them.
macro_rules! config_layer {
    ($( $(#[$attr:meta])* $name:ident: $ty:ty, )*) => {
        /// One source of settings (the command line and environment, or a TOML file); `None`
        /// means "this source does not set it". Precedence: decision 0004.
        #[derive(Debug, Clone, Default, Deserialize, PartialEq, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct ConfigLayer {
            $( $(#[$attr])* pub $name: Option<$ty>, )*
        }

        impl ConfigLayer {
            /// This layer, with unset values taken from `lower`.
            pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
                ConfigLayer { $( $name: self.$name.or(lower.$name), )* }
            }
        }
    };
}

config_layer! {
    /// Data directory, created if absent and locked while the server runs [default: ./stemedb-data].
    #[arg(long, env = "STEMEDB_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to listen on [default: 127.0.0.1:18180].
    #[arg(long, env = "STEMEDB_LISTEN")]
    listen: SocketAddr,
    /// Log format: text or json [default: text].
    #[arg(long, env = "STEMEDB_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter, tracing EnvFilter syntax [default: info].
    #[arg(long, env = "STEMEDB_LOG")]
    log: String,
    /// Milliseconds to drain in-flight requests after SIGTERM or Ctrl-C [default: 10000].
    #[arg(long, env = "STEMEDB_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: u64,
    /// Origin line of signed checkpoints [default: localhost/stemedb].
    #[arg(long, env = "STEMEDB_LOG_ORIGIN")]
    log_origin: String,
    /// WAL segment size in bytes [default: 10485760].
    #[arg(long, env = "STEMEDB_WAL_SEGMENT_BYTES")]
    wal_segment_bytes: u64,
    /// Body limit of a single-envelope request, bytes [default: 1048576].
    #[arg(long, env = "STEMEDB_BODY_LIMIT_BYTES")]
    body_limit_bytes: usize,
    /// Body limit of a batch request, bytes [default: 16777216].
    #[arg(long, env = "STEMEDB_BATCH_BODY_LIMIT_BYTES")]
    batch_body_limit_bytes: usize,
    /// Make a durable store checkpoint at least this often, milliseconds [default: 3000].
    #[arg(long, env = "STEMEDB_CHECKPOINT_INTERVAL_MS")]
    checkpoint_interval_ms: u64,
    /// Checkpoint signing key, PKCS#8 PEM [default: DATA_DIR/server.key, created on first start].
    #[arg(long, env = "STEMEDB_CHECKPOINT_KEY")]
    checkpoint_key: PathBuf,
    /// TEST HOOK: make every WAL fsync fail after this many (fault injection; never in production).
    #[arg(long, env = "STEMEDB_FAULT_FSYNC_AFTER", hide_short_help = true)]
    fault_fsync_after: u64,
    /// Answer 503 `timeout` to a request still running after this many milliseconds [default: 30000].
    #[arg(long, env = "STEMEDB_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: u64,
    /// Most requests in flight; beyond it requests are shed with 503 `overloaded` [default: 1024].
    #[arg(long, env = "STEMEDB_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: usize,
    /// `/v1/assert` requests per second per client IP, 0 = unlimited [default: 100000].
    #[arg(long, env = "STEMEDB_RATE_LIMIT_WRITE_PER_SEC")]
    rate_limit_write_per_sec: u32,
    /// `/v1/query` requests per second per client IP, 0 = unlimited [default: 100000].
    #[arg(long, env = "STEMEDB_RATE_LIMIT_QUERY_PER_SEC")]
    rate_limit_query_per_sec: u32,
    /// Other `/v1` reads per second per client IP, 0 = unlimited [default: 100000].
    #[arg(long, env = "STEMEDB_RATE_LIMIT_READ_PER_SEC")]
    rate_limit_read_per_sec: u32,
    /// Proxies (IPs or CIDR blocks, comma-separated) whose X-Forwarded-For names the client [default: none].
    #[arg(long, env = "STEMEDB_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<ProxyNet>,
    /// redb page cache, MiB [default: 256].
    #[arg(long, env = "STEMEDB_CACHE_MB")]
    cache_mb: usize,
    /// Most index rows one query request may examine before it answers with a cursor [default: 10000].
    #[arg(long, env = "STEMEDB_SCAN_BUDGET")]
    scan_budget: usize,
    /// A request head not complete within this many ms is answered 408 and closed [default: 10000].
    #[arg(long, env = "STEMEDB_HEADER_TIMEOUT_MS")]
    header_timeout_ms: u64,
    /// A connection with no traffic for this many ms is closed [default: 60000].
    #[arg(long, env = "STEMEDB_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: u64,
    /// Most TCP connections open at once; past it new ones wait in the listen backlog [default: 10000].
    #[arg(long, env = "STEMEDB_MAX_CONNECTIONS")]
    max_connections: usize,
    /// Hand the in-memory index (memtable) to the merger at this many assertions [default: 100000].
    #[arg(long, env = "STEMEDB_MEMTABLE_ROWS")]
    memtable_rows: usize,
    /// ... or when it is this many ms old [default: 1000].
    #[arg(long, env = "STEMEDB_MEMTABLE_MS")]
    memtable_ms: u64,
    /// Writers wait while more than this many assertions wait to be merged [default: 250000].
    #[arg(long, env = "STEMEDB_MEMTABLE_MAX_FROZEN")]
    memtable_max_frozen: usize,
    /// Compact this many index runs of one size into one [default: 4].
    #[arg(long, env = "STEMEDB_COMPACTION_FANOUT")]
    compaction_fanout: usize,
    /// Rows a compaction copies per write transaction [default: 200000].
    #[arg(long, env = "STEMEDB_COMPACTION_CHUNK_ROWS")]
    compaction_chunk_rows: usize,
    /// Test hook: fail every durable store checkpoint after this many. Never set it in production.
    #[arg(long, env = "STEMEDB_FAULT_CHECKPOINT_AFTER", hide_short_help = true)]
    fault_checkpoint_after: u64,
    /// Bearer token of the admin API under /v1/admin/ [default: none, admin API off].
    #[arg(long, env = "STEMEDB_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Secret,
    /// Unknown agents: open, quarantine-unknown or reject-unknown [default: open].
    #[arg(long, env = "STEMEDB_AGENT_POLICY")]
    agent_policy: AgentPolicy,
    /// Quarantine a ts this far ahead of the server clock, ms; 0 off [default: 300000].
    #[arg(long, env = "STEMEDB_MAX_FUTURE_SKEW_MS")]
    max_future_skew_ms: u64,
    /// Quarantine a ts this far behind the server clock, ms; 0 off [default: 0].
    #[arg(long, env = "STEMEDB_MAX_PAST_SKEW_MS")]
    max_past_skew_ms: u64,
    /// Quarantine statement payloads larger than this, bytes; 0 off [default: 32768].
    #[arg(long, env = "STEMEDB_SOFT_SIZE_BYTES")]
    soft_size_bytes: usize,
    /// Quarantine statements matching field:regex (field: subject, predicate or object); repeat the flag for more [default: none].
    #[arg(long = "deny-pattern", env = "STEMEDB_DENY_PATTERN")]
    deny_patterns: Vec<DenyPattern>,
    /// Quarantines plus refusals within the window that open an agent's breaker; 0 off [default: 50].
    #[arg(long, env = "STEMEDB_BREAKER_THRESHOLD")]
    breaker_threshold: u32,
    /// Breaker window, ms [default: 60000].
    #[arg(long, env = "STEMEDB_BREAKER_WINDOW_MS")]
    breaker_window_ms: u64,
    /// How long an open breaker refuses before one probe may pass, ms [default: 30000].
    #[arg(long, env = "STEMEDB_BREAKER_COOLDOWN_MS")]
    breaker_cooldown_ms: u64,
}

impl ConfigLayer {
    /// Reads a TOML config file's text. Unknown keys are an error, so typos do not pass silently.
    pub fn from_toml(text: &str) -> Result<ConfigLayer, String> {
        toml::from_str(text).map_err(|e| e.to_string())
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
    /// Index runs of one size tier merged into one (at least 2).
    pub compaction_fanout: usize,
    /// Rows a compaction copies per write transaction (at least 1).
    pub compaction_chunk_rows: usize,
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
            compaction_fanout: l
                .compaction_fanout
                .unwrap_or(DEFAULT_COMPACTION_FANOUT)
                .max(2),
            compaction_chunk_rows: l
                .compaction_chunk_rows
                .unwrap_or(DEFAULT_COMPACTION_CHUNK_ROWS)
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
