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
        let scripts = format!("{ROOT}/scripts/");
        let text = text
            .replace("/usr/local/bin/stemedb", BIN)
            .replace("/usr/local/lib/stemedb/", &scripts);
        std::fs::write(&copy, text).expect("copy");
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
        "ReadWritePaths=/var/lib/stemedb -/var/backups/stemedb",
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

#[test]
fn backup_archive_and_verify_run_on_timers() {
    let dir = Path::new(ROOT).join("systemd");
    for (name, schedule) in [
        ("stemedb-backup", "OnCalendar=daily"),
        ("stemedb-wal-archive", "OnUnitActiveSec=5min"),
        ("stemedb-verify", "OnCalendar=weekly"),
    ] {
        let service = std::fs::read_to_string(dir.join(format!("{name}.service")))
            .unwrap_or_else(|e| panic!("{name}.service: {e}"));
        let timer = std::fs::read_to_string(dir.join(format!("{name}.timer")))
            .unwrap_or_else(|e| panic!("{name}.timer: {e}"));
        assert!(
            timer.lines().any(|l| l.trim() == schedule),
            "{name}.timer: {schedule}"
        );
        assert!(
            timer.contains("Persistent=true"),
            "{name}.timer catches up missed runs"
        );
        for line in [
            "Type=oneshot",
            "User=stemedb",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ] {
            assert!(
                service.lines().any(|l| l.trim() == line),
                "{name}.service: {line}"
            );
        }
        // The script a unit runs is in scripts/ and executable.
        for l in service.lines() {
            if let Some(script) = l.trim().strip_prefix("ExecStart=/usr/local/lib/stemedb/") {
                let path = Path::new(ROOT).join("scripts").join(script);
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(&path).expect("script").permissions(),
                );
                assert!(mode & 0o111 != 0, "{} is not executable", path.display());
            }
        }
    }
}
