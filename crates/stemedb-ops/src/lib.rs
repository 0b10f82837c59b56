//! `stemedb-ops`: what an operator runs beside the server (design §10, decision 0012).
//!
//! - [`backup`]: a consistent online backup while the server runs (asked of the server over the
//!   data directory's control socket), or offline; a manifest with the BLAKE3 of every file and
//!   the signed checkpoint.
//! - [`verify`]: every file hash, every envelope's signature and id, the Merkle tree recomputed
//!   against the signed checkpoint; works on a backup or a stopped data directory.
//! - [`archive`]: sealed WAL segments copied to a directory or `s3://bucket/prefix`, each copy
//!   read back and checked, then local retention.
//! - [`restore`]: a backup into an empty data directory, verified before it is swapped in,
//!   optionally replaying archived segments up to a chosen tree size (point-in-time restore).
//!
//! Architecture Invariant: nothing here writes into a live data directory except the two marker
//! files (`last-backup.json`, `wal-archive.json`) and, through `stemedb-wal`, retention's removal
//! of sealed segments that are archived and covered by a durable checkpoint.

pub mod archive;
pub mod backup;
pub mod control;
mod error;
pub mod restore;
pub mod verify;

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::error::Context as _;
use serde::Serialize;

/// Marker written into the data directory after each successful backup; the server exports its
/// time as `stemedb_last_backup_timestamp_seconds`.
pub const BACKUP_MARKER: &str = "last-backup.json";
/// Marker written into the data directory after each successful WAL archive run; the server
/// exports `stemedb_last_wal_archive_timestamp_seconds` and the sealed segments past it.
pub const ARCHIVE_MARKER: &str = "wal-archive.json";
pub use error::{OpsError, Result};
pub use stemedb_store::now_ms;

/// BLAKE3 of a file's contents, hex, and its length.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), len))
}

/// Writes `value` as JSON to `path` atomically: temp file, fsync, rename, fsync the directory.
pub fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> crate::Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` atomically (the store's `write_atomically`).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    Ok(stemedb_store::write_atomically(path, bytes)?)
}

/// Takes the data directory's lock (the store's [`stemedb_store::DirLock`]) for an offline
/// operation, so no server starts meanwhile; `None` when another process (a running server)
/// holds it.
pub fn try_lock(data_dir: &Path) -> crate::Result<Option<stemedb_store::DirLock>> {
    let taken = stemedb_store::DirLock::try_take(data_dir).with_context(|| {
        format!(
            "open {}",
            stemedb_store::Layout::new(data_dir).lock.display()
        )
    })?;
    Ok(taken.ok())
}

/// The origin line a data directory's store was last run with (from `metadata.json`), so an
/// offline open signs with the same name.
pub fn origin_of(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("metadata.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("origin")?.as_str().map(str::to_string)
}

/// Store options for an offline open of `data_dir` (its own origin and key).
pub fn offline_store_options(data_dir: &Path) -> stemedb_store::StoreOptions {
    let mut opts = stemedb_store::StoreOptions::default();
    if let Some(origin) = origin_of(data_dir) {
        opts.origin = origin;
    }
    opts
}
