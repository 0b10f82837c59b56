//! `stemedb mcp`: agents' memory over the Model Context Protocol (design §12).
//!
//! The server runs on the agent's side, holds the agent's own Ed25519 key, signs every memory
//! locally and talks to a StemeDB server over HTTP. It trusts nothing the server says about the
//! log: the checkpoint key is pinned on first contact (or up front with `--trust-key`), and
//! `verify` and `checkpoint` check signatures and inclusion proofs here, not there.
//!
//! Tools: `remember`, `recall`, `history`, `correct`, `retract`, `verify`, `checkpoint`.
//! Resources: `stemedb://checkpoint` and the template `stemedb://assertion/{id}`. Every refusal
//! is a tool result with `isError: true` whose structured content is `{"code", "detail"}` (the
//! server's problem code where there is one), never a crash or a protocol error, so a model can
//! read it and try again.

mod tools;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use stemedb_client::{CheckpointKey, Client, ClientError};
use stemedb_core::SigningKey;

pub use tools::Memory;

/// Why a tool call was refused: a stable `code` and a `detail` written for a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolFailure {
    /// Stable machine code: the server's problem code, or one of this crate's
    /// (`bad_argument`, `not_found`, `not_own_assertion`, `verification_failed`,
    /// `checkpoint_key_mismatch`, `unreachable`, `unexpected`).
    pub code: String,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// The HTTP status of the server's problem, when it gave one.
    pub status: Option<u16>,
}

impl ToolFailure {
    /// A failure with `code` and `detail`.
    pub fn new(code: &str, detail: impl Into<String>) -> ToolFailure {
        ToolFailure {
            code: code.to_string(),
            detail: detail.into(),
            status: None,
        }
    }

    /// The failure as the JSON a tool result carries.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"code": self.code, "detail": self.detail});
        if let Some(s) = self.status {
            v["status"] = s.into();
        }
        v
    }
}

impl From<ClientError> for ToolFailure {
    fn from(e: ClientError) -> ToolFailure {
        match e {
            ClientError::Problem {
                status,
                code,
                detail,
            } => ToolFailure {
                code,
                detail,
                status: Some(status),
            },
            ClientError::Http { url, source } => ToolFailure::new(
                "unreachable",
                format!("the StemeDB server at {url} did not answer: {source}"),
            ),
            ClientError::Verification(m) => ToolFailure::new("verification_failed", m),
            other => ToolFailure::new("unexpected", other.to_string()),
        }
    }
}

/// How `stemedb mcp` runs.
pub struct Options {
    /// The agent's signing key.
    pub key: SigningKey,
    /// The StemeDB server's base URL.
    pub server: String,
    /// Pin the checkpoint key to this Ed25519 public key instead of trusting first contact.
    pub trust_key: Option<[u8; 32]>,
}

/// Shared state of every session: the agent's key, the HTTP client, the pinned checkpoint key.
pub struct Agent {
    key: SigningKey,
    agent_hex: String,
    client: Client,
    server: String,
    trust_key: Option<[u8; 32]>,
    pinned: Mutex<Option<CheckpointKey>>,
}

impl Agent {
    /// The agent of `opts`; nothing is contacted yet.
    pub fn new(opts: Options) -> Result<Arc<Agent>, ClientError> {
        Ok(Arc::new(Agent {
            agent_hex: stemedb_core::public_key_hex(&opts.key),
            key: opts.key,
            client: Client::new(&opts.server)?,
            server: opts.server,
            trust_key: opts.trust_key,
            pinned: Mutex::new(None),
        }))
    }

    /// The agent's public key, hex.
    pub fn agent_hex(&self) -> &str {
        &self.agent_hex
    }

    /// The checkpoint key: pinned on first contact (checked against `--trust-key` when given)
    /// for the life of the process. Every checkpoint is then verified with the pinned key, so
    /// a server that changes its key fails verification instead of being believed.
    pub(crate) fn checkpoint_key(&self) -> Result<CheckpointKey, ToolFailure> {
        let poisoned = || ToolFailure::new("unexpected", "the pinned key's lock is poisoned");
        let pinned = self.pinned.lock().map_err(|_| poisoned())?.clone();
        if let Some(k) = pinned {
            return Ok(k);
        }
        let key = self.client.checkpoint_key()?;
        if let Some(trusted) = self.trust_key
            && key.public_key != hex::encode(trusted)
        {
            return Err(ToolFailure::new(
                "checkpoint_key_mismatch",
                format!(
                    "the server at {} signs checkpoints with {}, not the trusted key {}; \
                     nothing it says about the log can be checked",
                    self.server,
                    key.public_key,
                    hex::encode(trusted)
                ),
            ));
        }
        let mut slot = self.pinned.lock().map_err(|_| poisoned())?;
        match &*slot {
            // Another call pinned first: the two answers must agree.
            Some(first) if first.public_key != key.public_key || first.origin != key.origin => {
                Err(ToolFailure::new(
                    "checkpoint_key_mismatch",
                    format!(
                        "the server at {} named two checkpoint keys ({} and {})",
                        self.server, first.public_key, key.public_key
                    ),
                ))
            }
            Some(first) => Ok(first.clone()),
            None => {
                tracing::info!(public_key = %key.public_key, key_name = %key.key_name, "checkpoint key pinned");
                *slot = Some(key.clone());
                Ok(key)
            }
        }
    }

    /// Pins the checkpoint key now (first contact), so a key the server shows later cannot
    /// replace it; if the server cannot be reached yet, the first proof pins it.
    async fn pin_at_start(self: &Arc<Self>) {
        let agent = self.clone();
        match tokio::task::spawn_blocking(move || agent.checkpoint_key()).await {
            Ok(Ok(_)) => {}
            // Nothing is pinned then, and never will be: each proof asks again and is refused.
            Ok(Err(f)) if f.code == "checkpoint_key_mismatch" => tracing::error!(
                detail = %f.detail,
                "the server's checkpoint key is not the trusted key: every proof and checkpoint \
                 will be refused"
            ),
            Ok(Err(f)) => tracing::warn!(code = %f.code, detail = %f.detail,
                "checkpoint key not pinned at start; the first proof pins it"),
            Err(e) => tracing::warn!(error = %e, "checkpoint key not pinned at start"),
        }
    }
}

/// Serves MCP over standard input and output until the client closes it.
pub async fn serve_stdio(agent: Arc<Agent>) -> Result<(), Box<dyn std::error::Error>> {
    use rmcp::ServiceExt as _;
    agent.pin_at_start().await;
    let running = Memory::new(agent).serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

/// Serves the streamable HTTP transport at `http://ADDR/mcp`. A bearer `token` is required
/// unless `addr` is a loopback address; with a token every request must carry
/// `Authorization: Bearer <token>`.
pub async fn serve_http(
    agent: Arc<Agent>,
    addr: SocketAddr,
    token: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(
            "the bearer token is empty: set a real one (--token or STEMEDB_MCP_TOKEN)".into(),
        );
    }
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: set a bearer token (--token or STEMEDB_MCP_TOKEN)"
        )
        .into());
    }
    agent.pin_at_start().await;
    let mut config = StreamableHttpServerConfig::default();
    if !addr.ip().is_loopback() {
        // Reached by any name; the bearer token is what admits a client.
        config = config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(Memory::new(agent.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let expected = token.map(Arc::new);
    let router =
        axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let expected = expected.clone();
                    async move {
                        if let Some(expected) = expected
                            && !bearer_matches(&req, &expected)
                        {
                            return unauthorized();
                        }
                        next.run(req).await
                    }
                },
            ));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // Tests and supervisors read the bound address from this line.
    eprintln!("stemedb mcp listening on http://{local}/mcp");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn bearer_matches(req: &axum::extract::Request, expected: &str) -> bool {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    // Compared as BLAKE3 hashes: constant time whatever was sent.
    presented.is_some_and(|t| blake3::hash(t.as_bytes()) == blake3::hash(expected.as_bytes()))
}

fn unauthorized() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [
            (
                axum::http::header::WWW_AUTHENTICATE,
                "Bearer realm=\"stemedb-mcp\"",
            ),
            (axum::http::header::CONTENT_TYPE, "application/problem+json"),
        ],
        json!({
            "type": "/docs/problems#unauthorized",
            "title": "Unauthorized",
            "status": 401,
            "code": "unauthorized",
            "detail": "send Authorization: Bearer <the token stemedb mcp was started with>",
        })
        .to_string(),
    )
        .into_response()
}
