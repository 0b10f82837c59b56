//! `systemd/`: every unit passes `systemd-analyze verify` with no warning (with the binary path
//! pointed at the one cargo built), and the server unit carries the hardening the design asks for.

use std::path::Path;
use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const BIN: &str = env!("CARGO_BIN_EXE_stemedb");

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let dir = Path::new(ROOT).join("systemd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("systemd/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("unit");
        let copy = tmp.path().join(&name);
        std::fs::write(&copy, text.replace("/usr/local/bin/stemedb", BIN)).expect("copy");
        units.push(copy);
    }
    assert!(!units.is_empty(), "no units in systemd/");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze is required (apt-get install systemd; scripts/test.sh does)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn the_server_unit_is_hardened() {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("systemd/stemedb.service"))
        .expect("systemd/stemedb.service");
    for line in [
        "User=stemedb",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/stemedb",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "LimitNOFILE=65536",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "missing {line}");
    }
    assert!(unit.contains("/v1/ready"), "readiness comes from /v1/ready");
}
