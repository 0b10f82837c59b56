//! Ownership of the data directory: created if absent, and locked so that a second server on the
//! same directory fails with a clear error instead of corrupting it.

use std::fs;
use std::path::{Path, PathBuf};

use stemedb_store::DirLock;

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error(
        "data directory {dir} is in use by another stemedb process{holder}; stop it or choose another --data-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    /// The directory or its lock file could not be created or opened.
    #[error("cannot use data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A data directory held exclusively by this process until dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    // Invariant: holds the exclusive lock on `path/LOCK` for the lifetime of this value.
    _lock: DirLock,
}

impl DataDir {
    /// Creates `path` if needed and takes its exclusive lock.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let io = |source| DataDirError::Io {
            dir: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(path).map_err(io)?;
        match DirLock::try_take(path).map_err(io)? {
            Ok(lock) => Ok(DataDir {
                path: path.to_path_buf(),
                _lock: lock,
            }),
            Err(pid) => Err(DataDirError::Locked {
                dir: path.to_path_buf(),
                holder: pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            }),
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_until_the_first_is_dropped() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        let first = DataDir::open(&dir).expect("first open");
        let err = DataDir::open(&dir).expect_err("second open must fail");
        let msg = err.to_string();
        assert!(msg.contains("in use by another stemedb process"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        DataDir::open(&dir).expect("open after release");
    }
}
