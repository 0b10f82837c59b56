//! Runs (design §4; decision 0020): the six randomly keyed tables (`assertions`, the four
//! indexes, `supersedes`) are kept as several sorted runs instead of one B-tree each, so a merge
//! never rewrites leaves of a large tree.
//!
//! - A run is one table per part, named `<part>@<id>`; run 0 is the part's plain name (what
//!   every store before format 3 holds, and what the inline engine and a backup write).
//! - The merger writes each frozen memtable as a new run, appending its sorted rows to empty
//!   tables (packed leaves, no random page writes), in one transaction with `applied`.
//! - `meta.runs` lists the runs other than 0, oldest first. Every row of the six parts is
//!   insert-only with a unique key (each key ends in its log index; ids are deduplicated before
//!   they are written), so a read is the union of the runs: no run overrides another.
//! - Compaction merges `fanout` runs of one size tier into one run, in chunks of a few hundred
//!   thousand rows per write transaction so merges of new memtables go on between them. The
//!   new run's tables are invisible until one last transaction swaps `meta.runs` and drops the
//!   inputs; tables of a run not in `meta.runs` (a compaction cut off by a crash) are dropped
//!   at open.
//! - Each run has a filter of its assertion ids (`run_filters`), so the dedupe of a new id
//!   skips every run's B-tree.
//!
//! Architecture Invariant: only the merger writes runs, `meta.runs` and `run_filters`, and a
//! run's tables never change once `meta.runs` names it.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};

use crate::keys::{AssertionRecord, IndexKind};
use crate::memtable::filter_probes;
use crate::{META, StoreError, db_err};

/// Run id → the encoded id filter of that run.
pub(crate) const RUN_FILTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("run_filters");

const RUNS_KEY: &str = "runs";
const NEXT_RUN_KEY: &str = "next_run";

/// Bits of a run's id filter per assertion: with three probes about 0.5% of absent ids pass.
const RUN_FILTER_BITS_PER_ROW: usize = 16;

/// The tables a run holds one of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Assertions,
    Subject,
    Reversed,
    Predicate,
    Agent,
    Supersedes,
}

pub(crate) const PARTS: [Part; 6] = [
    Part::Assertions,
    Part::Subject,
    Part::Reversed,
    Part::Predicate,
    Part::Agent,
    Part::Supersedes,
];

impl Part {
    /// The table name of run 0 (the name before format 3).
    pub(crate) fn base(self) -> &'static str {
        match self {
            Part::Assertions => "assertions",
            Part::Subject => "subject.idx",
            Part::Reversed => "concept_path.idx",
            Part::Predicate => "predicate.idx",
            Part::Agent => "agent.idx",
            Part::Supersedes => "supersedes",
        }
    }

    pub(crate) fn of_kind(kind: IndexKind) -> Part {
        match kind {
            IndexKind::Subject => Part::Subject,
            IndexKind::ReversedSubject => Part::Reversed,
            IndexKind::Predicate => Part::Predicate,
            IndexKind::Agent => Part::Agent,
        }
    }
}

/// The table of `part` in run `run`.
pub(crate) fn table_name(part: Part, run: u64) -> String {
    if run == 0 {
        part.base().to_string()
    } else {
        format!("{}@{run}", part.base())
    }
}

/// The run a table name belongs to, if it is a numbered run's table.
fn run_of_table(name: &str) -> Option<u64> {
    let (base, run) = name.rsplit_once('@')?;
    if !PARTS.iter().any(|p| p.base() == base) {
        return None;
    }
    run.parse().ok().filter(|&r| r > 0)
}

/// A table of keys alone (the indexes and `supersedes`).
pub(crate) fn keys_def(name: &str) -> TableDefinition<'_, &'static [u8], ()> {
    TableDefinition::new(name)
}

/// A table of keys and values (`assertions`).
pub(crate) fn rows_def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Every run of the store, oldest first: 0, then `meta.runs`.
pub(crate) fn read_runs(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<u64>, StoreError> {
    let mut runs = vec![0];
    if let Some(v) = meta.get(RUNS_KEY).map_err(db_err)? {
        let bytes = v.value();
        if !bytes.len().is_multiple_of(8) {
            return Err(StoreError::Corrupt(format!(
                "meta.runs is {} bytes, not a list of run ids",
                bytes.len()
            )));
        }
        for c in bytes.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            let run = u64::from_le_bytes(b);
            if run == 0 || runs.contains(&run) {
                return Err(StoreError::Corrupt(format!(
                    "meta.runs names run {run} twice or names run 0"
                )));
            }
            runs.push(run);
        }
    }
    Ok(runs)
}

/// The runs as a read transaction sees them, oldest first.
pub(crate) fn runs_of(txn: &ReadTransaction) -> Result<Vec<u64>, StoreError> {
    read_runs(&txn.open_table(META).map_err(db_err)?)
}

/// Writes `meta.runs` (every run but 0, oldest first).
fn write_runs(txn: &WriteTransaction, runs: &[u64]) -> Result<(), StoreError> {
    let bytes: Vec<u8> = runs
        .iter()
        .filter(|&&r| r != 0)
        .flat_map(|r| r.to_le_bytes())
        .collect();
    let mut meta = txn.open_table(META).map_err(db_err)?;
    meta.insert(RUNS_KEY, bytes.as_slice()).map_err(db_err)?;
    Ok(())
}

/// A fresh run id (never reused, even for a run a crash cut off).
pub(crate) fn allocate_run(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    let next = meta
        .get(NEXT_RUN_KEY)
        .map_err(db_err)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(1)
        .max(1);
    meta.insert(NEXT_RUN_KEY, (next + 1).to_le_bytes().as_slice())
        .map_err(db_err)?;
    Ok(next)
}

/// Registers a run the caller has just written into `txn`: a new id's tables are already
/// filled (see [`allocate_run`]), this adds it to `meta.runs` with its id filter.
pub(crate) fn add_run(
    txn: &WriteTransaction,
    run: u64,
    filter: &RunFilter,
) -> Result<(), StoreError> {
    let mut runs = read_runs(&txn.open_table(META).map_err(db_err)?)?;
    runs.push(run);
    write_runs(txn, &runs)?;
    let mut t = txn.open_table(RUN_FILTERS).map_err(db_err)?;
    t.insert(run, filter.encode().as_slice()).map_err(db_err)?;
    Ok(())
}

/// Drops the tables and filters of runs that `meta.runs` does not name (a compaction that a
/// crash cut off), and makes sure run 0's tables exist. Part of the open's write transaction.
pub(crate) fn clean_up(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let runs = read_runs(&txn.open_table(META).map_err(db_err)?)?;
    let orphans: Vec<String> = txn
        .list_tables()
        .map_err(db_err)?
        .map(|t| t.name().to_string())
        .filter(|name| run_of_table(name).is_some_and(|r| !runs.contains(&r)))
        .collect();
    for name in &orphans {
        let dropped = if name.starts_with(Part::Assertions.base()) {
            txn.delete_table(rows_def(name))
        } else {
            txn.delete_table(keys_def(name))
        };
        dropped.map_err(db_err)?;
    }
    {
        let mut t = txn.open_table(RUN_FILTERS).map_err(db_err)?;
        let stale: Vec<u64> = t
            .iter()
            .map_err(db_err)?
            .filter_map(|r| r.ok().map(|(k, _)| k.value()))
            .filter(|r| !runs.contains(r))
            .collect();
        for r in stale {
            t.remove(r).map_err(db_err)?;
        }
    }
    for part in PARTS {
        if part == Part::Assertions {
            txn.open_table(rows_def(part.base())).map_err(db_err)?;
        } else {
            txn.open_table(keys_def(part.base())).map_err(db_err)?;
        }
    }
    Ok(orphans.len())
}

/// A negative filter (Bloom filter) over the assertion ids of one run, immutable once built:
/// a clear bit proves the id is not in the run. The probes are the id's own bytes (a BLAKE3
/// hash), as in the memtable's filter.
pub(crate) struct RunFilter {
    words: Vec<u64>,
}

impl RunFilter {
    /// An empty filter for about `rows` ids.
    pub(crate) fn for_rows(rows: usize) -> RunFilter {
        let words = (rows.saturating_mul(RUN_FILTER_BITS_PER_ROW) / 64).max(64);
        RunFilter {
            words: vec![0; words],
        }
    }

    /// Adds an id (an `assertions` key; other lengths cannot be ids and are ignored).
    pub(crate) fn insert(&mut self, id: &[u8]) {
        let Ok(id) = <&[u8; 32]>::try_from(id) else {
            return;
        };
        for (w, bit) in filter_probes(self.words.len(), id) {
            self.words[w] |= bit;
        }
    }

    /// False only if `id` was never inserted.
    pub(crate) fn may_contain(&self, id: &[u8; 32]) -> bool {
        filter_probes(self.words.len(), id)
            .iter()
            .all(|&(w, bit)| self.words[w] & bit != 0)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<RunFilter, StoreError> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
            return Err(StoreError::Corrupt(format!(
                "a run filter of {} bytes",
                bytes.len()
            )));
        }
        let words = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        Ok(RunFilter { words })
    }
}

/// The id filters of the runs, by run id. A run without one (run 0, or a filter not loaded
/// yet) is simply looked up: a missing filter costs a B-tree lookup, never a missed row.
#[derive(Default)]
pub(crate) struct Filters {
    map: RwLock<HashMap<u64, Arc<RunFilter>>>,
}

impl Filters {
    /// The filters `run_filters` holds for the runs `txn` names.
    pub(crate) fn load(txn: &ReadTransaction) -> Result<Filters, StoreError> {
        let runs = runs_of(txn)?;
        let t = match txn.open_table(RUN_FILTERS) {
            Ok(t) => t,
            // A copy made by a backup holds run 0 alone, and no filters.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Filters::default()),
            Err(e) => return Err(db_err(e)),
        };
        let mut map = HashMap::new();
        for run in runs {
            if let Some(v) = t.get(run).map_err(db_err)? {
                map.insert(run, Arc::new(RunFilter::decode(v.value())?));
            }
        }
        Ok(Filters {
            map: RwLock::new(map),
        })
    }

    pub(crate) fn get(&self, run: u64) -> Option<Arc<RunFilter>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&run)
            .cloned()
    }

    pub(crate) fn insert(&self, run: u64, filter: Arc<RunFilter>) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run, filter);
    }

    pub(crate) fn remove(&self, run: u64) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&run);
    }
}

/// Appends ascending `(key, value)` rows at the end of `table` through one cursor, so redb packs
/// them into full leaves. A key not above the table's last one is an error (`UnorderedKey`).
pub(crate) fn append_rows<'r>(
    table: &mut redb::Table<&'static [u8], &'static [u8]>,
    rows: impl Iterator<Item = (&'r [u8], &'r [u8])>,
) -> Result<(), StoreError> {
    let mut c = table
        .upper_bound_mut(Bound::<&[u8]>::Unbounded)
        .map_err(db_err)?;
    for (k, v) in rows {
        c.insert_before(k, v).map_err(db_err)?;
    }
    c.close().map_err(db_err)
}

/// Appends ascending keys at the end of `table` (see [`append_rows`]).
pub(crate) fn append_keys<'r>(
    table: &mut redb::Table<&'static [u8], ()>,
    keys: impl Iterator<Item = &'r [u8]>,
) -> Result<(), StoreError> {
    let mut c = table
        .upper_bound_mut(Bound::<&[u8]>::Unbounded)
        .map_err(db_err)?;
    for k in keys {
        c.insert_before(k, ()).map_err(db_err)?;
    }
    c.close().map_err(db_err)
}

/// The `assertions` tables of every run of a read transaction, each behind its id filter when
/// it has one.
pub(crate) struct AssertionTables {
    tables: Vec<(RowsTable, Option<Arc<RunFilter>>)>,
}

type RowsTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

impl AssertionTables {
    /// Opens the tables of `runs` (newest first) in `txn`.
    pub(crate) fn open(
        txn: &ReadTransaction,
        runs: &[u64],
        filters: &Filters,
    ) -> Result<AssertionTables, StoreError> {
        let mut tables = Vec::with_capacity(runs.len());
        for &run in runs {
            let t = txn
                .open_table(rows_def(&table_name(Part::Assertions, run)))
                .map_err(db_err)?;
            tables.push((t, filters.get(run)));
        }
        Ok(AssertionTables { tables })
    }

    /// The `assertions` row of `id` in whichever run holds it.
    pub(crate) fn get(&self, id: &[u8; 32]) -> Result<Option<AssertionRecord>, StoreError> {
        for (table, filter) in &self.tables {
            if filter.as_ref().is_some_and(|f| !f.may_contain(id)) {
                continue;
            }
            if let Some(v) = table.get(id.as_slice()).map_err(db_err)? {
                return AssertionRecord::decode(v.value()).map(Some);
            }
        }
        Ok(None)
    }
}

/// The `assertions` row of one id in any run of a read transaction (for the open's checks).
pub(crate) fn find_assertion(
    txn: &ReadTransaction,
    id: &[u8; 32],
) -> Result<Option<AssertionRecord>, StoreError> {
    let mut runs = runs_of(txn)?;
    runs.reverse();
    AssertionTables::open(txn, &runs, &Filters::default())?.get(id)
}

/// Rows of `part` summed over every run of a read transaction.
pub(crate) fn part_len(txn: &ReadTransaction, part: Part) -> Result<u64, StoreError> {
    let mut n = 0;
    for run in runs_of(txn)? {
        let name = table_name(part, run);
        n += if part == Part::Assertions {
            txn.open_table(rows_def(&name)).map_err(db_err)?.len()
        } else {
            txn.open_table(keys_def(&name)).map_err(db_err)?.len()
        }
        .map_err(db_err)?;
    }
    Ok(n)
}

/// Appends up to `limit` rows of `rows` (ascending, after every key the table holds) at the end
/// of `part`'s table `name` in `txn`, through one cursor, calling `seen` with each key. Returns
/// how many it wrote and the last key.
fn append_merged(
    txn: &WriteTransaction,
    part: Part,
    name: &str,
    rows: &mut dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
    limit: usize,
    mut seen: impl FnMut(&[u8]),
) -> Result<(usize, Option<Vec<u8>>), StoreError> {
    let mut n = 0usize;
    let mut last: Option<Vec<u8>> = None;
    let rows = rows.take(limit);
    if part == Part::Assertions {
        let mut t = txn.open_table(rows_def(name)).map_err(db_err)?;
        let mut c = t
            .upper_bound_mut(Bound::<&[u8]>::Unbounded)
            .map_err(db_err)?;
        for row in rows {
            let (k, v) = row?;
            seen(&k);
            c.insert_before(k.as_slice(), v.as_slice())
                .map_err(db_err)?;
            n += 1;
            last = Some(k);
        }
        c.close().map_err(db_err)?;
    } else {
        let mut t = txn.open_table(keys_def(name)).map_err(db_err)?;
        let mut c = t
            .upper_bound_mut(Bound::<&[u8]>::Unbounded)
            .map_err(db_err)?;
        for row in rows {
            let (k, _) = row?;
            seen(&k);
            c.insert_before(k.as_slice(), ()).map_err(db_err)?;
            n += 1;
            last = Some(k);
        }
        c.close().map_err(db_err)?;
    }
    Ok((n, last))
}

type PairSource<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a>;

/// A sorted union of sorted `(key, value)` streams; a key in several streams comes once (the
/// first stream's value).
pub(crate) struct MergedPairs<'a> {
    sources: Vec<PairSource<'a>>,
    heads: Vec<Option<(Vec<u8>, Vec<u8>)>>,
    started: bool,
}

impl<'a> MergedPairs<'a> {
    pub(crate) fn new(sources: Vec<PairSource<'a>>) -> MergedPairs<'a> {
        let n = sources.len();
        MergedPairs {
            sources,
            heads: (0..n).map(|_| None).collect(),
            started: false,
        }
    }

    fn advance(&mut self, i: usize) -> Result<(), StoreError> {
        self.heads[i] = self.sources[i].next().transpose()?;
        Ok(())
    }
}

impl Iterator for MergedPairs<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                if let Err(e) = self.advance(i) {
                    return Some(Err(e));
                }
            }
        }
        let (min_i, _) = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|(k, _)| (i, k)))
            .min_by(|a, b| a.1.cmp(b.1))?;
        let head = self.heads[min_i].take()?;
        if let Err(e) = self.advance(min_i) {
            return Some(Err(e));
        }
        for i in 0..self.heads.len() {
            while self.heads[i].as_ref().is_some_and(|(k, _)| *k == head.0) {
                if let Err(e) = self.advance(i) {
                    return Some(Err(e));
                }
            }
        }
        Some(Ok(head))
    }
}

/// Streams of every run's rows of `part` from `after` (exclusive) on, read through `txn`.
fn part_sources(
    txn: &ReadTransaction,
    part: Part,
    runs: &[u64],
    after: Option<&[u8]>,
) -> Result<Vec<PairSource<'static>>, StoreError> {
    let lo: Bound<&[u8]> = match after {
        Some(k) => Bound::Excluded(k),
        None => Bound::Unbounded,
    };
    let mut sources: Vec<PairSource<'static>> = Vec::with_capacity(runs.len());
    for &run in runs {
        let name = table_name(part, run);
        if part == Part::Assertions {
            let t = txn.open_table(rows_def(&name)).map_err(db_err)?;
            let range = t.range::<&[u8]>((lo, Bound::Unbounded)).map_err(db_err)?;
            sources.push(Box::new(range.map(|r| {
                r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                    .map_err(db_err)
            })));
        } else {
            let t = txn.open_table(keys_def(&name)).map_err(db_err)?;
            let range = t.range::<&[u8]>((lo, Bound::Unbounded)).map_err(db_err)?;
            sources.push(Box::new(range.map(|r| {
                r.map(|(k, _)| (k.value().to_vec(), Vec::new()))
                    .map_err(db_err)
            })));
        }
    }
    Ok(sources)
}

/// Drops `meta.runs` and `meta.next_run` (a copy whose runs were merged into run 0).
pub(crate) fn forget_runs(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(db_err)?;
    meta.remove(RUNS_KEY).map_err(db_err)?;
    meta.remove(NEXT_RUN_KEY).map_err(db_err)?;
    Ok(())
}

/// Copies every run's rows of `part` in `src` into run 0 of `dst`, in key order, `chunk` rows
/// per write transaction (not durable: the caller commits durably at the end).
pub(crate) fn export_part(
    src: &ReadTransaction,
    dst: &redb::Database,
    part: Part,
    chunk: usize,
) -> Result<u64, StoreError> {
    let runs = runs_of(src)?;
    let mut rows = MergedPairs::new(part_sources(src, part, &runs, None)?).peekable();
    let mut copied = 0u64;
    loop {
        let mut txn = dst.begin_write().map_err(db_err)?;
        txn.set_durability(redb::Durability::None).map_err(db_err)?;
        let (n, _) = append_merged(&txn, part, part.base(), &mut rows, chunk.max(1), |_| {})?;
        copied += n as u64;
        txn.commit().map_err(db_err)?;
        if rows.peek().is_none() {
            return Ok(copied);
        }
    }
}

/// The size tier of a run of `rows` assertions: 0 below `base × fanout`, then one more for each
/// further factor of `fanout`.
fn tier(rows: u64, base: u64, fanout: u64) -> u32 {
    let mut t = 0;
    let mut cap = base.max(1).saturating_mul(fanout);
    while rows >= cap && cap < u64::MAX {
        t += 1;
        cap = cap.saturating_mul(fanout);
    }
    t
}

/// The runs to compact next, if any: the oldest runs (at most `2 × fanout`) of the lowest tier
/// that holds at least `fanout` runs outside `busy` (the inputs of compactions in progress); run
/// 0 counts when it holds rows. With `idle`, two runs of the lowest tier are enough: the small
/// runs of memtables frozen by age are folded together while nothing else is to do, so reads
/// open fewer tables.
pub(crate) fn plan(
    txn: &WriteTransaction,
    base: u64,
    fanout: usize,
    busy: &[u64],
    idle: bool,
) -> Result<Option<Compaction>, StoreError> {
    let fanout = fanout.max(2);
    let runs = read_runs(&txn.open_table(META).map_err(db_err)?)?;
    let mut tiers: std::collections::BTreeMap<u32, Vec<(u64, u64)>> = Default::default();
    for run in runs.into_iter().filter(|r| !busy.contains(r)) {
        let rows = txn
            .open_table(rows_def(&table_name(Part::Assertions, run)))
            .map_err(db_err)?
            .len()
            .map_err(db_err)?;
        if rows == 0 && run == 0 {
            continue;
        }
        tiers
            .entry(tier(rows, base, fanout as u64))
            .or_default()
            .push((run, rows));
    }
    for (tier, members) in tiers {
        if members.len() >= fanout || (idle && tier == 0 && members.len() >= 2) {
            let members = &members[..members.len().min(2 * fanout)];
            return Ok(Some(Compaction {
                inputs: members.iter().map(|&(r, _)| r).collect(),
                output: None,
                part: 0,
                resume: None,
                filter: RunFilter::for_rows(members.iter().map(|&(_, n)| n as usize).sum()),
                rows: members.iter().map(|&(_, n)| n).sum(),
            }));
        }
    }
    Ok(None)
}

/// A compaction in progress: the runs it merges, the run it writes, and where it is.
pub(crate) struct Compaction {
    pub inputs: Vec<u64>,
    output: Option<u64>,
    part: usize,
    resume: Option<Vec<u8>>,
    filter: RunFilter,
    /// Assertions in the inputs.
    pub rows: u64,
}

impl Compaction {
    /// Copies up to `budget` rows into the output run within `txn`, reading the input runs
    /// through `inputs` (a read transaction that names them); on the last call (every part
    /// copied) registers the output and drops the inputs instead. True when it is finished: the
    /// caller commits `txn` either way, and on true, registers [`Compaction::take_filter`].
    pub(crate) fn step(
        &mut self,
        inputs: &ReadTransaction,
        txn: &WriteTransaction,
        budget: usize,
    ) -> Result<bool, StoreError> {
        let output = match self.output {
            Some(o) => o,
            None => {
                let o = allocate_run(txn)?;
                self.output = Some(o);
                o
            }
        };
        let mut left = budget.max(1);
        while self.part < PARTS.len() {
            let part = PARTS[self.part];
            let sources = part_sources(inputs, part, &self.inputs, self.resume.as_deref())?;
            let mut merged = MergedPairs::new(sources);
            let filter = &mut self.filter;
            let (n, last) = append_merged(
                txn,
                part,
                &table_name(part, output),
                &mut merged,
                left,
                |k| {
                    if part == Part::Assertions {
                        filter.insert(k);
                    }
                },
            )?;
            left -= n;
            if left == 0 {
                if let Some(k) = last {
                    self.resume = Some(k);
                }
                return Ok(false);
            }
            self.part += 1;
            self.resume = None;
        }
        // Every part is copied: swap the inputs for the output.
        let mut runs = read_runs(&txn.open_table(META).map_err(db_err)?)?;
        runs.retain(|r| !self.inputs.contains(r));
        runs.push(output);
        write_runs(txn, &runs)?;
        {
            let mut t = txn.open_table(RUN_FILTERS).map_err(db_err)?;
            for r in &self.inputs {
                t.remove(*r).map_err(db_err)?;
            }
            t.insert(output, self.filter.encode().as_slice())
                .map_err(db_err)?;
        }
        for &run in &self.inputs {
            for part in PARTS {
                let name = table_name(part, run);
                if part == Part::Assertions {
                    txn.delete_table(rows_def(&name)).map_err(db_err)?;
                    if run == 0 {
                        txn.open_table(rows_def(&name)).map_err(db_err)?;
                    }
                } else {
                    txn.delete_table(keys_def(&name)).map_err(db_err)?;
                    if run == 0 {
                        txn.open_table(keys_def(&name)).map_err(db_err)?;
                    }
                }
            }
        }
        Ok(true)
    }

    /// The run it wrote (after the last step).
    pub(crate) fn output(&self) -> Option<u64> {
        self.output
    }

    /// The output's id filter (after the last step).
    pub(crate) fn take_filter(&mut self) -> RunFilter {
        std::mem::replace(&mut self.filter, RunFilter::for_rows(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_table_names_round_trip_and_run_0_keeps_the_old_names() {
        for part in PARTS {
            assert_eq!(table_name(part, 0), part.base());
            assert_eq!(run_of_table(&table_name(part, 0)), None);
            assert_eq!(run_of_table(&table_name(part, 42)), Some(42));
        }
        assert_eq!(run_of_table("meta"), None);
        assert_eq!(run_of_table("by_seq@3"), None, "by_seq is not a run table");
        assert_eq!(run_of_table("subject.idx@x"), None);
    }

    #[test]
    fn tiers_grow_by_the_fanout() {
        assert_eq!(tier(1, 100, 4), 0);
        assert_eq!(tier(399, 100, 4), 0);
        assert_eq!(tier(400, 100, 4), 1);
        assert_eq!(tier(1_599, 100, 4), 1);
        assert_eq!(tier(1_600, 100, 4), 2);
        assert_eq!(tier(u64::MAX, 100, 4), tier(u64::MAX - 1, 100, 4));
    }

    #[test]
    fn a_run_filter_survives_encoding_and_never_misses() {
        let mut f = RunFilter::for_rows(10_000);
        let ids: Vec<[u8; 32]> = (0..10_000u64)
            .map(|n| *blake3::hash(&n.to_le_bytes()).as_bytes())
            .collect();
        for id in &ids {
            f.insert(id);
        }
        let g = RunFilter::decode(&f.encode()).expect("decodes");
        assert!(ids.iter().all(|id| g.may_contain(id)));
        let passed = (10_000..20_000u64)
            .filter(|n| g.may_contain(blake3::hash(&n.to_le_bytes()).as_bytes()))
            .count();
        assert!(passed < 200, "{passed} of 10,000 absent ids passed");
        assert!(RunFilter::decode(&[1, 2, 3]).is_err());
        assert!(RunFilter::decode(&[]).is_err());
    }

    #[test]
    fn merged_pairs_are_sorted_and_each_key_comes_once() {
        let streams: Vec<Vec<(&str, &str)>> = vec![
            vec![("a", "1"), ("d", "4")],
            vec![("b", "2"), ("d", "4"), ("e", "5")],
            vec![],
        ];
        let sources: Vec<PairSource<'_>> = streams
            .into_iter()
            .map(|s| {
                Box::new(
                    s.into_iter()
                        .map(|(k, v)| Ok((k.as_bytes().to_vec(), v.as_bytes().to_vec()))),
                ) as PairSource<'_>
            })
            .collect();
        let got: Vec<(Vec<u8>, Vec<u8>)> =
            MergedPairs::new(sources).map(|r| r.expect("ok")).collect();
        let keys: Vec<&[u8]> = got.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![b"a" as &[u8], b"b", b"d", b"e"]);
    }
}
