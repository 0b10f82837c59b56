//! The MCP tools and resources. Each tool's arguments are a struct whose JSON Schema (with the
//! doc comments as descriptions) is what the model reads; the arguments arrive as a JSON object
//! and are parsed here, so a wrong type is a tool error with code `bad_argument`, not a
//! protocol error the model never sees.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::schema_for_type;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ListResourceTemplatesResult,
    ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ResourceTemplate, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use stemedb_client::{InclusionProof, verify_inclusion};

use crate::{Agent, ToolFailure};

/// The MCP server of one session (cheap to make: it shares the [`Agent`]).
#[derive(Clone)]
pub struct Memory {
    agent: Arc<Agent>,
    tool_router: ToolRouter<Memory>,
}

const INSTRUCTIONS: &str = "StemeDB is a tamper-evident memory shared by agents. Every memory is \
an assertion (subject, predicate, object) signed with this agent's key and appended to a \
verifiable log. Subjects are concept paths like `project/apollo/owner` (segments of letters, \
digits, '-', '_', '.', separated by '/'); predicates are short names like `status`. Use `recall` \
to read what agents believe (a lens resolves disagreements; `valid_at`/`current` ask what held \
at a time, `as_of` what the log knew at a tree size), `history` for every assertion of one \
subject and predicate, `remember` to add a memory, `correct` and `retract` for your own \
memories, and `verify` to check a memory's inclusion proof against a signed checkpoint.";

/// Arguments of `remember`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberArgs {
    /// What the memory is about: a concept path such as `customer/acme/plan`.
    pub subject: String,
    /// Which property of the subject: a short name such as `tier` or `status`.
    pub predicate: String,
    /// The value: any JSON (string, number, boolean, object, array).
    pub object: Value,
    /// How sure you are, 0 to 1 (default 1).
    pub confidence: Option<f64>,
    /// When the fact starts to hold in the world, Unix milliseconds (inclusive; default: always).
    pub valid_from: Option<i64>,
    /// When the fact stops holding, Unix milliseconds (exclusive; default: open-ended).
    pub valid_until: Option<i64>,
}

/// Arguments of `recall`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// The concept path to read, e.g. `customer/acme`.
    pub subject: String,
    /// `exact` (default): this subject; `prefix`: it and everything below it; `tail`: subjects
    /// ending in these segments.
    #[serde(rename = "match")]
    #[schemars(rename = "match")]
    pub match_mode: Option<String>,
    /// How disagreements between agents are resolved: `latest` (default), `trusted`,
    /// `consensus`, `confidence`, or `raw` (every assertion, unresolved).
    pub lens: Option<String>,
    /// Only this predicate.
    pub predicate: Option<String>,
    /// Only this agent's memories (public key, 64 hex characters).
    pub agent: Option<String>,
    /// Answer as the log stood at this tree size (what was known then).
    pub as_of: Option<u64>,
    /// Only what held in the world at this time, Unix milliseconds.
    pub valid_at: Option<i64>,
    /// true: only what holds now (do not combine with valid_at).
    pub current: Option<bool>,
    /// Most results, 1 to 1000 (default 100).
    pub limit: Option<u64>,
    /// Continue from the `next_cursor` of a previous answer.
    pub cursor: Option<String>,
}

/// Arguments of `history`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// The concept path (exact).
    pub subject: String,
    /// The predicate.
    pub predicate: String,
    /// As the log stood at this tree size.
    pub as_of: Option<u64>,
    /// Continue after this log index (the `next_after` of a previous answer).
    pub after: Option<u64>,
    /// Most entries, 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

/// Arguments of `correct`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectArgs {
    /// The id of one of your own memories (64 hex characters).
    pub id: String,
    /// The corrected value.
    pub object: Value,
    /// How sure you are of the correction, 0 to 1 (default: the original's).
    pub confidence: Option<f64>,
    /// Validity start, Unix ms (default: the original's).
    pub valid_from: Option<i64>,
    /// Validity end, Unix ms (default: the original's).
    pub valid_until: Option<i64>,
}

/// Arguments of `retract`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetractArgs {
    /// The id of one of your own memories to withdraw (64 hex characters).
    pub id: String,
}

/// Arguments of `verify`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyArgs {
    /// The id of the memory to verify (64 hex characters).
    pub id: String,
    /// A signed checkpoint note to verify against instead of the server's latest (for a proof
    /// someone handed you).
    pub checkpoint: Option<String>,
    /// An inclusion proof `{leaf_index, tree_size, root_hash, audit_path}` to check instead of
    /// fetching one.
    pub proof: Option<Value>,
}

/// Arguments of `checkpoint` (none).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

type ToolResult = Result<CallToolResult, ErrorData>;

fn parse<T: for<'de> Deserialize<'de>>(args: JsonObject) -> Result<T, ToolFailure> {
    serde_json::from_value(Value::Object(args))
        .map_err(|e| ToolFailure::new("bad_argument", format!("bad arguments: {e}")))
}

fn reply(r: Result<Value, ToolFailure>) -> ToolResult {
    Ok(match r {
        Ok(v) => CallToolResult::structured(v),
        Err(f) => {
            let body = f.to_json();
            let mut result = CallToolResult::error(vec![ContentBlock::text(body.to_string())]);
            result.structured_content = Some(body);
            result
        }
    })
}

/// Runs blocking client work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ToolFailure> + Send + 'static,
) -> Result<T, ToolFailure> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ToolFailure::new("unexpected", format!("task failed: {e}"))))
}

fn check_id(id: &str) -> Result<(), ToolFailure> {
    stemedb_core::AssertionId::parse(id)
        .map(|_| ())
        .map_err(|_| {
            ToolFailure::new(
                "bad_id",
                format!("{id:?} is not an assertion id (64 lowercase hex characters)"),
            )
        })
}

impl Agent {
    /// Signs `statement` (agent, ts and v filled in) and posts it.
    fn assert(&self, statement: &Value) -> Result<Value, ToolFailure> {
        let payload =
            stemedb_core::complete_statement(statement.to_string().as_bytes(), &self.key, now_ms())
                .map_err(|e| ToolFailure::new(e.code(), e.to_string()))?;
        let signed = stemedb_core::sign(&self.key, payload)
            .map_err(|e| ToolFailure::new(e.code(), e.to_string()))?;
        let a = self.client.assert_envelope(&signed.envelope().encode())?;
        let mut out = json!({"id": a.id, "status": a.status});
        if let Some(i) = a.log_index {
            out["log_index"] = i.into();
        }
        Ok(out)
    }

    /// The statement of one of this agent's own assertions, from an envelope checked here (its
    /// signature, and that its id is `id`): the server is not trusted to say what `id` said.
    fn own_statement(&self, id: &str) -> Result<Value, ToolFailure> {
        check_id(id)?;
        let stored = self
            .client
            .assertion(id)?
            .ok_or_else(|| ToolFailure::new("not_found", format!("no assertion {id}")))?;
        let envelope = serde_json::to_vec(&stored["envelope"])
            .map_err(|e| ToolFailure::new("unexpected", format!("envelope: {e}")))?;
        let verified = stemedb_core::check(&envelope).map_err(|e| {
            ToolFailure::new(
                "verification_failed",
                format!("the server's envelope for {id} does not verify: {e}"),
            )
        })?;
        if verified.id().to_hex() != id {
            return Err(ToolFailure::new(
                "verification_failed",
                format!("the server answered {id} with assertion {}", verified.id()),
            ));
        }
        let st: Value = serde_json::from_slice(verified.envelope().payload())
            .map_err(|e| ToolFailure::new("unexpected", format!("statement: {e}")))?;
        if st["agent"].as_str() != Some(self.agent_hex()) {
            return Err(ToolFailure::new(
                "not_own_assertion",
                format!(
                    "{id} was signed by agent {}, not by you ({}): an agent corrects and \
                     retracts only its own memories; remember your own view instead",
                    st["agent"].as_str().unwrap_or("?"),
                    self.agent_hex()
                ),
            ));
        }
        Ok(st)
    }

    fn verified_checkpoint(
        &self,
        note: Option<&str>,
    ) -> Result<(stemedb_merkle::Checkpoint, String), ToolFailure> {
        let key = self.checkpoint_key()?;
        let from_server = note.is_none();
        let note = match note {
            Some(n) => n.to_string(),
            None => self.client.checkpoint_note()?,
        };
        let pk = decode32(&key.public_key)?;
        let cp = match stemedb_merkle::verify_note(&note, &key.key_name, &pk) {
            Ok(cp) => cp,
            Err(e) => {
                // The server's own checkpoint fails under the key pinned earlier: if it now
                // names another key, say so (the key changed), rather than only "failed".
                if from_server
                    && let Ok(now) = self.client.checkpoint_key()
                    && now.public_key != key.public_key
                {
                    return Err(ToolFailure::new(
                        "checkpoint_key_mismatch",
                        format!(
                            "the server now signs checkpoints with {}, not the key {} pinned \
                             at first contact; nothing it says about the log can be checked",
                            now.public_key, key.public_key
                        ),
                    ));
                }
                return Err(ToolFailure::new(
                    "verification_failed",
                    format!("the checkpoint does not verify under the pinned key: {e}"),
                ));
            }
        };
        if cp.origin != key.origin {
            return Err(ToolFailure::new(
                "verification_failed",
                format!(
                    "the checkpoint is of log {:?}, the pinned key's is {:?}",
                    cp.origin, key.origin
                ),
            ));
        }
        Ok((cp, note))
    }

    fn verify(&self, a: VerifyArgs) -> Result<Value, ToolFailure> {
        check_id(&a.id)?;
        let (cp, _) = self.verified_checkpoint(a.checkpoint.as_deref())?;
        let proof = match a.proof {
            Some(mut p) => {
                if let Some(m) = p.as_object_mut() {
                    match m.get("id") {
                        Some(given) if given.as_str() != Some(a.id.as_str()) => {
                            return Err(ToolFailure::new(
                                "verification_failed",
                                format!("the proof is for {given}, not {}", a.id),
                            ));
                        }
                        _ => {
                            m.insert("id".into(), a.id.clone().into());
                        }
                    }
                }
                serde_json::from_value::<InclusionProof>(p).map_err(|e| {
                    ToolFailure::new(
                        "bad_argument",
                        format!("proof is not an inclusion proof: {e}"),
                    )
                })?
            }
            None => self.client.inclusion(&a.id, Some(cp.size))?,
        };
        if proof.id != a.id {
            return Err(ToolFailure::new(
                "verification_failed",
                format!("the proof is for {}, not {}", proof.id, a.id),
            ));
        }
        verify_inclusion(&proof, &cp).map_err(ToolFailure::from)?;
        Ok(json!({
            "verified": true,
            "id": a.id,
            "log_index": proof.leaf_index,
            "tree_size": cp.size,
            "root": hex::encode(cp.root),
        }))
    }

    fn checkpoint_json(&self) -> Result<Value, ToolFailure> {
        let key = self.checkpoint_key()?;
        let (cp, note) = self.verified_checkpoint(None)?;
        Ok(json!({
            "verified": true,
            "origin": cp.origin,
            "tree_size": cp.size,
            "root": hex::encode(cp.root),
            "key_name": key.key_name,
            "public_key": key.public_key,
            "note": note,
        }))
    }
}

fn decode32(h: &str) -> Result<[u8; 32], ToolFailure> {
    let bytes = hex::decode(h)
        .map_err(|e| ToolFailure::new("unexpected", format!("the server's key: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| ToolFailure::new("unexpected", "the server's key is not 32 bytes"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn put(v: &mut Value, key: &str, x: Option<impl Into<Value>>) {
    if let Some(x) = x {
        v[key] = x.into();
    }
}

#[tool_router]
impl Memory {
    /// The server of one session.
    pub fn new(agent: Arc<Agent>) -> Memory {
        Memory {
            agent,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Store a memory: a fact (subject, predicate, object) signed with your key and appended to the tamper-evident log. Returns its id (keep it to correct, retract or verify it later), log_index and status (created, duplicate, or quarantined for review).",
        input_schema = schema_for_type::<RememberArgs>()
    )]
    async fn remember(&self, Parameters(args): Parameters<JsonObject>) -> ToolResult {
        let agent = self.agent.clone();
        reply(
            blocking(move || {
                let a: RememberArgs = parse(args)?;
                let mut st =
                    json!({"subject": a.subject, "predicate": a.predicate, "object": a.object});
                put(&mut st, "confidence", a.confidence);
                put(&mut st, "valid_from", a.valid_from);
                put(&mut st, "valid_until", a.valid_until);
                agent.assert(&st)
            })
            .await,
        )
    }

    #[tool(
        description = "Read memories about a subject as agents believe them. Each result is one (subject, predicate) with the winning value under the lens, whether agents conflict, the share of weight behind the winner and the ids of alternatives. Use valid_at (Unix ms) or current=true for what held at a time, as_of for what the log knew at a past tree size.",
        input_schema = schema_for_type::<RecallArgs>()
    )]
    async fn recall(&self, Parameters(args): Parameters<JsonObject>) -> ToolResult {
        let agent = self.agent.clone();
        reply(
            blocking(move || {
                let a: RecallArgs = parse(args)?;
                let mut q = json!({"subject": a.subject});
                put(&mut q, "match", a.match_mode);
                put(&mut q, "lens", a.lens);
                put(&mut q, "predicate", a.predicate);
                put(&mut q, "agent", a.agent);
                put(&mut q, "as_of", a.as_of);
                put(&mut q, "valid_at", a.valid_at);
                put(&mut q, "current", a.current);
                put(&mut q, "limit", a.limit);
                put(&mut q, "cursor", a.cursor);
                Ok(agent.client.query(&q)?)
            })
            .await,
        )
    }

    #[tool(
        description = "Every memory ever recorded for one subject and predicate, in log order, by every agent: agent, time, confidence, validity interval, and status (live, superseded, retracted, or retraction) with the id that superseded it. For the next page pass after = next_after and as_of = the answer's tree_size, so every page describes the same log.",
        input_schema = schema_for_type::<HistoryArgs>()
    )]
    async fn history(&self, Parameters(args): Parameters<JsonObject>) -> ToolResult {
        let agent = self.agent.clone();
        reply(
            blocking(move || {
                let a: HistoryArgs = parse(args)?;
                Ok(agent
                    .client
                    .history(&a.subject, &a.predicate, a.as_of, a.after, a.limit)?)
            })
            .await,
        )
    }

    #[tool(
        description = "Correct one of your own memories: a new signed memory with the same subject and predicate that supersedes the old one (which stays in the log, marked superseded). Only memories you signed can be corrected.",
        input_schema = schema_for_type::<CorrectArgs>()
    )]
    async fn correct(&self, Parameters(args): Parameters<JsonObject>) -> ToolResult {
        let agent = self.agent.clone();
        reply(
            blocking(move || {
                let a: CorrectArgs = parse(args)?;
                let old = agent.own_statement(&a.id)?;
                let mut st = json!({
                    "subject": old["subject"], "predicate": old["predicate"],
                    "object": a.object, "supersedes": [a.id],
                });
                put(
                    &mut st,
                    "confidence",
                    a.confidence.or(old["confidence"].as_f64()),
                );
                put(
                    &mut st,
                    "valid_from",
                    a.valid_from.or(old["valid_from"].as_i64()),
                );
                put(
                    &mut st,
                    "valid_until",
                    a.valid_until.or(old["valid_until"].as_i64()),
                );
                agent.assert(&st)
            })
            .await,
        )
    }

    #[tool(
        description = "Withdraw one of your own memories: a signed retraction. The memory stays in the log, marked retracted, and no longer counts as your belief. The retraction is your newest word on that subject and predicate, so until you remember something new there you hold no value for it: memories you had already replaced there do not come back (remember the one you hold again if that is what you mean).",
        input_schema = schema_for_type::<RetractArgs>()
    )]
    async fn retract(&self, Parameters(args): Parameters<JsonObject>) -> ToolResult {
        let agent = self.agent.clone();
        reply(
            blocking(move || {
                let a: RetractArgs = parse(args)?;
                let old = agent.own_statement(&a.id)?;
                // The retraction holds when the memory did, so it withdraws only that: at other
                // valid times the agent's other memories of the group still count.
                let mut st = json!({
                    "subject": old["subject"], "predicate": old["predicate"],
                    "object": null, "retract": true, "supersedes": [a.id],
                });
                put(&mut st, "valid_from", old["valid_from"].as_i64());
                put(&mut st, "valid_until", old["valid_until"].as_i64());
                agent.assert(&st)
            })
            .await,
        )
    }

    #[tool(
        description = "Prove a memory is in the log: checks its inclusion proof against a checkpoint signed by the pinned server key, here, without trusting the server. Returns verified, log_index, tree_size and root; a forged proof or checkpoint is refused with code verification_failed.",
        input_schema = schema_for_type::<VerifyArgs>()
    )]
    async fn verify(&self, Parameters(args): Parameters<JsonObject>) -> ToolResult {
        let agent = self.agent.clone();
        reply(blocking(move || agent.verify(parse(args)?)).await)
    }

    #[tool(
        description = "The log's latest signed checkpoint (tree size and Merkle root), with its signature verified against the pinned server key.",
        input_schema = schema_for_type::<NoArgs>()
    )]
    async fn checkpoint(&self, Parameters(args): Parameters<JsonObject>) -> ToolResult {
        let agent = self.agent.clone();
        reply(
            blocking(move || {
                let _: NoArgs = parse(args)?;
                agent.checkpoint_json()
            })
            .await,
        )
    }
}

const CHECKPOINT_URI: &str = "stemedb://checkpoint";
const ASSERTION_PREFIX: &str = "stemedb://assertion/";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Memory {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("stemedb", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(CHECKPOINT_URI, "checkpoint")
                .with_description(
                    "The log's latest signed checkpoint, verified against the pinned key.",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{ASSERTION_PREFIX}{{id}}"), "assertion")
                .with_description(
                    "One stored assertion: its log index and the signed envelope as received.",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.clone();
        let agent = self.agent.clone();
        let found = if uri == CHECKPOINT_URI {
            blocking(move || agent.checkpoint_json()).await
        } else if let Some(id) = uri.strip_prefix(ASSERTION_PREFIX) {
            let id = id.to_string();
            blocking(move || {
                check_id(&id)?;
                agent
                    .client
                    .assertion(&id)?
                    .ok_or_else(|| ToolFailure::new("not_found", format!("no assertion {id}")))
            })
            .await
        } else {
            return Err(ErrorData::resource_not_found(
                format!("no resource {uri}"),
                Some(json!({"uri": uri})),
            ));
        };
        match found {
            Ok(v) => Ok(ReadResourceResult::new(vec![
                ResourceContents::text(v.to_string(), uri).with_mime_type("application/json"),
            ])
            .into()),
            Err(f) if f.code == "not_found" || f.code == "bad_id" => Err(
                ErrorData::resource_not_found(f.detail.clone(), Some(f.to_json())),
            ),
            Err(f) => Err(ErrorData::internal_error(
                f.detail.clone(),
                Some(f.to_json()),
            )),
        }
    }
}
