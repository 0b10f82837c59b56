//! `stemedb`: the StemeDB command line, one module per command family: `serve`, `keys`
//! (keygen, sign, check-envelope), `client` (assert, query), `admin`, `mcp` and `ops` (backup,
//! restore, verify, wal-archive).
//!
//! `stemedb serve` runs the server on `./stemedb-data`; `keygen`, `sign` and `check-envelope`
//! work with keys and envelopes offline. `stemedb <command> --help` documents each command.
//! Exit codes: 0 success, 1 the input was checked and is invalid, 2 usage or I/O error.

mod admin;
mod client;
mod keys;
mod mcp;
mod ops;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stemedb",
    version,
    about = "StemeDB: a tamper-evident assertion database for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults: data dir ./stemedb-data, listen 127.0.0.1:18180).
    Serve(Box<serve::ServeArgs>),
    /// Generate an Ed25519 key as PKCS#8 PEM (mode 0600) and print its public key hex.
    Keygen {
        /// Where to write the private key. Refuses to overwrite an existing file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a statement and print the DSSE envelope. Fills `agent`, `ts` and `v` when absent.
    Sign {
        /// PKCS#8 PEM Ed25519 private key (from `stemedb keygen` or `openssl genpkey -algorithm ed25519`).
        #[arg(long)]
        key: PathBuf,
        /// Statement JSON file, or `-` for standard input.
        #[arg(default_value = "-")]
        statement: String,
    },
    /// Post assertions to a server: one envelope, a statement (signed with --key), or a file of
    /// them, one JSON object per line (sent in batches of up to 1000). Prints one JSON result
    /// per line.
    Assert {
        /// Server URL.
        #[arg(long, env = "STEMEDB_SERVER", default_value = "http://127.0.0.1:18180")]
        server: String,
        /// Sign statements with this PKCS#8 PEM key (envelopes are sent as they are).
        #[arg(long)]
        key: Option<PathBuf>,
        /// JSON file (one value, or one per line), or `-` for standard input.
        #[arg(default_value = "-")]
        input: String,
    },
    /// Serve agents' memory over the Model Context Protocol (stdio, or streamable HTTP with
    /// --http): tools remember, recall, history, correct, retract, verify, checkpoint, signing
    /// with the agent's own key and checking every proof against the pinned checkpoint key.
    Mcp(mcp::McpArgs),
    /// Query a server through a lens and print a table or JSON.
    Query(client::QueryArgs),
    /// The admin API: quarantine review, agent registry, breakers, audit trail (prints JSON).
    Admin(admin::AdminArgs),
    /// Check an envelope: decode, validate the statement, verify the signature, print its id.
    CheckEnvelope {
        /// Envelope JSON file, or `-` for standard input.
        #[arg(default_value = "-")]
        envelope: String,
    },
    /// Back up a data directory: a consistent snapshot (taken by the running server, which keeps
    /// accepting writes, or offline) plus manifest.json with the BLAKE3 of every file and the
    /// signed checkpoint. DEST must be absent or empty; it appears only when complete.
    Backup(ops::BackupArgs),
    /// Restore a backup into an empty data directory, verifying it first; with --wal-archive,
    /// replay archived WAL segments after it (up to --to-tree-size: point-in-time restore).
    Restore(ops::RestoreArgs),
    /// Verify a backup (file hashes, signatures, ids, Merkle root against the signed checkpoint)
    /// or a stopped data directory (WAL and store). Exit 0 when clean, 1 on any mismatch.
    Verify(ops::VerifyArgs),
    /// Copy sealed WAL segments to a directory or s3://bucket/prefix (each copy read back and
    /// checked), then remove local segments that are archived, covered by a durable checkpoint
    /// and older than the retention period. S3 settings: AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP.
    WalArchive(ops::WalArchiveArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Keygen { out } => keys::keygen(&out),
        Command::Sign { key, statement } => keys::sign(&key, &statement),
        Command::CheckEnvelope { envelope } => return keys::check_envelope(&envelope),
        Command::Query(args) => client::query_cmd(&args),
        Command::Admin(args) => admin::admin_cmd(&args),
        Command::Mcp(args) => mcp::mcp(args),
        Command::Assert { server, key, input } => {
            return client::assert_cmd(&server, key.as_deref(), &input);
        }
        Command::Backup(args) => ops::backup(&args),
        Command::Restore(args) => ops::restore(&args),
        Command::Verify(args) => return ops::verify(args),
        Command::WalArchive(args) => ops::wal_archive(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: the library errors name their cause
/// in their own message and also keep it as their `source()`, so a cause already in the text
/// is not repeated.
pub(crate) fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
