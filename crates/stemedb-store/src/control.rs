//! The messages of the data directory's control socket (`control.sock`, decision 0012), shared
//! by its server side (`stemedb_server::control`) and its client (`stemedb_ops::control`): one
//! JSON request line, one JSON answer line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request: `{"op": "snapshot", "dest": "/abs/path"}` or `{"op": "seal"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Write a consistent snapshot of the store into `dest` (absolute, absent or empty); the
    /// answer's `result` is a [`crate::snapshot::SnapshotInfo`].
    Snapshot {
        /// Where to write it.
        dest: PathBuf,
    },
    /// Seal the active WAL segment; the answer's `result` is the sequence number every sealed
    /// segment now ends before.
    Seal,
}

/// An answer: `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What it produced, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why not, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlReply {
    /// A carried-out request and its result.
    pub fn done(result: Value) -> ControlReply {
        ControlReply {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A refused or failed request.
    pub fn refused(error: impl Into<String>) -> ControlReply {
        ControlReply {
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_the_documented_one() {
        let snap: ControlRequest =
            serde_json::from_str(r#"{"op":"snapshot","dest":"/tmp/x"}"#).expect("snapshot");
        assert_eq!(
            snap,
            ControlRequest::Snapshot {
                dest: PathBuf::from("/tmp/x")
            }
        );
        let seal: ControlRequest = serde_json::from_str(r#"{"op":"seal"}"#).expect("seal");
        assert_eq!(seal, ControlRequest::Seal);
        assert!(serde_json::from_str::<ControlRequest>(r#"{"op":"drop"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&ControlReply::done(7.into())).expect("json"),
            r#"{"ok":true,"result":7}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlReply::refused("no")).expect("json"),
            r#"{"ok":false,"error":"no"}"#
        );
    }
}
