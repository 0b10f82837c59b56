//! Request helpers shared by the handlers: bodies that must be JSON, assertion ids in paths and
//! queries, inclusion proofs as JSON, and running blocking work off the async workers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use serde_json::Value;
use stemedb_core::AssertionId;
use stemedb_store::StoreError;

use crate::problem::{Problem, body_rejection};

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The body of a request that must be JSON: 415 for another content type, 413 past `limit`,
/// 400 for a body that could not be read. `what` names the content in the 415 detail.
pub(crate) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    what: &str,
) -> Result<Bytes, Problem> {
    if !is_json(headers) {
        return Err(Problem::unsupported_media_type(
            "unsupported_media_type",
            format!("send {what} as Content-Type: application/json"),
        ));
    }
    body.map_err(|rej| body_rejection(rej, limit))
}

pub(crate) fn parse_id(s: &str) -> Result<AssertionId, Problem> {
    AssertionId::parse(s).map_err(|_| {
        Problem::bad_request("bad_id", "an assertion id is 64 lowercase hex characters")
    })
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Problem> {
    off_async(move || f().map_err(Problem::from)).await
}

/// Runs `f` on a blocking thread (store reads, verification); a failed task is a 500.
pub(crate) async fn off_async<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "blocking task failed");
            Err(Problem::internal())
        }
    }
}

/// An inclusion proof's fields (without the id) as design §11 spells them.
pub(crate) fn proof_json(p: &stemedb_store::InclusionProof) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("leaf_index".into(), p.leaf_index.into());
    m.insert("tree_size".into(), p.tree_size.into());
    m.insert("root_hash".into(), hex::encode(p.root).into());
    m.insert(
        "audit_path".into(),
        p.path.iter().map(hex::encode).collect::<Vec<_>>().into(),
    );
    m
}
