//! Offline verification of a store (a stopped data directory or a snapshot), reading only.
//!
//! Every assertion in log order: its `by_seq` row, its envelope from the value log (checksum),
//! the envelope's strict Ed25519 signature and content address against the stored id, its
//! `assertions` row; the Merkle tree recomputed from the ids, every node compared with the node
//! files, and the root compared with a signed checkpoint when one is given. Every index key the
//! statements give is looked up in its index (so a damaged B-tree page that misdirects a seek
//! is found, not only one that loses rows), and each index's keys, scanned in full, must be in
//! order and be exactly those keys (an order-independent digest of each set). Each problem is a
//! [`Finding`] naming the file it is in; nothing stops at the first.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTableMetadata};
use serde::Serialize;
use stemedb_core::{AssertionId, Prepared, verify_batch};
use stemedb_merkle::{Frontier, leaf_hash, verify_note};

use crate::entry::Fields;
use crate::keys::{IndexKind, IndexValue};
use crate::vlog::VlogReader;
use crate::{BY_SEQ, FORMAT_VERSION, Layout, META, db_err, runs};

/// Findings kept in a report; past this only the count grows.
const MAX_FINDINGS: usize = 1_000;
/// redb's page cache while checking, bytes.
const VERIFY_CACHE_BYTES: usize = 256 * 1024 * 1024;
/// Envelopes verified per batch.
const CHUNK: usize = 2_048;

/// One problem, naming the file it is in (relative to the directory checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file, relative to the checked directory.
    pub file: String,
    /// What is wrong.
    pub problem: String,
}

/// The result of [`check_store`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreReport {
    /// Assertions the store says it holds.
    pub tree_size: u64,
    /// Merkle root recomputed from the stored ids, hex.
    pub root: String,
    /// Envelopes read, signature-checked and matched with their id.
    pub assertions_checked: u64,
    /// Problems found (at most 1,000 listed).
    pub findings: Vec<Finding>,
    /// Problems found in all.
    pub finding_count: u64,
    /// What was not checked, and why (not problems themselves).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl StoreReport {
    fn add(&mut self, file: impl Into<String>, problem: impl Into<String>) {
        self.finding_count += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                file: file.into(),
                problem: problem.into(),
            });
        }
    }

    /// True when nothing was found.
    pub fn ok(&self) -> bool {
        self.finding_count == 0
    }
}

/// A signed checkpoint the store must match, and the key that signed it.
#[derive(Debug, Clone)]
pub struct ExpectedCheckpoint<'a> {
    /// The C2SP signed note.
    pub note: &'a str,
    /// The note key name.
    pub key_name: &'a str,
    /// The signer's Ed25519 public key.
    pub public_key: [u8; 32],
    /// Which file the checkpoint came from (for findings).
    pub source: &'a str,
}

const REDB: &str = "db/stemedb.redb";

fn vlog_name(segment: u32) -> String {
    format!("db/values/{segment:08}.vlog")
}

fn meta_u64(t: &redb::ReadOnlyTable<&str, &[u8]>, key: &str) -> Result<Option<u64>, String> {
    let v = t.get(key).map_err(|e| e.to_string())?;
    Ok(v.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
}

/// Sequential reader of the node files, checking each node the recomputed tree completes.
struct NodeCheck<'a> {
    dir: &'a Path,
    readers: HashMap<u32, (BufReader<File>, u64)>,
}

impl NodeCheck<'_> {
    fn check(&mut self, level: u32, index: u64, hash: &[u8; 32], report: &mut StoreReport) {
        let file = format!("db/merkle/level-{level:02}.dat");
        if !self.readers.contains_key(&level) {
            match File::open(self.dir.join(format!("level-{level:02}.dat"))) {
                Ok(f) => {
                    self.readers
                        .insert(level, (BufReader::with_capacity(1 << 16, f), 0));
                }
                Err(e) => {
                    if index == 0 {
                        report.add(file, format!("cannot open: {e}"));
                    }
                    return;
                }
            }
        }
        let Some((r, next)) = self.readers.get_mut(&level) else {
            return;
        };
        if *next != index {
            return; // an earlier read failed; already reported
        }
        let mut stored = [0u8; 32];
        if let Err(e) = r.read_exact(&mut stored) {
            report.add(file, format!("node {index} missing: {e}"));
            *next = u64::MAX;
            return;
        }
        *next += 1;
        if &stored != hash {
            report.add(
                file,
                format!(
                    "node {index} is {}, the ids give {}",
                    hex::encode(stored),
                    hex::encode(hash)
                ),
            );
        }
    }
}

/// The four index kinds, in the order [`IndexCheck`] keeps them.
const KINDS: [IndexKind; 4] = [
    IndexKind::Subject,
    IndexKind::ReversedSubject,
    IndexKind::Predicate,
    IndexKind::Agent,
];

/// Keys of one index, one table per run.
type KeyTables = Vec<redb::ReadOnlyTable<&'static [u8], ()>>;

/// A key's share of an index's digest: the first 16 bytes of its BLAKE3 hash. Sums of these
/// (wrapping) are equal for equal sets, whatever the order; a key counted twice changes the sum.
fn key_digest(key: &[u8]) -> u128 {
    let h = blake3::hash(key);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    u128::from_le_bytes(b)
}

/// Checks the four indexes against the statements: every key a statement gives is found by a
/// lookup (which descends the B-tree as a query's seek does), and the sum of the expected keys'
/// digests is kept for [`IndexCheck::finish`].
struct IndexCheck {
    tables: Vec<KeyTables>,
    expected: [u128; 4],
    // Assertions whose statement could not be read: their keys are unknown, so the digests
    // cannot be compared (the finding that made them unknown is already in the report).
    skipped: u64,
}

impl IndexCheck {
    fn open(txn: &redb::ReadTransaction, runs: &[u64]) -> Result<IndexCheck, String> {
        let mut tables = Vec::new();
        for kind in KINDS {
            let part = runs::Part::of_kind(kind);
            let mut per_run = Vec::new();
            for run in runs {
                let name = runs::table_name(part, *run);
                per_run.push(
                    txn.open_table(runs::keys_def(&name))
                        .map_err(|e| format!("{name}: {e}"))?,
                );
            }
            tables.push(per_run);
        }
        Ok(IndexCheck {
            tables,
            expected: [0; 4],
            skipped: 0,
        })
    }

    fn name(i: usize) -> &'static str {
        runs::Part::of_kind(KINDS[i]).base()
    }

    /// Looks up the keys of the assertion at `log_index` with `fields`.
    fn check(&mut self, fields: &Fields, log_index: u64, report: &mut StoreReport) {
        for (i, kind) in KINDS.iter().enumerate() {
            let key = crate::keys::index_key(*kind, fields, log_index);
            self.expected[i] = self.expected[i].wrapping_add(key_digest(&key));
            let mut found = false;
            for t in &self.tables[i] {
                match t.get(key.as_slice()) {
                    Ok(Some(_)) => {
                        found = true;
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        report.add(
                            REDB,
                            format!("{}: looking up log index {log_index}: {e}", Self::name(i)),
                        );
                        found = true;
                        break;
                    }
                }
            }
            if !found {
                report.add(
                    REDB,
                    format!(
                        "{}: a lookup of log index {log_index}'s key finds nothing (a damaged \
                         page: queries would miss the assertion)",
                        Self::name(i)
                    ),
                );
            }
        }
    }

    /// Notes an assertion whose keys are unknown.
    fn skip(&mut self) {
        self.skipped += 1;
    }

    /// Scans every index in full: keys in order within each run, and their digest equal to the
    /// statements' (unless some statements were unreadable).
    fn finish(&self, report: &mut StoreReport) {
        use redb::ReadableTable as _;
        for (i, per_run) in self.tables.iter().enumerate() {
            let mut sum = 0u128;
            // An index that could not be read whole has no digest to compare (its error is
            // the finding); the other indexes are still checked.
            let mut read_whole = true;
            for t in per_run {
                let iter = match t.iter() {
                    Ok(it) => it,
                    Err(e) => {
                        report.add(REDB, format!("{}: {e}", Self::name(i)));
                        read_whole = false;
                        break;
                    }
                };
                // The previous key, in a buffer reused for every key of the run.
                let mut prev: Vec<u8> = Vec::new();
                let mut first = true;
                for item in iter {
                    let guard = match item {
                        Ok((k, _)) => k,
                        Err(e) => {
                            report.add(REDB, format!("{}: {e}", Self::name(i)));
                            read_whole = false;
                            break;
                        }
                    };
                    let key = guard.value();
                    if !first && prev.as_slice() >= key {
                        report.add(
                            REDB,
                            format!("{}: keys out of order (a damaged page)", Self::name(i)),
                        );
                    }
                    first = false;
                    sum = sum.wrapping_add(key_digest(key));
                    prev.clear();
                    prev.extend_from_slice(key);
                }
            }
            if read_whole && self.skipped == 0 && sum != self.expected[i] {
                report.add(
                    REDB,
                    format!(
                        "{}: its keys are not the ones the statements give (a damaged or \
                         foreign key)",
                        Self::name(i)
                    ),
                );
            }
        }
    }
}

/// Verifies envelopes on every core; per item: the content address, or why it failed.
/// What re-verifying one stored envelope gives: its id and the fields its `by_seq` row must hold.
type Checked = Result<(AssertionId, Fields), String>;

fn verify_chunk(chunk: Vec<(u64, Vec<u8>)>) -> Vec<(u64, Checked)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let per = chunk.len().div_ceil(threads).max(1);
    let mut parts: Vec<Vec<(u64, Vec<u8>)>> = Vec::new();
    let mut rest = chunk;
    while rest.len() > per {
        let tail = rest.split_off(per);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                s.spawn(move || {
                    let mut out = Vec::with_capacity(part.len());
                    let mut prepared = Vec::with_capacity(part.len());
                    let mut slots = Vec::with_capacity(part.len());
                    for (index, bytes) in part {
                        match Prepared::from_bytes(&bytes) {
                            Ok(p) => {
                                slots.push(index);
                                prepared.push(p);
                            }
                            Err(e) => out.push((index, Err(e.to_string()))),
                        }
                    }
                    for (index, r) in slots.into_iter().zip(verify_batch(prepared)) {
                        out.push((
                            index,
                            r.map(|v| (v.id(), Fields::of(v.statement())))
                                .map_err(|e| e.to_string()),
                        ));
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            match h.join() {
                Ok(v) => all.extend(v),
                Err(_) => all.push((u64::MAX, Err("verifier thread panicked".into()))),
            }
        }
        all.sort_by_key(|(i, _)| *i);
        all
    })
}

/// Which field of a `by_seq` row differs from the statement it was derived from, if any.
fn row_mismatch(row: &IndexValue, f: &Fields) -> Option<String> {
    if row.agent != f.agent {
        return Some("agent".into());
    }
    if row.confidence.to_bits() != f.confidence.to_bits() {
        return Some(format!(
            "confidence {} (statement: {})",
            row.confidence, f.confidence
        ));
    }
    if row.retract != f.retract {
        return Some("retract flag".into());
    }
    if row.value != f.value {
        return Some("object value key".into());
    }
    if row.validity_known && (row.valid_from, row.valid_until) != (f.valid_from, f.valid_until) {
        return Some(format!(
            "validity {:?}..{:?} (statement: {:?}..{:?})",
            row.valid_from, row.valid_until, f.valid_from, f.valid_until
        ));
    }
    None
}

/// Checks the store under `dir` (a stopped data directory or a snapshot), reading only.
pub fn check_store(dir: &Path, expected: Option<ExpectedCheckpoint<'_>>) -> StoreReport {
    // redb trusts its own pages and can panic on one whose bytes were damaged (an index out of
    // range in a leaf): that is a finding about the file, never a crash of the check.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(dir, expected))) {
        Ok(report) => report,
        Err(panic) => {
            let why = crate::panic_text(panic.as_ref());
            let mut report = StoreReport::default();
            report.add(
                REDB,
                format!("reading the file failed (a damaged page): {why}"),
            );
            report
        }
    }
}

fn check(dir: &Path, expected: Option<ExpectedCheckpoint<'_>>) -> StoreReport {
    let layout = Layout::new(dir);
    let mut report = StoreReport::default();
    // redb's page cache for the check, not its 1 GiB default: the index lookups touch every
    // page once, so a larger cache buys little and a weekly check should not take a
    // gigabyte beside the server.
    let db = match redb::Builder::new()
        .set_cache_size(VERIFY_CACHE_BYTES)
        .open_read_only(&layout.redb)
    {
        Ok(db) => db,
        Err(e) => {
            report.add(REDB, format!("cannot open read-only: {e}"));
            return report;
        }
    };
    let txn = match db.begin_read() {
        Ok(t) => t,
        Err(e) => {
            report.add(REDB, e.to_string());
            return report;
        }
    };
    let (size, vlog_end) = match txn.open_table(META).map_err(db_err) {
        Ok(meta) => {
            let get = |k: &str| meta_u64(&meta, k).ok().flatten();
            // Format 2 is format 3 with run 0 alone (`runs.rs`), format 3 is format 4 with
            // nothing packed.
            if !matches!(get("format"), Some(2..=4 | FORMAT_VERSION)) {
                report.add(
                    REDB,
                    format!(
                        "format {:?}, this build reads {FORMAT_VERSION}",
                        get("format")
                    ),
                );
            }
            let applied = get("applied").unwrap_or(0);
            let durable = get("durable").unwrap_or(0);
            if applied != durable {
                report.add(
                    REDB,
                    format!(
                        "applied {applied} but the durable checkpoint is {durable}: not cleanly \
                         closed (start the server once to recover, or verify a backup)"
                    ),
                );
            }
            let seg = get("durable_vlog_segment").unwrap_or(0) as u32;
            (durable, (seg, get("durable_vlog_len").unwrap_or(0)))
        }
        Err(e) => {
            report.add(REDB, format!("meta table: {e}"));
            return report;
        }
    };
    report.tree_size = size;
    let opened = txn.open_table(BY_SEQ).map_err(db_err).and_then(|b| {
        let mut runs = runs::runs_of(&txn)?;
        runs.reverse();
        let filters = runs::Filters::load(&txn)?;
        let tables = runs::AssertionTables::open(&txn, &runs, &filters)?;
        Ok((b, tables, runs))
    });
    let (by_seq, assertions, run_ids) = match opened {
        Ok(t) => t,
        Err(e) => {
            report.add(REDB, format!("cannot open tables: {e}"));
            return report;
        }
    };
    let mut index_check = match IndexCheck::open(&txn, &run_ids) {
        Ok(c) => c,
        Err(e) => {
            report.add(REDB, format!("cannot open the index tables: {e}"));
            return report;
        }
    };
    let part_len = |part| runs::part_len(&txn, part).map_err(|e| e.to_string());
    for (name, len) in [
        ("assertions", part_len(runs::Part::Assertions)),
        ("by_seq", by_seq.len().map_err(|e| e.to_string())),
        ("subject.idx", part_len(runs::Part::Subject)),
        ("concept_path.idx", part_len(runs::Part::Reversed)),
        ("predicate.idx", part_len(runs::Part::Predicate)),
        ("agent.idx", part_len(runs::Part::Agent)),
    ] {
        match len {
            Ok(n) if n == size => {}
            Ok(n) => report.add(REDB, format!("table {name} has {n} rows, expected {size}")),
            Err(e) => report.add(REDB, format!("table {name}: {e}")),
        }
    }
    // Value-log files must reach the durable position.
    if vlog_end.0 > 0 {
        let path = layout.values.join(format!("{:08}.vlog", vlog_end.0));
        match std::fs::metadata(&path) {
            Ok(m) if m.len() >= vlog_end.1 => {}
            Ok(m) => report.add(
                vlog_name(vlog_end.0),
                format!("{} bytes, the store needs {}", m.len(), vlog_end.1),
            ),
            Err(e) => report.add(vlog_name(vlog_end.0), e.to_string()),
        }
    }

    let vlog = VlogReader::new(&layout.values);
    let mut nodes = NodeCheck {
        dir: &layout.merkle,
        readers: HashMap::new(),
    };
    let mut frontier = Frontier::new();
    let mut ids: HashMap<u64, IndexValue> = HashMap::with_capacity(CHUNK);
    let mut chunk: Vec<(u64, Vec<u8>)> = Vec::with_capacity(CHUNK);
    let mut expected_index = 0u64;
    // False once a leaf could not be read: the tree is not recomputed past it.
    let mut leaves_known = true;
    let rows = match by_seq.range(0..size) {
        Ok(r) => r,
        Err(e) => {
            report.add(REDB, format!("by_seq: {e}"));
            return report;
        }
    };
    let flush = |chunk: &mut Vec<(u64, Vec<u8>)>,
                 ids: &mut HashMap<u64, IndexValue>,
                 index_check: &mut IndexCheck,
                 report: &mut StoreReport| {
        for (index, result) in verify_chunk(std::mem::take(chunk)) {
            let Some(row) = ids.get(&index) else {
                index_check.skip();
                report.add(
                    "db/values",
                    format!("log index {index}: no by_seq row to check"),
                );
                continue;
            };
            let stored = *row.id.as_bytes();
            match result {
                Ok((id, fields)) if id.as_bytes() == &stored => {
                    index_check.check(&fields, index, report);
                    // The row a lens reads must say what the signed statement says.
                    match row_mismatch(row, &fields) {
                        None => report.assertions_checked += 1,
                        Some(what) => report.add(
                            REDB,
                            format!("by_seq row {index} disagrees with its envelope: {what}"),
                        ),
                    }
                }
                Ok((id, _)) => {
                    index_check.skip();
                    report.add(
                        "db/values",
                        format!(
                            "log index {index}: the envelope's content address is {id}, the store \
                         says {}",
                            hex::encode(stored)
                        ),
                    );
                }
                Err(e) => {
                    index_check.skip();
                    report.add(
                        "db/values",
                        format!("log index {index}: envelope fails verification: {e}"),
                    );
                }
            }
        }
        ids.clear();
    };
    for row in rows {
        let (k, v) = match row {
            Ok(kv) => kv,
            Err(e) => {
                report.add(REDB, format!("by_seq after index {expected_index}: {e}"));
                index_check.skip();
                break;
            }
        };
        let index = k.value();
        if index != expected_index {
            report.add(
                REDB,
                format!("by_seq jumps from {expected_index} to {index}: rows are missing"),
            );
            index_check.skip();
            break;
        }
        expected_index += 1;
        let row = match IndexValue::decode(v.value()) {
            Ok(r) => r,
            Err(e) => {
                report.add(REDB, format!("by_seq row {index}: {e}"));
                // Its id, the leaf, is unknown: every later node would be recomputed shifted
                // and blamed on intact node files, so the Merkle check ends here.
                if leaves_known {
                    report.notes.push(format!(
                        "db/merkle: not compared from leaf {index} on: by_seq row {index} is \
                         unreadable, so the tree cannot be recomputed past it (the node files \
                         are not known to be damaged)"
                    ));
                    leaves_known = false;
                }
                index_check.skip();
                continue;
            }
        };
        let id = *row.id.as_bytes();
        if leaves_known {
            for (level, i, hash) in frontier.push(leaf_hash(&id)) {
                nodes.check(level, i, &hash, &mut report);
            }
        }
        match assertions.get(&id) {
            Ok(Some(rec)) if rec.log_index == index && rec.pointer == row.pointer => {}
            Ok(Some(rec)) => report.add(
                REDB,
                format!(
                    "assertions row of {} says log index {} at {:?}, by_seq says {index} at {:?}",
                    row.id, rec.log_index, rec.pointer, row.pointer
                ),
            ),
            Ok(None) => report.add(REDB, format!("no assertions row for {}", row.id)),
            Err(e) => report.add(REDB, format!("assertions table: {e}")),
        }
        match vlog.read(row.pointer) {
            Ok(bytes) => {
                ids.insert(index, row);
                chunk.push((index, bytes));
            }
            Err(e) => {
                index_check.skip();
                report.add(
                    vlog_name(row.pointer.segment),
                    format!("log index {index}: {e}"),
                );
            }
        }
        if chunk.len() >= CHUNK {
            flush(&mut chunk, &mut ids, &mut index_check, &mut report);
        }
    }
    flush(&mut chunk, &mut ids, &mut index_check, &mut report);
    if expected_index != size {
        report.add(
            REDB,
            format!("by_seq holds {expected_index} rows below {size}"),
        );
        // The leaves and keys past the last row read are unknown: nothing is compared that
        // would blame them on intact files.
        if leaves_known {
            report.notes.push(format!(
                "db/merkle: not compared past leaf {expected_index}: by_seq ends there (the \
                 node files are not known to be damaged)"
            ));
            leaves_known = false;
        }
        index_check.skip();
    }
    index_check.finish(&mut report);
    let root = frontier.root();
    report.root = if leaves_known {
        hex::encode(root)
    } else {
        "unknown (a by_seq row is unreadable)".into()
    };

    // The root `metadata.json` recorded for the durable checkpoint (which the start compares
    // with the node files) must be the one the ids give.
    if leaves_known && layout.metadata.exists() {
        let doc = crate::commit::read_metadata(&layout.metadata);
        match doc.and_then(|d| crate::commit::metadata_root(&layout.metadata, d.as_ref())) {
            Ok(Some((s, recorded))) if s == size && recorded != root => report.add(
                "metadata.json",
                format!(
                    "records root {} for tree size {size}, the ids give {}",
                    hex::encode(recorded),
                    hex::encode(root)
                ),
            ),
            Ok(_) => {}
            Err(e) => report.add("metadata.json", e.to_string()),
        }
    }

    if let Some(exp) = expected {
        match verify_note(exp.note, exp.key_name, &exp.public_key) {
            Ok(cp) => {
                if leaves_known && (cp.size != size || cp.root != root) {
                    report.add(
                        exp.source,
                        format!(
                            "signed checkpoint is size {} root {}, the store recomputes size {size} \
                             root {}",
                            cp.size,
                            hex::encode(cp.root),
                            hex::encode(root)
                        ),
                    );
                }
            }
            Err(e) => report.add(exp.source, format!("signed checkpoint: {e}")),
        }
        if layout.server_key.exists() {
            match std::fs::read_to_string(&layout.server_key)
                .map_err(|e| e.to_string())
                .and_then(|pem| stemedb_core::signing_key_from_pem(&pem).map_err(|e| e.to_string()))
            {
                Ok(k) if k.verifying_key().to_bytes() == exp.public_key => {}
                Ok(_) => report.add(
                    "server.key",
                    "its public key is not the checkpoint's signer",
                ),
                Err(e) => report.add("server.key", e),
            }
        }
    }
    if let Err(e) = crate::admin::AdminDb::count_rows(&layout.admin) {
        report.add("db/admin.redb", e.to_string());
    }
    report
}
