//! End-to-end tests of `stemedb serve`: the real binary on a temp dir and a free port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_stemedb");
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server; killed on drop if the test did not stop it.
struct Server {
    child: Child,
    logs: Receiver<Value>,
    addr: String,
    listening: Value,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("STEMEDB_DATA_DIR")
        .env_remove("STEMEDB_LISTEN")
        .env_remove("STEMEDB_CONFIG")
        .env("STEMEDB_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = command(dir, args, env)
        .spawn()
        .expect("spawn stemedb serve");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, logs) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line)
                .unwrap_or_else(|_| serde_json::json!({"not_json": line}));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match logs.recv_timeout(left) {
            Ok(v) if v["message"] == "stemedb listening" => {
                let addr = v["listen"].as_str().unwrap_or_default().to_string();
                return Server {
                    child,
                    logs,
                    addr,
                    listening: v,
                };
            }
            Ok(v) => assert!(v.get("not_json").is_none(), "log line is not JSON: {v}"),
            Err(e) => panic!("server did not start: {e}"),
        }
    }
}

fn get(addr: &str, path: &str) -> (u16, String, String) {
    let resp = reqwest::blocking::get(format!("http://{addr}{path}")).expect("request");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, resp.text().unwrap_or_default())
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not exit within {within:?}");
}

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
    let messages: Vec<String> = server
        .logs
        .try_iter()
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
