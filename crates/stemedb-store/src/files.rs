//! The small things every part of the store (and the server and the operator tools above it)
//! needs the same way: the wall clock in Unix milliseconds, a file written atomically, and the
//! data directory's lock.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{StoreError, io_at};

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync the
/// directory. A reader sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(bytes).map_err(io_at(&tmp))?;
    f.sync_all().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))?;
    if let Some(dir) = path.parent() {
        stemedb_wal::sync_dir(dir).map_err(io_at(dir))?;
    }
    Ok(())
}

/// The data directory's exclusive lock (`LOCK`, see [`crate::Layout::lock`]): held by a server
/// for its whole life and by an offline operation (verify, offline backup, archive) for its
/// run, so neither can run on a directory the other is using. Released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `data_dir` (which must exist) and records this process's id in it.
    /// `Ok(Err(holder))` when another process holds it; `holder` is its pid when it wrote one.
    pub fn try_take(data_dir: &Path) -> std::io::Result<Result<DirLock, Option<String>>> {
        let path = crate::Layout::new(data_dir).lock;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Ok(Err((!pid.is_empty()).then(|| pid.to_string())));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        // Who holds the lock, for the error message a second process prints.
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Ok(DirLock { _file: file }))
    }
}
