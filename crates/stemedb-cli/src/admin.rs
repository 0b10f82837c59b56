//! `stemedb admin`: the admin API over HTTP (quarantine review, agent registry, breakers, audit).

use clap::{Args, Subcommand};

/// Arguments of `stemedb admin`.
#[derive(Args)]
pub(crate) struct AdminArgs {
    /// Server URL.
    #[arg(long, env = "STEMEDB_SERVER", default_value = "http://127.0.0.1:18180")]
    pub(crate) server: String,
    /// The server's admin token.
    #[arg(long, env = "STEMEDB_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
    #[command(subcommand)]
    pub(crate) command: AdminCommand,
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// List quarantined assertions with their reasons.
    Quarantine {
        /// Most entries to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this id (the previous page's `next_after`).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one quarantined assertion.
    Show {
        /// Assertion id.
        id: String,
    },
    /// Release a quarantined assertion into the log.
    Release {
        /// Assertion id.
        id: String,
        /// Why (kept in the audit trail).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Reject a quarantined assertion for good.
    Reject {
        /// Assertion id.
        id: String,
        /// Why (kept in the audit trail).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the circuit breakers (storage and agents).
    Breakers,
    /// List registered agents, or show one.
    Agents {
        /// An agent's public key (hex); without it, every agent.
        agent: Option<String>,
    },
    /// Register or update an agent.
    PutAgent {
        /// The agent's public key (hex).
        agent: String,
        /// A name for people.
        #[arg(long, default_value = "")]
        name: String,
        /// Trust weight, 0 to 1.
        #[arg(long, default_value_t = 1.0)]
        trust: f64,
        /// active or suspended.
        #[arg(long, default_value = "active")]
        status: String,
    },
    /// Remove an agent from the registry.
    DeleteAgent {
        /// The agent's public key (hex).
        agent: String,
    },
    /// Print the audit trail, newest first.
    Audit {
        /// Most records to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub(crate) fn admin_cmd(args: &AdminArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let client = stemedb_client::Client::new(&args.server)?;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let (method, path, body) = match &args.command {
        AdminCommand::Quarantine { limit, after } => {
            let mut path = format!("/quarantine?limit={limit}");
            if let Some(a) = after {
                path.push_str(&format!("&after={}", enc(a)));
            }
            (Method::GET, path, None)
        }
        AdminCommand::Show { id } => (Method::GET, format!("/quarantine/{}", enc(id)), None),
        AdminCommand::Release { id, note } => (
            Method::POST,
            format!("/quarantine/{}/release", enc(id)),
            Some(serde_json::json!({ "note": note })),
        ),
        AdminCommand::Reject { id, reason } => (
            Method::POST,
            format!("/quarantine/{}/reject", enc(id)),
            Some(serde_json::json!({ "reason": reason })),
        ),
        AdminCommand::Breakers => (Method::GET, "/breakers".to_string(), None),
        AdminCommand::Agents { agent: None } => (Method::GET, "/agents".to_string(), None),
        AdminCommand::Agents { agent: Some(a) } => {
            (Method::GET, format!("/agents/{}", enc(a)), None)
        }
        AdminCommand::PutAgent {
            agent,
            name,
            trust,
            status,
        } => (
            Method::PUT,
            format!("/agents/{}", enc(agent)),
            Some(serde_json::json!({ "name": name, "trust": trust, "status": status })),
        ),
        AdminCommand::DeleteAgent { agent } => {
            (Method::DELETE, format!("/agents/{}", enc(agent)), None)
        }
        AdminCommand::Audit { limit } => (Method::GET, format!("/audit?limit={limit}"), None),
    };
    let (_, answer) = client.admin(&args.token, method, &path, body.as_ref())?;
    if !answer.is_null() {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
}
