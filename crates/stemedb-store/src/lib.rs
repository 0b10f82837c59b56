//! `stemedb-store`: the HybridStore. redb holds compact keys and pointers (`assertions`,
//! `by_seq`, the subject, reversed-subject, predicate and agent indexes, `supersedes`, `meta`);
//! envelope bytes live in the value log; Merkle nodes live in per-level files. One commit thread
//! owns every writer and runs group commit: drain the queue, dedupe, assign log indexes, one WAL
//! write and one fsync, apply, then answer every caller.
//!
//! Architecture Invariant: a write is acknowledged only after its WAL record is fsync'd, and
//! after it is applied, so a read or a checkpoint requested after the ack includes it.
//!
//! Architecture Invariant: the store, the value log and the node files are derived from the WAL.
//! redb commits with `Durability::None` between durable checkpoints; a durable checkpoint fsyncs
//! the value log and node files, then commits `meta` with `Durability::Immediate`. On open, the
//! value log and node files are cut back to the durable checkpoint, rebuilt from the WAL up to
//! what redb has applied, and the rest of the WAL is replayed.
//!
//! Architecture Invariant: nothing here knows HTTP.

mod admin;
mod commit;
mod completion;
pub mod control;
mod entry;
mod files;
mod history;
pub mod keys;
pub mod lens;
mod memtable;
mod merger;
mod nodes;
mod packed;
mod query;
mod runs;
pub mod snapshot;
pub mod verify;
mod vlog;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use redb::{Database, TableDefinition};
use stemedb_core::{AssertionId, SigningKey};
use stemedb_merkle::{Checkpoint, Hash, NoteSigner};
use stemedb_wal::{WalError, WalOptions};

pub use admin::{AgentRecord, AgentStatus, AuditRecord, QuarantineEntry};
pub use commit::Submission;
pub use completion::{Completion, Outcomes};
pub use entry::{Entry, Fields};
pub use files::{DirLock, now_ms, write_atomically};
pub use history::{History, HistoryEntry, HistoryStatus};
pub use query::{
    Answer, DEFAULT_LIMIT, DEFAULT_SCAN_BUDGET, GroupResult, LargeGroups, Lens, MAX_LIMIT, Query,
    QueryError, SubjectMatch, Winner,
};
pub use vlog::{Pointer, Position};

pub(crate) const ASSERTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("assertions");
pub(crate) const BY_SEQ: TableDefinition<u64, &[u8]> = TableDefinition::new("by_seq");
pub(crate) const SUBJECT_IDX: TableDefinition<&[u8], ()> = TableDefinition::new("subject.idx");
pub(crate) const CONCEPT_PATH_IDX: TableDefinition<&[u8], ()> =
    TableDefinition::new("concept_path.idx");
pub(crate) const PREDICATE_IDX: TableDefinition<&[u8], ()> = TableDefinition::new("predicate.idx");
pub(crate) const AGENT_IDX: TableDefinition<&[u8], ()> = TableDefinition::new("agent.idx");
pub(crate) const SUPERSEDES: TableDefinition<&[u8], ()> = TableDefinition::new("supersedes");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// On-disk format version of the data directory.
/// Version 2 (issue 5): `by_seq` maps a log index to its `IndexValue`, and every index is
/// grouped by (subject, predicate).
/// Version 3 (issue 17): `assertions`, the indexes and `supersedes` are kept as runs
/// (`meta.runs`, tables `<name>@<run>`, `run_filters`); a version 2 store is run 0 alone and
/// opens as it is.
/// Version 4 (issue 17): value-log records from `meta.pack_from` on may be packed
/// (`packed.rs`); a version 2 or 3 store opens as it is, packing only what it writes next.
/// Version 5 (2026-12-03): `by_seq` rows end in a CRC-32C, checked on every read (`keys.rs`);
/// a version 2 to 4 store opens as it is, its older rows read unchecked.
pub const FORMAT_VERSION: u64 = 5;
/// WAL record kind of an accepted assertion.
pub const KIND_ASSERTION: u8 = 1;
/// Default origin line of signed checkpoints.
pub const DEFAULT_ORIGIN: &str = "localhost/stemedb";

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// File I/O failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// redb failed (the index database under `db/`); the source is redb's own error.
    #[error("database error: {0}")]
    Db(#[source] Box<redb::Error>),
    /// A write could not be checked against what the store holds (the read deduplicating it
    /// failed), so it was not written: retrying is safe.
    #[error("cannot check the write against the store: {0}")]
    Unchecked(String),
    /// The WAL failed to open or recover.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The store is read-only after a write failure; restart after fixing the cause. Nothing of
    /// the request was written.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// The write reached the WAL but its fsync failed, or it could not be applied: whether it
    /// is durable is unknown until a restart replays the log. Retrying is safe (idempotent).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Stored data contradicts itself.
    #[error("data directory is inconsistent: {0}")]
    Corrupt(String),
    /// A request is outside what the store holds.
    #[error("{0}")]
    OutOfRange(String),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    Closed,
    /// The store dropped the request without answering it (its commit thread stopped): whether
    /// it was written is unknown until a restart replays the log; retrying then is safe.
    #[error("the store dropped the request without answering it (its commit thread stopped)")]
    Dropped,
}

/// Why [`Store::open`] failed. Apart from [`StoreError`] (what a request can meet) because each
/// of these needs its own action from an operator before the store can serve at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// An option the store was opened with is not acceptable: fix the configuration.
    #[error("bad store option: {0}")]
    BadOption(String),
    /// The WAL is corrupt, not torn (or could not be opened): the message names the segment,
    /// the offset and the way out; nothing was cut.
    #[error(transparent)]
    Wal(WalError),
    /// The stored state contradicts itself, or recovery would come back below the signed
    /// high-water mark: restore from a backup (`stemedb verify` says what is wrong).
    #[error("data directory is inconsistent: {0}")]
    Corrupt(String),
    /// A file of the data directory could not be read or written (permissions, a full or
    /// failing disk).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// redb could not open or recover its database.
    #[error("database error: {0}")]
    Db(#[source] Box<redb::Error>),
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> OpenError {
        match e {
            StoreError::Io { path, source } => OpenError::Io { path, source },
            StoreError::Db(e) => OpenError::Db(e),
            StoreError::Wal(e) => OpenError::Wal(e),
            StoreError::Corrupt(m) => OpenError::Corrupt(m),
            // Request-time errors do not arise while opening; if one ever does, the store is
            // not usable, which is what Corrupt tells the operator.
            other => OpenError::Corrupt(other.to_string()),
        }
    }
}

pub(crate) fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// WAL options (segment size, fault injection).
    pub wal: WalOptions,
    /// Origin line of signed checkpoints (also the note key name).
    pub origin: String,
    /// Make a durable checkpoint at least this often while writes arrive, milliseconds.
    pub checkpoint_interval_ms: u64,
    /// Make a durable checkpoint after this many records.
    pub checkpoint_records: u64,
    /// redb page cache, bytes.
    pub cache_bytes: usize,
    /// Most records in one group commit.
    pub group_max_records: usize,
    /// Most queued submissions before submitters wait.
    pub queue_depth: usize,
    /// Most envelope bytes queued for the commit thread before submitters wait (a submission
    /// larger than this waits until the queue is empty, then goes alone).
    pub queue_bytes: usize,
    /// Most envelope bytes in one group commit.
    pub group_max_bytes: usize,
    /// Freeze the active memtable (hand it to the merger) at this many assertions.
    pub memtable_rows: usize,
    /// ... or when it is this old and not empty, milliseconds.
    pub memtable_ms: u64,
    /// Writers wait (backpressure) while frozen memtables hold more assertions than this.
    pub memtable_max_frozen_rows: usize,
    /// Compact this many runs of one size tier into one (design §4, `runs.rs`).
    pub compaction_fanout: usize,
    /// Rows a compaction copies per write transaction (merges of new memtables go on between).
    pub compaction_chunk_rows: usize,
    /// Merge every group into redb before answering it (the engine before issue 17: B-tree work
    /// on the acknowledgement path). For comparisons and tests.
    pub merge_inline: bool,
    /// Test hook: fail every durable checkpoint after this many (fault injection).
    pub fail_checkpoint_after: Option<u64>,
    /// Test hook: the merger panics when it is about to merge a memtable that holds log
    /// index `n` or later (what a redb panic on a damaged page does to it). Never set it in
    /// production.
    pub panic_merger_at: Option<u64>,
    /// Test hook: the merger sleeps this many milliseconds before it merges each memtable (a
    /// merger that falls behind, so writers meet the backpressure). Never set it in production.
    pub slow_merger_ms: Option<u64>,
    /// The checkpoint signing key (PKCS#8 PEM). `None`: `server.key` in the data directory,
    /// created on first start.
    pub key_path: Option<PathBuf>,
    /// When a query looks up each agent's newest row of a (subject, predicate) group in
    /// `agent.idx` instead of reading the rest of it. Tests lower the limits to compare both
    /// ways on small groups.
    pub large_group: LargeGroups,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            wal: WalOptions::default(),
            origin: DEFAULT_ORIGIN.to_string(),
            checkpoint_interval_ms: 3_000,
            checkpoint_records: 100_000,
            cache_bytes: 256 * 1024 * 1024,
            group_max_records: 4_096,
            queue_depth: 4_096,
            queue_bytes: 64 * 1024 * 1024,
            group_max_bytes: 16 * 1024 * 1024,
            memtable_rows: 100_000,
            memtable_ms: 1_000,
            memtable_max_frozen_rows: 250_000,
            compaction_fanout: 4,
            compaction_chunk_rows: 200_000,
            merge_inline: false,
            fail_checkpoint_after: None,
            panic_merger_at: None,
            slow_merger_ms: None,
            key_path: None,
            large_group: LargeGroups::default(),
        }
    }
}

/// Callbacks the server turns into metrics and logs.
pub trait Observer: Send + Sync {
    /// A group of `records` new records was written with one fsync that took `fsync_secs`.
    fn group_committed(&self, _records: usize, _fsync_secs: f64) {}
    /// The store turned read-only.
    fn read_only(&self, _why: &str) {}
    /// A durable checkpoint finished at Unix time `unix_secs` after `secs` seconds (the time the
    /// commit thread, and every write waiting on it, stood still).
    fn durable_checkpoint(&self, _unix_secs: f64, _secs: f64) {}
    /// The tree grew to `size` leaves; the WAL has `segments` files.
    fn tree_size(&self, _size: u64, _segments: usize) {}
    /// The merger folded a memtable of `rows` assertions into redb in `secs`; `frozen_rows`
    /// are still waiting.
    fn merged(&self, _rows: usize, _secs: f64, _frozen_rows: usize) {}
    /// Writers waited `secs` more for the merger to catch up (backpressure). Reported while
    /// they wait, every 50 ms at most, not only when the wait ends.
    fn write_stalled(&self, _secs: f64) {}
    /// Writers started (`true`) or stopped (`false`) waiting for the merger.
    fn writers_waiting(&self, _waiting: bool) {}
    /// A memtable was frozen: `frozen_rows` acknowledged assertions now wait for the merger.
    fn frozen(&self, _frozen_rows: usize) {}
    /// The merger spent `secs` on one chunk of a compaction; `rows` is the assertions of the
    /// input runs when this chunk finished it, else 0.
    fn compacted(&self, _rows: usize, _secs: f64) {}
    /// Reads now descend `runs` index runs (one B-tree per table each).
    fn index_runs(&self, _runs: usize) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

/// What happened to one submitted assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The assertion id.
    pub id: AssertionId,
    /// Its position in the Merkle log.
    pub log_index: u64,
    /// True if it was new; false if it was already stored.
    pub created: bool,
}

/// A stored assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAssertion {
    /// The id.
    pub id: AssertionId,
    /// Position in the Merkle log.
    pub log_index: u64,
    /// When the server received it, Unix milliseconds.
    pub received_at_ms: i64,
    /// The envelope bytes exactly as received.
    pub envelope: Vec<u8>,
}

/// The current tree head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Leaves in the tree.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

/// An inclusion proof with the root it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The leaf's index.
    pub leaf_index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The root of that tree.
    pub root: Hash,
    /// Audit path, leaf to root.
    pub path: Vec<Hash>,
}

/// A consistency proof with both roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// Root at `from`.
    pub from_root: Hash,
    /// Root at `to`.
    pub to_root: Hash,
    /// Proof hashes.
    pub proof: Vec<Hash>,
}

/// The server's checkpoint key, for `/v1/checkpoint/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointKey {
    /// Origin line.
    pub origin: String,
    /// Note key name.
    pub key_name: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
    /// Note verifier key string.
    pub vkey: String,
}

pub(crate) struct Shared {
    pub db: Arc<Database>,
    pub vlog: vlog::VlogReader,
    pub nodes: nodes::NodeReader,
    pub head: RwLock<Head>,
    pub signer: NoteSigner,
    pub origin: String,
    pub checkpoint_cache: Mutex<Option<(u64, String)>>,
    pub read_only: RwLock<Option<String>>,
    pub observer: Arc<dyn Observer>,
    /// The largest tree size a checkpoint was signed for (decision 0015).
    pub signed_hwm: AtomicU64,
    /// Bytes of envelopes queued for the commit thread.
    pub queue: ByteBudget,
    /// The memtables readers merge with redb.
    pub versions: memtable::Versions,
    /// The id filters of the runs (`runs.rs`).
    pub filters: Arc<runs::Filters>,
    /// The pinned read version readers share (published by the merger after each commit).
    pub snapshots: memtable::Snapshots,
    /// Signalled after each merge (the commit thread waits on it under backpressure).
    pub merge_lock: Mutex<()>,
    pub merged: Condvar,
    /// `StoreOptions::large_group`.
    pub large_group: LargeGroups,
}

impl Shared {
    /// Publishes a snapshot of redb as it is now (after a commit that adds or moves rows).
    pub(crate) fn refresh_snapshot(&self) -> Result<(), StoreError> {
        self.snapshots.refresh(&self.db, &self.filters)?;
        self.observer.index_runs(self.snapshots.load().runs());
        Ok(())
    }

    pub(crate) fn set_read_only(&self, why: &str) {
        // A poisoned lock still holds the reason (writing an `Option<String>` cannot be torn),
        // and `read_only()` reports poison as read-only anyway.
        let mut r = self
            .read_only
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.is_none() {
            tracing::error!(reason = why, "store is now read-only");
            *r = Some(why.to_string());
            self.observer.read_only(why);
        }
    }

    /// Why the store is read-only, if it is. A poisoned lock counts as read-only: it fails
    /// closed.
    pub(crate) fn read_only(&self) -> Option<String> {
        match self.read_only.read() {
            Ok(r) => r.clone(),
            Err(_) => Some("an internal lock was poisoned by a panic".into()),
        }
    }

    /// Signs the checkpoint of `(size, root)` and raises the signed high-water mark.
    pub(crate) fn sign(&self, size: u64, root: Hash) -> String {
        self.signed_hwm.fetch_max(size, Ordering::SeqCst);
        self.signer.sign(&Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        })
    }
}

/// A bound on the bytes waiting for the commit thread: submitters block while it is full, so
/// memory for queued writes stays bounded whatever the request sizes.
pub(crate) struct ByteBudget {
    cap: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl ByteBudget {
    pub(crate) fn new(cap: usize) -> ByteBudget {
        ByteBudget {
            cap: cap.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits until `bytes` fit (or the queue is empty, for a submission larger than the cap).
    fn acquire(shared: &Arc<Shared>, bytes: usize) -> BytePermit {
        let budget = &shared.queue;
        let mut used = budget
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *used > 0 && *used + bytes > budget.cap {
            used = budget
                .freed
                .wait(used)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *used += bytes;
        BytePermit {
            shared: shared.clone(),
            bytes,
        }
    }
}

/// Queue bytes held by one submission; given back when dropped.
pub struct BytePermit {
    shared: Arc<Shared>,
    bytes: usize,
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        let budget = &self.shared.queue;
        let mut used = budget
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *used = used.saturating_sub(self.bytes);
        budget.freed.notify_all();
    }
}

/// The store of one data directory. Cheap to share behind an `Arc`.
pub struct Store {
    shared: Arc<Shared>,
    admin: admin::AdminDb,
    // Serializes release and reject, so one id cannot be both.
    decisions: Mutex<()>,
    tx: Mutex<Option<SyncSender<commit::Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    layout: Layout,
    // True when the checkpoint key is `server.key` in the data directory (copied by snapshots).
    own_key: bool,
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The data directory itself.
    pub root: PathBuf,
    /// `wal/`
    pub wal: PathBuf,
    /// `db/`
    pub db: PathBuf,
    /// `db/stemedb.redb`
    pub redb: PathBuf,
    /// `db/admin.redb`: quarantine, agent registry, audit trail
    pub admin: PathBuf,
    /// `db/values/`
    pub values: PathBuf,
    /// `db/merkle/`
    pub merkle: PathBuf,
    /// `server.key`
    pub server_key: PathBuf,
    /// `metadata.json`
    pub metadata: PathBuf,
    /// `control.sock`: the Unix socket through which a running server takes snapshots and
    /// seals WAL segments for `stemedb backup` and `stemedb wal-archive`.
    pub control_socket: PathBuf,
    /// `LOCK`: the exclusive lock a server or an offline operation holds ([`DirLock`]).
    pub lock: PathBuf,
}

impl Layout {
    /// The layout under `data_dir`.
    pub fn new(data_dir: &Path) -> Layout {
        let db = data_dir.join("db");
        Layout {
            root: data_dir.to_path_buf(),
            wal: data_dir.join("wal"),
            redb: db.join("stemedb.redb"),
            admin: db.join("admin.redb"),
            values: db.join("values"),
            merkle: db.join("merkle"),
            server_key: data_dir.join("server.key"),
            metadata: data_dir.join("metadata.json"),
            control_socket: data_dir.join("control.sock"),
            lock: data_dir.join("LOCK"),
            db,
        }
    }
}

/// Reads the server's checkpoint key, creating it (mode 0600, fsync'd) on first start.
fn load_or_create_key(path: &Path) -> Result<SigningKey, StoreError> {
    use std::io::Write as _;
    match std::fs::read_to_string(path) {
        Ok(pem) => stemedb_core::signing_key_from_pem(&pem)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom_seed(&mut seed).map_err(io_at(path))?;
            let key = stemedb_core::signing_key_from_seed(&seed);
            let pem = stemedb_core::signing_key_to_pem(&key);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(io_at(path))?;
            f.write_all(pem.as_bytes()).map_err(io_at(path))?;
            f.sync_all().map_err(io_at(path))?;
            if let Some(dir) = path.parent() {
                stemedb_wal::sync_dir(dir).map_err(io_at(dir))?;
            }
            tracing::info!(path = %path.display(), "created the server's checkpoint key");
            Ok(key)
        }
        Err(e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn getrandom_seed(seed: &mut [u8; 32]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(seed)
}

impl Store {
    /// Opens the store in `data_dir` (the caller holds the data-directory lock), recovers and
    /// replays, and starts the commit thread.
    pub fn open(
        data_dir: &Path,
        opts: StoreOptions,
        observer: Arc<dyn Observer>,
    ) -> Result<Store, OpenError> {
        stemedb_merkle::validate_origin(&opts.origin)
            .map_err(|e| OpenError::BadOption(format!("log origin: {e}")))?;
        let layout = Layout::new(data_dir);
        stemedb_wal::create_dir_durable(&layout.db).map_err(io_at(&layout.db))?;
        let key = match &opts.key_path {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(io_at(path))?;
                stemedb_core::signing_key_from_pem(&pem)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?
            }
            None => load_or_create_key(&layout.server_key)?,
        };
        let signer = NoteSigner::new(opts.origin.clone(), key);
        let (writer, shared, merger, merge_rx) =
            commit::Writer::recover(&layout, &opts, signer, observer)?;
        let merger_shared = shared.clone();
        let merger_thread = std::thread::Builder::new()
            .name("stemedb-merger".into())
            .spawn(move || {
                // A panic (redb's, on a damaged page) must not leave writers waiting on a merger
                // that is gone: the store turns read-only, as on a failed merge. The frozen
                // memtables stay in the readers' version and the WAL holds every acked write.
                let run =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| merger.run(merge_rx)));
                if let Err(panic) = run {
                    merger_shared.set_read_only(&format!(
                        "the merger stopped on a panic: {}",
                        panic_text(panic.as_ref())
                    ));
                    merger_shared.merged.notify_all();
                }
            })
            .map_err(io_at(data_dir))?;
        let (tx, rx): (SyncSender<commit::Job>, Receiver<commit::Job>) =
            sync_channel(opts.queue_depth);
        let thread = std::thread::Builder::new()
            .name("stemedb-commit".into())
            .spawn(move || {
                writer.run(rx);
                // The writer's drop closes the merger's channel: it merges what is left,
                // makes a final durable checkpoint and stops.
                let _ = merger_thread.join();
            })
            .map_err(io_at(data_dir))?;
        let store = Store {
            shared,
            admin: admin::AdminDb::open(&layout.admin)?,
            decisions: Mutex::new(()),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            own_key: opts.key_path.is_none(),
            layout,
        };
        store.finish_interrupted_releases()?;
        Ok(store)
    }

    /// Queues verified assertions (each with its envelope bytes as received) and returns their
    /// [`Completion`]: one outcome per item, once every item is durable and applied, or failed.
    /// Blocks while the queue is full (by submissions or by bytes).
    pub fn submit(&self, items: Vec<Entry>, received_at_ms: i64) -> Completion {
        let (completer, completion) = completion::pair(items.len());
        if let Some(why) = self.read_only() {
            let n = items.len();
            completer.complete(
                (0..n)
                    .map(|_| Err(StoreError::ReadOnly(why.clone())))
                    .collect(),
            );
            return completion;
        }
        let sender = self.tx.lock().ok().and_then(|g| g.clone());
        let Some(sender) = sender else {
            let n = items.len();
            completer.complete((0..n).map(|_| Err(StoreError::Closed)).collect());
            return completion;
        };
        let bytes = items.iter().map(Entry::len).sum();
        let permit = ByteBudget::acquire(&self.shared, bytes);
        let submission = Submission {
            items,
            received_at_ms,
            reply: completer,
            permit: Some(permit),
        };
        // A send error hands the submission back: the commit thread has stopped taking work.
        if let Err(e) = sender.send(commit::Job::Write(submission))
            && let commit::Job::Write(s) = e.0
        {
            let n = s.items.len();
            s.reply
                .complete((0..n).map(|_| Err(StoreError::Closed)).collect());
        }
        completion
    }

    /// Why the store is read-only, if it is (a poisoned lock counts as read-only).
    pub fn read_only(&self) -> Option<String> {
        self.shared.read_only()
    }

    /// The current tree head (covers every acknowledged write). The head is written whole, so a
    /// poisoned lock still holds a true head; it is never reported as empty.
    pub fn head(&self) -> Head {
        *self
            .shared
            .head
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads one assertion.
    pub fn get(&self, id: &AssertionId) -> Result<Option<StoredAssertion>, StoreError> {
        let view = self.view()?;
        let Some(rec) = view.assertion(id)? else {
            return Ok(None);
        };
        // The log index comes from an unchecked row: the (checksummed) lens row at that index
        // must name the same assertion, or the answer would carry another one's position.
        let row = view.by_seq()?.row(rec.log_index)?;
        if row.id != *id {
            return Err(StoreError::Corrupt(format!(
                "assertions row of {id} names log index {}, whose by_seq row is {}",
                rec.log_index, row.id
            )));
        }
        let envelope = self.shared.vlog.read(rec.pointer)?;
        Ok(Some(StoredAssertion {
            id: *id,
            log_index: rec.log_index,
            received_at_ms: rec.received_at_ms,
            envelope,
        }))
    }

    /// The signed checkpoint of the current head (signed on demand, cached per tree size).
    pub fn signed_checkpoint(&self) -> (Head, String) {
        let head = self.head();
        if let Ok(cache) = self.shared.checkpoint_cache.lock()
            && let Some((size, note)) = cache.as_ref()
            && *size == head.size
        {
            return (head, note.clone());
        }
        let note = self.shared.sign(head.size, head.root);
        if let Ok(mut cache) = self.shared.checkpoint_cache.lock() {
            *cache = Some((head.size, note.clone()));
        }
        (head, note)
    }

    /// The checkpoint key.
    pub fn checkpoint_key(&self) -> CheckpointKey {
        CheckpointKey {
            origin: self.shared.origin.clone(),
            key_name: self.shared.signer.name().to_string(),
            public_key: self.shared.signer.public_key(),
            vkey: self.shared.signer.vkey(),
        }
    }

    /// Root of the tree of the first `size` leaves (`size` ≤ the current size).
    pub fn root_at(&self, size: u64) -> Result<Hash, StoreError> {
        let head = self.head();
        if size > head.size {
            return Err(StoreError::OutOfRange(format!(
                "tree size {size} is larger than the current size {}",
                head.size
            )));
        }
        if size == head.size {
            return Ok(head.root);
        }
        stemedb_merkle::root(&self.shared.nodes, size)
            .map_err(|e| StoreError::Corrupt(format!("Merkle node files: {e}")))
    }

    /// Inclusion proof of `id` in the tree of `tree_size` leaves (default: current); `None`
    /// when the id is unknown.
    pub fn inclusion_proof(
        &self,
        id: &AssertionId,
        tree_size: Option<u64>,
    ) -> Result<Option<InclusionProof>, StoreError> {
        let size = tree_size.unwrap_or_else(|| self.head().size);
        let root = self.root_at(size)?;
        let Some(rec) = self.view()?.assertion(id)? else {
            return Ok(None);
        };
        let index = rec.log_index;
        if index >= size {
            return Err(StoreError::OutOfRange(format!(
                "assertion {id} has log index {index}, not inside a tree of size {size}"
            )));
        }
        let path = stemedb_merkle::inclusion_proof(&self.shared.nodes, index, size)
            .map_err(|e| StoreError::Corrupt(format!("Merkle node files: {e}")))?;
        // Checked before it leaves: a damaged node file answers an error, never a proof that
        // fails the client's check (or one that passes against a damaged root).
        let leaf = stemedb_merkle::leaf_hash(id.as_bytes());
        if !stemedb_merkle::verify_inclusion(&leaf, index, size, &path, &root) {
            return Err(StoreError::Corrupt(format!(
                "Merkle node files: the inclusion proof of {id} (log index {index}) does not \
                 verify against the root of tree size {size}"
            )));
        }
        Ok(Some(InclusionProof {
            leaf_index: index,
            tree_size: size,
            root,
            path,
        }))
    }

    /// Consistency proof from `from` to `to` (default: current), with both roots.
    pub fn consistency_proof(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof, StoreError> {
        let to = to.unwrap_or_else(|| self.head().size);
        if from > to {
            return Err(StoreError::OutOfRange(format!(
                "from ({from}) is larger than to ({to})"
            )));
        }
        let to_root = self.root_at(to)?;
        let from_root = self.root_at(from)?;
        let proof = stemedb_merkle::consistency_proof(&self.shared.nodes, from, to)
            .map_err(|e| StoreError::Corrupt(format!("Merkle node files: {e}")))?;
        if !stemedb_merkle::verify_consistency(from, to, &from_root, &to_root, &proof) {
            return Err(StoreError::Corrupt(format!(
                "Merkle node files: the consistency proof from tree size {from} to {to} does \
                 not verify against their roots"
            )));
        }
        Ok(ConsistencyProof {
            from,
            to,
            from_root,
            to_root,
            proof,
        })
    }

    /// The log index of `id`, if the log holds it.
    pub fn log_index_of(&self, id: &AssertionId) -> Result<Option<u64>, StoreError> {
        Ok(self.view()?.assertion(id)?.map(|r| r.log_index))
    }

    /// A pinned version of the memtables and a redb read transaction.
    pub(crate) fn view(&self) -> Result<memtable::View, StoreError> {
        memtable::View::open(&self.shared.versions, &self.shared.snapshots)
    }

    /// The agent that signed `id`, if the log holds it.
    pub fn agent_of(&self, id: &AssertionId) -> Result<Option<[u8; 32]>, StoreError> {
        let view = self.view()?;
        let Some(rec) = view.assertion(id)? else {
            return Ok(None);
        };
        let li = rec.log_index;
        let row = view.by_seq()?.get(li)?.ok_or_else(|| {
            StoreError::Corrupt(format!("assertion {id} at {li} has no by_seq row"))
        })?;
        Ok(Some(row.agent))
    }

    /// Holds assertions back from the log, durably (one fsync'd commit of `admin.redb`) before
    /// returning. Per entry: true if new, false if that id was already quarantined.
    pub fn quarantine(&self, entries: &[QuarantineEntry]) -> Result<Vec<bool>, StoreError> {
        if let Some(why) = self.read_only() {
            return Err(StoreError::ReadOnly(why));
        }
        self.admin.quarantine(entries)
    }

    /// The quarantine entry of `id`, if any.
    pub fn quarantined(&self, id: &AssertionId) -> Result<Option<QuarantineEntry>, StoreError> {
        self.admin.quarantined(id)
    }

    /// Up to `limit` quarantine entries in id order after `after`, and the total count.
    pub fn quarantine_list(
        &self,
        after: Option<&AssertionId>,
        limit: usize,
    ) -> Result<(Vec<QuarantineEntry>, u64), StoreError> {
        self.admin.quarantine_list(after, limit)
    }

    /// Releases a quarantined assertion into the log: verifies it again, submits it through the
    /// normal write path, waits until it is durable and applied, then removes the entry and
    /// records who released it. `None` when `id` is not quarantined. Blocks.
    pub fn release(
        &self,
        id: &AssertionId,
        actor: &str,
        note: &str,
    ) -> Result<Option<Outcome>, StoreError> {
        let _decision = self.decisions.lock().map_err(|_| StoreError::Closed)?;
        let Some(entry) = self.admin.quarantined(id)? else {
            return Ok(None);
        };
        let verified = stemedb_core::check(entry.envelope.as_bytes()).map_err(|e| {
            StoreError::Corrupt(format!("quarantined {id} no longer verifies: {e}"))
        })?;
        let outcome = self
            .submit(
                vec![Entry::new(verified, entry.envelope.into_bytes())],
                entry.received_at_ms,
            )
            .wait()
            .into_iter()
            .next()
            .ok_or(StoreError::Closed)??;
        self.admin.remove(
            id,
            admin::AuditDraft {
                at_ms: now_ms(),
                actor,
                action: "release",
                target: id.to_hex(),
                detail: format!("log_index {}; {note}", outcome.log_index),
            },
        )?;
        Ok(Some(outcome))
    }

    /// Drops a quarantined assertion for good, recording who and why. False when `id` is not
    /// quarantined.
    pub fn reject(&self, id: &AssertionId, actor: &str, reason: &str) -> Result<bool, StoreError> {
        let _decision = self.decisions.lock().map_err(|_| StoreError::Closed)?;
        self.admin.remove(
            id,
            admin::AuditDraft {
                at_ms: now_ms(),
                actor,
                action: "reject",
                target: id.to_hex(),
                detail: reason.to_string(),
            },
        )
    }

    /// Removes the entries of ids the log already holds: a release that crashed between the
    /// log write and the entry's removal.
    fn finish_interrupted_releases(&self) -> Result<(), StoreError> {
        let mut after: Option<AssertionId> = None;
        loop {
            let (page, _) = self.admin.quarantine_list(after.as_ref(), 1000)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id);
            for e in &page {
                if let Some(li) = self.log_index_of(&e.id)? {
                    tracing::info!(id = %e.id, log_index = li, "finishing an interrupted release");
                    self.admin.remove(
                        &e.id,
                        admin::AuditDraft {
                            at_ms: now_ms(),
                            actor: "stemedb",
                            action: "release_completed",
                            target: e.id.to_hex(),
                            detail: format!("found in the log at {li} on start"),
                        },
                    )?;
                }
            }
        }
    }

    /// The registry record of an agent.
    pub fn agent(&self, agent: &[u8; 32]) -> Result<Option<AgentRecord>, StoreError> {
        self.admin.agent(agent)
    }

    /// Every registered agent.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.admin.agents()
    }

    /// Creates or replaces an agent record (audited). Returns the previous record.
    pub fn put_agent(
        &self,
        key: &[u8; 32],
        rec: &AgentRecord,
        actor: &str,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let detail = serde_json::to_string(rec).unwrap_or_default();
        self.admin.put_agent(
            key,
            rec,
            admin::AuditDraft {
                at_ms: now_ms(),
                actor,
                action: "agent_put",
                target: hex::encode(key),
                detail,
            },
        )
    }

    /// Removes an agent from the registry (audited). False when it was not registered.
    pub fn delete_agent(&self, key: &[u8; 32], actor: &str) -> Result<bool, StoreError> {
        self.admin.delete_agent(
            key,
            admin::AuditDraft {
                at_ms: now_ms(),
                actor,
                action: "agent_delete",
                target: hex::encode(key),
                detail: String::new(),
            },
        )
    }

    /// The newest `limit` audit records, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.admin.audit(limit)
    }

    /// Stops the commit thread after it has answered everything queued, with a final durable
    /// checkpoint.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut t) = self.thread.lock()
            && let Some(handle) = t.take()
        {
            let _ = handle.join();
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    //! Failure paths that need the store's insides: a bad row, a poisoned lock, a failed fsync,
    //! the signed high-water mark.

    use super::*;

    fn signed(n: u64) -> stemedb_core::Verified {
        let key = stemedb_core::signing_key_from_seed(&[9; 32]);
        let agent = hex::encode(key.verifying_key().as_bytes());
        let payload = format!(
            r#"{{"v":1,"subject":"t/s{n}","predicate":"p","object":{n},"agent":"{agent}","ts":{n}}}"#
        );
        stemedb_core::sign(&key, payload.into_bytes()).expect("valid")
    }

    fn entry(n: u64) -> Entry {
        let v = signed(n);
        let raw = v.envelope().encode();
        Entry::new(v, raw)
    }

    fn submit(store: &Store, items: Vec<Entry>) -> Vec<Result<Outcome, StoreError>> {
        store.submit(items, 1).wait()
    }

    fn open(dir: &Path, opts: StoreOptions) -> Store {
        Store::open(dir, opts, Arc::new(NoObserver)).expect("open")
    }

    #[test]
    fn a_bad_assertions_row_fails_the_item_instead_of_making_it_new() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), StoreOptions::default());
        let first = submit(&store, vec![entry(1)]);
        assert_eq!(first[0].as_ref().map(|o| o.log_index).ok(), Some(0));
        store.checkpoint().expect("merged into redb");
        // Damage the stored row of that id, in the run that holds it.
        let id = *entry(1).id().as_bytes();
        let holder = {
            use redb::ReadableDatabase as _;
            let r = store.shared.db.begin_read().expect("read");
            runs::runs_of(&r)
                .expect("runs")
                .into_iter()
                .find(|&run| {
                    let name = runs::table_name(runs::Part::Assertions, run);
                    r.open_table(runs::rows_def(&name))
                        .expect("table")
                        .get(id.as_slice())
                        .expect("get")
                        .is_some()
                })
                .expect("a run holds the id")
        };
        let txn = store.shared.db.begin_write().expect("txn");
        {
            let name = runs::table_name(runs::Part::Assertions, holder);
            let mut t = txn.open_table(runs::rows_def(&name)).expect("table");
            t.insert(id.as_slice(), [1u8; 5].as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
        store.shared.refresh_snapshot().expect("snapshot");
        let again = submit(&store, vec![entry(1), entry(2)]);
        assert!(
            matches!(again[0], Err(StoreError::Unchecked(_))),
            "{:?}",
            again[0]
        );
        assert_eq!(again[1].as_ref().map(|o| o.log_index).ok(), Some(1));
        assert_eq!(store.head().size, 2, "no second log index for one id");
    }

    /// A merged memtable that a reader still pins when it leaves the version is freed by the
    /// merger once the reader lets go, not by the reader: freeing 100,000 rows takes tens of
    /// milliseconds, which would stall the commit thread (every write) or a query.
    #[test]
    fn the_merger_frees_a_merged_memtable_that_a_reader_pinned() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(
            tmp.path(),
            StoreOptions {
                memtable_ms: 60_000,
                ..StoreOptions::default()
            },
        );
        assert!(
            submit(&store, vec![entry(1), entry(2)])
                .iter()
                .all(Result::is_ok)
        );
        let view = store.view().expect("view");
        let active = view.version.active().clone();
        let serial = active.serial;
        let weak = Arc::downgrade(&active);
        drop(active);
        store.checkpoint().expect("merged into redb");
        assert!(
            !store
                .shared
                .versions
                .load()
                .mems
                .iter()
                .any(|m| m.serial == serial),
            "the memtable is merged and out of the version"
        );
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || drop(view))
            .expect("spawn")
            .join()
            .expect("join");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // `strong_count`, not `upgrade`: a strong reference taken here could be the last one.
        while weak.strong_count() > 0 {
            assert!(std::time::Instant::now() < deadline, "never freed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let freed = memtable::FREED_ON
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(s, _)| *s == serial)
            .map(|(_, t)| t.clone())
            .collect::<Vec<_>>();
        assert_eq!(freed, vec!["stemedb-merger".to_string()]);
    }

    #[test]
    fn tables_of_a_run_meta_does_not_name_are_never_read_and_dropped_after_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            memtable_rows: 10,
            memtable_ms: 1,
            compaction_fanout: 2,
            compaction_chunk_rows: 3,
            ..StoreOptions::default()
        };
        let ids: Vec<AssertionId> = (0..60).map(|n| entry(n).id()).collect();
        {
            let store = open(tmp.path(), opts.clone());
            for n in 0..60 {
                assert!(submit(&store, vec![entry(n)])[0].is_ok());
            }
            store.checkpoint().expect("merged");
            // What a compaction cut off by a crash leaves: tables and a filter of a run that
            // `meta.runs` does not name, holding a row no assertion has.
            let txn = store.shared.db.begin_write().expect("txn");
            {
                let name = runs::table_name(runs::Part::Subject, 999);
                let mut t = txn.open_table(runs::keys_def(&name)).expect("table");
                t.insert(b"t/ghost".as_slice(), ()).expect("insert");
                let name = runs::table_name(runs::Part::Assertions, 999);
                let mut t = txn.open_table(runs::rows_def(&name)).expect("table");
                t.insert([7u8; 32].as_slice(), [1u8; 32].as_slice())
                    .expect("insert");
                let mut f = txn.open_table(runs::RUN_FILTERS).expect("filters");
                f.insert(999, runs::RunFilter::for_rows(1).encode().as_slice())
                    .expect("insert");
            }
            txn.commit().expect("commit");
            store.close();
        }
        let store = open(tmp.path(), opts);
        // Nothing reads them, before or after the merger drops them.
        assert!(
            store
                .get(&AssertionId::from_bytes([7u8; 32]))
                .expect("get")
                .is_none()
        );
        let q = Query {
            subject: Some("t/ghost".into()),
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        let answer = store.query(&q, &|_| 1.0).expect("query");
        assert!(answer.results.is_empty(), "an orphan row was read");
        {
            use redb::{ReadableDatabase as _, TableHandle as _};
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let names = loop {
                let r = store.shared.db.begin_read().expect("read");
                let names: Vec<String> = r
                    .list_tables()
                    .expect("list")
                    .map(|t| t.name().to_string())
                    .collect();
                if !names.iter().any(|n| n.ends_with("@999"))
                    || std::time::Instant::now() > deadline
                {
                    break names;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            assert!(
                !names.iter().any(|n| n.ends_with("@999")),
                "the merger never dropped the orphan tables: {names:?}"
            );
            let r = store.shared.db.begin_read().expect("read");
            let filters = r.open_table(runs::RUN_FILTERS).expect("filters");
            assert!(filters.get(999).expect("get").is_none());
            let live = runs::runs_of(&r).expect("runs");
            assert!(live.len() > 1, "the store holds runs: {live:?}");
        }
        for id in &ids {
            assert!(store.get(id).expect("get").is_some(), "{id} lost");
        }
        assert_eq!(store.head().size, 60);
    }

    /// Changes `meta` of the closed store in `dir`.
    fn edit_meta(dir: &Path, f: impl FnOnce(&mut redb::Table<'_, &'static str, &'static [u8]>)) {
        edit_redb(dir, |txn| f(&mut txn.open_table(META).expect("meta")));
    }

    /// A closed store holding entries 1 and 2 (log indexes 0 and 1).
    fn closed_store_of_two() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), StoreOptions::default());
        submit(&store, vec![entry(1), entry(2)]);
        store.close();
        tmp
    }

    /// Runs `f` in one committed write transaction on the closed store at `dir`, behind its
    /// back (what damage or an older server would leave).
    fn edit_redb(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
        let db = redb::Database::open(Layout::new(dir).redb).expect("redb");
        let txn = db.begin_write().expect("txn");
        f(&txn);
        txn.commit().expect("commit");
    }

    /// Runs `f` on every run's table of `part` (run 0 included) in one committed write
    /// transaction on the closed store at `dir`; returns how many calls changed something.
    fn edit_runs<V: redb::Value + 'static>(
        dir: &Path,
        part: runs::Part,
        def: fn(&str) -> redb::TableDefinition<'_, &'static [u8], V>,
        mut f: impl FnMut(&mut redb::Table<&'static [u8], V>) -> bool,
    ) -> usize {
        use redb::ReadableDatabase as _;
        let db = redb::Database::open(Layout::new(dir).redb).expect("redb");
        let mut runs = runs::runs_of(&db.begin_read().expect("read")).expect("runs");
        runs.push(0);
        let txn = db.begin_write().expect("txn");
        let mut changed = 0;
        for run in runs {
            let name = runs::table_name(part, run);
            let mut t = txn.open_table(def(&name)).expect("table");
            if f(&mut t) {
                changed += 1;
            }
        }
        txn.commit().expect("commit");
        changed
    }

    fn meta_of(store: &Store, key: &str) -> Option<u64> {
        use redb::ReadableDatabase as _;
        let r = store.shared.db.begin_read().expect("read");
        let meta = r.open_table(META).expect("meta");
        meta.get(key)
            .expect("get")
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
    }

    /// An `assertions` row whose log index was damaged: reading the assertion is an error,
    /// not an answer that carries another assertion's position.
    #[test]
    fn a_damaged_assertions_row_is_caught_by_its_lens_row() {
        use redb::ReadableTable as _;
        let tmp = closed_store_of_two();
        let id = entry(2).id();
        let moved = edit_runs(tmp.path(), runs::Part::Assertions, runs::rows_def, |t| {
            let row = t.get(id.as_bytes().as_slice()).expect("get");
            let Some(row) = row.map(|g| g.value().to_vec()) else {
                return false;
            };
            let mut rec = keys::AssertionRecord::decode(&row).expect("decode");
            assert_eq!(rec.log_index, 1);
            rec.log_index = 0;
            t.insert(id.as_bytes().as_slice(), rec.encode().as_slice())
                .expect("insert");
            true
        });
        assert_eq!(moved, 1, "the row of {id} is in one run");
        let store = open(tmp.path(), StoreOptions::default());
        match store.get(&id) {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("log index 0"), "{why}"),
            other => panic!("a damaged assertions row was answered: {other:?}"),
        }
        assert!(store.get(&entry(1).id()).expect("the other").is_some());
    }

    /// A subject-index key whose log index was damaged so that it names another assertion: the
    /// query that finds it answers an error, not the other assertion as this group's winner.
    #[test]
    fn a_damaged_index_key_is_caught_by_the_winners_statement() {
        use redb::ReadableTable as _;
        let tmp = closed_store_of_two();
        let subject = runs::Part::of_kind(keys::IndexKind::Subject);
        let moved = edit_runs(tmp.path(), subject, runs::keys_def, |t| {
            let keys: Vec<Vec<u8>> = t
                .iter()
                .expect("iter")
                .map(|r| r.expect("row").0.value().to_vec())
                .collect();
            let Some(key) = keys
                .into_iter()
                .find(|k| keys::key_suffix(k) == Some((1, 0)))
            else {
                return false;
            };
            // `t/s1`'s row (ts 1, log index 0) now names log index 1 (`t/s2`).
            let mut damaged = key.clone();
            let n = damaged.len();
            damaged[n - 8..].copy_from_slice(&1u64.to_be_bytes());
            t.remove(key.as_slice()).expect("remove");
            t.insert(damaged.as_slice(), ()).expect("insert");
            true
        });
        assert_eq!(moved, 1, "t/s1's key is in one run");
        let store = open(tmp.path(), StoreOptions::default());
        let q = |subject: &str| Query {
            subject: Some(subject.into()),
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        match store.query(&q("t/s1"), &|_| 1.0) {
            Err(QueryError::Store(StoreError::Corrupt(why))) => {
                assert!(why.contains("t/s2"), "{why}")
            }
            other => panic!("a damaged index key was answered: {other:?}"),
        }
        let raw = Query {
            lens: Lens::Raw,
            ..q("t/s1")
        };
        assert!(matches!(
            store.query(&raw, &|_| 1.0),
            Err(QueryError::Store(StoreError::Corrupt(_)))
        ));
        let other = store
            .query(&q("t/s2"), &|_| 1.0)
            .expect("the undamaged group");
        assert_eq!(other.results.len(), 1);
    }

    /// A format-4 store (rows without the checksum) opens as it is, is marked 5, reads its
    /// older rows and writes checksummed ones from then on.
    #[test]
    fn a_format_4_store_reads_its_unchecked_rows_and_checksums_new_ones() {
        use redb::{ReadableDatabase as _, ReadableTable as _};
        let tmp = closed_store_of_two();
        // As a format-4 server leaves it: 129-byte rows.
        edit_redb(tmp.path(), |txn| {
            let mut t = txn.open_table(BY_SEQ).expect("by_seq");
            for li in 0..2u64 {
                let row = t.get(li).expect("get").map(|g| g.value().to_vec());
                let row = row.expect("row");
                t.insert(li, &row[..129]).expect("insert");
            }
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert("format", 4u64.to_le_bytes().as_slice())
                .expect("format");
        });
        let store = open(tmp.path(), StoreOptions::default());
        assert_eq!(meta_of(&store, "format"), Some(FORMAT_VERSION));
        let h = store
            .history("t/s1", "p", None, None, 10, 100)
            .expect("an older row");
        assert_eq!(h.entries.len(), 1);
        submit(&store, vec![entry(3)]);
        store.close();
        drop(store);
        let db = redb::Database::open(Layout::new(tmp.path()).redb).expect("redb");
        let r = db.begin_read().expect("read");
        let t = r.open_table(BY_SEQ).expect("by_seq");
        let len = |li: u64| t.get(li).expect("get").map(|g| g.value().len());
        assert_eq!((len(0), len(2)), (Some(129), Some(keys::INDEX_VALUE_BYTES)));
        drop((t, r, db));
        assert!(verify::check_store(tmp.path(), None).ok());
    }

    #[test]
    fn a_format_3_store_keeps_its_records_as_received_and_packs_what_comes_next() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            memtable_rows: 5,
            memtable_ms: 1,
            checkpoint_interval_ms: 3_600_000,
            ..StoreOptions::default()
        };
        // A value log of envelopes as received, which is what a format-3 server writes.
        open(tmp.path(), opts.clone()).close();
        edit_meta(tmp.path(), |m| {
            m.insert("pack_from", u64::MAX.to_le_bytes().as_slice())
                .expect("insert");
        });
        // Twenty writes merged into redb whose durable checkpoint fails: the next open must
        // rebuild their value-log records from the WAL, where redb's pointers say.
        {
            let failing = StoreOptions {
                fail_checkpoint_after: Some(0),
                ..opts.clone()
            };
            let store = open(tmp.path(), failing);
            for n in 0..20 {
                assert!(submit(&store, vec![entry(n)])[0].is_ok());
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while meta_of(&store, "applied") != Some(20) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the merger never applied 20"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(meta_of(&store, "durable"), Some(0));
            store.close();
        }
        // As a format-3 server leaves it.
        edit_meta(tmp.path(), |m| {
            m.insert("format", 3u64.to_le_bytes().as_slice())
                .expect("insert");
            m.remove("pack_from").expect("remove");
        });
        {
            let store = open(tmp.path(), opts.clone());
            assert_eq!(meta_of(&store, "format"), Some(FORMAT_VERSION));
            assert_eq!(meta_of(&store, "pack_from"), Some(20));
            for n in 20..40 {
                assert!(submit(&store, vec![entry(n)])[0].is_ok());
            }
            store.close();
        }
        let store = open(tmp.path(), opts);
        for n in 0..40 {
            let want = signed(n).envelope().encode();
            let id = entry(n).id();
            let got = store.get(&id).expect("get").expect("stored");
            assert_eq!(got.envelope, want, "envelope {n} changed");
            let rec = store.view().expect("view").assertion(&id).expect("row");
            let len = rec.expect("row").pointer.len as usize;
            if n < 20 {
                assert_eq!(len, want.len(), "record {n} of the format-3 store");
            } else {
                assert!(
                    len * 10 < want.len() * 7,
                    "record {n}: {len} of {}",
                    want.len()
                );
            }
        }
        drop(store);
        let report = verify::check_store(tmp.path(), None);
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.assertions_checked, 40);
    }

    #[test]
    fn verify_finds_a_lens_row_that_disagrees_with_its_envelope() {
        let tmp = closed_store_of_two();
        assert!(verify::check_store(tmp.path(), None).ok());
        // Raise one row's confidence behind the store's back: a lens would rank it wrongly.
        use redb::ReadableTable as _;
        edit_redb(tmp.path(), |txn| {
            let mut t = txn.open_table(BY_SEQ).expect("by_seq");
            let row = t
                .get(1)
                .expect("get")
                .map(|g| g.value().to_vec())
                .expect("row");
            let mut v = keys::IndexValue::decode(&row).expect("decode");
            v.confidence = 0.5;
            t.insert(1, v.encode().as_slice()).expect("insert");
        });
        let report = verify::check_store(tmp.path(), None);
        assert!(!report.ok());
        let text = format!("{report:?}");
        assert!(
            text.contains("by_seq row 1 disagrees with its envelope: confidence 0.5"),
            "{text}"
        );
    }

    /// redb does not check its pages on read: a flipped byte in a `by_seq` row (here its
    /// agent) must answer an error, not a wrong agent, both live and in `stemedb verify`.
    #[test]
    fn a_damaged_lens_row_answers_an_error_not_a_wrong_answer() {
        let tmp = closed_store_of_two();
        use redb::ReadableTable as _;
        edit_redb(tmp.path(), |txn| {
            let mut t = txn.open_table(BY_SEQ).expect("by_seq");
            let mut row = t
                .get(1)
                .expect("get")
                .map(|g| g.value().to_vec())
                .expect("row");
            assert_eq!(row.len(), keys::INDEX_VALUE_BYTES);
            row[40] ^= 0x5a;
            t.insert(1, row.as_slice()).expect("insert");
        });
        let store = open(tmp.path(), StoreOptions::default());
        // entry(2) is log index 1: its group's history reads the row.
        match store.history("t/s2", "p", None, None, 10, 100) {
            Err(QueryError::Store(StoreError::Corrupt(why))) => {
                assert!(why.contains("checksum mismatch"), "{why}");
            }
            other => panic!("a damaged row was read as {other:?}"),
        }
        let h = store
            .history("t/s1", "p", None, None, 10, 100)
            .expect("the other row");
        assert_eq!(h.entries.len(), 1);
        store.close();
        drop(store);
        let report = verify::check_store(tmp.path(), None);
        assert!(!report.ok());
        let text = format!("{report:?}");
        assert!(
            text.contains("by_seq row 1") && text.contains("checksum"),
            "{text}"
        );
    }

    #[test]
    fn a_duplicate_in_a_group_whose_fsync_failed_shares_the_failure() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            wal: WalOptions {
                fail_fsync_after: Some(0),
                ..WalOptions::default()
            },
            ..StoreOptions::default()
        };
        // The first durable checkpoint does not touch the WAL's fsync counter.
        let store = open(tmp.path(), opts);
        let results = submit(&store, vec![entry(1), entry(1)]);
        for r in &results {
            assert!(matches!(r, Err(StoreError::OutcomeUnknown(_))), "{r:?}");
        }
        // Later writes are refused outright: nothing of them is written.
        let later = submit(&store, vec![entry(2)]);
        assert!(
            matches!(later[0], Err(StoreError::ReadOnly(_))),
            "{later:?}"
        );
    }

    #[test]
    fn a_poisoned_lock_reports_read_only_and_keeps_the_head() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path(), StoreOptions::default());
        submit(&store, vec![entry(1), entry(2)]);
        let shared = store.shared.clone();
        let _ = std::thread::spawn(move || {
            let _r = shared.read_only.write();
            let _h = shared.head.write();
            panic!("poison both locks");
        })
        .join();
        assert!(store.read_only().is_some(), "a poisoned lock is read-only");
        assert_eq!(store.head().size, 2, "the head survives the poison");
        let r = submit(&store, vec![entry(3)]);
        assert!(matches!(r[0], Err(StoreError::ReadOnly(_))), "{r:?}");
    }

    /// A merger that dies (a redb panic on a damaged page) turns the store read-only: writers
    /// are refused instead of waiting forever on backpressure, reads still see every acked
    /// write, and a restart replays them from the WAL.
    #[test]
    fn a_merger_panic_turns_the_store_read_only_instead_of_stalling_writers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            memtable_rows: 5,
            memtable_max_frozen_rows: 10,
            panic_merger_at: Some(10),
            ..StoreOptions::default()
        };
        let store = Arc::new(open(tmp.path(), opts.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = store.clone();
        let writes = std::thread::spawn(move || {
            let results: Vec<(u64, Result<Outcome, StoreError>)> = (0..200)
                .map(|n| (n, submit(&writer, vec![entry(n)]).remove(0)))
                .collect();
            let _ = tx.send(results);
        });
        let results = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("writers stalled behind a merger that is gone");
        writes.join().expect("the writer thread");
        let why = store.read_only().expect("the store is read-only");
        assert!(why.contains("merger"), "{why}");
        let acked: Vec<u64> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| *n)
            .collect();
        assert!(
            results
                .iter()
                .any(|(_, r)| matches!(r, Err(StoreError::ReadOnly(_)))),
            "no write was refused: {results:?}"
        );
        assert!(
            acked.len() > 10,
            "the merger merged before the hook: {acked:?}"
        );
        for &n in &acked {
            assert!(
                store.get(&entry(n).id()).expect("get").is_some(),
                "{n} unreadable"
            );
        }
        let store = Arc::into_inner(store).expect("the only handle");
        store.close();
        drop(store);
        let store = open(
            tmp.path(),
            StoreOptions {
                panic_merger_at: None,
                ..opts
            },
        );
        assert_eq!(store.head().size, acked.len() as u64);
        for &n in &acked {
            assert!(
                store.get(&entry(n).id()).expect("get").is_some(),
                "{n} lost"
            );
        }
        assert!(store.read_only().is_none());
    }

    /// A damaged Merkle node file answers an error, never a proof that fails the client's
    /// check: every proof is verified against its roots before it is returned.
    #[test]
    fn proofs_from_a_damaged_node_file_are_refused_not_served() {
        let tmp = tempfile::tempdir().expect("tempdir");
        {
            let store = open(tmp.path(), StoreOptions::default());
            submit(&store, (0..40).map(entry).collect());
        }
        // Leaf 5's hash, which the proofs of leaf 4 and of tree size 5 read (the head's root,
        // 32 + 8 leaves, does not).
        let leaves = tmp.path().join("db/merkle/level-00.dat");
        let mut bytes = std::fs::read(&leaves).expect("level 0");
        bytes[5 * 32] ^= 0x5a;
        std::fs::write(&leaves, &bytes).expect("write");
        let store = open(tmp.path(), StoreOptions::default());
        let head = store.head();
        assert_eq!(head.size, 40);
        match store.inclusion_proof(&entry(4).id(), None) {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("does not verify"), "{why}"),
            other => panic!("a proof through a damaged leaf was answered: {other:?}"),
        }
        match store.consistency_proof(5, None) {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("does not verify"), "{why}"),
            other => panic!("a consistency proof through a damaged leaf was answered: {other:?}"),
        }
        // Proofs that do not read the damaged node are still served, and verify.
        let p = store
            .inclusion_proof(&entry(9).id(), None)
            .expect("proof")
            .expect("known id");
        let leaf = stemedb_merkle::leaf_hash(entry(9).id().as_bytes());
        assert!(stemedb_merkle::verify_inclusion(
            &leaf,
            p.leaf_index,
            p.tree_size,
            &p.path,
            &head.root
        ));
        let c = store
            .consistency_proof(16, None)
            .expect("consistency 16 -> 40");
        assert!(stemedb_merkle::verify_consistency(
            16,
            40,
            &c.from_root,
            &head.root,
            &c.proof
        ));
    }

    /// What a test observer saw of the backpressure, in order.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Seen {
        Frozen(usize),
        Waiting(bool),
        Stalled(f64),
    }

    #[derive(Default)]
    struct Watch(std::sync::Mutex<Vec<Seen>>);

    impl Watch {
        fn seen(&self) -> Vec<Seen> {
            self.0.lock().expect("watch").clone()
        }
    }

    impl Observer for Watch {
        fn frozen(&self, rows: usize) {
            self.0.lock().expect("watch").push(Seen::Frozen(rows));
        }
        fn writers_waiting(&self, waiting: bool) {
            self.0.lock().expect("watch").push(Seen::Waiting(waiting));
        }
        fn write_stalled(&self, secs: f64) {
            self.0.lock().expect("watch").push(Seen::Stalled(secs));
        }
    }

    /// Design §4: when merging falls behind, writers wait and the metrics say so while they
    /// wait (not only once the merger has caught up), and every write that waited is kept.
    #[test]
    fn writers_wait_for_a_slow_merger_and_the_wait_shows_while_it_lasts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            memtable_rows: 5,
            memtable_max_frozen_rows: 10,
            slow_merger_ms: Some(300),
            ..StoreOptions::default()
        };
        let watch = Arc::new(Watch::default());
        let store = Arc::new(Store::open(tmp.path(), opts, watch.clone()).expect("open"));
        let writer = store.clone();
        let writes = std::thread::spawn(move || {
            (0..40)
                .map(|n| submit(&writer, vec![entry(n)]).remove(0))
                .collect::<Vec<_>>()
        });
        // While the writer is still at it, a wait has begun and has already been counted.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let live = loop {
            let seen = watch.seen();
            let open_wait = seen.iter().rposition(|s| *s == Seen::Waiting(true));
            let counted = open_wait.is_some_and(|at| {
                !seen[at..].contains(&Seen::Waiting(false))
                    && seen[at..]
                        .iter()
                        .any(|s| matches!(s, Seen::Stalled(t) if *t > 0.0))
            });
            if counted {
                break true;
            }
            if writes.is_finished() || std::time::Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let results = writes.join().expect("the writer thread");
        // The last write was answered before its group froze a memtable: that wait ends once
        // the merger catches up.
        let ended = |seen: &[Seen]| {
            seen.iter()
                .rev()
                .find(|s| matches!(s, Seen::Waiting(_)))
                .is_some_and(|s| *s == Seen::Waiting(false))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !ended(&watch.seen()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let seen = watch.seen();
        assert!(ended(&seen), "the last wait never ended: {seen:?}");
        assert!(live, "no stall was reported while writers waited: {seen:?}");
        assert!(
            results.iter().all(|r| r.is_ok()),
            "a write failed: {results:?}"
        );
        assert!(
            seen.iter()
                .any(|s| matches!(s, Seen::Frozen(rows) if *rows > 10)),
            "the frozen backlog over the cap was never reported: {seen:?}"
        );
        let stalled: f64 = seen
            .iter()
            .map(|s| match s {
                Seen::Stalled(t) => *t,
                _ => 0.0,
            })
            .sum();
        assert!(stalled >= 0.05, "{stalled} s of stall for a 300 ms merger");
        assert_eq!(store.head().size, 40);
        for n in 0..40 {
            assert!(
                store.get(&entry(n).id()).expect("get").is_some(),
                "{n} lost"
            );
        }
    }

    /// A store rolled back under a log that already signed a larger tree refuses to start.
    #[test]
    fn recovery_below_the_signed_high_water_mark_refuses_to_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let live = tmp.path().join("live");
        let old = tmp.path().join("old");
        {
            let store = open(&live, StoreOptions::default());
            submit(&store, (0..5).map(entry).collect());
        }
        copy_dir(&live, &old);
        {
            let store = open(&live, StoreOptions::default());
            submit(&store, (5..9).map(entry).collect());
            let (head, _) = store.signed_checkpoint();
            assert_eq!(head.size, 9);
        }
        // Put the older db/ and wal/ back under the newer metadata.json.
        for sub in ["db", "wal"] {
            std::fs::remove_dir_all(live.join(sub)).expect("remove");
            copy_dir(&old.join(sub), &live.join(sub));
        }
        let err = Store::open(&live, StoreOptions::default(), Arc::new(NoObserver))
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("tree size 5") && msg.contains("tree size 9"),
            "{msg}"
        );
        // The directory as it was is fine again once the newer state is back.
        let ok = open(&old, StoreOptions::default());
        assert_eq!(ok.head().size, 5);
    }

    /// `metadata.json` is the mark's witness outside `db/`: one whose mark was removed or
    /// damaged stops the start instead of counting as "never signed" (design §3).
    #[test]
    fn a_metadata_file_without_a_valid_signed_mark_refuses_to_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        {
            let store = open(tmp.path(), StoreOptions::default());
            submit(&store, (0..5).map(entry).collect());
            let (head, _) = store.signed_checkpoint();
            assert_eq!(head.size, 5);
        }
        let path = tmp.path().join("metadata.json");
        let original = std::fs::read(&path).expect("metadata.json");
        let doc: serde_json::Value = serde_json::from_slice(&original).expect("json");
        assert_eq!(doc["signed_hwm"], 5, "{doc}");
        let with = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut d = doc.clone();
            edit(d.as_object_mut().expect("object"));
            std::fs::write(&path, serde_json::to_vec(&d).expect("json")).expect("write");
            Store::open(tmp.path(), StoreOptions::default(), Arc::new(NoObserver))
                .err()
                .map(|e| e.to_string())
        };
        let msg = with(&|d| {
            d.remove("signed_hwm");
        })
        .expect("a missing mark is refused");
        assert!(msg.contains("has no signed_hwm"), "{msg}");
        let msg = with(&|d| {
            d.insert("signed_hwm".into(), "5".into());
        })
        .expect("a mark that is not a number is refused");
        assert!(msg.contains("not a tree size"), "{msg}");
        // A file of format 2 predates the mark: without one it still opens.
        assert_eq!(
            with(&|d| {
                d.remove("signed_hwm");
                d.insert("format_version".into(), 2.into());
            }),
            None
        );
        std::fs::write(&path, &original).expect("restore");
        let store = open(tmp.path(), StoreOptions::default());
        assert_eq!(store.head().size, 5);
    }

    /// A damaged node of the durable frontier would change the root of a size already signed:
    /// the start compares it with the root `metadata.json` recorded and refuses (design §3).
    #[test]
    fn a_damaged_frontier_node_refuses_to_start_instead_of_signing_a_second_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = {
            let store = open(tmp.path(), StoreOptions::default());
            submit(&store, (0..5).map(entry).collect());
            let (head, _) = store.signed_checkpoint();
            assert_eq!(head.size, 5);
            head.root
        };
        // Five leaves: the frontier is the node over leaves 0..3 (level 2) and leaf 4.
        let node = tmp.path().join("db/merkle/level-02.dat");
        let original = std::fs::read(&node).expect("level 2");
        let mut bad = original.clone();
        bad[3] ^= 0x10;
        std::fs::write(&node, &bad).expect("flip");
        let msg = Store::open(tmp.path(), StoreOptions::default(), Arc::new(NoObserver))
            .err()
            .expect("refused")
            .to_string();
        assert!(
            msg.contains("second root") && msg.contains(&hex::encode(root)),
            "{msg}"
        );
        std::fs::write(&node, &original).expect("put back");
        // A damaged root in metadata.json refuses the start too, and `verify` names the file.
        let meta = tmp.path().join("metadata.json");
        let text = std::fs::read_to_string(&meta).expect("metadata.json");
        let hex_root = hex::encode(root);
        let flipped = if hex_root.starts_with('0') { "1" } else { "0" };
        std::fs::write(
            &meta,
            text.replace(&hex_root, &format!("{flipped}{}", &hex_root[1..])),
        )
        .expect("write");
        assert!(
            Store::open(tmp.path(), StoreOptions::default(), Arc::new(NoObserver)).is_err(),
            "refused"
        );
        let report = crate::verify::check_store(tmp.path(), None);
        assert!(
            report.findings.iter().any(|f| f.file == "metadata.json"),
            "{:?}",
            report.findings
        );
        std::fs::write(&meta, &text).expect("put back");
        let store = open(tmp.path(), StoreOptions::default());
        assert_eq!(store.head().root, root);
    }

    /// `verify` looks up every index key the statements give and compares each index's keys
    /// with them, so a damaged key is found even where the row counts still agree; and an
    /// unreadable `by_seq` row is blamed on redb alone, not on the intact Merkle node files.
    #[test]
    fn verify_finds_a_damaged_index_key_and_blames_only_the_file_at_fault() {
        use redb::{ReadableDatabase as _, ReadableTable as _};
        let tmp = tempfile::tempdir().expect("tempdir");
        {
            let store = open(tmp.path(), StoreOptions::default());
            submit(&store, (0..20).map(entry).collect());
        }
        let report = crate::verify::check_store(tmp.path(), None);
        assert!(report.ok(), "{:?}", report.findings);
        let redb_path = tmp.path().join("db/stemedb.redb");
        let problems = |r: &crate::verify::StoreReport| -> Vec<String> {
            r.findings
                .iter()
                .map(|f| format!("{}: {}", f.file, f.problem))
                .collect()
        };
        // One write transaction on the stopped store's redb file.
        let in_redb = |edit: &dyn Fn(&redb::WriteTransaction)| {
            let db = redb::Database::open(&redb_path).expect("open redb");
            let txn = db.begin_write().expect("write");
            edit(&txn);
            txn.commit().expect("commit");
        };
        // One subject.idx key replaced by another of the same length: the counts agree.
        let original = std::fs::read(&redb_path).expect("redb");
        {
            let db = redb::Database::open(&redb_path).expect("open redb");
            let (name, key) = {
                let r = db.begin_read().expect("read");
                runs::runs_of(&r)
                    .expect("runs")
                    .into_iter()
                    .find_map(|run| {
                        let name = runs::table_name(runs::Part::Subject, run);
                        let t = r.open_table(runs::keys_def(&name)).expect("table");
                        let first = t.iter().expect("iter").next()?.expect("key");
                        Some((name, first.0.value().to_vec()))
                    })
                    .expect("a run holds keys")
            };
            drop(db);
            let mut other = key.clone();
            let n = other.len();
            other[n - 12] ^= 0x40; // inside ts
            in_redb(&|txn| {
                let mut t = txn.open_table(runs::keys_def(&name)).expect("table");
                t.remove(key.as_slice()).expect("remove");
                t.insert(other.as_slice(), ()).expect("insert");
            });
        }
        let report = crate::verify::check_store(tmp.path(), None);
        let found = problems(&report);
        assert!(
            found.iter().any(|p| p.contains("subject.idx: a lookup")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("subject.idx: its keys are not")),
            "{found:?}"
        );
        assert!(
            found.iter().all(|p| p.starts_with("db/stemedb.redb")),
            "{found:?}"
        );
        std::fs::write(&redb_path, &original).expect("put back");
        // One by_seq row damaged: one redb finding and one note that the tree was not
        // compared past it, never a node file blamed.
        in_redb(&|txn| {
            let mut t = txn.open_table(BY_SEQ).expect("by_seq");
            let mut row = t.get(5).expect("get").expect("row 5").value().to_vec();
            row[40] ^= 0x01;
            t.insert(5, row.as_slice()).expect("insert");
        });
        let report = crate::verify::check_store(tmp.path(), None);
        let found = problems(&report);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("db/stemedb.redb: by_seq row 5")),
            "{found:?}"
        );
        assert!(
            found.iter().all(|p| p.starts_with("db/stemedb.redb")),
            "no node file or metadata.json blamed: {found:?}"
        );
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("not compared from leaf 5")),
            "{:?}",
            report.notes
        );
        assert!(!report.ok());
        // by_seq cut short (its last rows gone): the same, and the indexes are not blamed.
        std::fs::write(&redb_path, &original).expect("put back");
        in_redb(&|txn| {
            let mut t = txn.open_table(BY_SEQ).expect("by_seq");
            for i in 17..20u64 {
                t.remove(i).expect("remove");
            }
        });
        let report = crate::verify::check_store(tmp.path(), None);
        let found = problems(&report);
        assert!(
            found
                .iter()
                .any(|p| p.contains("by_seq holds 17 rows below 20")),
            "{found:?}"
        );
        assert!(
            !found
                .iter()
                .any(|p| p.contains("metadata.json") || p.contains("its keys are not")),
            "{found:?}"
        );
        assert!(
            found.iter().all(|p| p.starts_with("db/stemedb.redb")),
            "{found:?}"
        );
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read dir") {
            let e = e.expect("entry");
            let dst = to.join(e.file_name());
            if e.file_type().expect("type").is_dir() {
                copy_dir(&e.path(), &dst);
            } else {
                std::fs::copy(e.path(), dst).expect("copy");
            }
        }
    }
}
