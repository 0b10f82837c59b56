//! End-to-end tests of `stemedb serve`: the real binary on a temp dir and a free port.

mod common;

use std::time::Duration;

use common::{command, get, signal, start, wait_exit};
use serde_json::Value;

#[test]
fn serves_health_ready_metrics_and_problem_json_on_the_default_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start(tmp.path(), &["--listen", "127.0.0.1:0"], &[]);
    assert!(
        tmp.path().join("stemedb-data").join("LOCK").is_file(),
        "default data dir"
    );
    assert_eq!(server.listening["data_dir"], "./stemedb-data");
    let (status, _, body) = get(&server.addr, "/v1/health");
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = get(&server.addr, "/v1/ready");
    assert_eq!(status, 200, "{body}");
    let (status, ctype, body) = get(&server.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "stemedb_build_info",
    ] {
        assert!(body.contains(name), "metrics lack {name}");
    }
    let (status, ctype, body) = get(&server.addr, "/v1/../etc/passwd");
    assert_eq!(status, 404);
    assert_eq!(ctype, "application/problem+json");
    let problem: Value = serde_json::from_str(&body).expect("problem is JSON");
    assert_eq!(problem["status"], 404);
    assert_eq!(problem["code"], "not_found");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_and_the_first_keeps_serving() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir = dir.to_str().expect("utf-8 path");
    let first = start(
        tmp.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", dir],
        &[],
    );
    let out = command(
        tmp.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", dir],
        &[],
    )
    .output()
    .expect("run second server");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another stemedb process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    assert_eq!(get(&first.addr, "/v1/health").0, 200);
}

#[test]
fn sigterm_drains_and_exits_cleanly_then_the_dir_can_be_reopened() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server = start(tmp.path(), &["--listen", "127.0.0.1:0"], &[]);
    signal(&server.child, "-TERM");
    assert_eq!(
        wait_exit(&mut server.child, Duration::from_secs(15)),
        Some(0)
    );
    // The process has exited, so stderr is closed: `iter` drains every line the reader thread
    // forwards and ends when that thread does (`try_iter` could miss the last lines).
    let messages: Vec<String> = server
        .logs
        .iter()
        .filter_map(|v| v["message"].as_str().map(str::to_string))
        .collect();
    assert!(
        messages.iter().any(|m| m == "stemedb stopped"),
        "{messages:?}"
    );
    // The lock was released: a new server starts on the same directory, and Ctrl-C (SIGINT)
    // stops it the same way.
    let mut again = start(tmp.path(), &["--listen", "127.0.0.1:0"], &[]);
    assert_eq!(get(&again.addr, "/v1/health").0, 200);
    signal(&again.child, "-INT");
    assert_eq!(
        wait_exit(&mut again.child, Duration::from_secs(15)),
        Some(0)
    );
}

#[test]
fn settings_precedence_is_flag_then_env_then_file_then_default() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("stemedb.toml"),
        "data_dir = \"from-file\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .expect("write config");
    let cfg = ["--config", "stemedb.toml"];
    let s = start(tmp.path(), &cfg, &[]);
    assert_eq!(s.listening["data_dir"], "from-file");
    drop(s);
    let s = start(tmp.path(), &cfg, &[("STEMEDB_DATA_DIR", "from-env")]);
    assert_eq!(s.listening["data_dir"], "from-env");
    drop(s);
    let s = start(
        tmp.path(),
        &["--config", "stemedb.toml", "--data-dir", "from-flag"],
        &[("STEMEDB_DATA_DIR", "from-env")],
    );
    assert_eq!(s.listening["data_dir"], "from-flag");
    drop(s);
    // The config file itself can come from the environment.
    let s = start(tmp.path(), &[], &[("STEMEDB_CONFIG", "stemedb.toml")]);
    assert_eq!(s.listening["data_dir"], "from-file");
}

#[test]
fn a_bad_config_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("bad.toml"), "data_dri = \"x\"\n").expect("write");
    let out = command(tmp.path(), &["--config", "bad.toml"], &[])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("data_dri"),
        "{err}"
    );
}

#[test]
fn a_configured_checkpoint_key_signs_checkpoints_and_the_default_one_is_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = stemedb_core::signing_key_from_seed(&[42u8; 32]);
    std::fs::write(
        tmp.path().join("cp.pem"),
        stemedb_core::signing_key_to_pem(&key),
    )
    .expect("write");
    let s = start(
        tmp.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "a",
            "--checkpoint-key",
            "cp.pem",
        ],
        &[],
    );
    let (_, _, body) = get(&s.addr, "/v1/checkpoint/key");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["public_key"], hex::encode(key.verifying_key().as_bytes()));
    assert!(!tmp.path().join("a").join("server.key").exists());
    drop(s);
    let s = start(
        tmp.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", "b"],
        &[],
    );
    let path = tmp.path().join("b").join("server.key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("server.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(s);
}
