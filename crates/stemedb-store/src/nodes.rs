//! Merkle node files: `db/merkle/level-NN.dat` holds the 32-byte roots of the complete subtrees
//! of level NN, in index order. Appending a leaf writes each node that became complete, once; so
//! a restart never rehashes old leaves. Derived state: cut back to the last durable checkpoint
//! on open and rebuilt from the WAL.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use stemedb_merkle::{Frontier, Hash, NodeSource};

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

    /// Appends `leaf` to `frontier` and queues the nodes that became complete.
    pub fn push_leaf(&mut self, frontier: &mut Frontier, leaf: Hash) {
        frontier.push_into(leaf, &mut self.pending);
    }

    /// Writes queued nodes (no fsync). Nodes of one level that follow each other in index
    /// order (a group's appends) go out in one write, not one 32-byte write each.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut pending = std::mem::take(&mut self.pending);
        // Stable: a level's nodes keep their queue order (ascending index when appended).
        pending.sort_by_key(|&(level, index, _)| (level, index));
        let mut run: Vec<u8> = Vec::new();
        // Each pass writes one run of consecutive indexes of one level (at least one node; a
        // node queued twice starts a new run, so the later copy lands last).
        let mut i = 0;
        while i < pending.len() {
            let (level, start, _) = pending[i];
            run.clear();
            let mut next = start;
            while let Some(&(l, index, hash)) = pending.get(i)
                && l == level
                && index == next
            {
                run.extend_from_slice(&hash);
                next += 1;
                i += 1;
            }
            self.file(level)?.write_all_at(&run, start * 32)?;
        }
        pending.clear();
        self.pending = pending;
        Ok(())
    }

    /// The file of `level`, created (and its directory entry made durable) on first use.
    fn file(&mut self, level: u32) -> io::Result<&File> {
        let slot = self
            .files
            .get_mut(level as usize)
            .ok_or_else(|| io::Error::other(format!("Merkle level {level} out of range")))?;
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
        slot.as_ref()
            .ok_or_else(|| io::Error::other("node file slot left empty"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesced_writes_land_every_node_where_the_reader_looks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = NodeWriter::open(dir.path(), 0).expect("open");
        let mut frontier = Frontier::default();
        let mut all = Vec::new();
        // Groups of uneven sizes, flushed after each (as the commit thread does).
        let mut n = 0u64;
        for group in [1u64, 2, 3, 7, 64, 100, 1, 1000, 5, 333] {
            for _ in 0..group {
                let leaf = stemedb_merkle::leaf_hash(blake3::hash(&n.to_le_bytes()).as_bytes());
                // What the frontier completes, recorded on a copy of it.
                all.extend(frontier.clone().push(leaf));
                w.push_leaf(&mut frontier, leaf);
                n += 1;
            }
            w.flush().expect("flush");
        }
        let r = NodeReader::new(dir.path());
        for (level, index, hash) in all {
            assert_eq!(
                r.node(level, index).expect("read"),
                hash,
                "level {level} index {index}"
            );
        }
        // Every level file is exactly as long as the complete subtrees of that level.
        for level in 0..12u32 {
            let len = std::fs::metadata(level_path(dir.path(), level))
                .map(|m| m.len())
                .unwrap_or(0);
            assert_eq!(len, (n >> level) * 32, "level {level}");
        }
    }

    #[test]
    fn a_node_queued_twice_keeps_the_later_hash_and_levels_stay_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = NodeWriter::open(dir.path(), 0).expect("open");
        // The level-1 node's index follows the last level-0 one: it still goes to its own file.
        w.pending.extend([
            (0, 0, [1; 32]),
            (0, 1, [2; 32]),
            (0, 0, [3; 32]),
            (1, 2, [4; 32]),
        ]);
        w.flush().expect("flush");
        let r = NodeReader::new(dir.path());
        assert_eq!(r.node(0, 0).expect("read"), [3; 32]);
        assert_eq!(r.node(0, 1).expect("read"), [2; 32]);
        assert_eq!(r.node(1, 2).expect("read"), [4; 32]);
        let len = |level| {
            std::fs::metadata(level_path(dir.path(), level))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        assert_eq!((len(0), len(1)), (64, 96));
    }
}
