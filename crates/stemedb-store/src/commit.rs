//! The commit thread: recovery and replay on open, then group commit for every write.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable};
use stemedb_core::AssertionId;
use stemedb_merkle::{Frontier, NoteSigner, leaf_hash};
use stemedb_wal::{Record, Wal, WalError};

use crate::entry::{Entry, Fields};
use crate::keys::AssertionRecord;
use crate::memtable::{KINDS, Memtable, Versions, View};
use crate::merger::{MergeJob, Merger};
use crate::nodes::{NodeReader, NodeWriter};
use crate::vlog::{Pointer, Position, VlogReader, VlogWriter};
use crate::{
    AGENT_IDX, ASSERTIONS, BY_SEQ, CONCEPT_PATH_IDX, FORMAT_VERSION, Head, KIND_ASSERTION, Layout,
    META, Observer, Outcome, PREDICATE_IDX, SUBJECT_IDX, SUPERSEDES, Shared, StoreError,
    StoreOptions, db_err, io_at, keys,
};

/// Work for the commit thread: writes, and the few operations that must see a quiet writer.
pub(crate) enum Job {
    Write(Submission),
    /// Make a durable checkpoint and hand back a read transaction of exactly that state.
    Snapshot(Box<dyn FnOnce(Result<SnapshotPoint, StoreError>) + Send>),
    /// Seal the active WAL segment (if it holds records); answers the sequence number every
    /// sealed segment now ends before.
    SealWal(Box<dyn FnOnce(Result<u64, StoreError>) + Send>),
    /// Merge every memtable into redb and make a durable checkpoint.
    Checkpoint(Box<dyn FnOnce(Result<(), StoreError>) + Send>),
}

/// A durable checkpoint and a redb read transaction that sees exactly it.
pub(crate) struct SnapshotPoint {
    pub txn: redb::ReadTransaction,
    pub size: u64,
    pub root: stemedb_merkle::Hash,
    pub vlog: Position,
    /// The signed checkpoint note of `size`.
    pub note: String,
}

/// Verified assertions waiting for the commit thread, and who to tell.
pub struct Submission {
    /// Each verified assertion with its envelope bytes as received.
    pub items: Vec<Entry>,
    /// When the server received them, Unix ms.
    pub received_at_ms: i64,
    /// Answers the submission's [`crate::Completion`] once, one result per item, in order.
    pub(crate) reply: crate::completion::Completer,
    /// The queue bytes this submission holds; released when it is dropped (answered).
    pub(crate) permit: Option<crate::BytePermit>,
}

/// One new assertion in log order.
struct NewRecord {
    log_index: u64,
    received_at_ms: i64,
    id: AssertionId,
    fields: Fields,
    raw: bytes::Bytes,
}

/// WAL body of an assertion: `log_index u64 | received_at i64 | id [32] | envelope bytes`.
fn wal_body(r: &NewRecord) -> Vec<u8> {
    wal_body_of(r.log_index, r.received_at_ms, &r.id, &r.raw)
}

fn wal_body_of(log_index: u64, received_at_ms: i64, id: &AssertionId, raw: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(48 + raw.len());
    b.extend_from_slice(&log_index.to_le_bytes());
    b.extend_from_slice(&received_at_ms.to_le_bytes());
    b.extend_from_slice(id.as_bytes());
    b.extend_from_slice(raw);
    b
}

/// WAL records of kind `KIND_ASSERTION` over `bodies`.
fn assertion_records(bodies: &[Vec<u8>]) -> Vec<Record<'_>> {
    bodies
        .iter()
        .map(|b| Record {
            kind: KIND_ASSERTION,
            body: b,
        })
        .collect()
}

/// Records a WAL rewrite from the store appends per group.
const REWRITE_GROUP_RECORDS: u64 = 1_000;
/// Most records start-up writes back into the WAL from the store (about 600 MB, a few
/// seconds); a WAL missing more than that goes on after the store with `advance_to`.
const REWRITE_MAX_RECORDS: u64 = 1_000_000;

/// Appends the records `[from, to)` to the WAL again from the durable store: the WAL ends
/// below records the durable checkpoint holds (a damaged last group cut by this or an earlier
/// open, or lost trailing segments), so they were acknowledged, and the WAL must keep every
/// acknowledged record (design §3; archives and restores replay it). Each comes from the
/// store's checksummed `by_seq` row, its `assertions` row and its value-log record, and must be
/// the envelope its id names: the same bytes the commit thread wrote, in new group frames.
fn rewrite_wal_from_store(
    wal: &mut Wal,
    db: &Database,
    values: &std::path::Path,
    from: u64,
    to: u64,
) -> Result<(), StoreError> {
    let r = db.begin_read().map_err(db_err)?;
    let by_seq = r.open_table(BY_SEQ).map_err(db_err)?;
    let vlog = VlogReader::new(values);
    let mut li = from;
    while li < to {
        let end = to.min(li + REWRITE_GROUP_RECORDS);
        let mut bodies = Vec::with_capacity((end - li) as usize);
        for i in li..end {
            let missing = || {
                StoreError::Corrupt(format!(
                    "rewriting WAL record {i} from the store: the store has no such assertion"
                ))
            };
            let row = by_seq.get(i).map_err(db_err)?.ok_or_else(missing)?;
            let row = keys::IndexValue::decode(row.value())?;
            let rec = crate::runs::find_assertion(&r, row.id.as_bytes())?.ok_or_else(missing)?;
            let envelope = vlog.read(rec.pointer)?;
            let named = stemedb_core::Envelope::decode(&envelope).map(|e| e.id());
            if rec.log_index != i || named.as_ref().ok() != Some(&row.id) {
                return Err(StoreError::Corrupt(format!(
                    "rewriting WAL record {i} from the store: its rows and envelope disagree \
                     (assertions row at {}, envelope {:?}, by_seq id {})",
                    rec.log_index,
                    named.map(|id| id.to_hex()),
                    row.id
                )));
            }
            bodies.push(wal_body_of(i, rec.received_at_ms, &row.id, &envelope));
        }
        wal.append_group(&assertion_records(&bodies))?;
        li = end;
    }
    Ok(())
}

/// A WAL record of the replayed tail before parsing: log index, received-at, id, envelope.
type RawTail = (u64, i64, [u8; 32], Vec<u8>);

/// Parses replayed WAL records into index fields on every core (the envelopes verified when they
/// were accepted and the WAL checksums them, so a light parse of the fields suffices).
fn parse_tail(tail: Vec<RawTail>) -> Result<Vec<NewRecord>, StoreError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let per = tail.len().div_ceil(threads).max(1);
    let mut parts: Vec<Vec<RawTail>> = Vec::new();
    let mut rest = tail;
    while rest.len() > per {
        let later = rest.split_off(per);
        parts.push(rest);
        rest = later;
    }
    parts.push(rest);
    let parsed: Vec<Result<Vec<NewRecord>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                s.spawn(move || {
                    part.into_iter()
                        .map(|(log_index, received_at_ms, id, raw)| {
                            let fields = Fields::from_stored(&raw).map_err(|e| {
                                StoreError::Corrupt(format!("WAL replay: record {log_index}: {e}"))
                            })?;
                            Ok(NewRecord {
                                log_index,
                                received_at_ms,
                                id: AssertionId::from_bytes(id),
                                fields,
                                raw: raw.into(),
                            })
                        })
                        .collect::<Result<Vec<_>, StoreError>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StoreError::Corrupt(
                        "WAL replay: a parser thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut out = Vec::new();
    for p in parsed {
        out.extend(p?);
    }
    Ok(out)
}

/// An assertion record read back from the WAL.
struct WalEntry<'a> {
    log_index: u64,
    received_at_ms: i64,
    id: [u8; 32],
    envelope: &'a [u8],
}

fn parse_wal_body(seq: u64, kind: u8, body: &[u8]) -> Result<WalEntry<'_>, String> {
    if kind != KIND_ASSERTION {
        return Err(format!("record {seq} has unknown kind {kind}"));
    }
    if body.len() < 48 {
        return Err(format!("record {seq} is too short"));
    }
    let log_index = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
    let received = i64::from_le_bytes(body[8..16].try_into().unwrap_or_default());
    let id: [u8; 32] = body[16..48].try_into().unwrap_or_default();
    if log_index != seq {
        return Err(format!("record {seq} carries log index {log_index}"));
    }
    Ok(WalEntry {
        log_index,
        received_at_ms: received,
        id,
        envelope: &body[48..],
    })
}

fn meta_u64(txn: &redb::ReadTransaction, key: &str) -> Result<Option<u64>, StoreError> {
    let t = txn.open_table(META).map_err(db_err)?;
    let v = t.get(key).map_err(db_err)?;
    Ok(v.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
}

/// `metadata.json` as JSON, `None` when there is no such file. A file that exists but cannot
/// be read or parsed is an error: it records the largest signed tree size, so it fails closed.
pub(crate) fn read_metadata(
    path: &std::path::Path,
) -> Result<Option<serde_json::Value>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(path)(e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        StoreError::Corrupt(format!(
            "{} is not JSON ({e}); it records the largest signed tree size, so the start is \
             refused (restore it, or remove it only if this log never signed beyond its store)",
            path.display()
        ))
    })
}

/// The `signed_hwm` that `metadata.json` (`doc`, read from `path`) records, 0 when there is no
/// such file. One whose mark is not a whole number, or that lacks the mark although its format
/// (3 and later) always writes it, is an error: the mark fails closed. Only a file of format 2
/// (written before the mark existed) may lack it.
fn metadata_hwm(
    path: &std::path::Path,
    doc: Option<&serde_json::Value>,
) -> Result<u64, StoreError> {
    let Some(doc) = doc else {
        return Ok(0);
    };
    let refused = |why: &str| {
        StoreError::Corrupt(format!(
            "{} {why}; it records the largest signed tree size, so the start is refused \
             (restore it, or remove it only if this log never signed beyond its store)",
            path.display()
        ))
    };
    match doc.get("signed_hwm") {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| refused(&format!("holds signed_hwm {v}, not a tree size"))),
        None if doc.get("format_version").and_then(|v| v.as_u64()) == Some(2) => Ok(0),
        None => Err(refused("has no signed_hwm")),
    }
}

/// The durable checkpoint `metadata.json` (`doc`, read from `path`) records: its tree size and
/// root. `None` when there is no such file or it names no root; a root that is not 64 hex
/// digits is an error (it fails closed, as the mark does).
pub(crate) fn metadata_root(
    path: &std::path::Path,
    doc: Option<&serde_json::Value>,
) -> Result<Option<(u64, stemedb_merkle::Hash)>, StoreError> {
    let Some(doc) = doc else {
        return Ok(None);
    };
    let checkpoint = doc.get("durable_checkpoint").unwrap_or(doc);
    let (Some(size), Some(root)) = (
        checkpoint.get("tree_size").and_then(|v| v.as_u64()),
        checkpoint.get("root").and_then(|v| v.as_str()),
    ) else {
        return Ok(None);
    };
    let mut hash = [0u8; 32];
    hex::decode_to_slice(root, &mut hash).map_err(|_| {
        StoreError::Corrupt(format!(
            "{} records root {root:?} for tree size {size}, not 64 hex digits; the start is \
             refused (restore the file, or check the store with `stemedb verify`)",
            path.display()
        ))
    })?;
    Ok(Some((size, hash)))
}

/// The commit thread's state.
pub(crate) struct Writer {
    db: Arc<Database>,
    wal: Wal,
    vlog: VlogWriter,
    nodes: NodeWriter,
    frontier: Frontier,
    next_index: u64,
    opts: StoreOptions,
    shared: Arc<Shared>,
    merge_tx: std::sync::mpsc::Sender<MergeJob>,
    // True while recovery replays the WAL (the merger is not running yet: no backpressure).
    replaying: bool,
    // The value-log position and tree root once `[durable, applied)` is rebuilt (the merger's
    // starting point).
    applied_tail: (Position, stemedb_merkle::Hash),
}

impl Writer {
    /// Opens every file, checks and repairs derived state, replays the WAL tail.
    pub(crate) fn recover(
        layout: &Layout,
        opts: &StoreOptions,
        signer: NoteSigner,
        observer: Arc<dyn Observer>,
    ) -> Result<
        (
            Writer,
            Arc<Shared>,
            Merger,
            std::sync::mpsc::Receiver<MergeJob>,
        ),
        StoreError,
    > {
        let started = Instant::now();
        let db = Database::builder()
            .set_cache_size(opts.cache_bytes)
            .create(&layout.redb)
            .map_err(db_err)?;
        {
            let mut txn = db.begin_write().map_err(db_err)?;
            // A durable commit like the checkpoint's, so it also saves redb's allocator state
            // (two-phase): otherwise a crash before the first durable checkpoint after this
            // start makes redb walk and checksum the whole file to reopen (about 1 s at 1M
            // assertions, docs/performance.md).
            txn.set_quick_repair(true);
            {
                let mut meta = txn.open_table(META).map_err(db_err)?;
                let format = meta
                    .get("format")
                    .map_err(db_err)?
                    .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes));
                match format {
                    // Format 2 is format 3 with run 0 alone (`runs.rs`), and format 3 is format
                    // 4 with nothing packed in the value log: both open as they are, and are
                    // marked 4 now, since this server writes runs and packed records an older
                    // one cannot read. Packing starts after what the store has applied: the
                    // records before it that a crash left to rebuild (`replay`) must land
                    // where redb's pointers say, so they are rebuilt as received.
                    None | Some(2) | Some(3) => {
                        let applied = meta
                            .get("applied")
                            .map_err(db_err)?
                            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
                            .unwrap_or(0);
                        meta.insert("pack_from", applied.to_le_bytes().as_slice())
                            .map_err(db_err)?;
                        meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                            .map_err(db_err)?;
                    }
                    // Format 4 is format 5 without checksummed `by_seq` rows: its rows read
                    // unchecked, every row written from now on carries its checksum.
                    Some(4) => {
                        meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                            .map_err(db_err)?;
                    }
                    Some(FORMAT_VERSION) => {}
                    Some(other) => {
                        return Err(StoreError::Corrupt(format!(
                            "{}: data directory format {other}, this server reads {FORMAT_VERSION}",
                            layout.redb.display()
                        )));
                    }
                }
            }
            {
                txn.open_table(ASSERTIONS).map_err(db_err)?;
                txn.open_table(BY_SEQ).map_err(db_err)?;
                txn.open_table(SUBJECT_IDX).map_err(db_err)?;
                txn.open_table(CONCEPT_PATH_IDX).map_err(db_err)?;
                txn.open_table(PREDICATE_IDX).map_err(db_err)?;
                txn.open_table(AGENT_IDX).map_err(db_err)?;
                txn.open_table(SUPERSEDES).map_err(db_err)?;
            }
            // Tables of a run that `meta.runs` does not name (a compaction that a crash or a
            // shutdown cut off) are never read; the merger drops them once it runs
            // (`Merger::drop_orphans`), so that freeing a large partial run's pages does not
            // delay the start (1.5 s of a 3.6 s start at 10M).
            txn.commit().map_err(db_err)?;
        }
        let filters = Arc::new(crate::runs::Filters::load(
            &db.begin_read().map_err(db_err)?,
        )?);
        let (applied, durable, vlog_pos, meta_hwm, pack_from) = {
            let r = db.begin_read().map_err(db_err)?;
            let pack_from = meta_u64(&r, "pack_from")?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "{}: format {FORMAT_VERSION} without meta.pack_from",
                    layout.redb.display()
                ))
            })?;
            let applied = meta_u64(&r, "applied")?.unwrap_or(0);
            let durable = meta_u64(&r, "durable")?.unwrap_or(0);
            let seg = meta_u64(&r, "durable_vlog_segment")?.unwrap_or(0) as u32;
            let len = meta_u64(&r, "durable_vlog_len")?.unwrap_or(0);
            let hwm = meta_u64(&r, "signed_hwm")?.unwrap_or(0);
            (
                applied,
                durable,
                Position { segment: seg, len },
                hwm,
                pack_from,
            )
        };
        // The largest tree size ever signed (decision 0015): recorded with each durable
        // checkpoint in redb and in metadata.json, which lives outside db/ so that a store
        // rolled back or replaced under it is caught too.
        let metadata = read_metadata(&layout.metadata)?;
        let signed_hwm = meta_hwm.max(metadata_hwm(&layout.metadata, metadata.as_ref())?);
        if durable > applied {
            return Err(StoreError::Corrupt(format!(
                "durable checkpoint {durable} is past the applied index {applied}"
            )));
        }
        // Records the value log holds after the durable checkpoint were applied, so their WAL
        // group's fsync had returned: the WAL must still hold them (decision 0014 addendum).
        let scan_started = Instant::now();
        let applied_seen =
            crate::vlog::records_after(&layout.values, vlog_pos).map_err(io_at(&layout.values))?;
        let vlog_scan_ms = scan_started.elapsed().as_millis() as u64;
        let wal_started = Instant::now();
        let floor = durable + applied_seen;
        // Records the durable checkpoint holds are not lost with the WAL (handled below).
        let wal_floor = if applied_seen > 0 { floor } else { 0 };
        let (wal, report) = Wal::open_at_least(&layout.wal, opts.wal.clone(), wal_floor)?;
        tracing::info!(
            segments = report.segments,
            records = report.records,
            truncated_bytes = report.truncated_bytes,
            vlog_records_after_durable = applied_seen,
            vlog_scan_ms,
            wal_open_ms = wal_started.elapsed().as_millis() as u64,
            "WAL recovered"
        );
        let mut wal = wal;
        if floor > durable && wal.next_seq() < floor {
            return Err(StoreError::Corrupt(format!(
                "the WAL ends at record {} but the value log holds records up to {floor} \
                 (durable checkpoint {durable}), which were applied only after their fsync: \
                 acknowledged writes are missing from wal/. Start refused; {}",
                wal.next_seq(),
                stemedb_wal::WAY_OUT
            )));
        }
        if wal.next_seq() < applied {
            if durable < applied {
                return Err(StoreError::Corrupt(format!(
                    "the WAL ends at record {} but the store needs records up to {applied} \
                     (durable checkpoint {durable}): acknowledged writes are missing from wal/",
                    wal.next_seq()
                )));
            }
            // The missing records were acknowledged (the durable checkpoint holds them): a
            // damaged last group this open cut (or an earlier open cut, if that start did not
            // finish writing them back), or lost trailing segments. They go back into the WAL
            // from the store. This does not depend on this open's cut, so a start refused or
            // killed mid-way repeats the rewrite instead of skipping it. (A restore always
            // leaves the WAL at or past the store.)
            let missing = applied - wal.next_seq();
            if missing <= REWRITE_MAX_RECORDS {
                tracing::warn!(
                    from = wal.next_seq(),
                    to = applied,
                    durable,
                    cut_bytes = report.truncated_bytes,
                    "the WAL lacks acknowledged records the durable checkpoint holds (a \
                     damaged last group, or lost segments); writing them back into the WAL \
                     from the store"
                );
                let from = wal.next_seq();
                rewrite_wal_from_store(&mut wal, &db, &layout.values, from, applied)?;
            } else {
                // More than a damaged tail: the WAL lost most of its segments. The store still
                // holds every record; the log goes on after them.
                tracing::warn!(
                    wal_end = wal.next_seq(),
                    durable,
                    "the WAL lost records the durable checkpoint holds; continuing after them"
                );
                wal.advance_to(applied)?;
            }
        }
        let vlog =
            VlogWriter::open(&layout.values, vlog_pos, pack_from).map_err(io_at(&layout.values))?;
        let nodes = NodeWriter::open(&layout.merkle, durable).map_err(io_at(&layout.merkle))?;
        let node_reader = NodeReader::new(&layout.merkle);
        let frontier = Frontier::load(&node_reader, durable).map_err(io_at(&layout.merkle))?;
        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            db: db.clone(),
            vlog: VlogReader::new(&layout.values),
            nodes: node_reader,
            head: RwLock::new(Head {
                size: frontier.size(),
                root: frontier.root(),
            }),
            origin: opts.origin.clone(),
            signer,
            checkpoint_cache: Mutex::new(None),
            read_only: RwLock::new(None),
            observer,
            signed_hwm: AtomicU64::new(signed_hwm),
            queue: crate::ByteBudget::new(opts.queue_bytes),
            versions: Versions::new(Arc::new(Memtable::new(
                applied,
                vlog_pos,
                stemedb_merkle::empty_root(),
                opts.memtable_rows,
            ))),
            merge_lock: Mutex::new(()),
            merged: std::sync::Condvar::new(),
            large_group: opts.large_group,
            snapshots: crate::memtable::Snapshots::new(crate::memtable::Snapshot::open(
                &db, &filters,
            )?),
            filters,
        });
        shared.observer.index_runs(shared.snapshots.load().runs());
        let (merge_tx, merge_rx) = std::sync::mpsc::channel();
        let root_at_durable = frontier.root();
        let mut w = Writer {
            db: db.clone(),
            wal,
            vlog,
            nodes,
            frontier,
            next_index: durable,
            opts: opts.clone(),
            shared: shared.clone(),
            merge_tx,
            replaying: true,
            applied_tail: (vlog_pos, root_at_durable),
        };
        w.replay(durable, applied)?;
        w.replaying = false;
        if w.next_index < signed_hwm {
            return Err(StoreError::Corrupt(format!(
                "recovery reached tree size {}, but this server has already signed a checkpoint \
                 of tree size {signed_hwm}: acknowledged writes are missing, and signing a \
                 smaller tree would fork the log. Start refused; {}",
                w.next_index,
                stemedb_wal::WAY_OUT
            )));
        }
        // The root of the last durable checkpoint, as `metadata.json` recorded it, must be the
        // root the node files give for that size now: a damaged node of the frontier would
        // otherwise make this server sign a second root for a size it already signed (design
        // §3). Cheap: one node read per level.
        if let Some((size, recorded)) = metadata_root(&layout.metadata, metadata.as_ref())?
            && size <= w.next_index
        {
            let now = stemedb_merkle::root(&w.shared.nodes, size).map_err(io_at(&layout.merkle))?;
            if now != recorded {
                return Err(StoreError::Corrupt(format!(
                    "{} records root {} for tree size {size}, but the Merkle node files under {} \
                     give {} for it: a node file (or metadata.json) is damaged, and serving on \
                     would sign a second root for a size already signed. Start refused; run \
                     `stemedb verify` to name the damaged file, then restore from a backup \
                     plus the WAL archive",
                    layout.metadata.display(),
                    hex::encode(recorded),
                    layout.merkle.display(),
                    hex::encode(now)
                )));
            }
        }
        w.shared
            .observer
            .tree_size(w.next_index, w.wal.segment_count());
        tracing::info!(
            tree_size = w.next_index,
            rebuilt = applied - durable,
            replayed = w.next_index - applied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store open"
        );
        let merger = Merger {
            db,
            shared: shared.clone(),
            layout: layout.clone(),
            opts: opts.clone(),
            applied,
            applied_tail: w.applied_tail,
            durable,
            last_durable: Instant::now(),
            checkpoints: 0,
            compactions: Vec::new(),
            retired: Vec::new(),
        };
        Ok((w, shared, merger, merge_rx))
    }

    /// Rebuilds the value log and node files for `[durable, applied)` (redb already has those
    /// rows) and applies everything after `applied` in full.
    fn replay(&mut self, durable: u64, applied: u64) -> Result<(), StoreError> {
        // The tail's records, still unparsed: they are parsed on every core below.
        let mut tail: Vec<RawTail> = Vec::new();
        let mut rebuilt_last: Option<(AssertionId, Pointer)> = None;
        let mut failure: Option<String> = None;
        let mut expected = durable;
        let vlog = &mut self.vlog;
        let nodes = &mut self.nodes;
        let frontier = &mut self.frontier;
        self.wal.replay_from(durable, |seq, kind, body| {
            if failure.is_some() {
                return;
            }
            let WalEntry {
                log_index,
                received_at_ms: received,
                id,
                envelope: raw,
            } = match parse_wal_body(seq, kind, body) {
                Ok(p) => p,
                Err(e) => {
                    failure = Some(e);
                    return;
                }
            };
            if log_index != expected {
                failure = Some(format!(
                    "expected log index {expected} next, found {log_index}: WAL records are missing"
                ));
                return;
            }
            expected += 1;
            if log_index < applied {
                match vlog.append(log_index, raw) {
                    Ok(p) => rebuilt_last = Some((AssertionId::from_bytes(id), p)),
                    Err(e) => failure = Some(e.to_string()),
                }
                nodes.push_leaf(frontier, leaf_hash(&id));
                return;
            }
            tail.push((log_index, received, id, raw.to_vec()));
        })?;
        if let Some(f) = failure {
            return Err(StoreError::Corrupt(format!("WAL replay: {f}")));
        }
        if self.frontier.size() != applied {
            return Err(StoreError::Corrupt(format!(
                "rebuilt {} leaves, the store has applied {applied}",
                self.frontier.size()
            )));
        }
        self.vlog
            .flush()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.nodes
            .flush()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if let Some((id, pointer)) = rebuilt_last {
            let r = self.db.begin_read().map_err(db_err)?;
            let stored = crate::runs::find_assertion(&r, id.as_bytes())?;
            let stored = match stored {
                Some(rec) => rec.pointer,
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "applied assertion {id} missing"
                    )));
                }
            };
            if stored != pointer {
                return Err(StoreError::Corrupt(format!(
                    "value log rebuilt {pointer:?} for {id}, the store says {stored:?}"
                )));
            }
        }
        self.next_index = applied;
        self.applied_tail = (self.vlog.position(), self.frontier.root());
        let tail = parse_tail(tail)?;
        for chunk in tail.chunks(10_000) {
            self.apply(chunk)?;
        }
        Ok(())
    }

    /// The commit loop.
    pub(crate) fn run(mut self, rx: Receiver<Job>) {
        let idle = Duration::from_millis(self.opts.memtable_ms.max(1));
        loop {
            let first = match rx.recv_timeout(idle) {
                Ok(Job::Write(s)) => s,
                Ok(other) => {
                    self.control(other);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.maybe_freeze();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut count = first.items.len();
            let mut bytes: usize = first.items.iter().map(Entry::len).sum();
            let mut group = vec![first];
            let mut control = None;
            while count < self.opts.group_max_records && bytes < self.opts.group_max_bytes {
                match rx.try_recv() {
                    Ok(Job::Write(s)) => {
                        count += s.items.len();
                        bytes += s.items.iter().map(Entry::len).sum::<usize>();
                        group.push(s);
                    }
                    Ok(other) => {
                        control = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
            self.maybe_freeze();
            if let Some(job) = control {
                self.control(job);
            }
        }
        if let Err(e) = self.drain() {
            tracing::error!(error = %e, "final merge failed; the WAL holds everything acknowledged");
        }
        tracing::info!(tree_size = self.next_index, "commit thread stopped");
    }

    /// Freezes the active memtable when it is full or old enough and hands it to the merger;
    /// then waits while the merger is too far behind (backpressure).
    fn maybe_freeze(&mut self) {
        let version = self.shared.versions.load();
        let active = version.active();
        let full = active.len() >= self.opts.memtable_rows.max(1);
        let old = !active.is_empty()
            && active.created.elapsed() >= Duration::from_millis(self.opts.memtable_ms);
        if self.opts.merge_inline {
            if !active.is_empty() {
                drop(version);
                if let Err(e) = self.drain() {
                    tracing::error!(error = %e, "inline merge failed");
                }
            }
            return;
        }
        if !(full || old) {
            return;
        }
        drop(version);
        self.freeze();
        if self.replaying {
            return;
        }
        let observer = &self.shared.observer;
        observer.frozen(self.shared.versions.load().frozen_rows());
        let cap = self.opts.memtable_max_frozen_rows.max(1);
        // When the wait was last reported: the stall metric rises while writers wait, so a
        // merger that is slow or wedged shows at once, not when it catches up.
        let mut stalled: Option<Instant> = None;
        loop {
            if self.shared.versions.load().frozen_rows() <= cap || self.read_only_reason().is_some()
            {
                break;
            }
            match stalled {
                None => observer.writers_waiting(true),
                Some(t) => observer.write_stalled(t.elapsed().as_secs_f64()),
            }
            stalled = Some(Instant::now());
            let guard = self
                .shared
                .merge_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = self
                .shared
                .merged
                .wait_timeout(guard, Duration::from_millis(50));
        }
        if let Some(t) = stalled {
            observer.write_stalled(t.elapsed().as_secs_f64());
            observer.writers_waiting(false);
        }
    }

    /// Makes a new active memtable and sends the old one to the merger.
    fn freeze(&mut self) {
        self.shared.versions.freeze(Arc::new(Memtable::new(
            self.next_index,
            self.vlog.position(),
            self.frontier.root(),
            self.opts.memtable_rows,
        )));
        let _ = self.merge_tx.send(MergeJob::Merge);
    }

    /// Freezes the active memtable and waits until the merger has merged everything and made a
    /// durable checkpoint.
    fn drain(&mut self) -> Result<(), StoreError> {
        if !self.shared.versions.load().active().is_empty() {
            self.freeze();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.merge_tx
            .send(MergeJob::Drain(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    fn read_only_reason(&self) -> Option<String> {
        match self.shared.read_only.read() {
            Ok(r) => r.clone(),
            Err(_) => Some("poisoned lock".into()),
        }
    }

    /// Runs a snapshot or seal between groups.
    fn control(&mut self, job: Job) {
        match job {
            Job::Write(_) => {}
            Job::Snapshot(reply) => {
                if let Some(why) = self.read_only_reason() {
                    reply(Err(StoreError::ReadOnly(why)));
                    return;
                }
                if let Err(e) = self.drain() {
                    let why = format!("merging for the snapshot failed: {e}");
                    self.shared.set_read_only(&why);
                    reply(Err(StoreError::ReadOnly(why)));
                    return;
                }
                let point = self.db.begin_read().map_err(db_err).map(|txn| {
                    let size = self.frontier.size();
                    let root = self.frontier.root();
                    SnapshotPoint {
                        txn,
                        size,
                        root,
                        vlog: self.vlog.position(),
                        note: self.shared.sign(size, root),
                    }
                });
                reply(point);
            }
            Job::Checkpoint(reply) => reply(self.drain()),
            Job::SealWal(reply) => {
                let sealed = self.wal.seal().map_err(StoreError::from);
                if let Err(e) = &sealed {
                    self.shared
                        .set_read_only(&format!("sealing the WAL segment failed: {e}"));
                }
                self.shared
                    .observer
                    .tree_size(self.next_index, self.wal.segment_count());
                reply(sealed);
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Submission>) {
        if let Some(why) = self.read_only_reason() {
            for s in group {
                let n = s.items.len();
                s.reply.complete(
                    (0..n)
                        .map(|_| Err(StoreError::ReadOnly(why.clone())))
                        .collect(),
                );
            }
            return;
        }
        // Dedupe against the store and within the group, then assign log indexes. A slot that
        // cannot be deduped (the store could not be read) fails: it never counts as new.
        enum Slot {
            Existing(AssertionId, u64),
            New(usize),
            // A second copy of a new record in this group: it shares that record's fate.
            SameAs(usize),
            Failed(String),
        }
        let mut new: Vec<NewRecord> = Vec::new();
        let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let items: usize = group.iter().map(|s| s.items.len()).sum();
        let mut seen: HashMap<AssertionId, usize> = HashMap::with_capacity(items);
        let view =
            View::open(&self.shared.versions, &self.shared.snapshots).map_err(|e| e.to_string());
        let stored = view
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|v| v.assertions().map_err(|e| e.to_string()));
        for s in group {
            let mut these = Vec::with_capacity(s.items.len());
            for entry in s.items {
                let id = entry.id;
                if let Some(i) = seen.get(&id) {
                    these.push(Slot::SameAs(*i));
                    continue;
                }
                let existing = match &stored {
                    Err(why) => Err(format!("cannot read the store to deduplicate: {why}")),
                    Ok(a) => a
                        .get(&id)
                        .map(|r| r.map(|r| r.log_index))
                        .map_err(|e| format!("deduplicating {id}: {e}")),
                };
                match existing {
                    Err(why) => {
                        tracing::error!(%id, error = %why, "deduplication failed");
                        these.push(Slot::Failed(why));
                    }
                    Ok(Some(idx)) => these.push(Slot::Existing(id, idx)),
                    Ok(None) => {
                        let log_index = self.next_index + new.len() as u64;
                        seen.insert(id, new.len());
                        these.push(Slot::New(new.len()));
                        new.push(NewRecord {
                            log_index,
                            received_at_ms: s.received_at_ms,
                            id,
                            fields: entry.fields,
                            raw: entry.raw,
                        });
                    }
                }
            }
            slots.push(these);
            replies.push((s.reply, s.permit));
        }
        drop(stored);
        drop(view);
        // Why the new records of this group failed, if they did.
        enum Failure {
            // Nothing was written.
            Definite(String),
            // Written to the WAL, but whether it is durable, or served, is unknown until a
            // restart replays the log.
            Unknown(String),
        }
        let mut failure: Option<Failure> = None;
        if !new.is_empty() {
            let bodies: Vec<Vec<u8>> = new.iter().map(wal_body).collect();
            let records = assertion_records(&bodies);
            let t0 = Instant::now();
            match self.wal.append_group(&records) {
                Ok(_) => {
                    self.shared
                        .observer
                        .group_committed(new.len(), t0.elapsed().as_secs_f64());
                    if let Err(e) = self.apply(&new) {
                        // The records are durable in the WAL and will be replayed on restart,
                        // but this process cannot serve them: stop taking writes.
                        let why = format!("applying a group failed: {e}");
                        self.shared.set_read_only(&why);
                        failure = Some(Failure::Unknown(why));
                    }
                }
                Err(e @ WalError::RecordTooLarge(_)) => {
                    failure = Some(Failure::Definite(e.to_string()));
                }
                Err(e @ WalError::WriteFailed(_)) => {
                    self.shared.set_read_only(&e.to_string());
                    failure = Some(Failure::Unknown(e.to_string()));
                }
                Err(e) => {
                    self.shared.set_read_only(&e.to_string());
                    failure = Some(Failure::Definite(e.to_string()));
                }
            }
        }
        let failed = |f: &Failure| match f {
            Failure::Definite(why) => StoreError::ReadOnly(why.clone()),
            Failure::Unknown(why) => StoreError::OutcomeUnknown(why.clone()),
        };
        for (these, (reply, permit)) in slots.into_iter().zip(replies) {
            let results = these
                .into_iter()
                .map(|slot| match slot {
                    Slot::Existing(id, log_index) => Ok(Outcome {
                        id,
                        log_index,
                        created: false,
                    }),
                    Slot::New(i) | Slot::SameAs(i) => match &failure {
                        Some(f) => Err(failed(f)),
                        None => Ok(Outcome {
                            id: new[i].id,
                            log_index: new[i].log_index,
                            created: matches!(slot, Slot::New(_)),
                        }),
                    },
                    Slot::Failed(why) => Err(StoreError::Unchecked(why)),
                })
                .collect();
            reply.complete(results);
            drop(permit);
        }
    }

    /// Applies new records (already durable in the WAL): value log, node files, and their index
    /// rows into the active memtable. No B-tree work: the merger folds the memtable into redb.
    fn apply(&mut self, recs: &[NewRecord]) -> Result<(), StoreError> {
        let mut pointers = Vec::with_capacity(recs.len());
        for r in recs {
            debug_assert_eq!(r.log_index, self.frontier.size());
            pointers.push(
                self.vlog
                    .append(r.log_index, &r.raw)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
            self.nodes
                .push_leaf(&mut self.frontier, leaf_hash(r.id.as_bytes()));
        }
        self.vlog
            .flush()
            .map_err(|e| StoreError::Corrupt(format!("value log write: {e}")))?;
        self.nodes
            .flush()
            .map_err(|e| StoreError::Corrupt(format!("node file write: {e}")))?;
        let view = View::open(&self.shared.versions, &self.shared.snapshots)?;
        let active = view.version.active().clone();
        stage_rows(&view, &active, recs, &pointers)?;
        drop(view);
        active.publish(
            self.frontier.size(),
            self.vlog.position(),
            self.frontier.root(),
        );
        self.next_index = self.frontier.size();
        if let Ok(mut head) = self.shared.head.write() {
            *head = Head {
                size: self.frontier.size(),
                root: self.frontier.root(),
            };
        }
        self.shared
            .observer
            .tree_size(self.next_index, self.wal.segment_count());
        Ok(())
    }
}

/// Stages the index rows of `recs` (already in the value log at `pointers`) in `mem`, the
/// active memtable, reading what they depend on (earlier links, stored targets) through `view`,
/// which includes `mem` itself.
fn stage_rows(
    view: &View,
    mem: &Memtable,
    recs: &[NewRecord],
    pointers: &[Pointer],
) -> Result<(), StoreError> {
    // Opened once for the whole run of records: each row reads through them.
    let by_seq = view.by_seq()?;
    let superseders = view.supersedes()?;
    let stored = view.assertions()?;
    for (r, p) in recs.iter().zip(pointers) {
        let rec = AssertionRecord {
            log_index: r.log_index,
            received_at_ms: r.received_at_ms,
            pointer: *p,
        };
        mem.put_assertion(&r.id, &rec);
        // An assertion can be superseded before it arrives. `supersedes` takes effect only
        // between assertions of one agent (design §8), so the earliest link from this
        // assertion's own agent counts; links from other agents are ignored for it.
        let mut superseded_at = keys::NOT_SUPERSEDED;
        for by in superseders.of(r.id.as_bytes())? {
            let row = by_seq.get(by)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "supersedes names log index {by}, by_seq has no row"
                ))
            })?;
            if row.agent == r.fields.agent {
                superseded_at = by;
                break;
            }
        }
        mem.put_by_seq(
            r.log_index,
            &keys::IndexValue {
                id: r.id,
                agent: r.fields.agent,
                confidence: r.fields.confidence,
                retract: r.fields.retract,
                pointer: *p,
                value: r.fields.value,
                superseded_at,
                valid_from: r.fields.valid_from,
                valid_until: r.fields.valid_until,
                validity_known: true,
            },
        );
        for target in &r.fields.supersedes {
            mem.put_supersedes(&keys::supersedes_key(target.as_bytes(), r.log_index));
            // Mark a stored target of the same agent: queries then need no supersedes lookup.
            let Some(target_rec) = stored.get(target)? else {
                continue;
            };
            let target_index = target_rec.log_index;
            let row = by_seq.get(target_index)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "assertion {target} has log index {target_index} but no by_seq row"
                ))
            })?;
            if row.agent == r.fields.agent && r.log_index < row.superseded_at {
                mem.put_by_seq(
                    target_index,
                    &keys::IndexValue {
                        superseded_at: r.log_index,
                        ..row
                    },
                );
            }
        }
    }
    put_index_rows(mem, recs);
    Ok(())
}

/// Runs of at least this many records put their index keys from one thread per index.
const PARALLEL_INDEX_ROWS: usize = 2_000;

/// Puts the four index keys of every record into `mem`. Nothing reads the index tables while
/// rows are staged, and a query ignores rows at or past the published tree size, so the order
/// does not matter: a large run (a replay chunk, a big batch) fills the four skip lists from
/// one thread each.
fn put_index_rows(mem: &Memtable, recs: &[NewRecord]) {
    if recs.len() < PARALLEL_INDEX_ROWS {
        for r in recs {
            for kind in KINDS {
                mem.put_index(kind, keys::index_key(kind, &r.fields, r.log_index));
            }
        }
        return;
    }
    std::thread::scope(|scope| {
        for kind in KINDS {
            scope.spawn(move || {
                for r in recs {
                    mem.put_index(kind, keys::index_key(kind, &r.fields, r.log_index));
                }
            });
        }
    });
}
