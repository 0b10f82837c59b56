//! The data directory's control socket, `control.sock`: how `stemedb backup` and
//! `stemedb wal-archive` reach a running server (decision 0012). One JSON request line, one JSON
//! answer line:
//!
//! - `{"op": "snapshot", "dest": "/abs/path"}` → `{"ok": true, "result": SnapshotInfo}`
//! - `{"op": "seal"}` → `{"ok": true, "result": <sequence number sealed segments end before>}`
//! - anything else → `{"ok": false, "error": "..."}`
//!
//! Access is the file system's: the socket is created mode 0600 inside the data directory, so only
//! the server's user (who can read every file there anyway) can connect. No network exposure.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use stemedb_store::Store;
use stemedb_store::control::{ControlReply, ControlRequest};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line accepted.
const MAX_LINE: usize = 8 * 1024;

/// The listening socket; removed from the data directory when dropped.
pub struct Control {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `data_dir/control.sock` (replacing a stale one: the caller holds the directory's lock)
/// and serves it. Returns `None`, with a warning, when it cannot bind (e.g. a path longer than a
/// Unix socket allows): online backup and sealing are then unavailable, the server still runs.
pub fn start(data_dir: &Path, store: Arc<Store>) -> Option<Control> {
    let path = stemedb_store::Layout::new(data_dir).control_socket;
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "cannot bind the control socket: online backup and WAL sealing are unavailable");
            return None;
        }
    };
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict the control socket");
    }
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let store = store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, store).await {
                            tracing::warn!(error = %e, "control socket request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Some(Control { path, task })
}

async fn handle(stream: UnixStream, store: Arc<Store>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_LINE as u64);
    reader.read_until(b'\n', &mut line).await?;
    let answer = match serde_json::from_slice::<ControlRequest>(&line) {
        Ok(req) => run(req, store).await,
        Err(e) => ControlReply::refused(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

async fn run(req: ControlRequest, store: Arc<Store>) -> ControlReply {
    let result = match req {
        ControlRequest::Snapshot { dest } => {
            if !dest.is_absolute() {
                return ControlReply::refused("\"dest\" must be an absolute path");
            }
            tracing::info!(dest = %dest.display(), "snapshot requested on the control socket");
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let info = store.snapshot(&dest)?;
                tracing::info!(tree_size = info.tree_size, dest = %dest.display(),
                    elapsed_ms = started.elapsed().as_millis() as u64, "snapshot written");
                serde_json::to_value(info)
                    .map_err(|e| stemedb_store::StoreError::Corrupt(e.to_string()))
            })
            .await
        }
        ControlRequest::Seal => {
            tokio::task::spawn_blocking(move || store.seal_wal().map(Value::from)).await
        }
    };
    match result {
        Ok(Ok(v)) => ControlReply::done(v),
        Ok(Err(e)) => ControlReply::refused(e.to_string()),
        Err(e) => ControlReply::refused(format!("task failed: {e}")),
    }
}
