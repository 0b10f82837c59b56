//! `GET /v1/query` (query string) and `POST /v1/query` (JSON body, same fields): parse and check
//! every parameter of design §6, run the query off the async threads, and shape the answer of
//! design §11.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stemedb_store::{Answer, DEFAULT_LIMIT, Lens, MAX_LIMIT, Query, QueryError, SubjectMatch};

use crate::extract::{json_body, off_async, proof_json};
use crate::problem::Problem;
use crate::state::AppState;

/// Largest `POST /v1/query` body, bytes.
pub const QUERY_BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Every query parameter, typed as the JSON body carries it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    subject: Option<String>,
    #[serde(rename = "match")]
    match_mode: Option<String>,
    predicate: Option<String>,
    agent: Option<String>,
    lens: Option<String>,
    as_of: Option<u64>,
    since: Option<i64>,
    until: Option<i64>,
    include_superseded: Option<bool>,
    valid_at: Option<i64>,
    current: Option<bool>,
    limit: Option<u64>,
    cursor: Option<String>,
    proof: Option<bool>,
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::bad_request("bad_query", detail)
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, Problem> {
    v.parse()
        .map_err(|_| bad(format!("{name} must be an integer in range, got {v:?}")))
}

fn parse_bool(name: &str, v: &str) -> Result<bool, Problem> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(format!("{name} must be true or false, got {v:?}"))),
    }
}

impl Params {
    /// Reads query-string pairs; a repeated or unknown parameter is an error.
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Params, Problem> {
        let mut p = Params::default();
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in pairs {
            if seen.contains(&k) {
                return Err(bad(format!("parameter {k:?} is given more than once")));
            }
            seen.push(k.clone());
            match k.as_str() {
                "subject" => p.subject = Some(v),
                "match" => p.match_mode = Some(v),
                "predicate" => p.predicate = Some(v),
                "agent" => p.agent = Some(v),
                "lens" => p.lens = Some(v),
                "as_of" => p.as_of = Some(parse_num(&k, &v)?),
                "since" => p.since = Some(parse_num(&k, &v)?),
                "until" => p.until = Some(parse_num(&k, &v)?),
                "include_superseded" => p.include_superseded = Some(parse_bool(&k, &v)?),
                "valid_at" => p.valid_at = Some(parse_num(&k, &v)?),
                "current" => p.current = Some(parse_bool(&k, &v)?),
                "limit" => p.limit = Some(parse_num(&k, &v)?),
                "cursor" => p.cursor = Some(v),
                "proof" => p.proof = Some(parse_bool(&k, &v)?),
                other => return Err(bad(format!("unknown parameter {other:?}"))),
            }
        }
        Ok(p)
    }

    /// Checks every field and builds the store query; the flag says whether to add proofs.
    fn into_query(self) -> Result<(Query, bool), Problem> {
        let lens = match self.lens.as_deref() {
            None => Lens::default(),
            Some(s) => Lens::parse(s).ok_or_else(|| {
                Problem::bad_request(
                    "unknown_lens",
                    format!("unknown lens {s:?}; lenses are {}", Lens::NAMES.join(", ")),
                )
            })?,
        };
        let match_mode = match self.match_mode.as_deref() {
            None => SubjectMatch::default(),
            Some(s) => SubjectMatch::parse(s)
                .ok_or_else(|| bad(format!("match must be exact, prefix or tail, got {s:?}")))?,
        };
        if self.match_mode.is_some() && self.subject.is_none() {
            return Err(bad("match needs a subject"));
        }
        if let Some(s) = &self.subject {
            stemedb_core::validate_subject(s).map_err(|e| bad(format!("subject: {e}")))?;
        }
        if let Some(p) = &self.predicate {
            stemedb_core::validate_predicate(p).map_err(|e| bad(format!("predicate: {e}")))?;
        }
        let agent = match &self.agent {
            None => None,
            Some(a) => Some(stemedb_core::parse_agent(a).map_err(|e| bad(format!("agent: {e}")))?),
        };
        let current = self.current.unwrap_or(false);
        if current && self.valid_at.is_some() {
            return Err(bad("give valid_at or current=true, not both"));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT as u64);
        if limit == 0 || limit > MAX_LIMIT as u64 {
            return Err(bad(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {limit}"
            )));
        }
        let q = Query {
            subject: self.subject,
            match_mode,
            predicate: self.predicate,
            agent,
            lens,
            as_of: self.as_of,
            since: self.since,
            until: self.until,
            include_superseded: self.include_superseded.unwrap_or(false),
            valid_at: self.valid_at,
            current,
            limit: limit as usize,
            cursor: self.cursor,
            scan_budget: None,
        };
        Ok((q, self.proof.unwrap_or(false)))
    }
}

/// GET /v1/query
pub(crate) async fn get(State(state): State<AppState>, uri: Uri) -> Result<Response, Problem> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    run(state, Params::from_pairs(pairs)?).await
}

/// POST /v1/query
pub(crate) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = json_body(&headers, body, QUERY_BODY_LIMIT_BYTES, "the query")?;
    // Parsed once, straight into the parameters (at most 64 KiB, so on the async worker). A
    // struct would also take a JSON array, field by field: only an object is parameters.
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let params = match serde_json::from_slice::<Params>(&body) {
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(Problem::bad_request(
                "malformed_json",
                format!("the body is not JSON: {e}"),
            ));
        }
        _ if !object => return Err(bad("the body must be a JSON object of query parameters")),
        Err(e) => return Err(bad(e.to_string())),
        Ok(params) => params,
    };
    run(state, params).await
}

/// Parameters of `GET /v1/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryParams {
    subject: String,
    predicate: String,
    as_of: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// GET /v1/history?subject=&predicate=[&as_of=&after=&limit=]: every assertion of one
/// (subject, predicate) group in log order, with what became of each (decision 0020).
pub(crate) async fn history(
    State(state): State<AppState>,
    params: Result<axum::extract::Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let axum::extract::Query(p) = params?;
    stemedb_core::validate_subject(&p.subject).map_err(|e| bad(format!("subject: {e}")))?;
    stemedb_core::validate_predicate(&p.predicate).map_err(|e| bad(format!("predicate: {e}")))?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    let budget = state.limits().scan_budget.max(1);
    let store = state.store_arc();
    let body = off_async(move || {
        let h = store.history(&p.subject, &p.predicate, p.as_of, p.after, limit, budget)?;
        serde_json::to_vec(&h).map_err(|e| {
            tracing::error!(error = %e, "cannot serialize a history");
            Problem::internal()
        })
    })
    .await?;
    json_response(body)
}

/// Index rows an exact-subject query may read on the async worker before it is moved to a
/// blocking thread (a few hundred rows take well under a millisecond).
const INLINE_SCAN_ROWS: usize = 256;

/// Sets a flag when dropped: the request's future is gone (timed out, or the client left), so
/// the blocking scan serving it stops.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn run(state: AppState, params: Params) -> Result<Response, Problem> {
    let (mut query, proof) = params.into_query()?;
    query.scan_budget = Some(state.limits().scan_budget.max(1));
    let store = state.store_arc();
    let weights = state.weights();
    // A point query (one subject, no proofs) is cheaper than the hand-off to a blocking thread,
    // so it runs here; if its subject has a long history it stops on the budget and moves
    // (decision 0010).
    if !proof && query.match_mode == SubjectMatch::Exact && query.subject.is_some() {
        let inline = store.query_within(&query, &|a| weights.weight(a), Some(INLINE_SCAN_ROWS))?;
        if let Some(answer) = inline {
            return json_response(serialize(&answer_body(&answer, None))?);
        }
    }
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(cancelled.clone());
    let work = move || -> Result<Vec<u8>, Problem> {
        let answer = store.query_cancellable(&query, &|agent| weights.weight(agent), &cancelled)?;
        let proofs = if proof {
            Some(proofs(&store, &answer)?)
        } else {
            None
        };
        serialize(&answer_body(&answer, proofs.as_ref()))
    };
    json_response(off_async(work).await?)
}

fn serialize(body: &AnswerBody<'_>) -> Result<Vec<u8>, Problem> {
    serde_json::to_vec(body).map_err(|e| {
        tracing::error!(error = %e, "cannot serialize a query answer");
        Problem::internal()
    })
}

fn json_response(bytes: Vec<u8>) -> Result<Response, Problem> {
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

impl From<QueryError> for Problem {
    fn from(e: QueryError) -> Problem {
        match e {
            QueryError::BadCursor(m) => Problem::bad_request("bad_cursor", m),
            QueryError::BadParameter(m) => bad(m),
            QueryError::Store(s) => s.into(),
            QueryError::GroupTooLarge(m) => Problem::unprocessable("group_too_large", m),
            QueryError::Cancelled => {
                Problem::unavailable("cancelled", "the query was abandoned before it finished")
            }
            other => bad(other.to_string()),
        }
    }
}

/// Bytes written as lowercase hex, without an intermediate `String`.
struct Hex<'a>(&'a [u8; 32]);

impl Serialize for Hex<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).map_err(serde::ser::Error::custom)?;
        let text = std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

/// The answer of design §11 (fields in alphabetical order, as the rest of the API writes them).
#[derive(Serialize)]
struct AnswerBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<&'a str>,
    next_cursor: Option<&'a str>,
    results: Vec<ResultBody<'a>>,
    tree_size: u64,
}

#[derive(Serialize)]
struct ResultBody<'a> {
    agreement: f64,
    alternatives: Vec<Hex<'a>>,
    alternatives_total: usize,
    conflict: bool,
    predicate: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<&'a Value>,
    subject: &'a str,
    winner: WinnerBody<'a>,
}

#[derive(Serialize)]
struct WinnerBody<'a> {
    agent: Hex<'a>,
    confidence: f64,
    id: Hex<'a>,
    log_index: u64,
    object: &'a Value,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_from: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_until: Option<i64>,
}

/// With proofs, each result carries its winner's proof and the answer the checkpoint they lead
/// to.
fn answer_body<'a>(a: &'a Answer, proofs: Option<&'a (Vec<Value>, String)>) -> AnswerBody<'a> {
    let results = a
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| ResultBody {
            agreement: r.agreement,
            alternatives: r.alternatives.iter().map(|id| Hex(id.as_bytes())).collect(),
            alternatives_total: r.alternatives_total,
            conflict: r.conflict,
            predicate: &r.predicate,
            proof: proofs.and_then(|(p, _)| p.get(i)),
            subject: &r.subject,
            winner: WinnerBody {
                agent: Hex(&r.winner.agent),
                confidence: r.winner.confidence,
                id: Hex(r.winner.id.as_bytes()),
                log_index: r.winner.log_index,
                object: &r.winner.object,
                ts: r.winner.ts,
                valid_from: r.winner.valid_from,
                valid_until: r.winner.valid_until,
            },
        })
        .collect();
    AnswerBody {
        checkpoint: proofs.map(|(_, note)| note.as_str()),
        next_cursor: a.next_cursor.as_deref(),
        results,
        tree_size: a.tree_size,
    }
}

/// Each winner's inclusion proof against the checkpoint signed now (after the query, so it
/// covers every winner), and that checkpoint.
fn proofs(store: &stemedb_store::Store, answer: &Answer) -> Result<(Vec<Value>, String), Problem> {
    let (head, note) = store.signed_checkpoint();
    let mut proofs = Vec::with_capacity(answer.results.len());
    for r in &answer.results {
        let p = store
            .inclusion_proof(&r.winner.id, Some(head.size))?
            .ok_or_else(|| {
                tracing::error!(id = %r.winner.id, "query winner has no inclusion proof");
                Problem::internal()
            })?;
        proofs.push(Value::Object(proof_json(&p)));
    }
    Ok((proofs, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_checked() {
        let agent = "ab".repeat(32);
        let ok: &[&[(&str, &str)]] = &[
            &[],
            &[("subject", "a/b"), ("match", "prefix"), ("lens", "raw")],
            &[
                ("predicate", "cpu"),
                ("agent", agent.as_str()),
                ("limit", "1000"),
            ],
            &[
                ("as_of", "0"),
                ("since", "-5"),
                ("until", "9"),
                ("proof", "true"),
            ],
            &[("valid_at", "1700000000000"), ("as_of", "3")],
            &[("current", "true")],
        ];
        for q in ok {
            assert!(
                Params::from_pairs(pairs(q))
                    .and_then(Params::into_query)
                    .is_ok(),
                "{q:?}"
            );
        }
        let bad: &[(&[(&str, &str)], &str)] = &[
            (&[("lens", "newest")], "unknown_lens"),
            (&[("match", "prefix")], "bad_query"),
            (&[("subject", "a//b")], "bad_query"),
            (&[("subject", "a"), ("match", "suffix")], "bad_query"),
            (&[("limit", "0")], "bad_query"),
            (&[("limit", "1001")], "bad_query"),
            (&[("limit", "-1")], "bad_query"),
            (&[("as_of", "x")], "bad_query"),
            (&[("proof", "yes")], "bad_query"),
            (&[("valid_at", "soon")], "bad_query"),
            (&[("valid_at", "5"), ("current", "true")], "bad_query"),
            (&[("agent", "AB")], "bad_query"),
            (&[("colour", "red")], "bad_query"),
            (&[("lens", "raw"), ("lens", "latest")], "bad_query"),
        ];
        for (q, code) in bad {
            let got = Params::from_pairs(pairs(q)).and_then(Params::into_query);
            assert_eq!(got.err().map(|p| p.code), Some(*code), "{q:?}");
        }
    }
}
