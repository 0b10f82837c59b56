//! `stemedb-client`: a blocking client for the StemeDB HTTP API, with proof verification.
//!
//! Architecture Invariant: it trusts nothing the server says about the log without checking:
//! `verified_checkpoint` checks the note signature, `verify_inclusion` and `verify_consistency`
//! recompute the RFC 9162 proofs.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use stemedb_merkle::{Checkpoint, Hash};

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request did not complete.
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an RFC 9457 problem.
    #[error("{status} {code}: {detail}")]
    Problem {
        status: u16,
        code: String,
        detail: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// A proof or signature did not verify.
    #[error("verification failed: {0}")]
    Verification(String),
}

/// The result of one accepted assertion.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Accepted {
    /// Assertion id.
    pub id: String,
    /// `created` or `duplicate` (or `quarantined`).
    pub status: String,
    /// Position in the log (absent when quarantined).
    pub log_index: Option<u64>,
}

/// `/v1/checkpoint/key`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckpointKey {
    /// Origin line.
    pub origin: String,
    /// Note key name.
    pub key_name: String,
    /// Public key, hex.
    pub public_key: String,
    /// Verifier key string.
    pub vkey: String,
}

/// `/v1/proof/inclusion`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InclusionProof {
    /// Assertion id.
    pub id: String,
    /// Leaf index.
    pub leaf_index: u64,
    /// Tree size the proof is for.
    pub tree_size: u64,
    /// Root hash, hex.
    pub root_hash: String,
    /// Audit path, hex, leaf to root.
    pub audit_path: Vec<String>,
}

/// `/v1/proof/consistency`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConsistencyProof {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// Root at `from`, hex.
    pub from_root: String,
    /// Root at `to`, hex.
    pub to_root: String,
    /// Proof hashes, hex.
    pub proof: Vec<String>,
}

fn hash(hex_str: &str) -> Result<Hash, ClientError> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut h)
        .map_err(|_| ClientError::Unexpected(format!("{hex_str:?} is not a 32-byte hex hash")))?;
    Ok(h)
}

fn hashes(list: &[String]) -> Result<Vec<Hash>, ClientError> {
    list.iter().map(|h| hash(h)).collect()
}

/// A client for one server.
pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client for `base` (for example `http://127.0.0.1:18180`).
    pub fn new(base: &str) -> Result<Client, ClientError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| ClientError::Http {
                url: base.to_string(),
                source,
            })?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &str,
    ) -> Result<(u16, String), ClientError> {
        let resp = req.send().map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })?;
        if status >= 400 {
            return Err(problem(status, &text));
        }
        Ok((status, text))
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let (_, text) = self.send(self.http.get(&url), &url)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Unexpected(format!("{path}: {e}")))
    }

    /// The Prometheus text of `GET /metrics`.
    pub fn metrics_text(&self) -> Result<String, ClientError> {
        let url = self.url("/metrics");
        let (_, text) = self.send(self.http.get(&url), &url)?;
        Ok(text)
    }

    /// Calls the admin API: `method` on `/v1/admin{path}` with the bearer `token` and an
    /// optional JSON body. Returns the status and the JSON answer (`null` for 204); a problem
    /// answer is an error.
    pub fn admin(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let url = self.url(&format!("/v1/admin{path}"));
        let mut req = self.http.request(method, &url).bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let (status, text) = self.send(req, &url)?;
        if text.trim().is_empty() {
            return Ok((status, Value::Null));
        }
        let v = serde_json::from_str(&text)
            .map_err(|e| ClientError::Unexpected(format!("{path}: {e}")))?;
        Ok((status, v))
    }

    /// Posts one envelope (JSON bytes).
    pub fn assert_envelope(&self, envelope: &[u8]) -> Result<Accepted, ClientError> {
        let url = self.url("/v1/assert");
        let req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(envelope.to_vec());
        let (_, text) = self.send(req, &url)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Posts a batch of envelopes; one result per envelope, in order.
    pub fn assert_batch(
        &self,
        envelopes: &[Vec<u8>],
    ) -> Result<Vec<Result<Accepted, ClientError>>, ClientError> {
        let body = batch_body(envelopes);
        let url = self.url("/v1/assert");
        let req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        let (_, text) = self.send(req, &url)?;
        #[derive(Deserialize)]
        struct Results {
            results: Vec<Value>,
        }
        let r: Results =
            serde_json::from_str(&text).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok(r.results
            .into_iter()
            .map(|v| match v.get("error") {
                Some(p) => Err(problem(
                    p["status"].as_u64().unwrap_or(0) as u16,
                    &p.to_string(),
                )),
                None => {
                    serde_json::from_value(v).map_err(|e| ClientError::Unexpected(e.to_string()))
                }
            })
            .collect())
    }

    /// `GET /v1/assertions/{id}`; `None` when the server does not have it.
    pub fn assertion(&self, id: &str) -> Result<Option<Value>, ClientError> {
        match self.get_json(&format!("/v1/assertions/{id}")) {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Problem { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The signed checkpoint note.
    pub fn checkpoint_note(&self) -> Result<String, ClientError> {
        let url = self.url("/v1/checkpoint");
        Ok(self.send(self.http.get(&url), &url)?.1)
    }

    /// The checkpoint key.
    pub fn checkpoint_key(&self) -> Result<CheckpointKey, ClientError> {
        self.get_json("/v1/checkpoint/key")
    }

    /// Fetches the checkpoint and checks its signature with `key`.
    pub fn verified_checkpoint(&self, key: &CheckpointKey) -> Result<Checkpoint, ClientError> {
        let note = self.checkpoint_note()?;
        let pk = hash(&key.public_key)?;
        stemedb_merkle::verify_note(&note, &key.key_name, &pk)
            .map_err(|e| ClientError::Verification(e.to_string()))
    }

    /// An inclusion proof.
    pub fn inclusion(
        &self,
        id: &str,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, ClientError> {
        let mut path = format!("/v1/proof/inclusion?id={id}");
        if let Some(n) = tree_size {
            path.push_str(&format!("&tree_size={n}"));
        }
        self.get_json(&path)
    }

    /// `POST /v1/query` with `params` (the fields of design §6); the answer as JSON.
    pub fn query(&self, params: &Value) -> Result<Value, ClientError> {
        let url = self.url("/v1/query");
        let req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(params.to_string());
        let (_, text) = self.send(req, &url)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Unexpected(format!("/v1/query: {e}")))
    }

    /// `GET /v1/history`: every assertion of one (subject, predicate) group in log order, with
    /// what became of each, as of `as_of` (default now), after log index `after`.
    pub fn history(
        &self,
        subject: &str,
        predicate: &str,
        as_of: Option<u64>,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Value, ClientError> {
        let url = self.url("/v1/history");
        let mut pairs = vec![
            ("subject", subject.to_string()),
            ("predicate", predicate.to_string()),
        ];
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                pairs.push((k, v));
            }
        };
        put("as_of", as_of.map(|n| n.to_string()));
        put("after", after.map(|n| n.to_string()));
        put("limit", limit.map(|n| n.to_string()));
        let (_, text) = self.send(self.http.get(&url).query(&pairs), &url)?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Unexpected(format!("/v1/history: {e}")))
    }

    /// A consistency proof.
    pub fn consistency(&self, from: u64, to: Option<u64>) -> Result<ConsistencyProof, ClientError> {
        let mut path = format!("/v1/proof/consistency?from={from}");
        if let Some(n) = to {
            path.push_str(&format!("&to={n}"));
        }
        self.get_json(&path)
    }
}

/// Checks an inclusion proof against a verified checkpoint.
pub fn verify_inclusion(p: &InclusionProof, cp: &Checkpoint) -> Result<(), ClientError> {
    let id = hash(&p.id)?;
    let root = hash(&p.root_hash)?;
    if p.tree_size != cp.size || root != cp.root {
        return Err(ClientError::Verification(format!(
            "proof is for size {} root {}, checkpoint is size {}",
            p.tree_size, p.root_hash, cp.size
        )));
    }
    let path = hashes(&p.audit_path)?;
    if stemedb_merkle::verify_inclusion(
        &stemedb_merkle::leaf_hash(&id),
        p.leaf_index,
        p.tree_size,
        &path,
        &root,
    ) {
        Ok(())
    } else {
        Err(ClientError::Verification(format!(
            "inclusion of {} does not verify",
            p.id
        )))
    }
}

/// Checks a `proof=true` query answer: the checkpoint in it is signed by `key`, and every
/// result's winner is included in it. Returns the checkpoint.
pub fn verify_query_proofs(answer: &Value, key: &CheckpointKey) -> Result<Checkpoint, ClientError> {
    let note = answer["checkpoint"]
        .as_str()
        .ok_or_else(|| ClientError::Verification("the answer has no checkpoint".into()))?;
    let pk = hash(&key.public_key)?;
    let cp = stemedb_merkle::verify_note(note, &key.key_name, &pk)
        .map_err(|e| ClientError::Verification(e.to_string()))?;
    let results = answer["results"]
        .as_array()
        .ok_or_else(|| ClientError::Unexpected("the answer has no results".into()))?;
    for r in results {
        let mut proof = r["proof"].clone();
        if let Some(m) = proof.as_object_mut() {
            m.insert("id".into(), r["winner"]["id"].clone());
        }
        let p: InclusionProof = serde_json::from_value(proof)
            .map_err(|e| ClientError::Verification(format!("result without a proof: {e}")))?;
        verify_inclusion(&p, &cp)?;
    }
    Ok(cp)
}

/// Checks a consistency proof between two verified checkpoints.
pub fn verify_consistency(
    p: &ConsistencyProof,
    older: &Checkpoint,
    newer: &Checkpoint,
) -> Result<(), ClientError> {
    if p.from != older.size || p.to != newer.size {
        return Err(ClientError::Verification(
            "proof sizes differ from the checkpoints".into(),
        ));
    }
    let proof = hashes(&p.proof)?;
    if stemedb_merkle::verify_consistency(older.size, newer.size, &older.root, &newer.root, &proof)
    {
        Ok(())
    } else {
        Err(ClientError::Verification(format!(
            "tree of size {} is not a prefix of size {}",
            older.size, newer.size
        )))
    }
}

fn problem(status: u16, body: &str) -> ClientError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    ClientError::Problem {
        status,
        code: v["code"].as_str().unwrap_or("unknown").to_string(),
        detail: v["detail"].as_str().unwrap_or(body).to_string(),
    }
}

/// The body of one batch request, `{"assertions":[...]}`: `envelopes` in order, each without
/// surrounding whitespace.
pub fn batch_body<E: AsRef<[u8]>>(envelopes: &[E]) -> Vec<u8> {
    let mut body = b"{\"assertions\":[".to_vec();
    for (i, e) in envelopes.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(e.as_ref().trim_ascii());
    }
    body.extend_from_slice(b"]}");
    body
}
