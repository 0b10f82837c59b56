//! The two small things every part of the store (and the server and the operator tools above it)
//! needs the same way: the wall clock in Unix milliseconds, and a file written atomically.

use std::io::Write as _;
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
