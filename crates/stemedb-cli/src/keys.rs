//! Keys and envelopes offline: `stemedb keygen`, `sign` and `check-envelope`, and the key and
//! input readers the other commands share.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

pub(crate) fn keygen(out: &Path) -> anyhow::Result<()> {
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

pub(crate) fn read_input(source: &str) -> anyhow::Result<Vec<u8>> {
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

pub(crate) fn load_key(path: &Path) -> anyhow::Result<stemedb_core::SigningKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    stemedb_core::signing_key_from_pem(&pem).with_context(|| format!("key file {}", path.display()))
}

pub(crate) fn sign(key_path: &Path, statement: &str) -> anyhow::Result<()> {
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

pub(crate) fn check_envelope(source: &str) -> ExitCode {
    let input = match read_input(source) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}", crate::render(&e));
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
