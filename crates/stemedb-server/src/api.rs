//! The write path and the log's read surface: `/v1/assert`, `/v1/assertions/{id}`,
//! `/v1/checkpoint`, `/v1/checkpoint/key`, `/v1/proof/inclusion`, `/v1/proof/consistency`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use stemedb_store::StoreError;

use crate::extract::{blocking, json_body, parse_id, proof_json};
use crate::ingest::{Ingested, outcome_json, screen, submit_screened};
use crate::problem::{Done, Problem};
use crate::state::AppState;
use crate::verifier::{STAGE_MAX_BODY_BYTES, Verifier};

/// POST /v1/assert
pub(crate) async fn assert(
    State(state): State<AppState>,
    Extension(stage): Extension<Arc<Verifier>>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = json_body(&headers, body, state.limits().batch_body, "envelopes")?;
    if let Some(why) = state.store().read_only() {
        return Err(StoreError::ReadOnly(why).into());
    }
    let (results, single) = ingest(&state, &stage, body).await;
    let metrics = state.metrics();
    for r in &results {
        let label = match r {
            Ok(Ingested::Stored(o)) if o.created => "created",
            Ok(Ingested::Stored(_)) => "duplicate",
            Ok(Ingested::Quarantined(_)) => "quarantined",
            Err(p) if p.status < 500 => "rejected",
            Err(_) => "failed",
        };
        metrics.ingest.with_label_values(&[label]).inc();
    }
    if single {
        let o = results
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(Problem::server_error("internal", "no result")))?;
        let done = match &o {
            Ingested::Stored(s) if s.created => Done::Created,
            Ingested::Stored(_) => Done::Ok,
            Ingested::Quarantined(_) => Done::Accepted,
        };
        return Ok((done.status(), Json(outcome_json(&o))).into_response());
    }
    let items: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Ok(o) => outcome_json(o),
            Err(p) => json!({ "error": p }),
        })
        .collect();
    Ok(Json(json!({ "results": items })).into_response())
}

/// Parses the body once, then decodes, checks and verifies its envelopes a chunk at a time off
/// the async threads (so at most one chunk's statement value trees are alive per thread; a
/// chunk is ≤ 64 envelopes and ≤ 64 KiB, or one larger envelope), screens each
/// against the content-defense policy, quarantines what trips a rule (durably), submits the
/// rest and waits until they are durable. One result per input, in order; the flag says whether
/// the body was a single envelope.
async fn ingest(
    state: &AppState,
    stage: &Verifier,
    body: Bytes,
) -> (Vec<Result<Ingested, Problem>>, bool) {
    let screened = if body.len() <= STAGE_MAX_BODY_BYTES {
        // Small bodies (single envelopes) go through the verifier stage, which screens what
        // arrived together and submits it as one group.
        match stage.screen(body).await {
            Ok(s) => s,
            Err(p) => return (vec![Err(p)], true),
        }
    } else {
        let st = state.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut screened = screen(&st, &body)?;
            submit_screened(&st, &mut screened);
            Ok::<_, Problem>(screened)
        });
        match task.await {
            Ok(Ok(s)) => s,
            Ok(Err(p)) => return (vec![Err(p)], true),
            Err(e) => {
                tracing::error!(error = %e, "ingest task failed");
                return (vec![Err(Problem::internal())], true);
            }
        }
    };
    let single = screened.single;
    (screened.answers(state).await, single)
}

/// GET /v1/assertions/{id}: the envelope comes back as the bytes it was received as (design
/// §2), spliced into the answer rather than re-encoded (a JSON value would sort its keys and
/// respell escapes and whitespace).
pub(crate) async fn get_assertion(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let Path(id) = id.map_err(|_| Problem::bad_request("bad_id", "missing or unreadable id"))?;
    let id = parse_id(&id)?;
    let store = state.store_arc();
    let (logged, held) = blocking(move || {
        let logged = store.get(&id)?;
        let held = match logged {
            Some(_) => false,
            None => store.quarantined(&id)?.is_some(),
        };
        Ok((logged, held))
    })
    .await?;
    // Only the log's assertions are served; a quarantined one is named as such, not shown.
    let a = match logged {
        Some(a) => a,
        None if held => {
            return Err(Problem::missing(
                "quarantined",
                format!("{id} is held in quarantine until an operator releases or rejects it"),
            ));
        }
        None => return Err(Problem::missing("not_found", format!("no assertion {id}"))),
    };
    let head = json!({
        "id": a.id.to_hex(),
        "log_index": a.log_index,
        "status": "logged",
        "received_at": a.received_at_ms,
    });
    with_raw_envelope(head, &a.envelope)
        .map(|body| ([(header::CONTENT_TYPE, "application/json")], body).into_response())
        .ok_or_else(|| {
            tracing::error!(id = %id, "stored envelope is not JSON");
            Problem::server_error("internal", "stored envelope unreadable")
        })
}

/// `head` (a JSON object) with one more member, `"envelope"`, whose value is `envelope`'s bytes
/// exactly; `None` when `envelope` is not one JSON text (whitespace around it is kept: JSON
/// allows it there).
fn with_raw_envelope(head: Value, envelope: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<&RawValue>(envelope).ok()?;
    let head = serde_json::to_vec(&head).ok()?;
    let open = head.strip_suffix(b"}")?;
    let mut out = Vec::with_capacity(head.len() + envelope.len() + 16);
    out.extend_from_slice(open);
    if open.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"envelope\":");
    out.extend_from_slice(envelope);
    out.push(b'}');
    Some(out)
}

/// GET /v1/checkpoint
pub(crate) async fn checkpoint(State(state): State<AppState>) -> Response {
    let (_, note) = state.store().signed_checkpoint();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        note,
    )
        .into_response()
}

/// GET /v1/checkpoint/key
pub(crate) async fn checkpoint_key(State(state): State<AppState>) -> Json<Value> {
    let k = state.store().checkpoint_key();
    Json(json!({
        "origin": k.origin,
        "key_name": k.key_name,
        "public_key": hex::encode(k.public_key),
        "vkey": k.vkey,
    }))
}

/// Query of GET /v1/proof/inclusion.
#[derive(Deserialize)]
pub(crate) struct InclusionQuery {
    id: String,
    tree_size: Option<u64>,
}

/// GET /v1/proof/inclusion
pub(crate) async fn inclusion(
    State(state): State<AppState>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = q?;
    let id = parse_id(&q.id)?;
    let store = state.store_arc();
    let tree_size = q.tree_size;
    let p = blocking(move || store.inclusion_proof(&id, tree_size))
        .await?
        .ok_or_else(|| Problem::missing("not_found", format!("no assertion {id}")))?;
    let mut body = proof_json(&p);
    body.insert("id".into(), id.to_hex().into());
    Ok(Json(Value::Object(body)))
}

/// Query of GET /v1/proof/consistency.
#[derive(Deserialize)]
pub(crate) struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

/// GET /v1/proof/consistency
pub(crate) async fn consistency(
    State(state): State<AppState>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = q?;
    let store = state.store_arc();
    let (from, to) = (q.from, q.to);
    let c = blocking(move || store.consistency_proof(from, to)).await?;
    Ok(Json(json!({
        "from": c.from,
        "to": c.to,
        "from_root": hex::encode(c.from_root),
        "to_root": hex::encode(c.to_root),
        "proof": c.proof.iter().map(hex::encode).collect::<Vec<_>>(),
    })))
}
