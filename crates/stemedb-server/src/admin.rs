//! The admin API under `/v1/admin/` (design §7, §8): quarantine review (list, show, release,
//! reject), circuit breakers, the agent registry and the audit trail. Every route needs
//! `Authorization: Bearer <STEMEDB_ADMIN_TOKEN>`; without a configured token the API answers
//! 403 `admin_disabled` (and the server says so in its start-up log).
//!
//! The token is compared as BLAKE3 hashes with `blake3::Hash`'s constant-time equality, so
//! neither its length nor a matching prefix shows in the response time.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use stemedb_store::{AgentRecord, AgentStatus, QuarantineEntry};

use stemedb_store::now_ms;

use crate::defense::{BreakerState, BreakerView};
use crate::extract::{blocking, json_body, parse_id};
use crate::problem::{Done, Problem};
use crate::state::AppState;

/// Who the audit trail names for actions taken with the admin token.
const ACTOR: &str = "admin-token";
/// Largest admin request body, bytes.
pub const ADMIN_BODY_LIMIT_BYTES: usize = 16 * 1024;
/// Default and largest page of the quarantine list.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn unauthorized(detail: &str, challenge: &'static str) -> Response {
    let mut resp = Problem::unauthorized("unauthorized", detail).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

/// Middleware: checks the bearer token on every admin route.
pub(crate) async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.admin_token_hash() else {
        return Problem::forbidden(
            "admin_disabled",
            "the admin API is off: start the server with STEMEDB_ADMIN_TOKEN set",
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = presented else {
        return unauthorized(
            "send Authorization: Bearer <admin token>",
            "Bearer realm=\"stemedb-admin\"",
        );
    };
    if !token_matches(token, expected) {
        tracing::warn!(target: "stemedb::admin", "admin request with a wrong token");
        return unauthorized(
            "the admin token is wrong",
            "Bearer realm=\"stemedb-admin\", error=\"invalid_token\"",
        );
    }
    next.run(req).await
}

/// True when `presented` is the token whose BLAKE3 hash is `expected`. Hashing first makes the
/// compared values the same length whatever was sent, and `blake3::Hash`'s `PartialEq` is
/// constant-time (it compares all 32 bytes without an early exit), so the time taken says
/// nothing about how much of the token was right.
fn token_matches(presented: &str, expected: &blake3::Hash) -> bool {
    blake3::hash(presented.as_bytes()) == *expected
}

fn parse_key(s: &str) -> Result<[u8; 32], Problem> {
    stemedb_core::parse_agent(s).map_err(|e| {
        Problem::bad_request(
            "bad_agent",
            format!("an agent is a 64-hex-character Ed25519 public key: {e}"),
        )
    })
}

/// A held entry as JSON; its envelope is the bytes it was received as (without surrounding
/// whitespace), not re-encoded, or a JSON string if those bytes are not JSON.
fn entry_json(e: &QuarantineEntry) -> QuarantineJson<'_> {
    let envelope = RawValue::from_string(e.envelope.clone())
        .or_else(|_| serde_json::value::to_raw_value(&e.envelope))
        .ok();
    QuarantineJson {
        id: e.id.to_hex(),
        agent: &e.agent,
        reasons: &e.reasons,
        received_at_ms: e.received_at_ms,
        envelope,
    }
}

#[derive(Serialize)]
struct QuarantineJson<'a> {
    id: String,
    agent: &'a str,
    reasons: &'a [String],
    received_at_ms: i64,
    envelope: Option<Box<RawValue>>,
}

#[derive(Serialize)]
struct QuarantinePage<'a> {
    total: u64,
    entries: Vec<QuarantineJson<'a>>,
    next_after: Option<String>,
}

/// An optional JSON body; an empty body is `{}`.
fn optional_body<T: for<'de> Deserialize<'de> + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    if matches!(&body, Ok(b) if b.is_empty()) {
        return Ok(T::default());
    }
    let bytes = json_body(headers, body, ADMIN_BODY_LIMIT_BYTES, "the request")?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request("bad_request", format!("bad body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    limit: Option<usize>,
    after: Option<String>,
}

/// The `limit` of a listing: the default when absent, 400 outside 1..=MAX_PAGE.
fn page_limit(limit: Option<usize>) -> Result<usize, Problem> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::bad_request(
            "bad_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

fn not_in_quarantine(id: &stemedb_core::AssertionId) -> Problem {
    Problem::not_found(format!("{id} is not in quarantine"))
}

fn not_registered(key: &[u8; 32]) -> Problem {
    Problem::not_found(format!("agent {} is not registered", hex::encode(key)))
}

/// GET /v1/admin/quarantine?limit=&after=
pub(crate) async fn quarantine_list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params?;
    let limit = page_limit(params.limit)?;
    let after = params.after.as_deref().map(parse_id).transpose()?;
    let store = state.store_arc();
    let (entries, total) = blocking(move || store.quarantine_list(after.as_ref(), limit)).await?;
    state.metrics().quarantine_size.set(total as i64);
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id.to_hex()))
        .flatten();
    let page = QuarantinePage {
        total,
        entries: entries.iter().map(entry_json).collect(),
        next_after: next,
    };
    Ok(Json(page).into_response())
}

/// GET /v1/admin/quarantine/{id}
pub(crate) async fn quarantine_get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_id(&id)?;
    let store = state.store_arc();
    let entry = blocking(move || store.quarantined(&id)).await?;
    entry
        .map(|e| Json(entry_json(&e)).into_response())
        .ok_or_else(|| not_in_quarantine(&id))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Note {
    #[serde(default)]
    note: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reason {
    #[serde(default)]
    reason: String,
}

/// POST /v1/admin/quarantine/{id}/release
pub(crate) async fn release(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Problem> {
    let id = parse_id(&id)?;
    let note: Note = optional_body(&headers, body)?;
    let store = state.store_arc();
    let r = blocking(move || store.release(&id, ACTOR, &note.note)).await;
    state.refresh_quarantine_size();
    let o = r?.ok_or_else(|| not_in_quarantine(&id))?;
    tracing::info!(target: "stemedb::admin", %id, log_index = o.log_index, "released from quarantine");
    Ok(Json(
        json!({"id": id.to_hex(), "status": "released", "log_index": o.log_index}),
    ))
}

/// POST /v1/admin/quarantine/{id}/reject
pub(crate) async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Problem> {
    let id = parse_id(&id)?;
    let reason: Reason = optional_body(&headers, body)?;
    let store = state.store_arc();
    let r = blocking(move || store.reject(&id, ACTOR, &reason.reason)).await;
    state.refresh_quarantine_size();
    if !r? {
        return Err(not_in_quarantine(&id));
    }
    tracing::info!(target: "stemedb::admin", %id, "rejected from quarantine");
    Ok(Json(json!({"id": id.to_hex(), "status": "rejected"})))
}

/// GET /v1/admin/breakers
pub(crate) async fn breakers(State(state): State<AppState>) -> Json<Value> {
    let mut list = vec![match state.store().read_only() {
        Some(why) => BreakerView {
            name: "storage".into(),
            state: BreakerState::Open,
            recent_failures: 1,
            retry_after_secs: None,
            opened_total: 1,
            reason: Some(why),
        },
        None => BreakerView {
            name: "storage".into(),
            state: BreakerState::Closed,
            recent_failures: 0,
            retry_after_secs: None,
            opened_total: 0,
            reason: None,
        },
    }];
    list.extend(state.defense().breakers());
    Json(json!({ "breakers": list }))
}

/// GET /v1/admin/agents
pub(crate) async fn agents(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let store = state.store_arc();
    let a = blocking(move || store.agents()).await?;
    Ok(Json(json!({ "agents": a })))
}

/// GET /v1/admin/agents/{pubkey}
pub(crate) async fn agent_get(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<AgentRecord>, Problem> {
    let key = parse_key(&key)?;
    let store = state.store_arc();
    let rec = blocking(move || store.agent(&key)).await?;
    rec.map(Json).ok_or_else(|| not_registered(&key))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentBody {
    #[serde(default)]
    name: String,
    #[serde(default = "default_trust")]
    trust: f64,
    #[serde(default)]
    status: AgentStatus,
}

fn default_trust() -> f64 {
    1.0
}

/// PUT /v1/admin/agents/{pubkey}: creates (201) or replaces (200) the record.
pub(crate) async fn agent_put(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let key = parse_key(&key)?;
    let bytes = json_body(&headers, body, ADMIN_BODY_LIMIT_BYTES, "the agent record")?;
    let body: AgentBody = serde_json::from_slice(&bytes).map_err(|e| {
        Problem::unprocessable(
            "bad_agent_record",
            format!("an agent record is {{\"name\", \"trust\" (0..1), \"status\" (active|suspended)}}: {e}"),
        )
    })?;
    if !(0.0..=1.0).contains(&body.trust) || body.name.len() > 256 {
        return Err(Problem::unprocessable(
            "bad_agent_record",
            "trust must be between 0 and 1 and the name at most 256 bytes",
        ));
    }
    let rec = AgentRecord {
        agent: hex::encode(key),
        name: body.name,
        trust: body.trust,
        status: body.status,
        updated_at_ms: now_ms(),
    };
    let store = state.store_arc();
    let stored = rec.clone();
    let previous = blocking(move || store.put_agent(&key, &stored, ACTOR)).await?;
    state.defense().set_agent(key, Some(rec.clone()));
    tracing::info!(target: "stemedb::admin", agent = %rec.agent, status = ?rec.status, trust = rec.trust, "agent record saved");
    let done = if previous.is_some() {
        Done::Ok
    } else {
        Done::Created
    };
    Ok((done.status(), Json(rec)).into_response())
}

/// DELETE /v1/admin/agents/{pubkey}
pub(crate) async fn agent_delete(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Done, Problem> {
    let key = parse_key(&key)?;
    let store = state.store_arc();
    if !blocking(move || store.delete_agent(&key, ACTOR)).await? {
        return Err(not_registered(&key));
    }
    state.defense().set_agent(key, None);
    tracing::info!(target: "stemedb::admin", agent = %hex::encode(key), "agent record deleted");
    Ok(Done::NoContent)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    limit: Option<usize>,
}

/// GET /v1/admin/audit?limit=
pub(crate) async fn audit(
    State(state): State<AppState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(params) = params?;
    let limit = page_limit(params.limit)?;
    let store = state.store_arc();
    let a = blocking(move || store.audit(limit)).await?;
    Ok(Json(json!({ "audit": a })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_token_matches() {
        let expected = blake3::hash(b"correct horse battery staple");
        assert!(token_matches("correct horse battery staple", &expected));
        for wrong in [
            "",
            "correct",
            "correct horse battery stapl",
            "correct horse battery staple ",
            "Correct horse battery staple",
            "correct horse battery staplecorrect horse battery staple",
        ] {
            assert!(!token_matches(wrong, &expected), "{wrong:?}");
        }
    }
}
