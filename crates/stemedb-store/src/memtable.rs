//! The memtable (design §4): index rows of acknowledged assertions live in memory until a
//! background merger folds them into redb in large sorted transactions, so no B-tree work sits
//! on the acknowledgement path.
//!
//! - `Memtable`: one sorted map per index and for `by_seq` (`crossbeam_skiplist::SkipMap`, so
//!   readers never block the commit thread and the commit thread never blocks readers) and a
//!   hash map of the `assertions` rows (read only by id until the merger sorts them), holding
//!   the rows of log indexes `[first, end)` plus `by_seq` overrides of older rows (a correction
//!   marks its target superseded).
//! - `Version`: the memtables a reader must merge with redb, newest first: the active one (the
//!   commit thread inserts into it) and the frozen ones waiting for the merger.
//! - `View`: a pinned version plus one redb read transaction, opened in that order. A frozen
//!   memtable leaves the version only after its rows are committed to redb, so a view sees every
//!   row either in a memtable or in redb (or both, with equal values); newer memtables override
//!   older ones and redb.
//!
//! Keys are insert-only and end in the log index, and queries skip rows at or past their tree
//! size, so a view that also sees rows newer than its tree size answers the same.
//!
//! Architecture Invariant: only the commit thread inserts into a memtable, and only into the
//! active one; only the merger writes redb tables after recovery.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crossbeam_skiplist::SkipMap;
use redb::{ReadTransaction, WriteTransaction};
use stemedb_core::AssertionId;
use stemedb_merkle::Hash;

use crate::keys::{AssertionRecord, INDEX_VALUE_BYTES, IndexKeyBuf, IndexKind, IndexValue};
use crate::runs::{
    AssertionTables, Filters, Part, RunFilter, append_keys, append_rows, keys_def, rows_def,
    table_name,
};
use crate::vlog::Position;
use crate::{ASSERTIONS, BY_SEQ, SUPERSEDES, StoreError, db_err};

/// The four index kinds, in the order `Memtable::idx` holds them.
pub(crate) const KINDS: [IndexKind; 4] = [
    IndexKind::Subject,
    IndexKind::ReversedSubject,
    IndexKind::Predicate,
    IndexKind::Agent,
];

fn slot(kind: IndexKind) -> usize {
    match kind {
        IndexKind::Subject => 0,
        IndexKind::ReversedSubject => 1,
        IndexKind::Predicate => 2,
        IndexKind::Agent => 3,
    }
}

/// Bits of an [`IdFilter`] per assertion the memtable is sized for: with three probes, about
/// 0.3% of absent ids pass (2^21 bits, 256 KiB, for the default 100,000 rows).
const ID_FILTER_BITS_PER_ROW: usize = 20;
/// The smallest and largest filters, in 64-bit words (512 B and 2 MiB).
const ID_FILTER_MIN_WORDS: usize = 1 << 6;
const ID_FILTER_MAX_WORDS: usize = 1 << 18;

/// A negative filter (a Bloom filter) over the assertion ids of one memtable: a clear bit
/// proves the id is not there, so a lookup of a new id (every dedupe of an accepted write)
/// almost always skips the memtable's `assertions` map. An id is a BLAKE3 hash, so its own
/// bytes are the probes; an id ground to collide, or a memtable grown past its size (a
/// replayed tail), only costs the map probe the filter would have saved.
struct IdFilter {
    words: Box<[AtomicU64]>,
}

impl IdFilter {
    /// A filter for about `rows` ids.
    fn new(rows: usize) -> IdFilter {
        let words = (rows.saturating_mul(ID_FILTER_BITS_PER_ROW) / 64)
            .clamp(ID_FILTER_MIN_WORDS, ID_FILTER_MAX_WORDS)
            .next_power_of_two();
        IdFilter {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The three bits of `id`: word and bit.
    fn probes(&self, id: &[u8; 32]) -> [(usize, u64); 3] {
        filter_probes(self.words.len(), id)
    }

    /// Sets the bits of `id`. Call it before the id's row is inserted: whoever can know of the
    /// row (the commit thread itself, or a reader that saw the memtable's published end, the
    /// ack, or any later row, all released after these bits) then also sees its bits. A reader
    /// racing the insert of an unpublished row may miss it, as it may miss the row itself.
    fn insert(&self, id: &[u8; 32]) {
        for (w, bit) in self.probes(id) {
            self.words[w].fetch_or(bit, Ordering::Release);
        }
    }

    /// False only if `id` was never inserted.
    fn may_contain(&self, id: &[u8; 32]) -> bool {
        self.probes(id)
            .iter()
            .all(|&(w, bit)| self.words[w].load(Ordering::Acquire) & bit != 0)
    }
}

/// The three bits (word, mask) of `id` in a filter of `words` 64-bit words: three 32-bit
/// pieces of the id itself (a BLAKE3 hash), each modulo the filter's bits.
pub(crate) fn filter_probes(words: usize, id: &[u8; 32]) -> [(usize, u64); 3] {
    let bits = words.max(1) * 64;
    let probe = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&id[i * 4..i * 4 + 4]);
        let bit = u32::from_le_bytes(b) as usize % bits;
        (bit / 64, 1u64 << (bit % 64))
    };
    [probe(0), probe(1), probe(2)]
}

/// The `assertions` rows of a memtable (id → encoded [`AssertionRecord`]): a hash map, since
/// nothing reads them in key order until the merger writes the memtable out (it sorts them
/// then). An insert is a hash and a probe where a skip list took a descent through randomly
/// keyed nodes (≈ 1.2 µs an assertion on the commit thread, measured), and dropping it frees
/// one table instead of a node per row. Only the commit thread writes; readers hold the lock
/// for one probe.
struct IdRows(RwLock<HashMap<[u8; 32], [u8; 32]>>);

/// Rows an [`IdRows`] map has room for before it first grows (about 1 MiB).
const ID_ROWS_PRESIZED: usize = 16_384;

impl IdRows {
    /// A map sized for `rows`, but for at most [`ID_ROWS_PRESIZED`] to begin with: hashing
    /// spreads even a few rows over every page of the table, so a memtable frozen by age with
    /// few rows would otherwise hold the whole table resident; past it the map doubles (each
    /// row is copied about once in all).
    fn with_capacity(rows: usize) -> IdRows {
        IdRows(RwLock::new(HashMap::with_capacity(
            rows.min(ID_ROWS_PRESIZED),
        )))
    }

    // An insert cannot panic half-way (a failed allocation aborts the process), so a poisoned
    // lock still guards whole rows: read them rather than report an acknowledged row missing.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], [u8; 32]>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, id: [u8; 32], row: [u8; 32]) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, row);
    }

    fn get(&self, id: &[u8; 32]) -> Option<[u8; 32]> {
        self.read().get(id).copied()
    }

    fn len(&self) -> usize {
        self.read().len()
    }

    /// Every row, in key order.
    fn sorted(&self) -> Vec<([u8; 32], [u8; 32])> {
        let mut rows: Vec<_> = self.read().iter().map(|(k, v)| (*k, *v)).collect();
        rows.sort_unstable_by_key(|a| a.0);
        rows
    }
}

/// Rows of acknowledged assertions not yet in redb.
pub(crate) struct Memtable {
    // One past the last log index inserted (published after the group's rows are in).
    end: AtomicU64,
    assertions: IdRows,
    ids: IdFilter,
    by_seq: SkipMap<u64, [u8; INDEX_VALUE_BYTES]>,
    // Keys inline in the skip-list nodes (`IndexKeyBuf`): a search compares them without
    // following a second pointer, and an insert allocates once.
    idx: [SkipMap<IndexKeyBuf, ()>; 4],
    supersedes: SkipMap<IndexKeyBuf, ()>,
    rows: AtomicUsize,
    // The value-log position and Merkle root right after its last record (for the durable
    // checkpoint that covers it).
    tail: Mutex<(Position, Hash)>,
    /// When it became the active memtable.
    pub created: Instant,
    /// Test support: a number no other memtable of this process has (an address can be reused).
    #[cfg(test)]
    pub serial: u64,
}

/// Test support: the threads that freed memtables, by [`Memtable::serial`].
#[cfg(test)]
pub(crate) static FREED_ON: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
#[cfg(test)]
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(0);

#[cfg(test)]
impl Drop for Memtable {
    fn drop(&mut self) {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        FREED_ON
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((self.serial, thread));
    }
}

impl Memtable {
    /// An empty memtable for log indexes from `first`, sized for about `rows` assertions.
    pub(crate) fn new(first: u64, vlog: Position, root: Hash, rows: usize) -> Memtable {
        Memtable {
            end: AtomicU64::new(first),
            assertions: IdRows::with_capacity(rows),
            ids: IdFilter::new(rows),
            by_seq: SkipMap::new(),
            idx: [
                SkipMap::new(),
                SkipMap::new(),
                SkipMap::new(),
                SkipMap::new(),
            ],
            supersedes: SkipMap::new(),
            rows: AtomicUsize::new(0),
            tail: Mutex::new((vlog, root)),
            created: Instant::now(),
            #[cfg(test)]
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// One past the last log index it holds.
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Assertions it holds.
    pub(crate) fn len(&self) -> usize {
        self.rows.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value-log position and root after its last record.
    pub(crate) fn tail(&self) -> (Position, Hash) {
        *self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn put_assertion(&self, id: &AssertionId, rec: &AssertionRecord) {
        self.ids.insert(id.as_bytes());
        self.assertions.insert(*id.as_bytes(), rec.encode());
        self.rows.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn put_by_seq(&self, li: u64, value: &IndexValue) {
        self.by_seq.insert(li, value.encode());
    }

    pub(crate) fn put_index(&self, kind: IndexKind, key: IndexKeyBuf) {
        self.idx[slot(kind)].insert(key, ());
    }

    pub(crate) fn put_supersedes(&self, key: &[u8]) {
        self.supersedes.insert(IndexKeyBuf::from_slice(key), ());
    }

    /// Publishes that every row below `end` is in, with the value log at `vlog` and the tree
    /// root `root` after it.
    pub(crate) fn publish(&self, end: u64, vlog: Position, root: Hash) {
        *self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (vlog, root);
        self.end.store(end, Ordering::Release);
    }

    /// Writes every row into redb tables of `txn` in key order (one sorted pass per table).
    pub(crate) fn write_to(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        {
            let mut t = txn.open_table(ASSERTIONS).map_err(db_err)?;
            for (k, v) in self.assertions.sorted() {
                t.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
            }
        }
        {
            let mut t = txn.open_table(BY_SEQ).map_err(db_err)?;
            for e in self.by_seq.iter() {
                t.insert(*e.key(), e.value().as_slice()).map_err(db_err)?;
            }
        }
        for kind in KINDS {
            let mut t = txn
                .open_table(crate::query::table_of(kind))
                .map_err(db_err)?;
            for e in self.idx[slot(kind)].iter() {
                t.insert(e.key().as_slice(), ()).map_err(db_err)?;
            }
        }
        let mut t = txn.open_table(SUPERSEDES).map_err(db_err)?;
        for e in self.supersedes.iter() {
            t.insert(e.key().as_slice(), ()).map_err(db_err)?;
        }
        Ok(())
    }
}

impl Memtable {
    /// Writes every row as the new run `run` (design §4, `runs.rs`): the `assertions`, index and
    /// `supersedes` rows appended in key order to that run's empty tables (packed leaves, no
    /// page of an older run touched), the `by_seq` rows into `by_seq`. Returns the run's id
    /// filter.
    pub(crate) fn write_run(
        &self,
        txn: &WriteTransaction,
        run: u64,
    ) -> Result<RunFilter, StoreError> {
        let mut filter = RunFilter::for_rows(self.assertions.len());
        {
            let name = table_name(Part::Assertions, run);
            let mut t = txn.open_table(rows_def(&name)).map_err(db_err)?;
            let rows = self.assertions.sorted();
            for (k, _) in &rows {
                filter.insert(k);
            }
            append_rows(
                &mut t,
                rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            )?;
        }
        self.write_by_seq(txn)?;
        for kind in KINDS {
            let name = table_name(Part::of_kind(kind), run);
            let mut t = txn.open_table(keys_def(&name)).map_err(db_err)?;
            let rows: Vec<_> = self.idx[slot(kind)].iter().collect();
            append_keys(&mut t, rows.iter().map(|e| e.key().as_slice()))?;
        }
        let name = table_name(Part::Supersedes, run);
        let mut t = txn.open_table(keys_def(&name)).map_err(db_err)?;
        let rows: Vec<_> = self.supersedes.iter().collect();
        append_keys(&mut t, rows.iter().map(|e| e.key().as_slice()))?;
        Ok(filter)
    }

    /// Writes the `by_seq` rows: new log indexes appended at the end of the table (packed
    /// leaves), overrides of older rows (a correction's target marked) inserted in place.
    fn write_by_seq(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        use redb::ReadableTable as _;
        let mut t = txn.open_table(BY_SEQ).map_err(db_err)?;
        let last = t.last().map_err(db_err)?.map(|(k, _)| k.value());
        let mut appended = Vec::new();
        for e in self.by_seq.iter() {
            if last.is_some_and(|l| *e.key() <= l) {
                t.insert(*e.key(), e.value().as_slice()).map_err(db_err)?;
            } else {
                appended.push(e);
            }
        }
        let mut c = t.upper_bound_mut(Bound::<u64>::Unbounded).map_err(db_err)?;
        for e in &appended {
            c.insert_before(*e.key(), e.value().as_slice())
                .map_err(db_err)?;
        }
        c.close().map_err(db_err)
    }
}

/// The memtables a reader merges with redb, newest first (the active one first).
pub(crate) struct Version {
    pub mems: Vec<Arc<Memtable>>,
}

impl Version {
    /// The active memtable.
    pub(crate) fn active(&self) -> &Arc<Memtable> {
        // Invariant: a version always holds its active memtable.
        self.mems
            .first()
            .expect("a version always has an active memtable")
    }

    /// Frozen memtables, oldest first.
    pub(crate) fn frozen_oldest_first(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        self.mems.iter().skip(1).rev()
    }

    /// Assertions in frozen memtables.
    pub(crate) fn frozen_rows(&self) -> usize {
        self.mems.iter().skip(1).map(|m| m.len()).sum()
    }
}

/// The current version, swapped whole.
pub(crate) struct Versions {
    current: RwLock<Arc<Version>>,
}

impl Versions {
    pub(crate) fn new(active: Arc<Memtable>) -> Versions {
        Versions {
            current: RwLock::new(Arc::new(Version { mems: vec![active] })),
        }
    }

    /// The current version (a poisoned lock still holds a whole version).
    pub(crate) fn load(&self) -> Arc<Version> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&Version) -> Version) {
        let mut cur = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cur = Arc::new(f(&cur));
    }

    /// Freezes the active memtable and makes `next` the active one.
    pub(crate) fn freeze(&self, next: Arc<Memtable>) {
        self.update(|v| {
            let mut mems = Vec::with_capacity(v.mems.len() + 1);
            mems.push(next);
            mems.extend(v.mems.iter().cloned());
            Version { mems }
        });
    }

    /// Drops a frozen memtable whose rows are now committed to redb.
    pub(crate) fn retire(&self, merged: &Arc<Memtable>) {
        self.update(|v| Version {
            mems: v
                .mems
                .iter()
                .filter(|m| !Arc::ptr_eq(m, merged))
                .cloned()
                .collect(),
        });
    }
}

/// One redb read transaction with every run's tables opened (the pinned read version, design
/// §4): readers share it until the merger publishes the next one after its next commit, so a
/// query opens no table and starts no transaction of its own.
pub(crate) struct Snapshot {
    // Kept open for the tables below (they read through it).
    _txn: ReadTransaction,
    idx: [IndexTables; 4],
    assertions: AssertionTables,
    supersedes: IndexTables,
    by_seq: redb::ReadOnlyTable<u64, &'static [u8]>,
    runs: usize,
}

impl Snapshot {
    /// A read transaction of `db` now, with the tables of every run it names (newest first; an
    /// empty run 0 is left out).
    pub(crate) fn open(db: &redb::Database, filters: &Filters) -> Result<Snapshot, StoreError> {
        use redb::{ReadableDatabase as _, ReadableTableMetadata as _};
        let txn = db.begin_read().map_err(db_err)?;
        let mut runs = crate::runs::runs_of(&txn)?;
        runs.reverse();
        let run0_empty = txn
            .open_table(rows_def(Part::Assertions.base()))
            .map_err(db_err)?
            .is_empty()
            .map_err(db_err)?;
        if run0_empty && runs.len() > 1 {
            runs.retain(|&r| r != 0);
        }
        let open_keys = |part: Part| -> Result<IndexTables, StoreError> {
            runs.iter()
                .map(|&run| {
                    txn.open_table(keys_def(&table_name(part, run)))
                        .map_err(db_err)
                })
                .collect()
        };
        let idx = [
            open_keys(Part::of_kind(KINDS[0]))?,
            open_keys(Part::of_kind(KINDS[1]))?,
            open_keys(Part::of_kind(KINDS[2]))?,
            open_keys(Part::of_kind(KINDS[3]))?,
        ];
        let supersedes = open_keys(Part::Supersedes)?;
        let assertions = AssertionTables::open(&txn, &runs, filters)?;
        let by_seq = txn.open_table(BY_SEQ).map_err(db_err)?;
        Ok(Snapshot {
            _txn: txn,
            idx,
            assertions,
            supersedes,
            by_seq,
            runs: runs.len(),
        })
    }

    /// The runs a read descends (one B-tree per table each).
    pub(crate) fn runs(&self) -> usize {
        self.runs
    }
}

/// The current snapshot, swapped whole.
pub(crate) struct Snapshots {
    current: RwLock<Arc<Snapshot>>,
}

impl Snapshots {
    pub(crate) fn new(first: Snapshot) -> Snapshots {
        Snapshots {
            current: RwLock::new(Arc::new(first)),
        }
    }

    /// The current snapshot (a poisoned lock still holds a whole one).
    pub(crate) fn load(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Publishes a snapshot of `db` as it is now. Call it after every commit that adds or
    /// moves rows, and before a memtable whose rows that commit holds leaves the version.
    pub(crate) fn refresh(&self, db: &redb::Database, filters: &Filters) -> Result<(), StoreError> {
        let next = Arc::new(Snapshot::open(db, filters)?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }
}

/// A pinned version and a snapshot loaded after it. A frozen memtable leaves the version only
/// after the snapshot holding its rows is published, so a view sees every row either in a
/// memtable or in the snapshot (or both, with equal values).
pub(crate) struct View {
    pub version: Arc<Version>,
    snap: Arc<Snapshot>,
}

/// The tables of one index part, one per run (newest first).
pub(crate) type IndexTables = Vec<redb::ReadOnlyTable<&'static [u8], ()>>;

impl View {
    pub(crate) fn open(versions: &Versions, snapshots: &Snapshots) -> Result<View, StoreError> {
        let version = versions.load();
        let snap = snapshots.load();
        Ok(View { version, snap })
    }

    /// The `assertions` row of `id`.
    pub(crate) fn assertion(
        &self,
        id: &AssertionId,
    ) -> Result<Option<AssertionRecord>, StoreError> {
        self.assertions()?.get(id)
    }

    /// An `assertions` row reader for many lookups.
    pub(crate) fn assertions(&self) -> Result<Assertions<'_>, StoreError> {
        Ok(Assertions {
            mems: &self.version.mems,
            tables: &self.snap.assertions,
        })
    }

    /// A `by_seq` row reader for many lookups.
    pub(crate) fn by_seq(&self) -> Result<BySeq<'_>, StoreError> {
        Ok(BySeq {
            mems: &self.version.mems,
            table: &self.snap.by_seq,
        })
    }

    /// The tables of index `kind`, one per run.
    pub(crate) fn index_tables(&self, kind: IndexKind) -> Result<&IndexTables, StoreError> {
        Ok(&self.snap.idx[slot(kind)])
    }

    /// Keys of index `kind` in `(start, end)`, from every memtable and every run (`tables`,
    /// from [`View::index_tables`]), in order, each once.
    pub(crate) fn index_keys<'a>(
        &'a self,
        tables: &'a IndexTables,
        kind: IndexKind,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Merged<'a>, StoreError> {
        self.index_keys_in(tables, kind, start, end, false)
    }

    /// [`View::index_keys`], newest (greatest) key first.
    pub(crate) fn index_keys_rev<'a>(
        &'a self,
        tables: &'a IndexTables,
        kind: IndexKind,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Merged<'a>, StoreError> {
        self.index_keys_in(tables, kind, start, end, true)
    }

    fn index_keys_in<'a>(
        &'a self,
        tables: &'a IndexTables,
        kind: IndexKind,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        descending: bool,
    ) -> Result<Merged<'a>, StoreError> {
        let mut sources: Vec<Source<'a>> =
            Vec::with_capacity(self.version.mems.len() + tables.len());
        for table in tables {
            let range = table.range::<&[u8]>((start, end)).map_err(db_err)?;
            let key = |r: Result<_, redb::StorageError>| {
                r.map(|(k, _): (redb::AccessGuard<'_, &[u8]>, _)| k.value().to_vec())
                    .map_err(db_err)
            };
            if descending {
                sources.push(Box::new(range.rev().map(key)));
            } else {
                sources.push(Box::new(range.map(key)));
            }
        }
        for m in &self.version.mems {
            let range = m.idx[slot(kind)].range::<IndexKeyBuf, _>((owned(start), owned(end)));
            if descending {
                sources.push(Box::new(range.rev().map(|entry| Ok(entry.key().to_vec()))));
            } else {
                sources.push(Box::new(range.map(|entry| Ok(entry.key().to_vec()))));
            }
        }
        Ok(Merged::new(sources, descending))
    }

    /// A reader of `supersedes` links for many lookups.
    pub(crate) fn supersedes(&self) -> Result<Superseders<'_>, StoreError> {
        Ok(Superseders {
            mems: &self.version.mems,
            tables: &self.snap.supersedes,
        })
    }
}

/// Reads `supersedes` links through a view: every run and every memtable.
pub(crate) struct Superseders<'a> {
    mems: &'a [Arc<Memtable>],
    tables: &'a IndexTables,
}

impl Superseders<'_> {
    /// Log indexes of the assertions that name `target` in `supersedes`, in log order.
    pub(crate) fn of(&self, target: &[u8; 32]) -> Result<Vec<u64>, StoreError> {
        let lo = crate::keys::supersedes_key(target, 0);
        let hi = crate::keys::supersedes_key(target, u64::MAX);
        let mut out = Vec::new();
        for table in self.tables {
            for r in table
                .range::<&[u8]>(lo.as_slice()..=hi.as_slice())
                .map_err(db_err)?
            {
                let (k, _) = r.map_err(db_err)?;
                out.extend(crate::keys::supersedes_key_index(k.value()));
            }
        }
        for m in self.mems {
            for e in m.supersedes.range::<[u8], _>((
                Bound::Included(lo.as_slice()),
                Bound::Included(hi.as_slice()),
            )) {
                out.extend(crate::keys::supersedes_key_index(e.key()));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// Reads `assertions` rows through a view: the memtables (each behind its id filter), then
/// every run (each behind its own filter, when it has one).
pub(crate) struct Assertions<'a> {
    mems: &'a [Arc<Memtable>],
    tables: &'a AssertionTables,
}

impl Assertions<'_> {
    /// The row of `id`, if any.
    pub(crate) fn get(&self, id: &AssertionId) -> Result<Option<AssertionRecord>, StoreError> {
        for m in self.mems {
            if !m.ids.may_contain(id.as_bytes()) {
                continue;
            }
            if let Some(v) = m.assertions.get(id.as_bytes()) {
                return AssertionRecord::decode(&v).map(Some);
            }
        }
        self.tables.get(id.as_bytes())
    }
}

/// Reads `by_seq` rows through a view: the newest memtable holding a row wins, then redb.
pub(crate) struct BySeq<'a> {
    mems: &'a [Arc<Memtable>],
    table: &'a redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl BySeq<'_> {
    /// The row of `li`, which an index or a link names: a missing one is corruption.
    pub(crate) fn row(&self, li: u64) -> Result<IndexValue, StoreError> {
        self.get(li)?.ok_or_else(|| {
            StoreError::Corrupt(format!("index names log index {li}, by_seq has no row"))
        })
    }

    pub(crate) fn get(&self, li: u64) -> Result<Option<IndexValue>, StoreError> {
        for m in self.mems {
            if let Some(e) = m.by_seq.get(&li) {
                return IndexValue::decode(e.value()).map(Some);
            }
        }
        match self.table.get(li).map_err(db_err)? {
            Some(v) => IndexValue::decode(v.value()).map(Some),
            None => Ok(None),
        }
    }
}

fn owned(b: Bound<&[u8]>) -> Bound<IndexKeyBuf> {
    match b {
        Bound::Included(k) => Bound::Included(IndexKeyBuf::from_slice(k)),
        Bound::Excluded(k) => Bound::Excluded(IndexKeyBuf::from_slice(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

type Source<'a> = Box<dyn Iterator<Item = Result<Vec<u8>, StoreError>> + 'a>;

/// A sorted union of sorted key streams, each key once.
pub(crate) struct Merged<'a> {
    sources: Vec<Source<'a>>,
    heads: Vec<Option<Vec<u8>>>,
    started: bool,
    // Sources and the union in descending key order.
    descending: bool,
}

impl<'a> Merged<'a> {
    fn new(sources: Vec<Source<'a>>, descending: bool) -> Merged<'a> {
        let n = sources.len();
        Merged {
            sources,
            heads: vec![None; n],
            started: false,
            descending,
        }
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<Vec<u8>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                match self.sources[i].next() {
                    Some(Ok(k)) => self.heads[i] = Some(k),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
        }
        let heads = self.heads.iter().flatten();
        let min = if self.descending {
            heads.max()
        } else {
            heads.min()
        }?
        .clone();
        for i in 0..self.heads.len() {
            if self.heads[i].as_ref() == Some(&min) {
                self.heads[i] = match self.sources[i].next() {
                    Some(Ok(k)) => Some(k),
                    Some(Err(e)) => return Some(Err(e)),
                    None => None,
                };
            }
        }
        Some(Ok(min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(n: u64) -> [u8; 32] {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn id_filter_never_misses_an_inserted_id_and_rejects_most_others() {
        let f = IdFilter::new(100_000);
        assert_eq!(f.words.len(), 1 << 15, "2^21 bits for 100,000 rows");
        for n in 0..100_000 {
            f.insert(&id_of(n));
        }
        for n in 0..100_000 {
            assert!(f.may_contain(&id_of(n)), "inserted id {n} reported absent");
        }
        let false_positives = (100_000..200_000)
            .filter(|&n| f.may_contain(&id_of(n)))
            .count();
        // Three probes into 2^21 bits holding 100,000 ids: about 0.25% expected.
        assert!(
            false_positives < 1_000,
            "{false_positives} of 100,000 absent ids passed the filter"
        );
    }

    #[test]
    fn a_memtable_finds_its_assertions_and_only_them() {
        let m = Memtable::new(0, Position::default(), [0u8; 32], 100);
        let rec = |li: u64| AssertionRecord {
            log_index: li,
            received_at_ms: 7,
            pointer: crate::vlog::Pointer {
                segment: 1,
                offset: li * 100,
                len: 90,
            },
        };
        for li in 0..5_000u64 {
            m.put_assertion(&AssertionId::from_bytes(id_of(li)), &rec(li));
        }
        for li in 0..5_000u64 {
            let got = m.assertions.get(&id_of(li));
            assert_eq!(got, Some(rec(li).encode()));
            assert!(m.ids.may_contain(&id_of(li)));
        }
        assert!(m.assertions.get(&id_of(5_000)).is_none());
    }

    #[test]
    fn merged_streams_give_each_key_once_in_order() {
        let streams: Vec<Vec<&[u8]>> = vec![
            vec![b"a", b"c", b"e"],
            vec![b"b", b"c", b"f"],
            vec![],
            vec![b"a", b"g"],
        ];
        let sources: Vec<Source<'_>> = streams
            .into_iter()
            .map(|s| Box::new(s.into_iter().map(|k| Ok(k.to_vec()))) as Source<'_>)
            .collect();
        let got: Vec<Vec<u8>> = Merged::new(sources, false)
            .map(|r| r.expect("ok"))
            .collect();
        let want: Vec<Vec<u8>> = ["a", "b", "c", "e", "f", "g"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(got, want);
    }
}
