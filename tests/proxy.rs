//! `deploy/nginx/stemedb.conf` with a real nginx and a self-signed certificate made here:
//! `nginx -t` passes; HTTPS (HTTP/2) requests reach the server with the security headers and a
//! request id; plain HTTP redirects; a write goes through; oversize bodies are refused by nginx
//! (413) before the server sees them; `/metrics` is not exposed.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::start;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// curl with `args`; returns (headers, body).
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-k", "-D", "-", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is required (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nginx_terminates_tls_and_enforces_the_limits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let d = t.join("data");
    let server = start(
        t,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            d.to_str().expect("utf-8"),
            "--trusted-proxies",
            "127.0.0.1",
        ],
        &[],
    );
    let upstream = server.url().trim_start_matches("http://").to_string();

    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-keyout",
        t.join("key.pem").to_str().expect("utf-8"),
        "-out",
        t.join("cert.pem").to_str().expect("utf-8"),
    ]));

    let (http, https) = (free_port(), free_port());
    let shipped = std::fs::read_to_string(Path::new(ROOT).join("deploy/nginx/stemedb.conf"))
        .expect("deploy/nginx/stemedb.conf");
    let logs = t.join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let site = shipped
        .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
        .replace("listen [::]:80;", "")
        .replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{https} ssl http2;"),
        )
        .replace("listen [::]:443 ssl http2;", "")
        .replace(
            "/etc/ssl/stemedb/fullchain.pem",
            &t.join("cert.pem").display().to_string(),
        )
        .replace(
            "/etc/ssl/stemedb/privkey.pem",
            &t.join("key.pem").display().to_string(),
        )
        .replace("/var/log/nginx/", &format!("{}/", logs.display()))
        .replace("127.0.0.1:18180", &upstream);
    assert_ne!(site, shipped);
    std::fs::write(t.join("stemedb.conf"), &site).expect("site config");
    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let main = format!(
        "{user}daemon off;\nworker_processes 1;\npid {t}/nginx.pid;\nerror_log {t}/logs/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  \
         fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  \
         include {t}/stemedb.conf;\n}}\n",
        user = if root_user { "user root;\n" } else { "" },
        t = t.display()
    );
    let main_conf = t.join("nginx.conf");
    std::fs::write(&main_conf, main).expect("main config");
    let conf = main_conf.to_str().expect("utf-8");

    let nginx = Command::new("nginx")
        .args(["-t", "-c", conf])
        .output()
        .expect("nginx is required (apt-get install nginx; scripts/test.sh does)");
    assert!(
        nginx.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&nginx.stderr)
    );
    let _nginx = Nginx(
        Command::new("nginx")
            .args(["-c", conf])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let base = format!("https://127.0.0.1:{https}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (head, _) = curl(&[&format!("{base}/v1/health")]);
        if head.contains(" 200") {
            break;
        }
        assert!(Instant::now() < deadline, "nginx did not come up: {head}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // HTTPS over HTTP/2 reaches the server; HSTS from nginx, the server's own headers, a request id.
    let (head, body) = curl(&["--http2", &format!("{base}/v1/ready")]);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(body.contains("\"ready\""), "{body}");
    for h in [
        "strict-transport-security: max-age=63072000",
        "x-content-type-options: nosniff",
        "x-request-id: ",
    ] {
        assert!(head.contains(h), "missing {h}: {head}");
    }
    let (head, _) = curl(&[
        "-H",
        "X-Request-Id: via-proxy-1",
        &format!("{base}/v1/health"),
    ]);
    assert!(head.contains("x-request-id: via-proxy-1"), "{head}");

    // Plain HTTP redirects to HTTPS.
    let (head, _) = curl(&[&format!("http://127.0.0.1:{http}/v1/ready")]);
    assert!(head.starts_with("http/1.1 301"), "{head}");
    assert!(
        head.contains("location: https://127.0.0.1/v1/ready"),
        "{head}"
    );

    // A signed write goes through.
    let key = stemedb_core::signing_key_from_seed(&[5; 32]);
    let st = serde_json::json!({
        "v": 1, "subject": "fleet/proxy", "predicate": "p", "object": 1,
        "agent": hex::encode(key.verifying_key().as_bytes()), "ts": 1,
    });
    let env = stemedb_core::sign(&key, st.to_string().into_bytes())
        .expect("valid")
        .envelope()
        .encode();
    let env_file = t.join("env.json");
    std::fs::write(&env_file, env).expect("envelope file");
    let (head, body) = curl(&[
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("@{}", env_file.display()),
        &format!("{base}/v1/assert"),
    ]);
    assert!(head.contains(" 201"), "{head}{body}");

    // Oversize bodies stop at nginx: 413 from nginx (HTML), not the server's problem+json.
    let big = t.join("big.json");
    std::fs::write(&big, vec![b' '; 17 * 1024 * 1024]).expect("big body");
    let medium = t.join("medium.json");
    std::fs::write(&medium, vec![b' '; 100 * 1024]).expect("medium body");
    for (path, file) in [("/v1/assert", &big), ("/v1/query", &medium)] {
        let (head, body) = curl(&[
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{base}{path}"),
        ]);
        assert!(head.contains(" 413"), "{path}: {head}");
        assert!(
            head.contains("content-type: text/html"),
            "{path}: nginx answered: {head}"
        );
        assert!(body.contains("nginx"), "{path}: {body}");
    }
    // /metrics is for Prometheus on loopback, not the public endpoint.
    let (head, _) = curl(&[&format!("{base}/metrics")]);
    assert!(head.contains(" 404"), "{head}");
    let log = std::fs::read_to_string(logs.join("stemedb-access.log")).expect("access log");
    assert!(log.contains("\"uri\":\"/v1/assert\""), "{log}");
}
