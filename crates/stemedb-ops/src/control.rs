//! Client side of the data directory's control socket (`control.sock`): one JSON request line,
//! one JSON answer line. The server side is `stemedb_server::control`. Only a process that can
//! open the data directory (mode 0700, the server's user) can connect.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::error::{Context as _, OpsError};
use serde_json::Value;
use stemedb_store::control::{ControlReply, ControlRequest};

/// Sends one request to the server running on `data_dir` and returns its `result`.
pub fn request(data_dir: &Path, req: &ControlRequest, timeout: Duration) -> crate::Result<Value> {
    let path = stemedb_store::Layout::new(data_dir).control_socket;
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "a server holds {} but its control socket {} does not answer",
            data_dir.display(),
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .context("reading the server's answer")?;
    let reply: ControlReply = serde_json::from_str(answer.trim())
        .with_context(|| format!("the server answered {answer:?}"))?;
    match reply {
        ControlReply {
            ok: true, result, ..
        } => Ok(result.unwrap_or(Value::Null)),
        ControlReply { error: Some(e), .. } => {
            Err(OpsError::Server(format!("the server refused: {e}")))
        }
        _ => Err(OpsError::Server(format!("the server answered {answer:?}"))),
    }
}

/// Asks the running server to snapshot its store into `dest`.
pub fn snapshot(
    data_dir: &Path,
    dest: &Path,
) -> crate::Result<stemedb_store::snapshot::SnapshotInfo> {
    if dest.to_str().is_none() {
        return Err(OpsError::Refused("destination path is not UTF-8".into()));
    }
    let v = request(
        data_dir,
        &ControlRequest::Snapshot {
            dest: dest.to_path_buf(),
        },
        Duration::from_secs(24 * 3600),
    )?;
    Ok(serde_json::from_value(v)?)
}

/// Asks the running server to seal its active WAL segment; returns the sequence number every
/// sealed segment now ends before.
pub fn seal(data_dir: &Path) -> crate::Result<u64> {
    let v = request(data_dir, &ControlRequest::Seal, Duration::from_secs(60))?;
    v.as_u64()
        .ok_or_else(|| OpsError::Server(format!("the server answered {v} to seal")))
}
