//! `stemedb backup`: a consistent copy of a data directory's store plus a manifest.
//!
//! While a server runs, the server itself takes the snapshot (asked over `control.sock`):
//! writes continue while it copies. Offline, this process takes the data directory's lock,
//! opens the store (recovering it as a start would) and takes the same snapshot. Either way the
//! copy is written to a `.NAME.partial` directory beside the destination, every file is hashed
//! into `manifest.json` (whose own BLAKE3 is `manifest.json.b3`), everything is fsync'd, and
//! only then is the directory renamed to its final name: a destination that exists is complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Context as _, refuse};
use serde::{Deserialize, Serialize};
use stemedb_store::snapshot::SnapshotInfo;

use crate::{BACKUP_MARKER, control, hash_file, now_ms, try_lock, write_atomically};

/// Name of the manifest in a backup.
pub const MANIFEST: &str = "manifest.json";
/// Name of the file holding the manifest's BLAKE3 (hex).
pub const MANIFEST_HASH: &str = "manifest.json.b3";
/// Manifest format tag.
pub const FORMAT: &str = "stemedb-backup/1";

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the backup directory.
    pub path: String,
    /// Length in bytes.
    pub bytes: u64,
    /// BLAKE3 of the contents, hex.
    pub blake3: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// `stemedb-backup/1`.
    pub format: String,
    /// When the backup finished, Unix ms.
    pub created_at_ms: i64,
    /// Whether a running server took it.
    pub online: bool,
    /// Store format version.
    pub store_format: u64,
    /// Origin line of the log.
    pub origin: String,
    /// Assertions covered.
    pub tree_size: u64,
    /// Merkle root of that tree, hex.
    pub root: String,
    /// The signed checkpoint of `tree_size` (C2SP signed note).
    pub checkpoint: String,
    /// Checkpoint key name.
    pub key_name: String,
    /// Checkpoint public key, hex.
    pub public_key: String,
    /// Whether `server.key` is included.
    pub key_included: bool,
    /// The WAL segment the source was writing when the snapshot was taken.
    pub wal_segment: u32,
    /// Every file but the manifest and its hash.
    pub files: Vec<FileEntry>,
}

/// What `backup` did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Where the backup is.
    pub path: PathBuf,
    /// Assertions covered.
    pub tree_size: u64,
    /// Merkle root, hex.
    pub root: String,
    /// Files and bytes written.
    pub files: usize,
    /// Bytes of all files.
    pub bytes: u64,
    /// Whether a running server took it.
    pub online: bool,
    /// Wall time, seconds.
    pub seconds: f64,
}

fn absolute(p: &Path) -> crate::Result<PathBuf> {
    Ok(std::path::absolute(p)?)
}

/// Lists every regular file under `dir`, relative, sorted.
pub fn list_files(dir: &Path) -> crate::Result<Vec<String>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> crate::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path.strip_prefix(base).unwrap_or(&path);
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn ensure_empty_target(dest: &Path) -> crate::Result<()> {
    if dest.exists() {
        let mut entries = std::fs::read_dir(dest)
            .with_context(|| format!("{} exists and is not a directory", dest.display()))?;
        if entries.next().is_some() {
            refuse!("{} is not empty; choose a new destination", dest.display());
        }
    }
    Ok(())
}

/// A sibling staging directory for `dest`.
pub(crate) fn staging_for(dest: &Path, what: &str) -> crate::Result<PathBuf> {
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", dest.display()))?;
    Ok(dest.with_file_name(format!(".{name}.{what}")))
}

/// Renames the finished `staging` to `dest` (an empty `dest` is removed first) and fsyncs.
pub(crate) fn swap_in(staging: &Path, dest: &Path) -> crate::Result<()> {
    if dest.exists() {
        std::fs::remove_dir(dest).with_context(|| format!("remove empty {}", dest.display()))?;
    }
    std::fs::rename(staging, dest)
        .with_context(|| format!("rename {} to {}", staging.display(), dest.display()))?;
    if let Some(parent) = dest.parent() {
        stemedb_wal::sync_dir(parent)?;
    }
    Ok(())
}

/// Takes a backup of `data_dir` into `dest` (absent or empty).
pub fn backup(data_dir: &Path, dest: &Path) -> crate::Result<BackupReport> {
    let started = Instant::now();
    let data_dir = absolute(data_dir)?;
    let dest = absolute(dest)?;
    if !data_dir.join("db").is_dir() {
        refuse!("{} holds no store (no db/ directory)", data_dir.display());
    }
    ensure_empty_target(&dest)?;
    if dest.starts_with(&data_dir) {
        refuse!("the backup destination must be outside the data directory");
    }
    let staging = staging_for(&dest, "partial")?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("remove the leftover {}", staging.display()))?;
    }
    if let Some(parent) = staging.parent() {
        std::fs::create_dir_all(parent)?;
    }
    {
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&staging)
            .with_context(|| format!("create {}", staging.display()))?;
    }
    let (info, online): (SnapshotInfo, bool) = match try_lock(&data_dir)? {
        Some(_lock) => {
            if !data_dir.join("server.key").exists() {
                refuse!(
                    "{} has no server.key (the checkpoint key is configured elsewhere): take the \
                     backup while the server runs",
                    data_dir.display()
                );
            }
            let store = stemedb_store::Store::open(
                &data_dir,
                crate::offline_store_options(&data_dir),
                Arc::new(stemedb_store::NoObserver),
            )
            .context("opening the store offline")?;
            let info = store.snapshot(&staging).context("snapshot")?;
            store.close();
            (info, false)
        }
        None => (control::snapshot(&data_dir, &staging)?, true),
    };
    let mut files = Vec::new();
    let mut bytes = 0;
    for rel in list_files(&staging)? {
        let (blake3, len) = hash_file(&staging.join(&rel))?;
        bytes += len;
        files.push(FileEntry {
            path: rel,
            bytes: len,
            blake3,
        });
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at_ms: now_ms(),
        online,
        store_format: info.format_version,
        origin: info.origin,
        tree_size: info.tree_size,
        root: info.root.clone(),
        checkpoint: info.checkpoint,
        key_name: info.key_name,
        public_key: info.public_key,
        key_included: info.key_included,
        wal_segment: info.wal_segment,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)?;
    write_atomically(&staging.join(MANIFEST), &text)?;
    let digest = format!("{}\n", blake3::hash(&text).to_hex());
    write_atomically(&staging.join(MANIFEST_HASH), digest.as_bytes())?;
    swap_in(&staging, &dest)?;
    let report = BackupReport {
        path: dest.clone(),
        tree_size: manifest.tree_size,
        root: manifest.root,
        files: manifest.files.len(),
        bytes,
        online,
        seconds: started.elapsed().as_secs_f64(),
    };
    crate::write_json_atomically(
        &data_dir.join(BACKUP_MARKER),
        &serde_json::json!({
            "unix_ms": manifest.created_at_ms,
            "path": dest,
            "tree_size": report.tree_size,
            "root": report.root,
        }),
    )?;
    Ok(report)
}
