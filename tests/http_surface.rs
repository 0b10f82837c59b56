//! The HTTP surface of a real server: the error matrix (every refusal a problem+json with a
//! stable code), queries over HTTP and through `stemedb query`, load shedding and the request
//! timeout on a real socket, request ids in logs, and `X-Forwarded-For` only from trusted proxies.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Server, start};
use serde_json::{Value, json};
use stemedb_client::Client;
use stemedb_core::{SigningKey, sign, signing_key_from_seed};

fn key(n: u8) -> SigningKey {
    signing_key_from_seed(&[n; 32])
}

fn envelope(agent: u8, subject: &str, object: Value, ts: i64, confidence: f64) -> Vec<u8> {
    let k = key(agent);
    let st = json!({
        "v": 1, "subject": subject, "predicate": "status", "object": object,
        "agent": hex::encode(k.verifying_key().as_bytes()), "ts": ts, "confidence": confidence,
    });
    match sign(&k, st.to_string().into_bytes()) {
        Ok(v) => v.envelope().encode(),
        Err(e) => panic!("test statement must be valid: {e}"),
    }
}

fn serve(dir: &tempfile::TempDir, extra: &[&str]) -> Server {
    let d = dir.path().to_str().expect("utf-8 path");
    let mut args = vec!["--listen", "127.0.0.1:0", "--data-dir", d];
    args.extend_from_slice(extra);
    start(dir.path(), &args, &[])
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

fn send(req: reqwest::blocking::RequestBuilder) -> Reply {
    let resp = req.send().expect("request");
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().unwrap_or_default(),
    }
}

fn header(r: &Reply, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[test]
fn error_matrix_every_refusal_is_a_problem_with_a_stable_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir, &["--rate-limit-read-per-sec", "3"]);
    let url = server.url();
    let http = reqwest::blocking::Client::new();
    let post = |path: &str, ctype: &str, body: Vec<u8>| {
        http.post(format!("{url}{path}"))
            .header("content-type", ctype)
            .body(body)
    };
    let good = envelope(1, "svc/api", json!("up"), 1, 1.0);
    let mut bad_sig: Value = serde_json::from_slice(&good).expect("envelope JSON");
    let sig = bad_sig["signatures"][0]["sig"]
        .as_str()
        .expect("sig")
        .to_string();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    bad_sig["signatures"][0]["sig"] = Value::String(format!("{flipped}{}", &sig[1..]));
    let huge = format!("{{\"payload\":\"{}\"}}", "A".repeat(2 << 20)).into_bytes();
    let cases: Vec<(&str, reqwest::blocking::RequestBuilder, u16, &str)> = vec![
        (
            "malformed JSON",
            post("/v1/assert", "application/json", b"{\"payload\": ".to_vec()),
            400,
            "malformed_json",
        ),
        (
            "wrong content type",
            post("/v1/assert", "text/plain", good.clone()),
            415,
            "unsupported_media_type",
        ),
        (
            "body too large",
            post("/v1/assert", "application/json", huge),
            413,
            "too_large",
        ),
        (
            "bad signature",
            post(
                "/v1/assert",
                "application/json",
                bad_sig.to_string().into_bytes(),
            ),
            422,
            "bad_signature",
        ),
        (
            "unknown lens",
            http.get(format!("{url}/v1/query?subject=svc/api&lens=newest")),
            400,
            "unknown_lens",
        ),
        (
            "unknown lens (POST)",
            post(
                "/v1/query",
                "application/json",
                br#"{"lens":"newest"}"#.to_vec(),
            ),
            400,
            "unknown_lens",
        ),
        (
            "query body not JSON",
            post("/v1/query", "application/json", b"lens=raw".to_vec()),
            400,
            "malformed_json",
        ),
        (
            "query body an array",
            post("/v1/query", "application/json", b"[]".to_vec()),
            400,
            "bad_query",
        ),
        (
            "query body with an unknown parameter",
            post(
                "/v1/query",
                "application/json",
                br#"{"lense":"raw"}"#.to_vec(),
            ),
            400,
            "bad_query",
        ),
        (
            "query body cut short",
            post(
                "/v1/query",
                "application/json",
                br#"{"lens":"raw""#.to_vec(),
            ),
            400,
            "malformed_json",
        ),
        (
            "query wrong content type",
            post("/v1/query", "text/plain", b"{}".to_vec()),
            415,
            "unsupported_media_type",
        ),
        (
            "bad cursor",
            http.get(format!("{url}/v1/query?cursor=not-a-cursor")),
            400,
            "bad_cursor",
        ),
        (
            "unknown id",
            http.get(format!("{url}/v1/assertions/{}", "0".repeat(64))),
            404,
            "not_found",
        ),
        (
            "unknown route",
            http.get(format!("{url}/v1/nothing")),
            404,
            "not_found",
        ),
        (
            "wrong method",
            http.delete(format!("{url}/v1/query")),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, req, status, code) in cases {
        let r = send(req);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(
            header(&r, "content-type"),
            "application/problem+json",
            "{what}"
        );
        let p: Value = serde_json::from_str(&r.body).expect("problem is JSON");
        assert_eq!(p["code"], code, "{what}: {}", r.body);
        assert_eq!(p["status"], status, "{what}");
        for field in ["type", "title", "detail"] {
            assert!(p[field].is_string(), "{what}: no {field}");
        }
        assert!(!header(&r, "x-request-id").is_empty(), "{what}");
    }
    // The good envelope is still accepted after all that.
    let r = send(post("/v1/assert", "application/json", good));
    assert_eq!(r.status, 201, "{}", r.body);
    // Rate limit: the read class allows 3 per second per client here.
    let mut limited = None;
    for _ in 0..10 {
        let r = send(http.get(format!("{url}/v1/checkpoint")));
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("the 4th request inside a second is limited");
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    assert!(
        header(&r, "retry-after")
            .parse::<u64>()
            .expect("Retry-After seconds")
            >= 1
    );
    let p: Value = serde_json::from_str(&r.body).expect("problem is JSON");
    assert_eq!(p["code"], "rate_limited");
    assert_eq!(p["status"], 429);
    server.stop();
}

#[test]
fn queries_over_http_and_the_cli_agree_and_prove_their_winners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir, &[]);
    let url = server.url();
    let client = Client::new(&url).expect("client");
    for (agent, object, ts, conf) in [
        (1, "red", 100, 0.9),
        (2, "blue", 300, 0.2),
        (3, "red", 200, 0.5),
    ] {
        client
            .assert_envelope(&envelope(agent, "fleet/eu/svc-1", json!(object), ts, conf))
            .expect("accepted");
    }
    client
        .assert_envelope(&envelope(1, "fleet/eu2/svc-1", json!("green"), 1, 1.0))
        .expect("accepted");
    let cases = [
        ("latest", "blue"),
        ("consensus", "red"),
        ("confidence", "red"),
        ("trusted", "blue"),
    ];
    for (lens, want) in cases {
        let post = client
            .query(&json!({"subject": "fleet/eu", "match": "prefix", "lens": lens}))
            .expect("query");
        let results = post["results"].as_array().expect("results");
        assert_eq!(
            results.len(),
            1,
            "{lens}: prefix fleet/eu never matches fleet/eu2"
        );
        assert_eq!(results[0]["winner"]["object"], want, "{lens}");
        assert_eq!(results[0]["conflict"], true, "{lens}");
        assert_eq!(results[0]["alternatives"].as_array().map(Vec::len), Some(2));
        // GET with the same parameters gives the same answer.
        let get: Value = reqwest::blocking::get(format!(
            "{url}/v1/query?subject=fleet/eu&match=prefix&lens={lens}"
        ))
        .expect("GET")
        .json()
        .expect("JSON");
        assert_eq!(get, post, "{lens}");
    }
    let tail = client
        .query(&json!({"subject": "svc-1", "match": "tail", "lens": "raw"}))
        .expect("query");
    assert_eq!(tail["results"].as_array().map(Vec::len), Some(4));

    // The CLI: JSON output with proofs the CLI verified against the signed checkpoint.
    let out = Command::new(BIN)
        .args([
            "query",
            "--server",
            &url,
            "--subject",
            "fleet/eu/svc-1",
            "--lens",
            "consensus",
            "--proof",
            "--format",
            "json",
        ])
        .output()
        .expect("run stemedb query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(answer["results"][0]["winner"]["object"], "red");
    assert!(answer["checkpoint"].is_string());
    assert!(answer["results"][0]["proof"]["audit_path"].is_array());
    // And a table.
    let out = Command::new(BIN)
        .args([
            "query",
            "--server",
            &url,
            "--subject",
            "svc-1",
            "--match",
            "tail",
            "--proof",
        ])
        .output()
        .expect("run stemedb query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("SUBJECT"), "{table}");
    assert!(
        lines[1].contains("fleet/eu/svc-1") && lines[1].contains("verified"),
        "{table}"
    );
    assert!(lines[2].contains("\"green\""), "{table}");
    // A bad lens is a usage error with the server's problem.
    let out = Command::new(BIN)
        .args(["query", "--server", &url, "--lens", "newest"])
        .output()
        .expect("run stemedb query");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_lens"));
    server.stop();
}

/// Opens a POST whose body never finishes, holding one request slot.
fn slow_post(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(
        b"POST /v1/assert HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\n\r\n{\"payload\":",
    )
    .expect("write");
    s
}

#[test]
fn load_shedding_and_timeout_answer_503_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(
        &dir,
        &[
            "--max-concurrent-requests",
            "1",
            "--request-timeout-ms",
            "1500",
        ],
    );
    let url = server.url();
    let mut slow = slow_post(&server.addr);
    std::thread::sleep(Duration::from_millis(300));
    // The one slot is taken: data routes are shed, probes still answer.
    let r = send(reqwest::blocking::Client::new().get(format!("{url}/v1/query")));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(header(&r, "retry-after"), "1");
    assert!(r.body.contains("\"code\":\"overloaded\""), "{}", r.body);
    for probe in ["/v1/health", "/v1/ready", "/metrics"] {
        let r = send(reqwest::blocking::Client::new().get(format!("{url}{probe}")));
        assert_eq!(r.status, 200, "{probe}");
    }
    // The slow request itself runs into the timeout.
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = slow.read(&mut buf).expect("a response");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The slot is free again.
    let r = send(reqwest::blocking::Client::new().get(format!("{url}/v1/query")));
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = send(reqwest::blocking::Client::new().get(format!("{url}/metrics"))).body;
    assert!(
        metrics.contains("stemedb_http_requests_total{route=\"/v1/query\",status=\"503\"} 1"),
        "{metrics}"
    );
    server.stop();
}

#[test]
fn request_ids_reach_responses_and_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir, &[]);
    let r = send(
        reqwest::blocking::Client::new()
            .get(format!("{}/v1/assertions/{}", server.url(), "0".repeat(64)))
            .header("x-request-id", "rid-test-4242"),
    );
    assert_eq!(r.status, 404);
    assert_eq!(header(&r, "x-request-id"), "rid-test-4242");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    while Instant::now() < deadline && found.is_none() {
        if let Ok(line) = server.logs.recv_timeout(Duration::from_millis(200))
            && line.to_string().contains("rid-test-4242")
        {
            found = Some(line);
        }
    }
    let line = found.expect("an access log line with the request id");
    assert_eq!(line["status"], 404, "{line}");
    assert_eq!(line["route"], "/v1/assertions/{id}", "{line}");
    server.stop();
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let get_as = |url: &str, client_ip: &str| -> u16 {
        send(
            reqwest::blocking::Client::new()
                .get(format!("{url}/v1/checkpoint/key"))
                .header("x-forwarded-for", client_ip),
        )
        .status
    };
    // Behind a trusted proxy (this test is the proxy): each forwarded client has its own bucket.
    let dir = tempfile::tempdir().expect("tempdir");
    let trusted = serve(
        &dir,
        &[
            "--rate-limit-read-per-sec",
            "1",
            "--trusted-proxies",
            "127.0.0.1,::1",
        ],
    );
    let url = trusted.url();
    assert_eq!(get_as(&url, "198.51.100.1"), 200);
    assert_eq!(get_as(&url, "198.51.100.1"), 429);
    assert_eq!(get_as(&url, "198.51.100.2"), 200);
    trusted.stop();
    // From an untrusted peer the header is ignored: one bucket for the peer.
    let dir = tempfile::tempdir().expect("tempdir");
    let untrusted = serve(&dir, &["--rate-limit-read-per-sec", "1"]);
    let url = untrusted.url();
    assert_eq!(get_as(&url, "198.51.100.1"), 200);
    assert_eq!(get_as(&url, "198.51.100.2"), 429);
    untrusted.stop();
}

/// A subject with a longer history than the async worker's scan budget (decision 0010) answers
/// the same as a short one would: the query moves to a blocking thread and finishes there.
#[test]
fn a_point_query_past_the_inline_budget_gives_the_whole_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir, &[]);
    let client = Client::new(&server.url()).expect("client");
    let long: Vec<Vec<u8>> = (1..=300)
        .map(|ts| envelope(1 + (ts % 3) as u8, "fleet/long", json!(ts), ts, 0.5))
        .collect();
    let replies = client.assert_batch(&long).expect("batch accepted");
    assert!(replies.iter().all(Result::is_ok), "every envelope accepted");
    let latest = client
        .query(&json!({"subject": "fleet/long", "lens": "latest"}))
        .expect("query");
    let results = latest["results"].as_array().expect("results");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["winner"]["object"], 300);
    // Three agents, each counting only its newest assertion: two alternatives.
    assert_eq!(results[0]["alternatives"].as_array().map(Vec::len), Some(2));
    let raw = client
        .query(&json!({"subject": "fleet/long", "lens": "raw", "limit": 1000}))
        .expect("raw query");
    assert_eq!(raw["results"].as_array().map(Vec::len), Some(300));
    // The same query with proofs (always off the worker) names the same winner.
    let proved = client
        .query(&json!({"subject": "fleet/long", "lens": "latest", "proof": true}))
        .expect("query with proofs");
    assert_eq!(proved["results"][0]["winner"], results[0]["winner"]);
}

/// Design §2: `GET /v1/assertions/{id}` hands the envelope back as the bytes it was received
/// as, whatever their spelling (the canonical one the value log packs, another key order,
/// whitespace, an escaped `/`), singly or from a batch, and the envelope served still verifies.
/// (The admin API's view of a held envelope: `tests/defense.rs`.)
#[test]
fn an_envelope_comes_back_as_the_bytes_it_was_received_as() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir, &[]);
    let url = server.url();
    let http = reqwest::blocking::Client::new();
    let canonical = envelope(1, "spell/canonical", json!(1), 1_000, 1.0);
    let parts: Value = serde_json::from_slice(&envelope(1, "spell/other", json!(2), 1_000, 1.0))
        .expect("envelope json");
    let (t, p, s) = (
        &parts["payloadType"],
        &parts["payload"],
        &parts["signatures"][0]["sig"],
    );
    let kid = &parts["signatures"][0]["keyid"];
    let reordered =
        format!("{{\n  \"signatures\": [ {{\"sig\": {s}, \"keyid\": {kid}}} ],\n  \"payload\": {p},\n  \"payloadType\": {t}\n}}\n")
            .into_bytes();
    let parts: Value = serde_json::from_slice(&envelope(1, "spell/escaped", json!(3), 1_000, 1.0))
        .expect("envelope json");
    let escaped = format!(
        "{{\"payloadType\":{},\"payload\":{},\"signatures\":[{{\"keyid\":{},\"sig\":{}}}]}}",
        parts["payloadType"].to_string().replace('/', "\\/"),
        parts["payload"],
        parts["signatures"][0]["keyid"],
        parts["signatures"][0]["sig"]
    )
    .into_bytes();
    let in_batch = envelope(1, "spell/batch", json!(4), 1_000, 1.0);
    let in_batch_spaced = String::from_utf8(envelope(1, "spell/batch2", json!(5), 1_000, 1.0))
        .expect("utf-8")
        .replace(",\"", ", \"");
    let mut ids = Vec::new();
    for body in [&canonical, &reordered, &escaped] {
        let r = send(
            http.post(format!("{url}/v1/assert"))
                .header("content-type", "application/json")
                .body(body.clone()),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).expect("json");
        ids.push((v["id"].as_str().expect("id").to_string(), body.clone()));
    }
    let batch = format!(
        "{{\"assertions\": [{}, {}]}}",
        String::from_utf8_lossy(&in_batch),
        in_batch_spaced
    );
    let r = send(
        http.post(format!("{url}/v1/assert"))
            .header("content-type", "application/json")
            .body(batch),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    for (item, sent) in v["results"]
        .as_array()
        .expect("results")
        .iter()
        .zip([in_batch.clone(), in_batch_spaced.into_bytes()])
    {
        assert_eq!(item["status"], "created", "{item}");
        ids.push((item["id"].as_str().expect("id").to_string(), sent));
    }
    for (id, sent) in &ids {
        let r = send(http.get(format!("{url}/v1/assertions/{id}")));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body
                .as_bytes()
                .windows(sent.len())
                .any(|w| w == sent.as_slice()),
            "the answer for {id} does not hold the envelope as sent:\nsent {}\ngot  {}",
            String::from_utf8_lossy(sent),
            r.body
        );
        let v: Value = serde_json::from_str(&r.body).expect("the answer is JSON");
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["status"], "logged");
        // The envelope in the answer still verifies offline.
        let env = serde_json::to_vec(&v["envelope"]).expect("envelope");
        let checked = stemedb_core::check(&env).expect("the served envelope verifies");
        assert_eq!(checked.id().to_hex(), *id);
    }
}

/// A body whose `Content-Length` is already past the route's limit is refused with a 413
/// problem before any of it is read: no `100 Continue`, and no wait for bytes never sent.
#[test]
fn a_declared_length_past_the_limit_is_refused_before_the_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(&dir, &[]);
    for (path, length, expect) in [
        ("/v1/assert", 100 * 1024 * 1024, true),
        ("/v1/assert", 100 * 1024 * 1024, false),
        ("/v1/query", 1024 * 1024, false),
    ] {
        let mut s = TcpStream::connect(&server.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n{}\r\n",
            if expect {
                "expect: 100-continue\r\n"
            } else {
                ""
            }
        );
        let t0 = Instant::now();
        s.write_all(head.as_bytes()).expect("write head");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\"status\":413") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "{path} expect={expect}: {text}"
        );
        assert!(
            text.contains("application/problem+json") && text.contains("\"code\":\"too_large\""),
            "{text}"
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }
    server.stop();
}
