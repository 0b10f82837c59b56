//! `stemedb`: the StemeDB command line.
//!
//! `stemedb serve` runs the server on `./stemedb-data`; `keygen`, `sign` and `check-envelope`
//! work with keys and envelopes offline. `stemedb <command> --help` documents each command.
//! Exit codes: 0 success, 1 the input was checked and is invalid, 2 usage or I/O error.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use stemedb_server::{Config, ConfigLayer};

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
    Serve(Box<ServeArgs>),
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
    /// Query a server through a lens and print a table or JSON.
    Query(QueryArgs),
    /// The admin API: quarantine review, agent registry, breakers, audit trail (prints JSON).
    Admin(AdminArgs),
    /// Check an envelope: decode, validate the statement, verify the signature, print its id.
    CheckEnvelope {
        /// Envelope JSON file, or `-` for standard input.
        #[arg(default_value = "-")]
        envelope: String,
    },
    /// Back up a data directory: a consistent snapshot (taken by the running server, which keeps
    /// accepting writes, or offline) plus manifest.json with the BLAKE3 of every file and the
    /// signed checkpoint. DEST must be absent or empty; it appears only when complete.
    Backup {
        /// The data directory to back up.
        #[arg(long, env = "STEMEDB_DATA_DIR", default_value = "./stemedb-data")]
        data_dir: PathBuf,
        /// Where to write the backup (a new directory).
        #[arg(long)]
        to: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into an empty data directory, verifying it first; with --wal-archive,
    /// replay archived WAL segments after it (up to --to-tree-size: point-in-time restore).
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create (absent or empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// Archived WAL segments to replay: a directory or s3://bucket/prefix.
        #[arg(long)]
        wal_archive: Option<String>,
        /// Stop replay at this tree size (the log holds exactly this many assertions).
        #[arg(long)]
        to_tree_size: Option<u64>,
        /// Refuse the backup unless its checkpoint is signed by this Ed25519 public key (hex).
        #[arg(long, value_parser = parse_trusted_key)]
        trusted_key: Option<[u8; 32]>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a backup (file hashes, signatures, ids, Merkle root against the signed checkpoint)
    /// or a stopped data directory (WAL and store). Exit 0 when clean, 1 on any mismatch.
    Verify {
        /// A backup directory or a stopped data directory.
        #[arg(long, env = "STEMEDB_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The same, as a positional argument.
        path: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy sealed WAL segments to a directory or s3://bucket/prefix (each copy read back and
    /// checked), then remove local segments that are archived, covered by a durable checkpoint
    /// and older than the retention period. S3 settings: AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP.
    WalArchive {
        /// The data directory.
        #[arg(long, env = "STEMEDB_DATA_DIR", default_value = "./stemedb-data")]
        data_dir: PathBuf,
        /// A directory or s3://bucket/prefix.
        #[arg(long, env = "STEMEDB_WAL_ARCHIVE")]
        to: String,
        /// Do not seal the active segment first (archive only what rolled over by itself).
        #[arg(long)]
        no_seal: bool,
        /// Keep archived local segments this many days.
        #[arg(long, default_value_t = 7.0)]
        retention_days: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `stemedb admin`.
#[derive(Args)]
struct AdminArgs {
    /// Server URL.
    #[arg(long, env = "STEMEDB_SERVER", default_value = "http://127.0.0.1:18180")]
    server: String,
    /// The server's admin token.
    #[arg(long, env = "STEMEDB_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
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

/// Arguments of `stemedb query` (design §6).
#[derive(Args)]
struct QueryArgs {
    /// Server URL.
    #[arg(long, env = "STEMEDB_SERVER", default_value = "http://127.0.0.1:18180")]
    server: String,
    /// Subject concept path.
    #[arg(long)]
    subject: Option<String>,
    /// How the subject matches: exact, prefix (on segment boundaries) or tail.
    #[arg(long = "match", value_parser = ["exact", "prefix", "tail"])]
    match_mode: Option<String>,
    /// Only this predicate.
    #[arg(long)]
    predicate: Option<String>,
    /// Only this agent (public key hex).
    #[arg(long)]
    agent: Option<String>,
    /// latest, trusted, consensus, confidence or raw [default: latest].
    #[arg(long)]
    lens: Option<String>,
    /// Answer as the store was at this tree size.
    #[arg(long)]
    as_of: Option<u64>,
    /// Only assertions with ts at or after this (Unix ms).
    #[arg(long, allow_hyphen_values = true)]
    since: Option<i64>,
    /// Only assertions with ts at or before this (Unix ms).
    #[arg(long, allow_hyphen_values = true)]
    until: Option<i64>,
    /// Keep superseded assertions in the live set.
    #[arg(long)]
    include_superseded: bool,
    /// Results per page (1 to 1000) [default: 100].
    #[arg(long)]
    limit: Option<u64>,
    /// Continue from this cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Fetch every page, following next_cursor.
    #[arg(long)]
    all: bool,
    /// Ask for inclusion proofs and verify them against the signed checkpoint.
    #[arg(long)]
    proof: bool,
    /// table or json (json prints the server's answer; with --all, one answer per line).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

/// Settings for `serve`. Precedence: flag, then `STEMEDB_*` environment, then the config file,
/// then the built-in default (decision 0004). Every setting is declared once, in
/// `stemedb_server::config::ConfigLayer`.
#[derive(Args)]
struct ServeArgs {
    /// TOML config file with the same settings (snake_case keys).
    #[arg(long, env = "STEMEDB_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: ConfigLayer,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Keygen { out } => keygen(&out),
        Command::Sign { key, statement } => sign(&key, &statement),
        Command::CheckEnvelope { envelope } => return check_envelope(&envelope),
        Command::Query(args) => query_cmd(&args),
        Command::Admin(args) => admin_cmd(&args),
        Command::Assert { server, key, input } => {
            return assert_cmd(&server, key.as_deref(), &input);
        }
        Command::Backup { data_dir, to, json } => {
            stemedb_ops::backup::backup(&data_dir, &to).and_then(|r| {
                print_report(json, &r, || {
                    format!(
                        "backup of {} assertions (root {}) written to {} ({} files, {} bytes, {}, {:.2} s)",
                        r.tree_size,
                        r.root,
                        r.path.display(),
                        r.files,
                        r.bytes,
                        if r.online { "online" } else { "offline" },
                        r.seconds
                    )
                })
            })
        }
        Command::Restore {
            from,
            data_dir,
            wal_archive,
            to_tree_size,
            trusted_key,
            json,
        } => wal_archive
            .as_deref()
            .map(stemedb_ops::archive::Target::parse)
            .transpose()
            .and_then(|target| {
                stemedb_ops::restore::restore(
                    &from,
                    &data_dir,
                    target.as_ref(),
                    to_tree_size,
                    trusted_key,
                )
            })
            .and_then(|r| {
                print_report(json, &r, || {
                    format!(
                        "restored {} assertions (backup {} + {} archived segments; root {}) into {} in {:.2} s",
                        r.tree_size,
                        r.backup_tree_size,
                        r.segments_replayed,
                        r.root,
                        r.data_dir.display(),
                        r.seconds
                    )
                })
            }),
        Command::Verify {
            data_dir,
            path,
            json,
        } => return verify_cmd(path.or(data_dir), json),
        Command::WalArchive {
            data_dir,
            to,
            no_seal,
            retention_days,
            json,
        } => stemedb_ops::archive::Target::parse(&to)
            .and_then(|target| {
                let opts = stemedb_ops::archive::ArchiveOptions {
                    seal: !no_seal,
                    retention: std::time::Duration::from_secs_f64(retention_days.max(0.0) * 86_400.0),
                };
                stemedb_ops::archive::archive(&data_dir, &target, &opts)
            })
            .and_then(|r| {
                print_report(json, &r, || {
                    format!(
                        "archived {} segment(s) to {} ({} already there, {} bytes); records below {} are archived; removed {} local segment(s)",
                        r.archived.len(),
                        r.target,
                        r.already_archived,
                        r.bytes,
                        r.archived_through,
                        r.removed.len()
                    )
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_report<T: serde::Serialize>(
    json: bool,
    report: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn verify_cmd(path: Option<PathBuf>, json: bool) -> ExitCode {
    let Some(path) = path else {
        eprintln!("error: name a backup or data directory (PATH or --data-dir)");
        return ExitCode::from(2);
    };
    match stemedb_ops::verify::verify(&path) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("error: {e}"),
                }
            } else {
                print!("{}", report.render());
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A 64-hex-character Ed25519 public key.
fn parse_trusted_key(s: &str) -> Result<[u8; 32], String> {
    stemedb_core::parse_agent(s)
        .map_err(|e| format!("a public key is 64 lowercase hex characters: {e}"))
}

fn serve(args: Box<ServeArgs>) -> anyhow::Result<()> {
    let args = *args;
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            ConfigLayer::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
        }
        None => ConfigLayer::default(),
    };
    let flags = args.settings;
    let config = Config::resolve(flags, file);
    stemedb_server::init_tracing(config.log_format, &config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(stemedb_server::serve(config))
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let key = stemedb_core::signing_key_from_seed(&seed);
    seed.fill(0);
    let pem = stemedb_core::signing_key_to_pem(&key);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", stemedb_core::public_key_hex(&key));
    Ok(())
}

fn read_input(source: &str) -> anyhow::Result<Vec<u8>> {
    // Bound what we read so a huge file cannot exhaust memory.
    let limit = (stemedb_core::MAX_ENVELOPE_BYTES * 8) as u64;
    let mut buf = Vec::new();
    if source == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
    } else {
        std::fs::File::open(source)
            .and_then(|f| f.take(limit).read_to_end(&mut buf))
            .with_context(|| format!("cannot read {source}"))?;
    }
    Ok(buf)
}

fn load_key(path: &Path) -> anyhow::Result<stemedb_core::SigningKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    stemedb_core::signing_key_from_pem(&pem).with_context(|| format!("key file {}", path.display()))
}

fn sign(key_path: &Path, statement: &str) -> anyhow::Result<()> {
    let key = load_key(key_path)?;
    let input = read_input(statement)?;
    let payload = stemedb_core::complete_statement(&input, &key, stemedb_ops::now_ms())
        .map_err(|e| anyhow::anyhow!("{} ({})", e, e.code()))?;
    let signed = match stemedb_core::sign(&key, payload) {
        Ok(s) => s,
        Err(e) => bail!("cannot sign: {e} ({})", e.code()),
    };
    let mut out = signed.envelope().encode();
    out.push(b'\n');
    std::io::stdout()
        .write_all(&out)
        .context("cannot write to standard output")?;
    Ok(())
}

fn check_envelope(source: &str) -> ExitCode {
    let input = match read_input(source) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match stemedb_core::check(&input) {
        Ok(v) => {
            let out = serde_json::json!({
                "id": v.id().to_hex(),
                "agent": v.statement().agent_hex(),
                "subject": v.statement().subject(),
                "predicate": v.statement().predicate(),
                "valid": true,
            });
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let out = serde_json::json!({"valid": false, "code": e.code(), "error": e.to_string()});
            println!("{out}");
            eprintln!("invalid envelope: {e} ({})", e.code());
            ExitCode::from(1)
        }
    }
}

/// Turns the input into envelope bytes: envelopes pass through, statements are signed.
fn envelopes_from_input(input: &[u8], key: Option<&Path>) -> anyhow::Result<Vec<Vec<u8>>> {
    let values: Vec<&[u8]> = if serde_json::from_slice::<serde_json::Value>(input).is_ok() {
        vec![input]
    } else {
        input
            .split(|b| *b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .collect()
    };
    let key = key.map(load_key).transpose()?;
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let parsed: serde_json::Value =
            serde_json::from_slice(v).with_context(|| format!("item {} is not JSON", i + 1))?;
        if parsed.get("payloadType").is_some() {
            out.push(v.trim_ascii().to_vec());
            continue;
        }
        let Some(key) = &key else {
            bail!("item {} is a statement; pass --key to sign it", i + 1);
        };
        let payload = stemedb_core::complete_statement(v, key, stemedb_ops::now_ms())
            .map_err(|e| anyhow::anyhow!("item {}: {e} ({})", i + 1, e.code()))?;
        let signed = stemedb_core::sign(key, payload)
            .map_err(|e| anyhow::anyhow!("item {}: {e} ({})", i + 1, e.code()))?;
        out.push(signed.envelope().encode());
    }
    Ok(out)
}

fn assert_cmd(server: &str, key: Option<&Path>, input: &str) -> ExitCode {
    let run = || -> anyhow::Result<bool> {
        let bytes = read_input_unbounded(input)?;
        let envelopes = envelopes_from_input(&bytes, key)?;
        let client = stemedb_client::Client::new(server)?;
        let mut all_ok = true;
        if envelopes.len() == 1 {
            match client.assert_envelope(&envelopes[0]) {
                Ok(a) => println!(
                    "{}",
                    serde_json::json!({"id": a.id, "status": a.status, "log_index": a.log_index})
                ),
                Err(stemedb_client::ClientError::Problem {
                    status,
                    code,
                    detail,
                }) => {
                    println!(
                        "{}",
                        serde_json::json!({"error": {"status": status, "code": code, "detail": detail}})
                    );
                    all_ok = false;
                }
                Err(e) => return Err(e.into()),
            }
            return Ok(all_ok);
        }
        for chunk in envelopes.chunks(1000) {
            for r in client.assert_batch(chunk)? {
                match r {
                    Ok(a) => println!(
                        "{}",
                        serde_json::json!({"id": a.id, "status": a.status, "log_index": a.log_index})
                    ),
                    Err(e) => {
                        all_ok = false;
                        println!("{}", serde_json::json!({"error": e.to_string()}));
                    }
                }
            }
        }
        Ok(all_ok)
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read_input_unbounded(source: &str) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if source == "-" {
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
    } else {
        buf = std::fs::read(source).with_context(|| format!("cannot read {source}"))?;
    }
    Ok(buf)
}

fn query_params(a: &QueryArgs, cursor: Option<&str>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Option<serde_json::Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("subject", a.subject.clone().map(Into::into));
    put("match", a.match_mode.clone().map(Into::into));
    put("predicate", a.predicate.clone().map(Into::into));
    put("agent", a.agent.clone().map(Into::into));
    put("lens", a.lens.clone().map(Into::into));
    put("as_of", a.as_of.map(Into::into));
    put("since", a.since.map(Into::into));
    put("until", a.until.map(Into::into));
    put(
        "include_superseded",
        a.include_superseded.then_some(true.into()),
    );
    put("limit", a.limit.map(Into::into));
    put("cursor", cursor.map(Into::into));
    put("proof", a.proof.then_some(true.into()));
    serde_json::Value::Object(m)
}

/// Shortens `s` to `width` characters, marking the cut with `…`.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn print_table(answer: &serde_json::Value, header: bool, verified: bool) {
    if header {
        println!(
            "{:<32} {:<16} {:<28} {:<10} {:>14} {:>5} {:>5} {:>6}{}",
            "SUBJECT",
            "PREDICATE",
            "OBJECT",
            "AGENT",
            "TS",
            "CONF",
            "ALTS",
            "AGREE",
            if verified { "  PROOF" } else { "" }
        );
    }
    for r in answer["results"].as_array().into_iter().flatten() {
        let w = &r["winner"];
        let conflict = if r["conflict"].as_bool() == Some(true) {
            "!"
        } else {
            " "
        };
        println!(
            "{:<32} {:<16} {:<28} {:<10} {:>14} {:>5.2} {:>5} {:>5.0}%{}{}",
            clip(r["subject"].as_str().unwrap_or(""), 32),
            clip(r["predicate"].as_str().unwrap_or(""), 16),
            clip(&w["object"].to_string(), 28),
            clip(w["agent"].as_str().unwrap_or(""), 10),
            w["ts"].as_i64().unwrap_or(0),
            w["confidence"].as_f64().unwrap_or(0.0),
            r["alternatives"].as_array().map_or(0, Vec::len),
            r["agreement"].as_f64().unwrap_or(0.0) * 100.0,
            conflict,
            if verified { " verified" } else { "" }
        );
    }
}

fn admin_cmd(args: &AdminArgs) -> anyhow::Result<()> {
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

fn query_cmd(args: &QueryArgs) -> anyhow::Result<()> {
    let client = stemedb_client::Client::new(&args.server)?;
    let key = if args.proof {
        Some(client.checkpoint_key()?)
    } else {
        None
    };
    let mut cursor = args.cursor.clone();
    let mut first = true;
    loop {
        let answer = client.query(&query_params(args, cursor.as_deref()))?;
        if let Some(key) = &key {
            stemedb_client::verify_query_proofs(&answer, key)
                .context("the server's proofs do not verify")?;
        }
        if args.format == "json" {
            println!("{answer}");
        } else {
            print_table(&answer, first, key.is_some());
        }
        first = false;
        cursor = answer["next_cursor"].as_str().map(str::to_string);
        match (&cursor, args.all) {
            (Some(_), true) => continue,
            (Some(c), false) if args.format == "table" => {
                eprintln!("more results: --cursor {c} (or --all)");
                break;
            }
            _ => break,
        }
    }
    Ok(())
}
