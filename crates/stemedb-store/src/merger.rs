//! The merger thread (design §4): folds frozen memtables into redb, oldest first, one large
//! sorted write transaction each (with `applied` in the same transaction), and makes a durable
//! checkpoint every few seconds: value log and Merkle node files fsync'd first, then redb
//! committed durably with `durable` = `applied`, then `metadata.json`.
//!
//! Architecture Invariant: after recovery the merger is the only writer of `db/stemedb.redb`.
//! A frozen memtable leaves the readers' version only after its rows are committed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use stemedb_merkle::Hash;

use crate::files::{now_ms, write_atomically};
use crate::memtable::Memtable;
use crate::runs::{self, Compaction};
use crate::vlog::Position;
use crate::{FORMAT_VERSION, Layout, META, Shared, StoreError, StoreOptions, db_err, io_at};

/// What the commit thread asks of the merger.
pub(crate) enum MergeJob {
    /// A memtable was frozen: merge what is frozen.
    Merge,
    /// Merge everything frozen, then make a durable checkpoint, then answer.
    Drain(Sender<Result<(), StoreError>>),
}

/// How often the write-back thread flushes redb's dirty pages between durable checkpoints.
const WRITE_BACK_PERIOD: Duration = Duration::from_millis(250);

pub(crate) struct Merger {
    pub db: Arc<Database>,
    pub shared: Arc<Shared>,
    pub layout: Layout,
    pub opts: StoreOptions,
    /// Log indexes below this are in redb.
    pub applied: u64,
    /// Value-log position and tree root at `applied`.
    pub applied_tail: (Position, Hash),
    /// Log indexes below this are durable in redb.
    pub durable: u64,
    pub last_durable: Instant,
    /// Durable checkpoints made (for the fault-injection hook).
    pub checkpoints: u64,
    /// The compactions in progress (`runs.rs`), on disjoint input runs; the smallest goes first,
    /// so small runs never wait behind a large compaction.
    pub compactions: Vec<Compaction>,
    /// Merged memtables that left the version while a reader still pinned them: freed here
    /// ([`Merger::reap`]) once no reader does, so that freeing 100,000 rows (tens of ms) never
    /// falls on the commit thread or a query, whichever would otherwise drop the last pin.
    pub retired: Vec<Arc<Memtable>>,
}

/// How often the merger looks for retired memtables no reader pins any more.
const REAP_POLL: Duration = Duration::from_millis(10);

impl Merger {
    pub(crate) fn run(mut self, rx: Receiver<MergeJob>) {
        let interval = Duration::from_millis(self.opts.checkpoint_interval_ms.max(1));
        let _write_back = WriteBack::start(&self.layout.redb, WRITE_BACK_PERIOD);
        if let Err(e) = self.drop_orphans() {
            self.shared
                .set_read_only(&format!("dropping an unfinished compaction failed: {e}"));
        }
        // Since the last job or idle step: idle work waits until `interval` has passed.
        let mut quiet = Instant::now();
        loop {
            self.reap();
            // A compaction in progress goes on in chunks whenever no job is waiting.
            let wait = if !self.compactions.is_empty() {
                Duration::ZERO
            } else {
                interval.saturating_sub(quiet.elapsed())
            };
            let wait = if self.retired.is_empty() {
                wait
            } else {
                wait.min(REAP_POLL)
            };
            let job = rx.recv_timeout(wait);
            if job.is_ok() {
                quiet = Instant::now();
            }
            match job {
                Ok(MergeJob::Merge) => {
                    self.merge_frozen();
                    if self.last_durable.elapsed() >= interval
                        || self.applied - self.durable >= self.opts.checkpoint_records
                    {
                        self.checkpoint_or_fail();
                    }
                }
                Ok(MergeJob::Drain(reply)) => {
                    let r = self.drain();
                    let _ = reply.send(r);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.compactions.is_empty() && quiet.elapsed() < interval {
                        // Only the poll for retired memtables: not idle for long enough yet.
                        continue;
                    }
                    quiet = Instant::now();
                    if !self.compactions.is_empty() {
                        self.compact_step_or_fail();
                        if self.last_durable.elapsed() >= interval && self.durable != self.applied {
                            self.checkpoint_or_fail();
                        }
                    } else if self.durable != self.applied {
                        self.checkpoint_or_fail();
                    } else if self.shared.read_only().is_none()
                        && self.shared.versions.load().frozen_rows() == 0
                        && let Err(e) = self.plan(true)
                    {
                        self.shared
                            .set_read_only(&format!("planning a compaction failed: {e}"));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Err(e) = self.drain() {
            tracing::error!(error = %e, "final merge failed; the WAL holds everything acknowledged");
        }
        tracing::info!(applied = self.applied, "merger stopped");
    }

    /// Drops the tables of runs `meta.runs` does not name: what a compaction cut off by a crash
    /// or a shutdown wrote. Nothing reads them, and run ids are never reused (`allocate_run`
    /// commits with a run's first rows), so they can wait until the store is open. The merger
    /// is redb's only writer by now, and this runs before it plans any compaction.
    fn drop_orphans(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None).map_err(db_err)?;
        let orphans = runs::clean_up(&txn)?;
        if orphans == 0 {
            txn.abort().map_err(db_err)?;
            return Ok(());
        }
        txn.commit().map_err(db_err)?;
        tracing::info!(
            tables = orphans,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dropped the tables of an unfinished compaction"
        );
        Ok(())
    }

    /// Merges every frozen memtable, then makes a durable checkpoint.
    fn drain(&mut self) -> Result<(), StoreError> {
        if let Some(why) = self.shared.read_only() {
            return Err(StoreError::ReadOnly(why));
        }
        self.merge_frozen();
        if let Some(why) = self.shared.read_only() {
            return Err(StoreError::ReadOnly(why));
        }
        self.durable_checkpoint().inspect_err(|e| {
            self.shared
                .set_read_only(&format!("durable checkpoint failed: {e}"));
        })
    }

    /// Frees the retired memtables no reader pins any more (the merger holds the last
    /// reference of each: nothing can pin one again once it left the version).
    fn reap(&mut self) {
        self.retired.retain(|m| Arc::strong_count(m) > 1);
    }

    /// Merges frozen memtables, oldest first, until none is left (or a merge fails: then the
    /// store turns read-only and the memtables stay, so reads keep seeing every acked row).
    fn merge_frozen(&mut self) {
        loop {
            // Under sustained load this loop may not return for a long time: free what no reader
            // pins as it goes, so retired memtables never pile up.
            self.reap();
            if self.shared.read_only().is_some() {
                return;
            }
            let version = self.shared.versions.load();
            let Some(oldest) = version.frozen_oldest_first().next().cloned() else {
                return;
            };
            drop(version);
            if let Err(e) = self.merge_one(&oldest) {
                self.shared
                    .set_read_only(&format!("merging the memtable into redb failed: {e}"));
                return;
            }
        }
    }

    fn merge_one(&mut self, m: &Arc<Memtable>) -> Result<(), StoreError> {
        if let Some(n) = self.opts.panic_merger_at
            && m.end() > n
        {
            panic!("test hook: the merger panics at log index {n}");
        }
        if let Some(ms) = self.opts.slow_merger_ms {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let started = Instant::now();
        if !m.is_empty() {
            let mut txn = self.db.begin_write().map_err(db_err)?;
            txn.set_durability(Durability::None).map_err(db_err)?;
            let new_run = if self.opts.merge_inline {
                // The engine before issue 17: every row into run 0's B-trees.
                m.write_to(&txn)?;
                None
            } else {
                let run = runs::allocate_run(&txn)?;
                let filter = m.write_run(&txn, run)?;
                runs::add_run(&txn, run, &filter)?;
                // Published before the commit: a reader that sees the run finds its filter.
                self.shared.filters.insert(run, Arc::new(filter));
                Some(run)
            };
            {
                let mut meta = txn.open_table(META).map_err(db_err)?;
                meta.insert("applied", m.end().to_le_bytes().as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
            // Before the memtable leaves the version: readers find its rows in the snapshot.
            self.shared.refresh_snapshot()?;
            self.applied = m.end();
            self.applied_tail = m.tail();
            if new_run.is_some() {
                self.plan_compactions()?;
            }
        }
        self.shared.versions.retire(m);
        self.retired.push(m.clone());
        self.shared.merged.notify_all();
        self.shared.observer.merged(
            m.len(),
            started.elapsed().as_secs_f64(),
            self.shared.versions.load().frozen_rows(),
        );
        Ok(())
    }

    /// Starts a compaction for every tier that holds enough runs not already being compacted.
    fn plan_compactions(&mut self) -> Result<(), StoreError> {
        self.plan(false)
    }

    /// With `idle` (no merge, compaction or checkpoint pending), also folds the small runs of
    /// the lowest tier together.
    fn plan(&mut self, idle: bool) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        loop {
            let busy: Vec<u64> = self
                .compactions
                .iter()
                .flat_map(|c| c.inputs.iter().copied())
                .collect();
            let plan = runs::plan(
                &txn,
                self.opts.memtable_rows.max(1) as u64,
                self.opts.compaction_fanout,
                &busy,
                idle,
            )?;
            let Some(c) = plan else { break };
            tracing::debug!(inputs = ?c.inputs, rows = c.rows, "compaction planned");
            self.compactions.push(c);
        }
        txn.abort().map_err(db_err)?;
        Ok(())
    }

    /// One chunk of the compaction in progress, in its own write transaction; the store turns
    /// read-only if it fails (the input runs stay whole until the last chunk swaps them out).
    fn compact_step_or_fail(&mut self) {
        if self.shared.read_only().is_some() {
            self.compactions.clear();
            return;
        }
        if let Err(e) = self.compact_step() {
            self.compactions.clear();
            self.shared
                .set_read_only(&format!("compacting runs failed: {e}"));
        }
    }

    fn compact_step(&mut self) -> Result<(), StoreError> {
        use redb::ReadableDatabase as _;
        // The smallest compaction first.
        let Some(at) = (0..self.compactions.len()).min_by_key(|&i| self.compactions[i].rows) else {
            return Ok(());
        };
        let mut c = self.compactions.swap_remove(at);
        let started = Instant::now();
        let inputs = self.db.begin_read().map_err(db_err)?;
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None).map_err(db_err)?;
        let done = c.step(&inputs, &txn, self.opts.compaction_chunk_rows)?;
        if done && let Some(out) = c.output() {
            self.shared.filters.insert(out, Arc::new(c.take_filter()));
        }
        txn.commit().map_err(db_err)?;
        drop(inputs);
        if done {
            self.shared.refresh_snapshot()?;
            for r in &c.inputs {
                self.shared.filters.remove(*r);
            }
            tracing::debug!(inputs = ?c.inputs, rows = c.rows, "compaction finished");
            self.shared
                .observer
                .compacted(c.rows as usize, started.elapsed().as_secs_f64());
            self.plan_compactions()?;
        } else {
            self.shared
                .observer
                .compacted(0, started.elapsed().as_secs_f64());
            self.compactions.push(c);
        }
        Ok(())
    }

    fn checkpoint_or_fail(&mut self) {
        if self.shared.read_only().is_some() {
            return;
        }
        if let Err(e) = self.durable_checkpoint() {
            self.shared
                .set_read_only(&format!("durable checkpoint failed: {e}"));
        }
    }

    /// Makes everything merged so far durable: fsync the value log up to `applied` and the
    /// node files, then commit `meta` with `Durability::Immediate`, then write `metadata.json`.
    pub(crate) fn durable_checkpoint(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        if let Some(limit) = self.opts.fail_checkpoint_after
            && self.checkpoints >= limit
        {
            return Err(StoreError::Io {
                path: self.layout.values.clone(),
                source: std::io::Error::other("injected checkpoint fsync failure (test hook)"),
            });
        }
        let (pos, root) = self.applied_tail;
        if pos.segment > 0 {
            let path = self.layout.values.join(format!("{:08}.vlog", pos.segment));
            std::fs::File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(io_at(&path))?;
        }
        for level in 0..64u32 {
            if (self.applied >> level) == 0 {
                break;
            }
            let path = self.layout.merkle.join(format!("level-{level:02}.dat"));
            std::fs::File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(io_at(&path))?;
        }
        let mut txn = self.db.begin_write().map_err(db_err)?;
        // Save redb's allocator state with this commit (two-phase): after a crash, redb reopens
        // at this checkpoint without walking every page to rebuild it (2.3 s at 1.4M
        // assertions, docs/performance.md). Non-durable commits since are discarded anyway.
        txn.set_quick_repair(true);
        let signed = self.shared.signed_hwm.load(Ordering::SeqCst);
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            for (k, v) in [
                ("applied", self.applied),
                ("durable", self.applied),
                ("signed_hwm", signed),
                ("durable_vlog_segment", u64::from(pos.segment)),
                ("durable_vlog_len", pos.len),
                ("durable_at_ms", now_ms() as u64),
            ] {
                meta.insert(k, v.to_le_bytes().as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        self.durable = self.applied;
        self.last_durable = Instant::now();
        self.checkpoints += 1;
        write_metadata(&self.layout, &self.opts, &self.shared, self.applied, root)?;
        self.shared
            .observer
            .durable_checkpoint(now_ms() as f64 / 1000.0, started.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Writes `metadata.json` for a durable checkpoint of `size` leaves with root `root`.
pub(crate) fn write_metadata(
    layout: &Layout,
    opts: &StoreOptions,
    shared: &Shared,
    size: u64,
    root: Hash,
) -> Result<(), StoreError> {
    let segments = stemedb_wal::list_segments(&layout.wal)
        .map(|s| s.len())
        .unwrap_or(0);
    let doc = serde_json::json!({
        "format_version": FORMAT_VERSION,
        "origin": opts.origin,
        "tree_size": size,
        "root": hex::encode(root),
        "assertions": size,
        "wal_segments": segments,
        "durable_checkpoint": {
            "tree_size": size,
            "root": hex::encode(root),
            "unix_ms": now_ms(),
        },
        "server_public_key": hex::encode(shared.signer.public_key()),
        "signed_hwm": shared.signed_hwm.load(Ordering::SeqCst),
    });
    let text = serde_json::to_vec_pretty(&doc)
        .map_err(|e| StoreError::Corrupt(format!("metadata.json: {e}")))?;
    write_atomically(&layout.metadata, &text)
}

/// Writes redb's dirty pages back to disk on its own thread between durable checkpoints.
///
/// The indexes are committed with `Durability::None` after each group, which leaves their pages
/// dirty in the OS page cache; the durable checkpoint's fsync then had to write a second's worth
/// of them (80-130 ms at 20k assertions/s) while the commit thread, and every write waiting on
/// it, stood still. `fdatasync` on a second descriptor of the same file flushes the same dirty
/// pages without holding the writer, so the checkpoint finds little left to write. This changes
/// no ordering redb relies on: the kernel may write any dirty page back at any time anyway.
struct WriteBack {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriteBack {
    fn start(path: &std::path::Path, period: Duration) -> WriteBack {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "no background write-back");
                return WriteBack {
                    stop: None,
                    thread: None,
                };
            }
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("stemedb-writeback".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if let Err(e) = file.sync_data() {
                        // Linux reports a write-back error to every open descriptor of the
                        // file, so the durable checkpoint's own fsync still sees it and turns
                        // the store read-only.
                        tracing::warn!(error = %e, "background write-back failed");
                    }
                }
            });
        match thread {
            Ok(t) => WriteBack {
                stop: Some(stop),
                thread: Some(t),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no background write-back thread");
                WriteBack {
                    stop: None,
                    thread: None,
                }
            }
        }
    }
}

impl Drop for WriteBack {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
