//! `stemedb mcp`: the agent-side MCP server (design §12) over stdio, or the streamable HTTP
//! transport with `--http`. Logs go to standard error: standard output is the protocol.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

/// Arguments of `stemedb mcp`.
#[derive(Args)]
pub(crate) struct McpArgs {
    /// The agent's PKCS#8 PEM Ed25519 private key: every memory is signed with it, here.
    #[arg(long, env = "STEMEDB_MCP_KEY")]
    key: PathBuf,
    /// The StemeDB server.
    #[arg(long, env = "STEMEDB_SERVER", default_value = "http://127.0.0.1:18180")]
    server: String,
    /// Pin the server's checkpoint key to this Ed25519 public key (hex) instead of trusting
    /// the first answer.
    #[arg(long, value_parser = parse_key)]
    trust_key: Option<[u8; 32]>,
    /// Serve the streamable HTTP transport at http://ADDR/mcp instead of stdio.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Bearer token HTTP clients must send (required unless --http is a loopback address).
    #[arg(long, env = "STEMEDB_MCP_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn parse_key(s: &str) -> Result<[u8; 32], String> {
    stemedb_core::parse_agent(s)
        .map_err(|e| format!("a public key is 64 lowercase hex characters: {e}"))
}

pub(crate) fn mcp(args: McpArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STEMEDB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let key = crate::keys::load_key(&args.key)?;
    let agent = stemedb_mcp::Agent::new(stemedb_mcp::Options {
        key,
        server: args.server,
        trust_key: args.trust_key,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let done = runtime.block_on(async move {
        match args.http {
            Some(addr) => stemedb_mcp::serve_http(agent, addr, args.token).await,
            None => stemedb_mcp::serve_stdio(agent).await,
        }
    });
    done.map_err(|e| anyhow::anyhow!("{e}"))
}
