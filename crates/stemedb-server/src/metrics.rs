//! Prometheus metrics: one registry per server, process metrics included. Names follow design
//! §11; `monitoring/` alerts on them.

use std::path::Path;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `stemedb_http_requests_total{route,status}`.
    pub http_requests: IntCounterVec,
    /// `stemedb_http_request_duration_seconds{route}`.
    pub http_duration: HistogramVec,
    /// `stemedb_ingest_total{result}`: created, duplicate, rejected, failed.
    pub ingest: IntCounterVec,
    /// `stemedb_wal_fsync_duration_seconds`: one write plus one fsync of a group.
    pub wal_fsync: Histogram,
    /// `stemedb_wal_group_commit_size`: new records per fsync.
    pub group_size: Histogram,
    /// `stemedb_wal_segments`.
    pub wal_segments: IntGauge,
    /// `stemedb_tree_size`.
    pub tree_size: IntGauge,
    /// `stemedb_read_only`: 1 after a write failure.
    pub read_only: IntGauge,
    /// `stemedb_last_checkpoint_timestamp_seconds`: last durable checkpoint.
    pub last_checkpoint: Gauge,
    /// `stemedb_checkpoint_duration_seconds`: one durable checkpoint (writes wait meanwhile).
    pub checkpoint_duration: Histogram,
    /// `stemedb_quarantine_size`: assertions waiting in quarantine.
    pub quarantine_size: IntGauge,
    /// `stemedb_breaker_transitions_total{to}`: agent breakers changing state.
    pub breaker_transitions: IntCounterVec,
    /// `stemedb_breakers_open`: agent breakers open right now.
    pub breakers_open: IntGauge,
    /// `stemedb_last_backup_timestamp_seconds`: from the data directory's `last-backup.json`.
    pub last_backup: Gauge,
    /// `stemedb_last_wal_archive_timestamp_seconds`: from `wal-archive.json`.
    pub last_wal_archive: Gauge,
    /// `stemedb_wal_unarchived_segments`: sealed segments not yet archived.
    pub wal_unarchived: IntGauge,
    /// `stemedb_memtable_frozen_assertions`: acknowledged assertions waiting for the merger.
    pub memtable_frozen: IntGauge,
    /// `stemedb_merge_duration_seconds`: one memtable folded into redb.
    pub merge_duration: Histogram,
    /// `stemedb_write_stall_seconds_total`: time writers waited for the merger (backpressure).
    pub write_stall: Gauge,
    /// `stemedb_writers_waiting`: 1 while writers wait for the merger (backpressure), else 0.
    pub writers_waiting: IntGauge,
    /// `stemedb_compaction_seconds_total`: time the merger spent compacting index runs.
    pub compaction: Gauge,
    /// `stemedb_compacted_assertions_total`: assertions in the runs compactions replaced.
    pub compacted: IntCounter,
    /// `stemedb_index_runs`: index runs a read descends (one B-tree per table each).
    pub index_runs: IntGauge,
}

impl Metrics {
    /// Builds the registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let build = IntGaugeVec::new(
            Opts::new("stemedb_build_info", "StemeDB build, always 1"),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "stemedb_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let latency_buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0,
        ];
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "stemedb_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(latency_buckets.clone()),
            &["route"],
        )?;
        let ingest = IntCounterVec::new(
            Opts::new("stemedb_ingest_total", "Submitted assertions by result"),
            &["result"],
        )?;
        let checkpoint_duration = Histogram::with_opts(
            HistogramOpts::new(
                "stemedb_checkpoint_duration_seconds",
                "Time of one durable store checkpoint (fsyncs and a durable index commit)",
            )
            .buckets(latency_buckets.clone()),
        )?;
        let quarantine_size = IntGauge::new(
            "stemedb_quarantine_size",
            "Assertions held in quarantine, waiting for release or rejection",
        )?;
        let breaker_transitions = IntCounterVec::new(
            Opts::new(
                "stemedb_breaker_transitions_total",
                "Agent circuit breakers changing state, by new state",
            ),
            &["to"],
        )?;
        let breakers_open = IntGauge::new("stemedb_breakers_open", "Agent circuit breakers open")?;
        let wal_fsync = Histogram::with_opts(
            HistogramOpts::new(
                "stemedb_wal_fsync_duration_seconds",
                "Time of one WAL group write plus fsync",
            )
            .buckets(latency_buckets),
        )?;
        let group_size = Histogram::with_opts(
            HistogramOpts::new(
                "stemedb_wal_group_commit_size",
                "New records made durable by one fsync",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
            ]),
        )?;
        let wal_segments = IntGauge::new("stemedb_wal_segments", "WAL segment files")?;
        let tree_size = IntGauge::new("stemedb_tree_size", "Leaves in the Merkle log")?;
        let read_only = IntGauge::new(
            "stemedb_read_only",
            "1 when writes are refused after a storage failure",
        )?;
        let last_checkpoint = Gauge::new(
            "stemedb_last_checkpoint_timestamp_seconds",
            "Unix time of the last durable store checkpoint",
        )?;
        let last_backup = Gauge::new(
            "stemedb_last_backup_timestamp_seconds",
            "Unix time of the last successful backup (0: none recorded)",
        )?;
        let last_wal_archive = Gauge::new(
            "stemedb_last_wal_archive_timestamp_seconds",
            "Unix time of the last successful WAL archive run (0: none recorded)",
        )?;
        let wal_unarchived = IntGauge::new(
            "stemedb_wal_unarchived_segments",
            "Sealed WAL segments not yet archived",
        )?;
        let memtable_frozen = IntGauge::new(
            "stemedb_memtable_frozen_assertions",
            "Acknowledged assertions in frozen memtables, waiting to be merged into redb",
        )?;
        let merge_duration = Histogram::with_opts(
            HistogramOpts::new(
                "stemedb_merge_duration_seconds",
                "Time to fold one frozen memtable into redb",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let write_stall = Gauge::new(
            "stemedb_write_stall_seconds_total",
            "Seconds writers waited for the merger to catch up (backpressure)",
        )?;
        registry.register(Box::new(memtable_frozen.clone()))?;
        registry.register(Box::new(merge_duration.clone()))?;
        let writers_waiting = IntGauge::new(
            "stemedb_writers_waiting",
            "1 while writers wait for the merger to catch up (backpressure), else 0",
        )?;
        registry.register(Box::new(write_stall.clone()))?;
        registry.register(Box::new(writers_waiting.clone()))?;
        let compaction = Gauge::new(
            "stemedb_compaction_seconds_total",
            "Seconds the merger spent compacting index runs (design section 4)",
        )?;
        let compacted = IntCounter::new(
            "stemedb_compacted_assertions_total",
            "Assertions in the index runs that finished compactions merged",
        )?;
        let index_runs = IntGauge::new(
            "stemedb_index_runs",
            "Index runs a read descends, one B-tree per table each (design section 4)",
        )?;
        registry.register(Box::new(compaction.clone()))?;
        registry.register(Box::new(compacted.clone()))?;
        registry.register(Box::new(index_runs.clone()))?;
        registry.register(Box::new(last_backup.clone()))?;
        registry.register(Box::new(last_wal_archive.clone()))?;
        registry.register(Box::new(wal_unarchived.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(ingest.clone()))?;
        registry.register(Box::new(wal_fsync.clone()))?;
        registry.register(Box::new(group_size.clone()))?;
        registry.register(Box::new(wal_segments.clone()))?;
        registry.register(Box::new(tree_size.clone()))?;
        registry.register(Box::new(read_only.clone()))?;
        registry.register(Box::new(last_checkpoint.clone()))?;
        registry.register(Box::new(checkpoint_duration.clone()))?;
        registry.register(Box::new(quarantine_size.clone()))?;
        registry.register(Box::new(breaker_transitions.clone()))?;
        registry.register(Box::new(breakers_open.clone()))?;
        for to in ["open", "half_open", "closed"] {
            breaker_transitions.with_label_values(&[to]);
        }
        for result in ["created", "duplicate", "quarantined", "rejected", "failed"] {
            ingest.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            ingest,
            wal_fsync,
            group_size,
            wal_segments,
            tree_size,
            read_only,
            last_checkpoint,
            checkpoint_duration,
            quarantine_size,
            breaker_transitions,
            breakers_open,
            last_backup,
            last_wal_archive,
            wal_unarchived,
            memtable_frozen,
            merge_duration,
            write_stall,
            writers_waiting,
            compaction,
            compacted,
            index_runs,
        })
    }

    /// Refreshes the gauges that come from files beside the store: the backup and WAL-archive
    /// markers (written by `stemedb backup` / `stemedb wal-archive`) and the WAL segment files
    /// (retention removes sealed ones while the server runs).
    pub fn refresh_operations(&self, data_dir: &Path) {
        let marker = |name: &str| -> Option<serde_json::Value> {
            let text = std::fs::read_to_string(data_dir.join(name)).ok()?;
            serde_json::from_str(&text).ok()
        };
        let secs = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(|v| v.get("unix_ms")?.as_f64())
                .map(|ms| ms / 1000.0)
                .unwrap_or(0.0)
        };
        self.last_backup.set(secs(&marker("last-backup.json")));
        let archive = marker("wal-archive.json");
        self.last_wal_archive.set(secs(&archive));
        let archived_last = archive
            .as_ref()
            .and_then(|v| v.get("last_segment")?.as_u64())
            .unwrap_or(0);
        if let Ok(segments) = stemedb_wal::list_segments(&data_dir.join("wal")) {
            self.wal_segments.set(segments.len() as i64);
            let sealed = &segments[..segments.len().saturating_sub(1)];
            let unarchived = sealed
                .iter()
                .filter(|(id, _)| u64::from(*id) > archived_last)
                .count();
            self.wal_unarchived.set(unarchived as i64);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl stemedb_store::Observer for Metrics {
    fn group_committed(&self, records: usize, fsync_secs: f64) {
        self.group_size.observe(records as f64);
        self.wal_fsync.observe(fsync_secs);
    }
    fn read_only(&self, _why: &str) {
        self.read_only.set(1);
    }
    fn durable_checkpoint(&self, unix_secs: f64, secs: f64) {
        self.last_checkpoint.set(unix_secs);
        self.checkpoint_duration.observe(secs);
    }
    fn tree_size(&self, size: u64, segments: usize) {
        self.tree_size.set(size as i64);
        self.wal_segments.set(segments as i64);
    }
    fn merged(&self, _rows: usize, secs: f64, frozen_rows: usize) {
        self.merge_duration.observe(secs);
        self.memtable_frozen.set(frozen_rows as i64);
    }
    fn write_stalled(&self, secs: f64) {
        self.write_stall.add(secs);
    }
    fn writers_waiting(&self, waiting: bool) {
        self.writers_waiting.set(i64::from(waiting));
    }
    fn frozen(&self, frozen_rows: usize) {
        self.memtable_frozen.set(frozen_rows as i64);
    }
    fn compacted(&self, rows: usize, secs: f64) {
        self.compaction.add(secs);
        self.compacted.inc_by(rows as u64);
    }
    fn index_runs(&self, runs: usize) {
        self.index_runs.set(runs as i64);
    }
}
