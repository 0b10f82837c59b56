//! Merkle node files: `db/merkle/level-NN.dat` holds the 32-byte roots of the complete subtrees
//! of level NN, in index order. Appending a leaf writes each node that became complete, once; so
//! a restart never rehashes old leaves. Derived state: cut back to the last durable checkpoint
//! on open and rebuilt from the WAL.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use stemedb_merkle::{Hash, NodeSource};

const LEVELS: usize = 64;

fn level_path(dir: &Path, level: u32) -> PathBuf {
    dir.join(format!("level-{level:02}.dat"))
}

/// Writes node files (owned by the commit thread).
pub struct NodeWriter {
    dir: PathBuf,
    files: Vec<Option<File>>,
    pending: Vec<(u32, u64, Hash)>,
}

impl NodeWriter {
    /// Opens the files and cuts them to exactly the nodes of a tree of `size` leaves.
    pub fn open(dir: &Path, size: u64) -> io::Result<NodeWriter> {
        stemedb_wal::create_dir_durable(dir)?;
        let mut files = Vec::with_capacity(LEVELS);
        for level in 0..LEVELS as u32 {
            let path = level_path(dir, level);
            let keep = (size >> level) * 32;
            if keep == 0 && !path.exists() {
                files.push(None);
                continue;
            }
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)?;
            if f.metadata()?.len() < keep {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is shorter than the durable checkpoint needs ({keep} bytes)",
                        path.display()
                    ),
                ));
            }
            f.set_len(keep)?;
            files.push(Some(f));
        }
        Ok(NodeWriter {
            dir: dir.to_path_buf(),
            files,
            pending: Vec::new(),
        })
    }

    /// Queues nodes returned by `Frontier::push`.
    pub fn queue(&mut self, nodes: Vec<(u32, u64, Hash)>) {
        self.pending.extend(nodes);
    }

    /// Writes queued nodes (no fsync).
    pub fn flush(&mut self) -> io::Result<()> {
        for (level, index, hash) in self.pending.drain(..) {
            let slot = &mut self.files[level as usize];
            if slot.is_none() {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(level_path(&self.dir, level))?;
                stemedb_wal::sync_dir(&self.dir)?;
                *slot = Some(f);
            }
            if let Some(f) = slot {
                f.write_all_at(&hash, index * 32)?;
            }
        }
        Ok(())
    }
}

/// Reads node files; shared by every reader. Implements `NodeSource`.
pub struct NodeReader {
    dir: PathBuf,
    files: RwLock<Vec<Option<Arc<File>>>>,
}

impl NodeReader {
    /// A reader over `dir`.
    pub fn new(dir: &Path) -> NodeReader {
        NodeReader {
            dir: dir.to_path_buf(),
            files: RwLock::new(vec![None; LEVELS]),
        }
    }

    fn file(&self, level: u32) -> io::Result<Arc<File>> {
        let lock_err = || io::Error::other("poisoned lock");
        if let Some(Some(f)) = self
            .files
            .read()
            .map_err(|_| lock_err())?
            .get(level as usize)
        {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(level_path(&self.dir, level))?);
        if let Some(slot) = self
            .files
            .write()
            .map_err(|_| lock_err())?
            .get_mut(level as usize)
        {
            *slot = Some(f.clone());
        }
        Ok(f)
    }
}

impl NodeSource for NodeReader {
    type Error = io::Error;
    fn node(&self, level: u32, index: u64) -> io::Result<Hash> {
        if level as usize >= LEVELS {
            return Err(io::Error::other("level out of range"));
        }
        let mut h = [0u8; 32];
        self.file(level)?.read_exact_at(&mut h, index * 32)?;
        Ok(h)
    }
}
