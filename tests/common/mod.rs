//! Shared harness for end-to-end tests: start the real `stemedb` binary on a temp dir and a
//! free port, read its JSON logs, stop it politely or with SIGKILL.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_stemedb");
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server; killed on drop if the test did not stop it.
pub struct Server {
    pub child: Child,
    pub logs: Receiver<Value>,
    pub addr: String,
    pub listening: Value,
    /// Log lines before "stemedb listening" (recovery messages).
    pub startup_logs: Vec<Value>,
}

impl Server {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        signal(&self.child, "-TERM");
        assert_eq!(wait_exit(&mut self.child, Duration::from_secs(30)), Some(0));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `stemedb serve` command with JSON logs and no inherited `STEMEDB_*` settings.
pub fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("STEMEDB_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("STEMEDB_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts a server and waits for its "stemedb listening" log line.
pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
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
    let mut startup_logs = Vec::new();
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
                    startup_logs,
                };
            }
            Ok(v) => {
                assert!(v.get("not_json").is_none(), "log line is not JSON: {v}");
                startup_logs.push(v);
            }
            Err(e) => panic!("server did not start: {e}"),
        }
    }
}

/// GET, returning status, content type and body.
pub fn get(addr: &str, path: &str) -> (u16, String, String) {
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

/// Sends a signal with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Runs `stemedb serve` expecting it to refuse to start: its exit code and its stderr. A server
/// that starts instead is killed after `within`, and the test fails with its log.
pub fn refused_start(dir: &Path, args: &[&str], within: Duration) -> (Option<i32>, String) {
    let log_path = dir.join("refused-start.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = command(dir, args, &[])
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn stemedb serve");
    let deadline = Instant::now() + within;
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("the server started instead of refusing within {within:?}: {text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&log_path).unwrap_or_default())
}

/// Waits for the process to exit; its exit code.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not exit within {within:?}");
}

/// A metric's value from `/metrics` text (first sample whose name and labels match exactly).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A small deterministic generator, so a failing round can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next 31 bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// The newest WAL segment file in `wal`.
pub fn last_segment(wal: &Path) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(wal)
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    names.sort();
    names.pop().expect("a segment")
}
