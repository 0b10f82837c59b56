//! End-to-end tests of the `stemedb` binary's offline commands: keygen, sign, check-envelope.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_stemedb");

fn run(args: &[&str], stdin: Option<&[u8]>, dir: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stemedb");
    if let Some(input) = stdin {
        let written = child.stdin.take().expect("stdin is piped").write_all(input);
        // A command that fails before reading stdin (a missing key file) may exit first.
        if let Err(e) = written
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            panic!("write stdin: {e}");
        }
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("wait for stemedb")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn keygen_writes_a_private_pem_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run(&["keygen", "--out", "agent.pem"], None, tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(public.len(), 64);
    assert!(
        public
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let path = tmp.path().join("agent.pem");
    let pem = std::fs::read_to_string(&path).expect("key file");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
    let again = run(&["keygen", "--out", "agent.pem"], None, tmp.path());
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(&path).expect("key file"),
        pem,
        "key was overwritten"
    );
}

#[test]
fn sign_fills_agent_and_ts_and_check_envelope_accepts_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = run(&["keygen", "--out", "k.pem"], None, tmp.path());
    let public = String::from_utf8_lossy(&key.stdout).trim().to_string();
    let statement =
        br#"{"subject":"fleet/eu/server-1/cpu","predicate":"load","object":{"p99":0.93}}"#;
    let signed = run(
        &["sign", "--key", "k.pem", "-"],
        Some(statement),
        tmp.path(),
    );
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let env = stdout_json(&signed);
    assert_eq!(env["signatures"][0]["keyid"], public.as_str());
    let checked = run(&["check-envelope", "-"], Some(&signed.stdout), tmp.path());
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let result = stdout_json(&checked);
    assert_eq!(result["valid"], true);
    assert_eq!(result["agent"], public.as_str());
    let id = result["id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 64);
    // The id is stable: checking the same envelope from a file gives the same id.
    std::fs::write(tmp.path().join("env.json"), &signed.stdout).expect("write");
    let again = stdout_json(&run(&["check-envelope", "env.json"], None, tmp.path()));
    assert_eq!(again["id"], id);
}

#[test]
fn sign_refuses_a_statement_for_another_agent_or_breaking_a_rule() {
    let tmp = tempfile::tempdir().expect("tempdir");
    run(&["keygen", "--out", "k.pem"], None, tmp.path());
    let cases: [(&[u8], &str); 3] = [
        (
            br#"{"subject":"a","predicate":"p","object":1,"agent":"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"}"#,
            "key_mismatch",
        ),
        (br#"{"subject":"a/","predicate":"p","object":1}"#, "bad_subject"),
        (br#"{"subject":"a","predicate":"p"}"#, "schema"),
    ];
    for (statement, code) in cases {
        let out = run(&["sign", "--key", "k.pem"], Some(statement), tmp.path());
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(code), "expected {code} in {err}");
    }
}

/// Each defect the issue lists is rejected by `check-envelope` with its own code, through the
/// real binary (the spec's invalid vectors cover the same ground from PyNaCl).
#[test]
fn check_envelope_error_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    run(&["keygen", "--out", "k.pem"], None, tmp.path());
    run(&["keygen", "--out", "other.pem"], None, tmp.path());
    let sign = |statement: &str, key: &str| -> String {
        let out = run(
            &["sign", "--key", key],
            Some(statement.as_bytes()),
            tmp.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let good = sign(
        r#"{"subject":"a/b","predicate":"p","object":"hello"}"#,
        "k.pem",
    );
    let env: Value = serde_json::from_str(&good).expect("json");
    let payload = env["payload"].as_str().unwrap_or_default().to_string();
    let sig = env["signatures"][0]["sig"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let keyid = env["signatures"][0]["keyid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let other = sign(
        r#"{"subject":"a/b","predicate":"p","object":"hello"}"#,
        "other.pem",
    );
    let other_env: Value = serde_json::from_str(&other).expect("json");
    let other_sig = other_env["signatures"][0]["sig"]
        .as_str()
        .unwrap_or_default();
    let other_keyid = other_env["signatures"][0]["keyid"]
        .as_str()
        .unwrap_or_default();
    let with = |payload: &str, sigs: &str| {
        format!(
            r#"{{"payloadType":"application/vnd.stemedb.assertion.v1+json","payload":"{payload}","signatures":[{sigs}]}}"#
        )
    };
    let one = |k: &str, s: &str| format!(r#"{{"keyid":"{k}","sig":"{s}"}}"#);
    // Payloads of the right shape signed with nothing valid: rule violations are found before
    // the signature is checked.
    let b64 = |s: &str| STANDARD.encode(s.as_bytes());
    let statement = |extra: &str| {
        format!(
            r#"{{"v":1,"subject":"a/b","predicate":"p","object":"x","agent":"{keyid}","ts":1{extra}}}"#
        )
    };
    let deep = format!("{}1{}", "[".repeat(33), "]".repeat(33));
    let big = "x".repeat(70_000);
    let signed_statement = STANDARD.decode(&payload).expect("payload is base64");
    let tampered = String::from_utf8(signed_statement)
        .expect("utf-8")
        .replace("hello", "hellp");
    let tampered = b64(&tampered);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "tampered payload",
            with(&tampered, &one(&keyid, &sig)),
            "bad_signature",
        ),
        (
            "signature by another key",
            with(&payload, &one(&keyid, other_sig)),
            "bad_signature",
        ),
        (
            "keyid of another key",
            with(&payload, &one(other_keyid, other_sig)),
            "key_mismatch",
        ),
        (
            "unknown field",
            with(&b64(&statement(r#","mood":"happy""#)), &one(&keyid, &sig)),
            "unknown_field",
        ),
        (
            "bad subject",
            with(
                &b64(&statement("").replace("a/b", "a b")),
                &one(&keyid, &sig),
            ),
            "bad_subject",
        ),
        (
            "confidence out of range",
            with(&b64(&statement(r#","confidence":2"#)), &one(&keyid, &sig)),
            "bad_confidence",
        ),
        (
            "too deep object",
            with(
                &b64(&statement("").replace(r#""x""#, &deep)),
                &one(&keyid, &sig),
            ),
            "too_deep",
        ),
        (
            "oversized object",
            with(
                &b64(&statement("").replace(r#""x""#, &format!("\"{big}\""))),
                &one(&keyid, &sig),
            ),
            "too_large",
        ),
        (
            "non-base64 payload",
            with("%%%%", &one(&keyid, &sig)),
            "bad_base64",
        ),
        (
            "two signatures",
            with(
                &payload,
                &format!("{},{}", one(&keyid, &sig), one(&keyid, &sig)),
            ),
            "signature_count",
        ),
        ("not JSON", "{".to_string(), "malformed_envelope"),
    ];
    for (why, envelope, code) in cases {
        let out = run(
            &["check-envelope", "-"],
            Some(envelope.as_bytes()),
            tmp.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{why}: exit status");
        let result = stdout_json(&out);
        assert_eq!(result["valid"], false, "{why}");
        assert_eq!(result["code"], code, "{why}: {result}");
        assert!(!out.stderr.is_empty(), "{why}: no message on stderr");
    }
}

#[test]
fn usage_errors_exit_2_and_every_command_has_help() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for cmd in ["serve", "keygen", "sign", "check-envelope"] {
        let out = run(&[cmd, "--help"], None, tmp.path());
        assert!(out.status.success(), "{cmd} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd}"
        );
    }
    assert_eq!(
        run(&["frobnicate"], None, tmp.path()).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["check-envelope", "missing.json"], None, tmp.path())
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["sign", "--key", "missing.pem"], Some(b"{}"), tmp.path())
            .status
            .code(),
        Some(2)
    );
}

/// `.env.example` names every environment variable `serve` reads, and nothing else.
#[test]
fn env_example_lists_every_setting() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let help = run(&["serve", "--help"], None, tmp.path());
    let help = String::from_utf8_lossy(&help.stdout);
    let mut from_help: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next().map(str::to_string))
        .collect();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example"))
            .expect(".env.example exists");
    let mut from_example: Vec<String> = example
        .lines()
        .map(|l| l.trim_start_matches("# ").trim())
        .filter(|l| l.starts_with("STEMEDB_"))
        .filter_map(|l| l.split('=').next().map(str::to_string))
        .collect();
    from_help.sort();
    from_example.sort();
    assert!(
        !from_help.is_empty(),
        "serve --help shows no env vars: {help}"
    );
    assert_eq!(from_help, from_example);
}
