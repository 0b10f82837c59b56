//! `GET /v1/query` (query string) and `POST /v1/query` (JSON body, same fields): parse and check
//! every parameter of design §6, run the query off the async threads, and shape the answer of
//! design §11.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query as QueryString, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use stemedb_store::{
    Answer, DEFAULT_LIMIT, GroupResult, Lens, MAX_LIMIT, Query, QueryError, SubjectMatch,
};

use crate::api::{json_body, off_async, proof_json, store_problem};
use crate::app::AppState;
use crate::problem::Problem;

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
    limit: Option<u64>,
    cursor: Option<String>,
    proof: Option<bool>,
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad_query", detail)
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
                Problem::new(
                    StatusCode::BAD_REQUEST,
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
            limit: limit as usize,
            cursor: self.cursor,
        };
        Ok((q, self.proof.unwrap_or(false)))
    }
}

/// GET /v1/query
pub(crate) async fn get(
    State(state): State<AppState>,
    pairs: Result<QueryString<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let params = match pairs {
        Ok(QueryString(pairs)) => Params::from_pairs(pairs),
        Err(rej) => Err(bad(rej.body_text())),
    };
    match params {
        Ok(p) => run(state, p).await,
        Err(p) => p.into_response(),
    }
}

/// POST /v1/query
pub(crate) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match json_body(&headers, body, QUERY_BODY_LIMIT_BYTES, "the query") {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not JSON: {e}"),
            )
            .into_response();
        }
    };
    if !value.is_object() {
        return bad("the body must be a JSON object of query parameters").into_response();
    }
    match serde_json::from_value::<Params>(value) {
        Ok(p) => run(state, p).await,
        Err(e) => bad(e.to_string()).into_response(),
    }
}

async fn run(state: AppState, params: Params) -> Response {
    let (query, proof) = match params.into_query() {
        Ok(q) => q,
        Err(p) => return p.into_response(),
    };
    let store = state.store_arc();
    let weights = state.weights();
    let work = move || -> Result<Value, Problem> {
        let answer = store
            .query(&query, &|agent| weights.weight(agent))
            .map_err(|e| query_problem(&e))?;
        let proofs = if proof {
            Some(proofs(&store, &answer)?)
        } else {
            None
        };
        Ok(answer_json(&answer, proofs))
    };
    match off_async(work).await {
        Ok(body) => Json(body).into_response(),
        Err(p) => p.into_response(),
    }
}

fn query_problem(e: &QueryError) -> Problem {
    match e {
        QueryError::BadCursor(m) => Problem::new(StatusCode::BAD_REQUEST, "bad_cursor", m.clone()),
        QueryError::BadParameter(m) => bad(m.clone()),
        QueryError::Store(s) => store_problem(s),
        other => bad(other.to_string()),
    }
}

fn result_json(r: &GroupResult) -> Value {
    json!({
        "subject": r.subject,
        "predicate": r.predicate,
        "winner": {
            "id": r.winner.id.to_hex(),
            "object": r.winner.object,
            "agent": hex::encode(r.winner.agent),
            "ts": r.winner.ts,
            "confidence": r.winner.confidence,
            "log_index": r.winner.log_index,
        },
        "conflict": r.conflict,
        "agreement": r.agreement,
        "alternatives": r.alternatives.iter().map(|a| a.to_hex()).collect::<Vec<_>>(),
    })
}

/// The answer of design §11; with proofs, each result carries its winner's proof and the
/// answer the checkpoint they lead to.
fn answer_json(a: &Answer, proofs: Option<(Vec<Value>, String)>) -> Value {
    let mut results: Vec<Value> = a.results.iter().map(result_json).collect();
    let mut body = json!({
        "tree_size": a.tree_size,
        "next_cursor": a.next_cursor,
    });
    if let Some((proofs, note)) = proofs {
        for (r, p) in results.iter_mut().zip(proofs) {
            r["proof"] = p;
        }
        body["checkpoint"] = Value::String(note);
    }
    body["results"] = Value::Array(results);
    body
}

/// Each winner's inclusion proof against the checkpoint signed now (after the query, so it
/// covers every winner), and that checkpoint.
fn proofs(store: &stemedb_store::Store, answer: &Answer) -> Result<(Vec<Value>, String), Problem> {
    let (head, note) = store.signed_checkpoint();
    let mut proofs = Vec::with_capacity(answer.results.len());
    for r in &answer.results {
        let p = store
            .inclusion_proof(&r.winner.id, Some(head.size))
            .map_err(|e| store_problem(&e))?
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
