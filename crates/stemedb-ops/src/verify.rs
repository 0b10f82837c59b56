//! `stemedb verify`: checks a backup or a stopped data directory and reports every problem,
//! naming the file it is in.
//!
//! A backup: `manifest.json` against `manifest.json.b3`; every listed file's length and BLAKE3;
//! no file the manifest does not list; then the store itself (`stemedb_store::verify`): every
//! envelope's signature and content address, every index row count, every Merkle node, and the
//! recomputed root against the manifest's signed checkpoint.
//!
//! A data directory (the server must be stopped; this takes its lock): every WAL segment
//! (checksums, sequence continuity, each record's content address), then the store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{refusal, refuse};
use serde::Serialize;
use stemedb_store::verify::{ExpectedCheckpoint, Finding, check_store};

use crate::backup::{MANIFEST, MANIFEST_HASH, Manifest, list_files};
use crate::{hash_file, try_lock};

/// What was checked and what was found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `backup` or `data-dir`.
    pub kind: String,
    /// The checked path.
    pub path: PathBuf,
    /// Assertions the store holds.
    pub tree_size: u64,
    /// Recomputed Merkle root, hex.
    pub root: String,
    /// Files whose hash was checked against the manifest.
    pub files_checked: usize,
    /// Envelopes whose signature and id were checked.
    pub assertions_checked: u64,
    /// WAL segments and records checked (data directory).
    pub wal_segments_checked: usize,
    /// WAL records checked.
    pub wal_records_checked: u64,
    /// Things worth knowing that are not damage (a torn WAL tail that the next start cuts).
    pub notes: Vec<String>,
    /// Problems, each naming its file.
    pub findings: Vec<Finding>,
    /// Problems in all (the list stops at 1,000).
    pub finding_count: u64,
}

impl Report {
    /// True when nothing was found.
    pub fn ok(&self) -> bool {
        self.finding_count == 0 && self.findings.is_empty()
    }

    fn add(&mut self, file: impl Into<String>, problem: impl Into<String>) {
        self.finding_count += 1;
        self.findings.push(Finding {
            file: file.into(),
            problem: problem.into(),
        });
    }

    fn merge_store(&mut self, r: stemedb_store::verify::StoreReport) {
        self.tree_size = r.tree_size;
        self.root = r.root;
        self.assertions_checked = r.assertions_checked;
        self.finding_count += r.finding_count;
        self.findings.extend(r.findings);
        self.notes.extend(r.notes);
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "verify {} {}\n  tree size {}  root {}\n  {} files hashed, {} envelopes verified, {} WAL segments / {} records\n",
            self.kind,
            self.path.display(),
            self.tree_size,
            self.root,
            self.files_checked,
            self.assertions_checked,
            self.wal_segments_checked,
            self.wal_records_checked
        );
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        for f in &self.findings {
            s.push_str(&format!("  MISMATCH {}: {}\n", f.file, f.problem));
        }
        if self.ok() {
            s.push_str("OK\n");
        } else {
            s.push_str(&format!("FAILED: {} problem(s)\n", self.finding_count));
        }
        s
    }
}

/// Verifies `path`: a backup when it holds `manifest.json`, else a stopped data directory.
pub fn verify(path: &Path) -> crate::Result<Report> {
    if !path.is_dir() {
        refuse!("{} is not a directory", path.display());
    }
    if path.join(MANIFEST).exists() || path.join(MANIFEST_HASH).exists() {
        Ok(verify_backup(path))
    } else {
        verify_data_dir(path)
    }
}

/// A manifest path as a relative path with only normal components (`db/values/00000001.vlog`),
/// or why it is not one: an absolute path, `..`, `.` or an empty component could reach outside
/// the backup or the directory being restored.
pub fn safe_relative(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let normal = !path.is_empty()
        && !path.contains('\\')
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if normal {
        Ok(p.to_path_buf())
    } else {
        Err(format!(
            "manifest path {path:?} is not a plain relative path (absolute, '..', '.' or empty parts)"
        ))
    }
}

/// Reads a backup's manifest once: its bytes must match `manifest.json.b3`, it must parse, and
/// every file path in it must be a plain relative path.
pub fn read_manifest(path: &Path) -> crate::Result<Manifest> {
    let text =
        std::fs::read(path.join(MANIFEST)).map_err(|e| refusal!("cannot read {MANIFEST}: {e}"))?;
    let want = std::fs::read_to_string(path.join(MANIFEST_HASH))
        .map_err(|e| refusal!("cannot read {MANIFEST_HASH}: {e}"))?;
    if want.trim() != blake3::hash(&text).to_hex().as_str() {
        refuse!("{MANIFEST}'s BLAKE3 does not match {MANIFEST_HASH} (one of the two is damaged)");
    }
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| refusal!("{MANIFEST} is not a backup manifest: {e}"))?;
    if manifest.format != crate::backup::FORMAT {
        refuse!("{MANIFEST}: unknown format {:?}", manifest.format);
    }
    for entry in &manifest.files {
        safe_relative(&entry.path).map_err(|e| refusal!("{MANIFEST}: {e}"))?;
    }
    Ok(manifest)
}

/// Verifies a backup directory.
pub fn verify_backup(path: &Path) -> Report {
    let mut report = Report {
        kind: "backup".into(),
        path: path.to_path_buf(),
        ..Report::default()
    };
    let text = match std::fs::read(path.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) => {
            report.add(MANIFEST, format!("cannot read: {e}"));
            return report;
        }
    };
    match std::fs::read_to_string(path.join(MANIFEST_HASH)) {
        Ok(h) if h.trim() == blake3::hash(&text).to_hex().as_str() => {}
        Ok(_) => report.add(
            MANIFEST,
            format!("its BLAKE3 does not match {MANIFEST_HASH} (one of the two is damaged)"),
        ),
        Err(e) => report.add(MANIFEST_HASH, format!("cannot read: {e}")),
    }
    let manifest: Manifest = match serde_json::from_slice(&text) {
        Ok(m) => m,
        Err(e) => {
            report.add(MANIFEST, format!("not a backup manifest: {e}"));
            return report;
        }
    };
    if manifest.format != crate::backup::FORMAT {
        report.add(MANIFEST, format!("unknown format {:?}", manifest.format));
    }
    let mut listed = BTreeSet::new();
    for entry in &manifest.files {
        listed.insert(entry.path.clone());
        if let Err(e) = safe_relative(&entry.path) {
            report.add(MANIFEST, e);
            continue;
        }
        match hash_file(&path.join(&entry.path)) {
            Ok((h, len)) => {
                report.files_checked += 1;
                if len != entry.bytes {
                    report.add(
                        &entry.path,
                        format!("{len} bytes, the manifest says {}", entry.bytes),
                    );
                } else if h != entry.blake3 {
                    report.add(
                        &entry.path,
                        format!("BLAKE3 {h}, the manifest says {}", entry.blake3),
                    );
                }
            }
            Err(e) => report.add(&entry.path, format!("cannot read: {e}")),
        }
    }
    match list_files(path) {
        Ok(all) => {
            for f in all {
                if f != MANIFEST && f != MANIFEST_HASH && !listed.contains(&f) {
                    report.add(&f, "not listed in the manifest");
                }
            }
        }
        Err(e) => report.add(".", e.to_string()),
    }
    let public_key: Option<[u8; 32]> = hex::decode(&manifest.public_key)
        .ok()
        .and_then(|b| b.try_into().ok());
    let Some(public_key) = public_key else {
        report.add(MANIFEST, "public_key is not 32 bytes of hex");
        return report;
    };
    let store = check_store(
        path,
        Some(ExpectedCheckpoint {
            note: &manifest.checkpoint,
            key_name: &manifest.key_name,
            public_key,
            source: MANIFEST,
        }),
    );
    report.merge_store(store);
    if report.tree_size != manifest.tree_size || report.root != manifest.root {
        report.add(
            MANIFEST,
            format!(
                "says tree size {} root {}, the store recomputes {} {}",
                manifest.tree_size, manifest.root, report.tree_size, report.root
            ),
        );
    }
    report
}

/// Verifies a stopped data directory (takes its lock for the duration).
pub fn verify_data_dir(path: &Path) -> crate::Result<Report> {
    let Some(_lock) = try_lock(path)? else {
        refuse!(
            "a server is running on {}: verify a backup of it instead (`stemedb backup --data-dir \
             {} --to DEST`, then `stemedb verify DEST`), or stop the server",
            path.display(),
            path.display()
        );
    };
    let mut report = Report {
        kind: "data-dir".into(),
        path: path.to_path_buf(),
        ..Report::default()
    };
    let durable = durable_tree_size(path);
    check_wal(&path.join("wal"), durable, &mut report);
    let store = check_store(path, None);
    report.merge_store(store);
    Ok(report)
}

/// The durable checkpoint's tree size from `metadata.json` (0 when unknown).
pub fn durable_tree_size(data_dir: &Path) -> u64 {
    std::fs::read_to_string(data_dir.join("metadata.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.pointer("/durable_checkpoint/tree_size")?.as_u64())
        .unwrap_or(0)
}

/// Checks every WAL segment read-only: header, checksums, sequence continuity, and each
/// record's log index and content address.
fn check_wal(dir: &Path, durable: u64, report: &mut Report) {
    let segments = match stemedb_wal::list_segments(dir) {
        Ok(s) => s,
        Err(e) => {
            report.add("wal", e.to_string());
            return;
        }
    };
    let mut prev_end: Option<u64> = None;
    let n = segments.len();
    for (i, (id, seg_path)) in segments.iter().enumerate() {
        let name = format!("wal/{}", stemedb_wal::segment_name(*id));
        let mut problems: Vec<String> = Vec::new();
        let scan = stemedb_wal::scan(seg_path, |seq, kind, body| {
            if problems.len() >= 10 {
                return;
            }
            if kind != stemedb_store::KIND_ASSERTION || body.len() < 48 {
                problems.push(format!("record {seq}: unknown kind {kind} or too short"));
                return;
            }
            let index = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
            if index != seq {
                problems.push(format!("record {seq} carries log index {index}"));
            }
            let id: [u8; 32] = body[16..48].try_into().unwrap_or_default();
            match stemedb_core::Envelope::decode(&body[48..]) {
                Ok(env) if env.id().as_bytes() == &id => {}
                Ok(env) => problems.push(format!(
                    "record {seq}: content address {} but the record says {}",
                    env.id(),
                    hex::encode(id)
                )),
                Err(e) => problems.push(format!("record {seq}: {e}")),
            }
        });
        let scan = match scan {
            Ok(s) => s,
            // The start-up rule of decision 0014: a last segment of at most its header whose
            // header is bad was cut off while being created; it holds no record, and the next
            // start removes it.
            Err(stemedb_wal::WalError::Corrupt { offset: 0, .. })
                if i + 1 == n
                    && std::fs::metadata(seg_path)
                        .is_ok_and(|m| m.len() <= stemedb_wal::HEADER_BYTES) =>
            {
                report.notes.push(format!(
                    "{name}: a torn header ({} bytes) of a segment being created, holding no \
                     record; the next start removes it",
                    std::fs::metadata(seg_path).map(|m| m.len()).unwrap_or(0)
                ));
                continue;
            }
            Err(e) => {
                report.add(&name, e.to_string());
                continue;
            }
        };
        report.wal_segments_checked += 1;
        report.wal_records_checked += scan.records;
        for p in problems {
            report.add(&name, p);
        }
        if let Some(why) = &scan.bad {
            if let Some(after) = scan.valid_after {
                report.add(
                    &name,
                    format!(
                        "damaged at byte {} ({why}) with a valid group at byte {after} after it: \
                         corruption, not a torn tail; the server will refuse to start",
                        scan.good_end
                    ),
                );
            } else if i + 1 == n && scan.first_seq + scan.records < durable {
                // The store's durable checkpoint holds records past the damage: they were
                // acknowledged, so this is damage, not a torn write; the server puts them back.
                report.notes.push(format!(
                    "{name}: last group damaged at offset {} ({why}), {} bytes; records {} to {} \
                     were acknowledged and are in the store's durable checkpoint: the next start \
                     cuts the damaged bytes and writes those records back from the store (it \
                     refuses instead if the value log holds applied records after them)",
                    scan.good_end,
                    scan.len - scan.good_end,
                    scan.first_seq + scan.records,
                    durable - 1
                ));
            } else if i + 1 == n {
                report.notes.push(format!(
                    "{name}: torn tail of {} bytes at offset {} ({why}); never acknowledged, cut \
                     on the next start",
                    scan.len - scan.good_end,
                    scan.good_end
                ));
            } else {
                report.add(
                    &name,
                    format!("sealed segment damaged at byte {}: {why}", scan.good_end),
                );
            }
        }
        if let Some(end) = prev_end {
            if scan.first_seq < end {
                report.add(
                    &name,
                    format!(
                        "starts at record {}, overlapping the previous segment (ends {end})",
                        scan.first_seq
                    ),
                );
            } else if scan.first_seq > end && scan.first_seq > durable {
                report.add(
                    &name,
                    format!(
                        "records {end}..{} are missing and not covered by the durable checkpoint ({durable})",
                        scan.first_seq
                    ),
                );
            }
        }
        prev_end = Some(scan.end_seq());
    }
}
