//! Commands that talk to a server's public API: `stemedb assert` and `stemedb query`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::keys::load_key;

/// Arguments of `stemedb query` (design §6).
#[derive(Args)]
pub(crate) struct QueryArgs {
    /// Server URL.
    #[arg(long, env = "STEMEDB_SERVER", default_value = "http://127.0.0.1:18180")]
    pub(crate) server: String,
    /// Subject concept path.
    #[arg(long)]
    pub(crate) subject: Option<String>,
    /// How the subject matches: exact, prefix (on segment boundaries) or tail.
    #[arg(long = "match", value_parser = ["exact", "prefix", "tail"])]
    pub(crate) match_mode: Option<String>,
    /// Only this predicate.
    #[arg(long)]
    pub(crate) predicate: Option<String>,
    /// Only this agent (public key hex).
    #[arg(long)]
    pub(crate) agent: Option<String>,
    /// latest, trusted, consensus, confidence or raw [default: latest].
    #[arg(long)]
    pub(crate) lens: Option<String>,
    /// Answer as the store was at this tree size.
    #[arg(long)]
    pub(crate) as_of: Option<u64>,
    /// Only assertions with ts at or after this (Unix ms).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) since: Option<i64>,
    /// Only assertions with ts at or before this (Unix ms).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) until: Option<i64>,
    /// Keep superseded assertions in the live set.
    #[arg(long)]
    pub(crate) include_superseded: bool,
    /// Valid time (Unix ms): only assertions whose [valid_from, valid_until) contains it; with
    /// --as-of, what the log knew then about what held at this time.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "current")]
    pub(crate) valid_at: Option<i64>,
    /// Only what holds now (valid_at = the server's clock).
    #[arg(long)]
    pub(crate) current: bool,
    /// Results per page (1 to 1000) [default: 100].
    #[arg(long)]
    pub(crate) limit: Option<u64>,
    /// Continue from this cursor.
    #[arg(long)]
    pub(crate) cursor: Option<String>,
    /// Fetch every page, following next_cursor.
    #[arg(long)]
    pub(crate) all: bool,
    /// Ask for inclusion proofs and verify them against the signed checkpoint.
    #[arg(long)]
    pub(crate) proof: bool,
    /// table or json (json prints the server's answer; with --all, one answer per line).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub(crate) format: String,
}

/// Turns the input into envelope bytes: envelopes pass through, statements are signed.
pub(crate) fn envelopes_from_input(
    input: &[u8],
    key: Option<&Path>,
) -> anyhow::Result<Vec<Vec<u8>>> {
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

pub(crate) fn assert_cmd(server: &str, key: Option<&Path>, input: &str) -> ExitCode {
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
            eprintln!("error: {}", crate::render(&e));
            ExitCode::from(2)
        }
    }
}

pub(crate) fn read_input_unbounded(source: &str) -> anyhow::Result<Vec<u8>> {
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

pub(crate) fn query_params(a: &QueryArgs, cursor: Option<&str>) -> serde_json::Value {
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
    put("valid_at", a.valid_at.map(Into::into));
    put("current", a.current.then_some(true.into()));
    put("limit", a.limit.map(Into::into));
    put("cursor", cursor.map(Into::into));
    put("proof", a.proof.then_some(true.into()));
    serde_json::Value::Object(m)
}

/// Shortens `s` to `width` characters, marking the cut with `…`.
pub(crate) fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn print_table(answer: &serde_json::Value, header: bool, verified: bool) {
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

pub(crate) fn query_cmd(args: &QueryArgs) -> anyhow::Result<()> {
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
