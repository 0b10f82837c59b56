//! `monitoring/` with the real tools: `promtool check config`, `promtool check rules` and
//! `promtool test rules` pass, and every metric the Grafana dashboard and the alert rules name is
//! one a running server exports (after the traffic that creates its labelled series).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::start;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(Path::new(ROOT).join("monitoring"))
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is required (apt-get install prometheus; scripts/test.sh does): {e}")
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_config_and_the_rules_and_runs_the_rule_tests() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "tests/alerts_test.yml"]);
}

/// Every `stemedb_…` or `process_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["stemedb_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            let tail = &rest[i..];
            let len = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(tail[..len].to_string());
            }
            rest = &tail[len..];
        }
    }
    out
}

#[test]
fn the_dashboard_and_the_alerts_use_only_exported_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let server = start(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", d],
        &[],
    );
    let url = server.url();
    // Traffic that creates the labelled series: a write, a query, a readiness probe.
    let key = stemedb_core::signing_key_from_seed(&[9; 32]);
    let st = serde_json::json!({
        "v": 1, "subject": "fleet/m", "predicate": "p", "object": 1,
        "agent": hex::encode(key.verifying_key().as_bytes()), "ts": 1,
    });
    let env = stemedb_core::sign(&key, st.to_string().into_bytes())
        .expect("valid")
        .envelope()
        .encode();
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("{url}/v1/assert"))
        .header("content-type", "application/json")
        .body(env)
        .send()
        .expect("assert");
    assert_eq!(r.status().as_u16(), 201);
    http.get(format!("{url}/v1/query?subject=fleet/m"))
        .send()
        .expect("query");
    http.get(format!("{url}/v1/ready")).send().expect("ready");
    // A durable checkpoint follows the write within its interval; wait for its histogram.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let exported: BTreeSet<String> = http
        .get(format!("{url}/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let read = |p: &str| {
        std::fs::read_to_string(Path::new(ROOT).join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let dashboard = read("monitoring/grafana/stemedb.json");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let used = metric_names(&dashboard);
    assert!(used.len() >= 12, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "dashboard metrics not exported: {missing:?}"
    );

    // Alerts: the same, every one.
    let used = metric_names(&read("monitoring/alerts.yml"));
    for m in [
        "stemedb_last_backup_timestamp_seconds",
        "stemedb_last_wal_archive_timestamp_seconds",
        "stemedb_wal_unarchived_segments",
    ] {
        assert!(used.contains(m), "an alert uses {m}");
    }
    let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "alert metrics not exported: {missing:?}"
    );
}
