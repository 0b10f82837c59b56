//! Online snapshots: a consistent copy of the store while writes continue (decision 0012).
//!
//! The commit thread makes a durable checkpoint at tree size N and opens a redb read transaction
//! that sees exactly that state, then goes back to committing writes; nothing waits for the copy.
//! The copy then reads only what is immutable as of N:
//! - redb: every table exported through that read transaction into a fresh file (MVCC keeps the
//!   pages of N alive while writers continue; the copy comes out compacted);
//! - the value log: sealed segments whole, the active one up to its length at N (records are
//!   only ever appended);
//! - the Merkle node files: the first `(N >> level) * 32` bytes of each level;
//! - `db/admin.redb` through its own read transaction; `server.key` when the store owns it.
//!
//! A snapshot needs no WAL: its redb `meta` says `applied = durable = N` with the value log's
//! position at N, so a store opened on it replays nothing, and a WAL placed beside it (archived
//! segments, for point-in-time restore) is replayed from N.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use redb::{Database, Durability, ReadTransaction, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::commit::{Job, SnapshotPoint};
use crate::{BY_SEQ, FORMAT_VERSION, Layout, META, Store, StoreError, db_err, io_at, runs};

/// Rows per export transaction (bounds the memory of one redb write transaction).
const EXPORT_CHUNK: usize = 50_000;

/// What a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Format version of the store files.
    pub format_version: u64,
    /// The log's origin line.
    pub origin: String,
    /// Tree size (assertions) the snapshot covers.
    pub tree_size: u64,
    /// Merkle root of that tree, hex.
    pub root: String,
    /// The signed checkpoint note of `tree_size`.
    pub checkpoint: String,
    /// Checkpoint key name and public key (hex), to verify `checkpoint`.
    pub key_name: String,
    /// Hex Ed25519 public key of the checkpoint signer.
    pub public_key: String,
    /// Whether `server.key` is in the snapshot (false when the key is configured elsewhere).
    pub key_included: bool,
    /// WAL segment number the live log was writing when the snapshot was taken.
    pub wal_segment: u32,
    /// Files written, relative to the snapshot directory.
    pub files: Vec<PathBuf>,
}

impl Store {
    fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(Box<dyn FnOnce(T) + Send>) -> Job,
    ) -> Result<T, StoreError> {
        let sender = self
            .tx
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .ok_or(StoreError::Closed)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let job = make(Box::new(move |v| {
            let _ = tx.send(v);
        }));
        sender.send(job).map_err(|_| StoreError::Closed)?;
        rx.recv().map_err(|_| StoreError::Closed)
    }

    /// Seals the active WAL segment if it holds any record (for the archiver). Returns the
    /// sequence number (tree size) that every sealed segment now ends before.
    pub fn seal_wal(&self) -> Result<u64, StoreError> {
        self.call(Job::SealWal)?
    }

    /// Merges everything acknowledged into redb and makes a durable checkpoint (the server does
    /// this on its own every few seconds; tests and benchmarks use it to reach a quiet state).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.call(Job::Checkpoint)?
    }

    /// The data directory's paths.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Writes a consistent copy of the store as of a durable checkpoint into `dest`, which must
    /// not exist or be empty. Writes continue meanwhile. Every file is fsync'd.
    pub fn snapshot(&self, dest: &Path) -> Result<SnapshotInfo, StoreError> {
        if dest.exists() && fs::read_dir(dest).map_err(io_at(dest))?.next().is_some() {
            return Err(StoreError::Io {
                path: dest.to_path_buf(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "not empty"),
            });
        }
        let point: SnapshotPoint = self.call(Job::Snapshot)??;
        let wal_segment = stemedb_wal::list_segments(&self.layout.wal)?
            .last()
            .map(|(id, _)| *id)
            .unwrap_or(1);
        let out = Layout::new(dest);
        for d in [&out.db, &out.values, &out.merkle] {
            fs::create_dir_all(d).map_err(io_at(d))?;
        }
        let mut files = Vec::new();
        export_redb(&point.txn, &out.redb)?;
        drop(point.txn);
        files.push(rel(dest, &out.redb));

        // Value log: segments 1..=active, the active one cut at its length at N.
        for segment in 1..=point.vlog.segment {
            let name = format!("{segment:08}.vlog");
            let src = self.layout.values.join(&name);
            let dst = out.values.join(&name);
            let len = if segment == point.vlog.segment {
                Some(point.vlog.len)
            } else {
                None
            };
            copy_file(&src, &dst, len)?;
            files.push(rel(dest, &dst));
        }
        // Merkle node files: exactly the nodes of a tree of N leaves.
        for level in 0..64u32 {
            let keep = (point.size >> level) * 32;
            if keep == 0 {
                break;
            }
            let name = format!("level-{level:02}.dat");
            let dst = out.merkle.join(&name);
            copy_file(&self.layout.merkle.join(&name), &dst, Some(keep))?;
            files.push(rel(dest, &dst));
        }
        self.admin.export(&out.admin)?;
        files.push(rel(dest, &out.admin));
        if self.own_key {
            copy_file(&self.layout.server_key, &out.server_key, None)?;
            files.push(rel(dest, &out.server_key));
        }
        let info = SnapshotInfo {
            format_version: FORMAT_VERSION,
            origin: self.shared.origin.clone(),
            tree_size: point.size,
            root: hex::encode(point.root),
            checkpoint: point.note,
            key_name: self.shared.signer.name().to_string(),
            public_key: hex::encode(self.shared.signer.public_key()),
            key_included: self.own_key,
            wal_segment,
            files,
        };
        for d in [&out.values, &out.merkle, &out.db] {
            stemedb_wal::sync_dir(d).map_err(io_at(d))?;
        }
        stemedb_wal::sync_dir(dest).map_err(io_at(dest))?;
        Ok(info)
    }
}

fn rel(base: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(base).unwrap_or(path).to_path_buf()
}

/// Copies `src` to a new file `dst` (mode 0600), only its first `len` bytes when given (the file
/// must be at least that long), and fsyncs it.
pub fn copy_file(src: &Path, dst: &Path, len: Option<u64>) -> Result<u64, StoreError> {
    let input = File::open(src).map_err(io_at(src))?;
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut output = opts.open(dst).map_err(io_at(dst))?;
    let copied = match len {
        Some(n) => io::copy(&mut input.take(n), &mut output).map_err(io_at(dst))?,
        None => io::copy(&mut &input, &mut output).map_err(io_at(dst))?,
    };
    if let Some(n) = len
        && copied != n
    {
        return Err(StoreError::Corrupt(format!(
            "{} has {copied} bytes, the snapshot needs {n}",
            src.display()
        )));
    }
    output.sync_all().map_err(io_at(dst))?;
    Ok(copied)
}

/// Writes `bytes` to a new file `dst` (mode 0600) and fsyncs it.
pub fn copy_file_bytes(dst: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write as _;
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(dst).map_err(io_at(dst))?;
    f.write_all(bytes).map_err(io_at(dst))?;
    f.sync_all().map_err(io_at(dst))
}

/// Copies every row of `def` from `src` into `dst`, in chunks of `EXPORT_CHUNK` rows per write
/// transaction (not durable: the caller makes one durable commit at the end).
pub(crate) fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &Database,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let table = match src.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(db_err(e)),
    };
    let mut rows = table.iter().map_err(db_err)?;
    let mut copied = 0u64;
    loop {
        let mut txn = dst.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None).map_err(db_err)?;
        let mut done = true;
        {
            let mut out = txn.open_table(def).map_err(db_err)?;
            for row in rows.by_ref() {
                let (k, v) = row.map_err(db_err)?;
                out.insert(k.value(), v.value()).map_err(db_err)?;
                copied += 1;
                if copied.is_multiple_of(EXPORT_CHUNK as u64) {
                    done = false;
                    break;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        if done {
            return Ok(copied);
        }
    }
}

/// Makes everything written to `db` so far durable.
pub(crate) fn durable_commit(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    txn.commit().map_err(db_err)
}

/// Writes the snapshot's redb file: `meta` (without the run list: the copy is one run),
/// `by_seq`, and every run of each part merged into that part's run 0, in key order, so a
/// backup's B-trees are packed.
fn export_redb(src: &ReadTransaction, path: &Path) -> Result<(), StoreError> {
    let db = Database::create(path).map_err(db_err)?;
    copy_table(src, &db, META)?;
    {
        let mut txn = db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::None).map_err(db_err)?;
        runs::forget_runs(&txn)?;
        txn.commit().map_err(db_err)?;
    }
    copy_table(src, &db, BY_SEQ)?;
    for part in runs::PARTS {
        runs::export_part(src, &db, part, EXPORT_CHUNK)?;
    }
    durable_commit(&db)?;
    Ok(())
}
