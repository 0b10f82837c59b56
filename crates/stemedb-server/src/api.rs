//! The write path and the log's read surface: `/v1/assert`, `/v1/assertions/{id}`,
//! `/v1/checkpoint`, `/v1/checkpoint/key`, `/v1/proof/inclusion`, `/v1/proof/consistency`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use stemedb_core::{AssertionId, Envelope, Prepared};
use stemedb_store::{Entry, Outcome, QuarantineEntry, StoreError};

use crate::defense::Verdict;

use crate::app::AppState;
use crate::config::MAX_BATCH_ITEMS;
use crate::problem::Problem;

/// Unix time in milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The problem for a store failure. Internal details go to the log, not the client.
pub(crate) fn store_problem(e: &StoreError) -> Problem {
    match e {
        StoreError::ReadOnly(why) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "read_only",
            format!(
                "the server is read-only after a storage failure ({why}); an operator must restart it"
            ),
        ),
        StoreError::OutcomeUnknown(why) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome_unknown",
            format!(
                "the write reached the log but its fsync failed ({why}): it may or may not be \
                 durable, which a restart decides. The server is now read-only; retrying after \
                 the restart is safe (writes are idempotent)"
            ),
        ),
        StoreError::Closed => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        ),
        StoreError::OutOfRange(m) => {
            Problem::new(StatusCode::BAD_REQUEST, "out_of_range", m.clone())
        }
        other => {
            tracing::error!(error = %other, "store error");
            Problem::internal()
        }
    }
}

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
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send {what} as Content-Type: application/json"),
        ));
    }
    body.map_err(|rej| body_rejection(rej, limit))
}

pub(crate) fn body_rejection(rej: BytesRejection, limit: usize) -> Problem {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is larger than {limit} bytes"),
        )
    } else {
        Problem::new(StatusCode::BAD_REQUEST, "bad_body", rej.body_text())
    }
}

/// What a `/v1/assert` body holds.
enum AssertRequest {
    /// The whole body is one envelope.
    Single,
    /// A batch: the byte range of each envelope in the body.
    Batch(Vec<std::ops::Range<usize>>),
}

/// The top level of a body: each key with its value's raw text, borrowed from the body (no
/// value tree is built, so a large body costs no more than its bytes).
struct TopLevel<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    out.push((k, m.next_value::<&'de RawValue>()?));
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a `/v1/assert` body once, without building a value tree of it. Runs on a blocking
/// thread: a 16 MiB body takes milliseconds to scan.
fn parse_assert_body(body: &[u8], single_limit: usize) -> Result<AssertRequest, Problem> {
    let top: TopLevel<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_envelope",
            "the body must be an envelope object or {\"assertions\": [...]}",
        ),
        _ => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not JSON: {e}"),
        ),
    })?;
    let Some((_, items)) = top.0.iter().find(|(k, _)| k == "assertions") else {
        if body.len() > single_limit {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a single-envelope body is limited to {single_limit} bytes"),
            ));
        }
        return Ok(AssertRequest::Single);
    };
    if top.0.len() != 1 {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_batch",
            "a batch body has exactly one key, \"assertions\"",
        ));
    }
    let items: Vec<&RawValue> = serde_json::from_str(items.get()).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_batch",
            format!("\"assertions\" must be an array of envelopes: {e}"),
        )
    })?;
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        let (status, code) = if items.is_empty() {
            (StatusCode::BAD_REQUEST, "malformed_batch")
        } else {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        };
        return Err(Problem::new(
            status,
            code,
            format!(
                "a batch holds 1 to {MAX_BATCH_ITEMS} envelopes, this one has {}",
                items.len()
            ),
        ));
    }
    let base = body.as_ptr() as usize;
    let ranges = items
        .iter()
        .map(|r| {
            let start = r.get().as_ptr() as usize - base;
            start..start + r.get().len()
        })
        .collect();
    Ok(AssertRequest::Batch(ranges))
}

/// What became of one accepted envelope.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ingested {
    /// In the log (new or already there).
    Stored(Outcome),
    /// Held in quarantine until an operator decides.
    Quarantined(AssertionId),
}

fn outcome_json(o: &Ingested) -> Value {
    match o {
        Ingested::Stored(o) => json!({
            "id": o.id.to_hex(),
            "status": if o.created { "created" } else { "duplicate" },
            "log_index": o.log_index,
        }),
        Ingested::Quarantined(id) => json!({"id": id.to_hex(), "status": "quarantined"}),
    }
}

/// POST /v1/assert
pub(crate) async fn assert(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match json_body(&headers, body, state.limits().batch_body, "envelopes") {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    if let Some(why) = state.store().read_only() {
        return store_problem(&StoreError::ReadOnly(why)).into_response();
    }
    let (results, single) = ingest(&state, body).await;
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
        return match results.into_iter().next() {
            Some(Ok(o)) => {
                let status = match &o {
                    Ingested::Stored(s) if s.created => StatusCode::CREATED,
                    Ingested::Stored(_) => StatusCode::OK,
                    Ingested::Quarantined(_) => StatusCode::ACCEPTED,
                };
                (status, Json(outcome_json(&o))).into_response()
            }
            Some(Err(p)) => p.into_response(),
            None => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no result")
                .into_response(),
        };
    }
    let items: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Ok(o) => outcome_json(o),
            Err(p) => json!({ "error": p }),
        })
        .collect();
    (StatusCode::OK, Json(json!({ "results": items }))).into_response()
}

/// One result per envelope, filled in as the pipeline decides.
type Slots = Vec<Option<Result<Ingested, Problem>>>;

/// What screening a body decided: the results decided so far, the entries still to submit and
/// their positions, and, once submitted, the answer to wait for.
pub(crate) struct Screened {
    results: Slots,
    single: bool,
    pub(crate) entries: Vec<Entry>,
    positions: Vec<usize>,
    pub(crate) submitted: Option<Submitted>,
}

pub(crate) struct Submitted {
    positions: Vec<usize>,
    agents: Vec<[u8; 32]>,
    pub(crate) outcomes: tokio::sync::oneshot::Receiver<Vec<Result<Outcome, StoreError>>>,
}

impl Screened {
    /// Takes the entries to submit, leaving where their outcomes go and who signed them; the
    /// outcomes arrive on the returned sender.
    pub(crate) fn take_entries(
        &mut self,
    ) -> (
        Vec<Entry>,
        tokio::sync::oneshot::Sender<Vec<Result<Outcome, StoreError>>>,
    ) {
        let entries = std::mem::take(&mut self.entries);
        let agents = entries.iter().map(|e| *e.agent()).collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submitted = Some(Submitted {
            positions: std::mem::take(&mut self.positions),
            agents,
            outcomes: rx,
        });
        (entries, tx)
    }
}

/// Submits a screened body's entries to the store on its own (one submission).
pub(crate) fn submit_screened(st: &AppState, screened: &mut Screened) {
    if screened.entries.is_empty() {
        return;
    }
    let (entries, tx) = screened.take_entries();
    st.store().submit(
        entries,
        now_ms(),
        Box::new(move |outcomes| {
            let _ = tx.send(outcomes);
        }),
    );
}

/// Parses the body once, then decodes, checks and verifies every envelope one at a time off the
/// async threads (so at most one statement's value tree is alive per thread), screens each
/// against the content-defense policy, quarantines what trips a rule (durably), submits the
/// rest and waits until they are durable. One result per input, in order; the flag says whether
/// the body was a single envelope.
async fn ingest(state: &AppState, body: Bytes) -> (Vec<Result<Ingested, Problem>>, bool) {
    let screened = if body.len() <= crate::verifier::STAGE_MAX_BODY_BYTES {
        // Small bodies (single envelopes) go through the verifier stage, which screens what
        // arrived together and submits it as one group.
        match state.verifier().screen(body).await {
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
    let Screened {
        mut results,
        single,
        submitted,
        ..
    } = screened;
    if let Some(sub) = submitted {
        match sub.outcomes.await {
            Ok(outcomes) => {
                let defense = state.defense();
                for ((i, o), agent) in sub.positions.into_iter().zip(outcomes).zip(sub.agents) {
                    if o.is_ok()
                        && let Some(t) = defense.record(&agent, None, false)
                    {
                        state.breaker_changed(t);
                    }
                    results[i] = Some(o.map(Ingested::Stored).map_err(|e| store_problem(&e)));
                }
            }
            Err(_) => {
                tracing::error!("the store dropped a submission without answering");
                for i in sub.positions {
                    results[i] = Some(Err(Problem::internal()));
                }
            }
        }
    }
    (fill(results), single)
}

/// Parses, decodes, verifies and screens one body (blocking: run it off the async workers);
/// quarantines what trips a rule. The entries to log are left in `Screened::entries`.
pub(crate) fn screen(st: &AppState, body: &[u8]) -> Result<Screened, Problem> {
    let store = st.store();
    let request = parse_assert_body(body, st.limits().single_body)?;
    let (ranges, single) = match request {
        AssertRequest::Single => (
            vec![std::ops::Range {
                start: 0,
                end: body.len(),
            }],
            true,
        ),
        AssertRequest::Batch(r) => (r, false),
    };
    let defense = st.defense();
    let n = ranges.len();
    let mut results: Slots = (0..n).map(|_| None).collect();
    let mut entries = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut held: Vec<QuarantineEntry> = Vec::new();
    let mut held_positions = Vec::new();
    let received = now_ms();
    let agent_of = |id: &AssertionId| store.agent_of(id);
    for (i, range) in ranges.into_iter().enumerate() {
        let raw = &body[range];
        let prepared = match Envelope::decode(raw).and_then(Prepared::new) {
            Ok(p) => p,
            Err(e) => {
                results[i] = Some(Err(Problem::from_core(&e)));
                continue;
            }
        };
        // An open breaker refuses before the costly signature check.
        match defense.gate(prepared.statement().agent()) {
            Ok(Some(t)) => st.breaker_changed(t),
            Ok(None) => {}
            Err(problem) => {
                results[i] = Some(Err(problem));
                continue;
            }
        }
        let verified = match prepared.verify() {
            Ok(v) => v,
            Err(e) => {
                results[i] = Some(Err(Problem::from_core(&e)));
                continue;
            }
        };
        let agent = *verified.statement().agent();
        let payload_len = verified.envelope().payload().len();
        match defense.screen(verified.statement(), payload_len, &agent_of) {
            Verdict::Accept => {
                entries.push(Entry::new(verified, raw.to_vec()));
                positions.push(i);
            }
            Verdict::Quarantine(reasons) => {
                // Already released into the log: it is a duplicate, not news (and not held
                // against the agent).
                match store.log_index_of(&verified.id()) {
                    Ok(Some(log_index)) => {
                        results[i] = Some(Ok(Ingested::Stored(Outcome {
                            id: verified.id(),
                            log_index,
                            created: false,
                        })));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        results[i] = Some(Err(store_problem(&e)));
                        continue;
                    }
                }
                held.push(QuarantineEntry {
                    id: verified.id(),
                    agent: hex::encode(agent),
                    reasons,
                    received_at_ms: received,
                    envelope: String::from_utf8_lossy(raw.trim_ascii()).into_owned(),
                });
                held_positions.push(i);
            }
            Verdict::Refuse(problem) => {
                // Counted once per id: replaying one signed envelope cannot open its
                // agent's breaker.
                if let Some(t) = defense.record(&agent, Some(verified.id()), true) {
                    st.breaker_changed(t);
                }
                results[i] = Some(Err(problem));
            }
        }
    }
    if !held.is_empty() {
        match store.quarantine(&held) {
            Ok(new) => {
                for ((i, e), is_new) in held_positions.into_iter().zip(&held).zip(new) {
                    if is_new {
                        tracing::info!(id = %e.id, agent = %e.agent, reasons = ?e.reasons, "quarantined");
                        // Only a newly held id counts against its agent: a replay of one
                        // already held (by anyone) does not.
                        if let Ok(agent) = stemedb_core::parse_agent(&e.agent)
                            && let Some(t) = defense.record(&agent, Some(e.id), true)
                        {
                            st.breaker_changed(t);
                        }
                    }
                    results[i] = Some(Ok(Ingested::Quarantined(e.id)));
                }
                st.refresh_quarantine_size();
            }
            Err(e) => {
                let p = store_problem(&e);
                for i in held_positions {
                    results[i] = Some(Err(p.clone()));
                }
            }
        }
    }
    Ok(Screened {
        results,
        single,
        entries,
        positions,
        submitted: None,
    })
}

fn fill(results: Slots) -> Vec<Result<Ingested, Problem>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "no result",
                ))
            })
        })
        .collect()
}

pub(crate) fn parse_id(s: &str) -> Result<AssertionId, Problem> {
    AssertionId::parse(s).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "an assertion id is 64 lowercase hex characters",
        )
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Problem> {
    off_async(move || f().map_err(|e| store_problem(&e))).await
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

/// GET /v1/assertions/{id}
pub(crate) async fn get_assertion(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match id {
        Ok(Path(s)) => match parse_id(&s) {
            Ok(id) => id,
            Err(p) => return p.into_response(),
        },
        Err(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "bad_id",
                "missing or unreadable id",
            )
            .into_response();
        }
    };
    let store = state.store_arc();
    let found = blocking(move || {
        let logged = store.get(&id)?;
        let held = match logged {
            Some(_) => false,
            None => store.quarantined(&id)?.is_some(),
        };
        Ok((logged, held))
    })
    .await;
    // Only the log's assertions are served; a quarantined one is named as such, not shown.
    let found = match found {
        Ok((None, true)) => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "quarantined",
                format!("{id} is held in quarantine until an operator releases or rejects it"),
            )
            .into_response();
        }
        Ok((logged, _)) => Ok(logged),
        Err(p) => Err(p),
    };
    match found {
        Ok(Some(a)) => {
            let envelope = String::from_utf8(a.envelope)
                .ok()
                .and_then(|s| RawValue::from_string(s).ok());
            let Some(envelope) = envelope else {
                tracing::error!(id = %id, "stored envelope is not JSON");
                return Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "stored envelope unreadable",
                )
                .into_response();
            };
            Json(json!({
                "id": a.id.to_hex(),
                "log_index": a.log_index,
                "status": "logged",
                "received_at": a.received_at_ms,
                "envelope": envelope,
            }))
            .into_response()
        }
        Ok(None) => Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no assertion {id}"),
        )
        .into_response(),
        Err(p) => p.into_response(),
    }
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
pub(crate) async fn checkpoint_key(State(state): State<AppState>) -> Response {
    let k = state.store().checkpoint_key();
    Json(json!({
        "origin": k.origin,
        "key_name": k.key_name,
        "public_key": hex::encode(k.public_key),
        "vkey": k.vkey,
    }))
    .into_response()
}

fn query_problem(rej: QueryRejection) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad_query", rej.body_text())
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
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(rej) => return query_problem(rej).into_response(),
    };
    let id = match parse_id(&q.id) {
        Ok(id) => id,
        Err(p) => return p.into_response(),
    };
    let store = state.store_arc();
    let tree_size = q.tree_size;
    match blocking(move || store.inclusion_proof(&id, tree_size)).await {
        Ok(Some(p)) => {
            let mut body = proof_json(&p);
            body.insert("id".into(), id.to_hex().into());
            Json(Value::Object(body)).into_response()
        }
        Ok(None) => Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no assertion {id}"),
        )
        .into_response(),
        Err(p) => p.into_response(),
    }
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
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(rej) => return query_problem(rej).into_response(),
    };
    let store = state.store_arc();
    let (from, to) = (q.from, q.to);
    match blocking(move || store.consistency_proof(from, to)).await {
        Ok(c) => Json(json!({
            "from": c.from,
            "to": c.to,
            "from_root": hex::encode(c.from_root),
            "to_root": hex::encode(c.to_root),
            "proof": c.proof.iter().map(hex::encode).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(p) => p.into_response(),
    }
}
