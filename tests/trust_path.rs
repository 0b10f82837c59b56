//! The trust path seen from outside (issue 16), against the real binary on real files: a
//! flipped byte mid-WAL stops start-up instead of forking the log, a failed fsync never acks,
//! another agent cannot kill an assertion, scans and crowded subjects cost bounded work,
//! connections that never finish their head are answered 408, and request memory stays within
//! about twice the bytes in flight. Each test prints the figures it measured.

mod common;

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, command, get, last_segment, refused_start, start};
use serde_json::{Value, json};
use stemedb_client::{Client, ClientError};
use stemedb_core::{SigningKey, sign, signing_key_from_seed};

fn key(n: u32) -> SigningKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    signing_key_from_seed(&seed)
}

fn agent_hex(k: &SigningKey) -> String {
    hex::encode(k.verifying_key().as_bytes())
}

/// A signed envelope's bytes; `extra` fields are merged into the statement.
fn envelope(k: &SigningKey, subject: &str, object: Value, ts: u64, extra: Value) -> Vec<u8> {
    let mut st = json!({
        "v": 1, "subject": subject, "predicate": "observed", "object": object,
        "agent": agent_hex(k), "ts": ts,
    });
    if let (Some(m), Some(e)) = (st.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    let payload = serde_json::to_vec(&st).expect("json");
    match sign(k, payload) {
        Ok(v) => v.envelope().encode(),
        Err(e) => panic!("test statement must be valid: {e}"),
    }
}

fn id_of(env: &[u8]) -> String {
    stemedb_core::check(env).expect("valid").id().to_hex()
}

fn args<'a>(dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--listen", "127.0.0.1:0", "--data-dir", dir];
    v.extend_from_slice(extra);
    v
}

/// POSTs `{"assertions": [...]}`; the response status and JSON body.
fn post_batch(url: &str, envs: &[Vec<u8>]) -> (u16, Value) {
    post_raw(url, stemedb_client::batch_body(envs))
}

fn post_raw(url: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/assert"))
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(120))
        .send()
        .expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// Item 1: a flipped byte halfway into the last segment, after 20,000 acknowledged writes and a
/// checkpoint signed at 20,000, stops start-up (segment, offset, the way out); nothing is cut,
/// and with the byte put back the server comes back at exactly 20,000.
#[test]
fn a_flipped_byte_mid_wal_stops_start_up_instead_of_forking_the_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().expect("utf-8");
    let server = start(tmp.path(), &args(dir_s, &[]), &[]);
    let k = key(1);
    let started = Instant::now();
    for batch in 0..20u64 {
        let envs: Vec<Vec<u8>> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                envelope(&k, &format!("fork/s{}", n % 97), json!(n), n, json!({}))
            })
            .collect();
        let (status, body) = post_batch(&server.url(), &envs);
        assert_eq!(status, 200, "{body}");
    }
    let ingest = started.elapsed();
    let client = Client::new(&server.url()).expect("client");
    let cp_key = client.checkpoint_key().expect("key");
    let signed = client.verified_checkpoint(&cp_key).expect("checkpoint");
    assert_eq!(signed.size, 20_000);
    server.kill9();
    let seg = last_segment(&dir.join("wal"));
    let mut bytes = fs::read(&seg).expect("read");
    let at = bytes.len() / 2;
    let before = bytes.len();
    bytes[at] ^= 0x40;
    fs::write(&seg, &bytes).expect("write");
    let t0 = Instant::now();
    let (code, err) = refused_start(tmp.path(), &args(dir_s, &[]), Duration::from_secs(60));
    let refused_in = t0.elapsed();
    assert_eq!(code, Some(2), "start must fail: {err}");
    let name = seg.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(err.contains(name), "names the segment: {err}");
    assert!(err.contains("byte offset"), "names the offset: {err}");
    assert!(err.contains("not a torn tail"), "{err}");
    assert!(err.contains("stemedb restore"), "says the way out: {err}");
    assert_eq!(
        fs::metadata(&seg).expect("meta").len(),
        before as u64,
        "nothing was cut"
    );
    // Put the byte back: everything acknowledged is there, and the log is consistent.
    bytes[at] ^= 0x40;
    fs::write(&seg, &bytes).expect("write");
    let server = start(tmp.path(), &args(dir_s, &[]), &[]);
    let client = Client::new(&server.url()).expect("client");
    let now = client.verified_checkpoint(&cp_key).expect("checkpoint");
    assert_eq!(now.size, 20_000);
    assert_eq!(now.root, signed.root, "the same root for the same size");
    println!(
        "figures: 20,000 acked in {:.2} s; segment {name} of {before} bytes flipped at {at}; \
         start-up refused in {:.0} ms",
        ingest.as_secs_f64(),
        refused_in.as_secs_f64() * 1e3
    );
    server.stop();
}

/// A flipped byte in the very last WAL group looks like a torn write to the WAL alone
/// (decision 0014), but the value log the commit thread wrote after that group's fsync says
/// it was applied, so acknowledged: start-up stops instead of cutting it, nothing is cut, and
/// with the byte put back every acknowledged write is there. No checkpoint was signed and no
/// durable checkpoint covers the writes, so nothing else would have caught the cut.
#[test]
fn a_flipped_byte_in_the_last_wal_group_stops_start_up_when_the_value_log_holds_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().expect("utf-8");
    let quiet = ["--checkpoint-interval-ms", "600000"];
    let server = start(tmp.path(), &args(dir_s, &quiet), &[]);
    let k = key(3);
    let mut ids = Vec::new();
    for batch in 0..5u64 {
        let envs: Vec<Vec<u8>> = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                envelope(&k, &format!("tail/s{}", n % 31), json!(n), n, json!({}))
            })
            .collect();
        ids.extend(envs.iter().map(|e| id_of(e)));
        let (status, body) = post_batch(&server.url(), &envs);
        assert_eq!(status, 200, "{body}");
    }
    server.kill9();
    let seg = last_segment(&dir.join("wal"));
    let mut bytes = fs::read(&seg).expect("read");
    let at = bytes.len() - 300;
    let before = bytes.len();
    bytes[at] ^= 0x08;
    fs::write(&seg, &bytes).expect("write");
    let (code, err) = refused_start(tmp.path(), &args(dir_s, &quiet), Duration::from_secs(60));
    assert_eq!(code, Some(2), "start must fail: {err}");
    assert!(err.contains("not a torn tail"), "{err}");
    assert!(err.contains("2500"), "names the records applied: {err}");
    assert!(err.contains("stemedb restore"), "says the way out: {err}");
    assert_eq!(
        fs::metadata(&seg).expect("meta").len(),
        before as u64,
        "nothing was cut"
    );
    bytes[at] ^= 0x08;
    fs::write(&seg, &bytes).expect("write");
    let server = start(tmp.path(), &args(dir_s, &quiet), &[]);
    let client = Client::new(&server.url()).expect("client");
    for id in [&ids[0], &ids[2499]] {
        let got = client.assertion(id).expect("get");
        assert!(got.is_some(), "{id} is back");
    }
    server.stop();
}

/// Item 2 and 11: with fsync failing, a batch holding one envelope twice gets 503
/// `outcome_unknown` for both copies (never a `duplicate` with a log index), later writes 503
/// `read_only`; after a restart the record is there or not, and a retry settles it.
#[test]
fn a_failed_fsync_never_acknowledges_and_says_the_outcome_is_unknown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().expect("utf-8");
    let server = start(
        tmp.path(),
        &args(dir_s, &[]),
        &[("STEMEDB_FAULT_FSYNC_AFTER", "0")],
    );
    let k = key(2);
    let e = envelope(&k, "fsync/dup", json!(1), 1, json!({}));
    let (status, body) = post_batch(&server.url(), &[e.clone(), e.clone()]);
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["error"]["status"], 503, "{r}");
        assert_eq!(r["error"]["code"], "outcome_unknown", "{r}");
        assert!(r.get("log_index").is_none(), "no log index: {r}");
    }
    let later = envelope(&k, "fsync/dup", json!(2), 2, json!({}));
    let client = Client::new(&server.url()).expect("client");
    match client.assert_envelope(&later) {
        Err(ClientError::Problem {
            status: 503, code, ..
        }) => assert_eq!(code, "read_only"),
        other => panic!("after the failure: {other:?}"),
    }
    server.kill9();
    let server = start(tmp.path(), &args(dir_s, &[]), &[]);
    let client = Client::new(&server.url()).expect("client");
    let retried = client.assert_envelope(&e).expect("retry after restart");
    assert_eq!(retried.id, id_of(&e));
    assert_eq!(
        retried.log_index,
        Some(0),
        "one log index for the id, whatever happened"
    );
    server.stop();
}

/// Item 3: Mallory's `supersedes` naming Alice's not-yet-posted envelope does not kill it.
#[test]
fn another_agent_cannot_kill_an_assertion_before_it_arrives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let server = start(tmp.path(), &args(dir.to_str().expect("utf-8"), &[]), &[]);
    let (alice, mallory) = (key(10), key(11));
    let now = 1_700_000_000_000u64;
    let a = envelope(&alice, "doc/policy", json!("alice's value"), now, json!({}));
    let m = envelope(
        &mallory,
        "doc/policy",
        json!("mallory's value"),
        now - 10,
        json!({"supersedes": [id_of(&a)]}),
    );
    let client = Client::new(&server.url()).expect("client");
    assert_eq!(
        client.assert_envelope(&m).expect("mallory posts").status,
        "created"
    );
    let posted = client.assert_envelope(&a).expect("alice posts");
    assert_eq!(posted.status, "created", "Alice gets 201");
    let (status, _, body) = get(&server.addr, "/v1/query?subject=doc/policy&lens=latest");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["results"][0]["winner"]["object"], "alice's value", "{v}");
    assert_eq!(v["results"][0]["winner"]["id"], id_of(&a));
    let (_, _, raw) = get(&server.addr, "/v1/query?subject=doc/policy&lens=raw");
    assert!(
        raw.contains(&id_of(&a)),
        "alice's assertion is live in raw: {raw}"
    );
    server.stop();
}

/// Items 4 and 5: a prefix scan over many rows answers within the scan budget with a cursor
/// (even with no results yet); an unknown agent costs nothing; a subject 20,000 agents assert
/// answers 32 alternatives and the full count, small and fast.
#[test]
fn scans_stop_at_the_budget_and_a_crowded_subject_answers_small() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let server = start(
        tmp.path(),
        &args(dir.to_str().expect("utf-8"), &["--scan-budget", "2000"]),
        &[],
    );
    // 20,000 agents, one subject.
    let t0 = Instant::now();
    for batch in 0..20u32 {
        let envs: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| {
                let n = batch * 1000 + i;
                envelope(
                    &key(1000 + n),
                    "fleet/crowd",
                    json!(n % 5),
                    u64::from(n),
                    json!({}),
                )
            })
            .collect();
        let (status, body) = post_batch(&server.url(), &envs);
        assert_eq!(status, 200, "{body}");
    }
    // 10,000 more rows spread over many subjects under fleet/.
    let k = key(3);
    for batch in 0..10u64 {
        let envs: Vec<Vec<u8>> = (0..1000u64)
            .map(|i| {
                let n = batch * 1000 + i;
                envelope(&k, &format!("fleet/s{n:05}"), json!(n), n, json!({}))
            })
            .collect();
        let (status, body) = post_batch(&server.url(), &envs);
        assert_eq!(status, 200, "{body}");
    }
    let loaded = t0.elapsed();
    let timed = |path: &str| {
        let t = Instant::now();
        let (status, _, body) = get(&server.addr, path);
        assert_eq!(status, 200, "{path}: {body}");
        (t.elapsed(), body)
    };
    // The crowded subject: linear, 32 alternatives, the full count.
    let (crowd_time, crowd) = timed("/v1/query?subject=fleet/crowd");
    let v: Value = serde_json::from_str(&crowd).expect("json");
    let r = &v["results"][0];
    assert_eq!(r["alternatives"].as_array().map(Vec::len), Some(32), "{r}");
    assert_eq!(r["alternatives_total"], 19_999);
    assert!(crowd.len() < 16 * 1024, "{} bytes", crowd.len());
    // An unknown agent under a prefix: the agent index has nothing, nothing is scanned.
    let stranger = agent_hex(&key(999_999));
    let (agent_time, body) = timed(&format!(
        "/v1/query?subject=fleet&match=prefix&agent={stranger}"
    ));
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["results"], json!([]));
    assert_eq!(v["next_cursor"], Value::Null);
    // A predicate no row has, under the prefix: every page stops at the budget with a cursor.
    let (first_time, body) = timed("/v1/query?subject=fleet&match=prefix&predicate=nope");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["results"], json!([]), "no results yet");
    let mut cursor = v["next_cursor"].as_str().map(str::to_owned);
    assert!(cursor.is_some(), "stopped early, so a cursor: {v}");
    let mut pages = 1;
    while let Some(c) = cursor {
        let (_, body) = timed(&format!(
            "/v1/query?subject=fleet&match=prefix&predicate=nope&cursor={c}"
        ));
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["results"], json!([]));
        cursor = v["next_cursor"].as_str().map(str::to_owned);
        pages += 1;
        assert!(pages <= 40, "the cursors must end");
    }
    println!(
        "figures: 30,000 rows loaded in {:.1} s; crowded subject (20,000 agents) {:.1} ms, {} \
         bytes; unknown agent {:.1} ms; budget 2,000: first empty page {:.1} ms, {pages} pages \
         to the end",
        loaded.as_secs_f64(),
        crowd_time.as_secs_f64() * 1e3,
        crowd.len(),
        agent_time.as_secs_f64() * 1e3,
        first_time.as_secs_f64() * 1e3,
    );
    server.stop();
}

/// Reads from `s` until EOF or `within`; what it read and whether the peer closed.
fn read_until_close(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

const HEALTH: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n";

/// Item 6: a head not complete in time is answered 408 and closed; an idle keep-alive
/// connection outlives the head deadline and closes at the idle timeout; past
/// `max_connections` a new connection waits until one closes.
#[test]
fn connections_have_a_head_deadline_an_idle_timeout_and_a_cap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let server = start(
        tmp.path(),
        &args(
            dir.to_str().expect("utf-8"),
            &[
                "--header-timeout-ms",
                "1000",
                "--idle-timeout-ms",
                "2500",
                "--max-connections",
                "6",
            ],
        ),
        &[],
    );
    // A head that never ends.
    let mut slow = TcpStream::connect(&server.addr).expect("connect");
    let t0 = Instant::now();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n")
        .expect("write");
    let (got, closed) = read_until_close(&mut slow, Duration::from_secs(5));
    let head_closed = t0.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(closed, "the connection is closed");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(head_closed >= Duration::from_millis(900), "{head_closed:?}");

    // Keep-alive: idle time between requests is not head time.
    let mut ka = TcpStream::connect(&server.addr).expect("connect");
    ka.write_all(HEALTH).expect("write");
    let mut first = [0u8; 512];
    ka.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = ka.read(&mut first).expect("response");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1600));
    ka.write_all(HEALTH)
        .expect("second request after 1.6 s idle");
    let n = ka.read(&mut first).expect("second response");
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "the connection outlived the 1 s head deadline while idle"
    );
    let t1 = Instant::now();
    let (_, closed) = read_until_close(&mut ka, Duration::from_secs(6));
    let idle_closed = t1.elapsed();
    assert!(closed, "an idle connection is closed");
    assert!(
        idle_closed >= Duration::from_millis(2300),
        "closed after {idle_closed:?}"
    );

    // HTTP/2 (prior knowledge) with only PINGs, never a request: PINGs are not requests, so
    // the connection closes at the idle timeout instead of holding its slot for ever.
    let mut h2 = TcpStream::connect(&server.addr).expect("connect h2");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("preface + SETTINGS");
    h2.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let t_h2 = Instant::now();
    let mut h2_closed = false;
    let mut buf = [0u8; 4096];
    while t_h2.elapsed() < Duration::from_secs(8) && !h2_closed {
        // PING: length 8, type 6, no flags, stream 0, eight opaque bytes.
        if h2.write_all(b"\0\0\x08\x06\0\0\0\0\0stemedb!").is_err() {
            h2_closed = true;
            break;
        }
        match h2.read(&mut buf) {
            Ok(0) => h2_closed = true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => h2_closed = true,
        }
    }
    let h2_took = t_h2.elapsed();
    assert!(h2_closed, "a PING-only HTTP/2 connection is closed as idle");
    assert!(
        h2_took >= Duration::from_millis(2300),
        "not before the idle timeout: {h2_took:?}"
    );

    // The cap: six silent connections hold every slot; a seventh is served only once the head
    // deadline has closed them.
    let silent: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(&server.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t2 = Instant::now();
    let mut seventh = TcpStream::connect(&server.addr).expect("connect (backlog)");
    seventh.write_all(HEALTH).expect("write");
    seventh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let n = seventh.read(&mut first).expect("served at last");
    let waited = t2.elapsed();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        waited >= Duration::from_millis(500),
        "the seventh waited for a slot: {waited:?}"
    );
    drop(silent);
    println!(
        "figures: unfinished head answered 408 after {:.0} ms; idle keep-alive closed after \
         {:.0} ms more; 7th connection over a cap of 6 served after {:.0} ms",
        head_closed.as_secs_f64() * 1e3,
        idle_closed.as_secs_f64() * 1e3,
        waited.as_secs_f64() * 1e3
    );
    server.stop();
}

/// Item 6 with the defaults of design §7: a silent connection is answered 408 after 10 s.
#[test]
fn the_default_head_deadline_is_ten_seconds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let server = start(tmp.path(), &args(dir.to_str().expect("utf-8"), &[]), &[]);
    let mut s = TcpStream::connect(&server.addr).expect("connect");
    let t0 = Instant::now();
    s.write_all(b"GET /v1/health HTTP/1.1\r\n").expect("write");
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(15));
    let took = t0.elapsed();
    assert!(closed, "closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"));
    assert!(
        (Duration::from_millis(9_500)..Duration::from_millis(12_500)).contains(&took),
        "{took:?}"
    );
    println!(
        "figures: default head deadline fired after {:.2} s",
        took.as_secs_f64()
    );
    server.stop();
}

/// Peak resident memory of a process (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM")
}

fn post_concurrently(server: &Server, bodies: Vec<Vec<u8>>) -> Vec<u16> {
    let url = server.url();
    let handles: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let url = url.clone();
            std::thread::spawn(move || post_raw(&url, b).0)
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

/// Item 7: 16 concurrent 16 MiB bodies of `{"x":[0,0,…]}`, `{"assertions":[0,0,…]}` and
/// `{"a":0,"a":0,…}`, then, on a second server (the peak
/// of the first phase would hide the second's), 8 concurrent batches of large valid
/// envelopes, then on a third 128 concurrent large single envelopes: each time the server's
/// peak memory grows by no more than about twice the bytes in flight.
#[test]
fn request_memory_stays_within_about_twice_the_bytes_in_flight() {
    const MIB: usize = 1024 * 1024;
    let tmp = tempfile::tempdir().expect("tempdir");
    let serve = |name: &str| {
        let dir = tmp.path().join(name);
        let server = start(
            tmp.path(),
            &args(
                dir.to_str().expect("utf-8"),
                &["--cache-mb", "16", "--soft-size-bytes", "0"],
            ),
            &[],
        );
        assert_eq!(get(&server.addr, "/v1/ready").0, 200);
        server
    };
    let server = serve("zeros");
    let pid = server.child.id();
    let base = peak_rss(pid);
    let mut zeros = b"{\"x\":[".to_vec();
    while zeros.len() < 16 * MIB - 16 {
        zeros.extend_from_slice(b"0,");
    }
    zeros.extend_from_slice(b"0]}");
    // Half of them a batch of millions of tiny items: the item cap stops the parse, so they
    // cost no more than the others.
    let mut tiny = b"{\"assertions\":[".to_vec();
    while tiny.len() < 16 * MIB - 16 {
        tiny.extend_from_slice(b"0,");
    }
    tiny.extend_from_slice(b"0]}");
    // And bodies of millions of top-level keys: the parse stops at the few an envelope has.
    let mut keys = b"{".to_vec();
    while keys.len() < 16 * MIB - 16 {
        keys.extend_from_slice(b"\"a\":0,");
    }
    keys.extend_from_slice(b"\"a\":0}");
    let in_flight = 6 * zeros.len() + 5 * tiny.len() + 5 * keys.len();
    let mut bodies = vec![zeros; 6];
    bodies.extend(vec![tiny; 5]);
    bodies.extend(vec![keys; 5]);
    let statuses = post_concurrently(&server, bodies);
    assert!(
        statuses[..11].iter().all(|s| *s == 413) && statuses[11..].iter().all(|s| *s == 400),
        "{statuses:?}"
    );
    let grew = peak_rss(pid).saturating_sub(base);
    server.stop();

    // Batches of valid envelopes whose objects are 60 KiB arrays of zeros.
    let server = serve("batches");
    let pid = server.child.id();
    let base_batches = peak_rss(pid);
    let k = key(5);
    let big = Value::Array(vec![json!(0); 30 * 1024]);
    let envs: Vec<Vec<u8>> = (0..150u64)
        .map(|i| envelope(&k, "mem/big", big.clone(), i, json!({})))
        .collect();
    let mut batch = b"{\"assertions\":[".to_vec();
    for (i, e) in envs.iter().enumerate() {
        if i > 0 {
            batch.push(b',');
        }
        batch.extend_from_slice(e);
    }
    batch.extend_from_slice(b"]}");
    let batch_in_flight = 8 * batch.len();
    let statuses = post_concurrently(&server, vec![batch.clone(); 8]);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let grew_batches = peak_rss(pid).saturating_sub(base_batches);
    println!(
        "figures: base peak RSS {} / {} MiB; 16 x {} MiB zeros in flight ({} MiB): peak +{} MiB; \
         8 x {} MiB envelope batches ({} MiB): peak +{} MiB",
        base / MIB as u64,
        base_batches / MIB as u64,
        zeros_len_mib(in_flight / 16),
        in_flight / MIB,
        grew / MIB as u64,
        zeros_len_mib(batch.len()),
        batch_in_flight / MIB,
        grew_batches / MIB as u64
    );
    within_twice(grew, in_flight, "bodies");
    within_twice(grew_batches, batch_in_flight, "batches");
    server.stop();

    // 128 concurrent single envelopes of 60 KiB statements (30,000 zeros: about 1 MiB of
    // values each once decoded). They go through the verifier stage, which verifies the ones
    // waiting together: it must hold one chunk's decoded statements at a time, not all of
    // them.
    let server = serve("singles");
    let pid = server.child.id();
    let base_singles = peak_rss(pid);
    let wide = Value::Array(vec![json!(0); 30_000]);
    let singles: Vec<Vec<u8>> = (0..128u64)
        .map(|i| envelope(&k, &format!("mem/single{i}"), wide.clone(), i, json!({})))
        .collect();
    let singles_in_flight: usize = singles.iter().map(Vec::len).sum();
    let statuses = post_concurrently(&server, singles);
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let grew_singles = peak_rss(pid).saturating_sub(base_singles);
    println!(
        "figures: 128 single envelopes of {} KiB ({} MiB in flight): peak +{} MiB",
        singles_in_flight / 128 / 1024,
        singles_in_flight / MIB,
        grew_singles / MIB as u64
    );
    within_twice(grew_singles, singles_in_flight, "single envelopes");
    server.stop();
}

/// Peak memory grew by at most twice the `what` in flight, plus 64 MiB of slack.
fn within_twice(grew: u64, in_flight: usize, what: &str) {
    const MIB: u64 = 1024 * 1024;
    assert!(
        grew <= 2 * in_flight as u64 + 64 * MIB,
        "peak grew {} MiB for {} MiB of {what} in flight",
        grew / MIB,
        in_flight as u64 / MIB
    );
}

fn zeros_len_mib(bytes: usize) -> usize {
    bytes.div_ceil(1024 * 1024)
}

/// Item 10: replaying a victim's quarantine-tripping envelope counts against the victim once,
/// however often it is replayed, so nobody can open another agent's breaker with its own
/// signed words.
#[test]
fn replaying_a_victims_held_envelope_does_not_open_its_breaker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let server = start(
        tmp.path(),
        &args(
            dir.to_str().expect("utf-8"),
            &[
                "--breaker-threshold",
                "3",
                "--deny-pattern",
                "object:(?i)ignore previous",
            ],
        ),
        &[],
    );
    let victim = key(20);
    let tripping = envelope(
        &victim,
        "chat/x",
        json!("ignore previous orders"),
        1,
        json!({}),
    );
    let client = Client::new(&server.url()).expect("client");
    for _ in 0..10 {
        let r = client.assert_envelope(&tripping).expect("held");
        assert_eq!(r.status, "quarantined");
    }
    let clean = envelope(&victim, "chat/x", json!("hello"), 2, json!({}));
    let r = client
        .assert_envelope(&clean)
        .expect("the victim can still write");
    assert_eq!(r.status, "created");
    server.stop();
}

/// Item 13: an origin that would make the signed note ambiguous refuses to start.
#[test]
fn an_ambiguous_log_origin_is_refused_at_start() {
    for origin in ["two words", "line\nbreak", "a+b", ""] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let out = command(
            tmp.path(),
            &args(dir.to_str().expect("utf-8"), &["--log-origin", origin]),
            &[],
        )
        .output()
        .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{origin:?}: {err}");
        assert!(err.contains("origin"), "{origin:?}: {err}");
    }
}

/// Item 14: `.` and `..` segments are refused with `bad_subject`, in writes and in queries.
#[test]
fn dot_segments_are_bad_subjects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let server = start(tmp.path(), &args(dir.to_str().expect("utf-8"), &[]), &[]);
    let client = Client::new(&server.url()).expect("client");
    let k = key(30);
    for subject in ["a/../b", "./a", "a/.", ".."] {
        // Signed as another client would, without this crate's checks.
        use base64::Engine as _;
        use ed25519_dalek::Signer as _;
        let payload = serde_json::to_vec(&json!({
            "v": 1, "subject": subject, "predicate": "p", "object": 1,
            "agent": agent_hex(&k), "ts": 1,
        }))
        .expect("json");
        let pae = stemedb_core::pae(stemedb_core::PAYLOAD_TYPE, &payload);
        let b64 = base64::engine::general_purpose::STANDARD;
        let env = serde_json::to_vec(&json!({
            "payloadType": stemedb_core::PAYLOAD_TYPE,
            "payload": b64.encode(&payload),
            "signatures": [{"sig": b64.encode(k.sign(&pae).to_bytes())}],
        }))
        .expect("json");
        match client.assert_envelope(&env) {
            Err(ClientError::Problem { status, code, .. }) => {
                assert_eq!((status, code.as_str()), (422, "bad_subject"), "{subject}")
            }
            other => panic!("{subject}: {other:?}"),
        }
    }
    let (status, _, body) = get(&server.addr, "/v1/query?subject=a/../b");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_query"), "{body}");
    server.stop();
}
