//! The durable write path end to end, on real files with real fsync: crash under load, torn
//! tails, corruption of sealed segments, fsync failure, group commit.

mod common;

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Lcg, Server, command, get, last_segment, metric, start};
use stemedb_client::{Client, ClientError, verify_consistency, verify_inclusion};
use stemedb_core::{SigningKey, sign, signing_key_from_seed};

fn key(n: u8) -> SigningKey {
    signing_key_from_seed(&[n.wrapping_mul(7).wrapping_add(1); 32])
}

fn envelope(key: &SigningKey, subject: &str, n: u64) -> Vec<u8> {
    let agent = hex::encode(key.verifying_key().as_bytes());
    let payload = format!(
        r#"{{"v":1,"subject":"{subject}","predicate":"observed","object":{{"n":{n}}},"agent":"{agent}","ts":{}}}"#,
        1_700_000_000_000u64 + n
    );
    match sign(key, payload.into_bytes()) {
        Ok(v) => v.envelope().encode(),
        Err(e) => panic!("test statement must be valid: {e}"),
    }
}

fn serve_args<'a>(dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--listen", "127.0.0.1:0", "--data-dir", dir];
    v.extend_from_slice(extra);
    v
}

#[test]
fn kill_9_under_concurrent_load_loses_no_acknowledged_write() {
    // Small memtables merged every few hundred writes, compactions in many small chunks and a
    // durable checkpoint every 200 ms, so kills land in merges, compactions and durable commits
    // as often as between them.
    const ROUNDS: u64 = 30;
    const WRITERS: usize = 8;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().expect("utf-8").to_string();
    let keys: Vec<SigningKey> = (0..4).map(key).collect();
    let keys = Arc::new(keys);
    let mut rng = Lcg(0x5eed);
    let mut all_acked: Vec<String> = Vec::new();
    let mut pre_crash: Option<stemedb_merkle::Checkpoint> = None;
    for round in 0..ROUNDS {
        let server = start(
            tmp.path(),
            &serve_args(
                &dir_s,
                &[
                    "--wal-segment-bytes",
                    "262144",
                    "--checkpoint-interval-ms",
                    "200",
                    "--memtable-rows",
                    "300",
                    "--memtable-ms",
                    "50",
                    // Compactions of index runs in chunks of 100 rows: kills land inside
                    // them too, and a cut-off compaction's tables must be dropped at start.
                    "--compaction-chunk-rows",
                    "100",
                ],
            ),
            &[],
        );
        let client = Client::new(&server.url()).expect("client");
        let cp_key = client.checkpoint_key().expect("key");
        let now = client
            .verified_checkpoint(&cp_key)
            .expect("checkpoint after restart");
        // Everything acknowledged before the crash is back, and the log only grew.
        assert!(
            now.size >= all_acked.len() as u64,
            "round {round}: tree size {} < {} acknowledged",
            now.size,
            all_acked.len()
        );
        if let Some(old) = &pre_crash {
            let proof = client
                .consistency(old.size, Some(now.size))
                .expect("consistency proof");
            verify_consistency(&proof, old, &now).expect("the pre-crash log is a prefix");
        }
        let recent = all_acked.len().saturating_sub(2_000);
        for (i, id) in all_acked.iter().enumerate() {
            // Every id of the last round, and a sample of older ones.
            if i >= recent || rng.next().is_multiple_of(50) {
                assert!(
                    client.assertion(id).expect("read").is_some(),
                    "round {round}: acknowledged id {id} is missing after kill -9"
                );
            }
        }
        if let Some(id) = all_acked.last() {
            let p = client.inclusion(id, Some(now.size)).expect("inclusion");
            verify_inclusion(&p, &now).expect("inclusion verifies");
        }

        // Load: writers post singles and small batches until the server dies.
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let last_cp = Arc::new(Mutex::new(now.clone()));
        let mut threads = Vec::new();
        for w in 0..WRITERS {
            let (url, acked, stop, keys) =
                (server.url(), acked.clone(), stop.clone(), keys.clone());
            threads.push(std::thread::spawn(move || {
                let client = Client::new(&url).expect("client");
                let key = &keys[w % keys.len()];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let subject = format!("crash/r{round}/w{w}");
                    if n % 10 == 9 {
                        let batch: Vec<Vec<u8>> = (0..5)
                            .map(|i| envelope(key, &subject, n * 10 + i))
                            .collect();
                        match client.assert_batch(&batch) {
                            Ok(results) => {
                                let mut a = acked.lock().expect("lock");
                                for r in results {
                                    a.push(r.expect("batch item accepted").id);
                                }
                            }
                            Err(ClientError::Http { .. }) => break,
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    } else {
                        match client.assert_envelope(&envelope(key, &subject, n * 10)) {
                            Ok(a) => acked.lock().expect("lock").push(a.id),
                            Err(ClientError::Http { .. }) => break,
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    }
                    n += 1;
                }
            }));
        }
        {
            let (url, stop, last_cp, cp_key) =
                (server.url(), stop.clone(), last_cp.clone(), cp_key.clone());
            threads.push(std::thread::spawn(move || {
                let client = Client::new(&url).expect("client");
                while !stop.load(Ordering::Relaxed) {
                    match client.verified_checkpoint(&cp_key) {
                        Ok(cp) => *last_cp.lock().expect("lock") = cp,
                        Err(ClientError::Http { .. }) => break,
                        Err(e) => panic!("checkpoint: {e}"),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }));
        }
        // Start the random delay once writes are flowing, so a slow machine cannot make a round
        // kill the server before anything was acknowledged.
        let flowing = std::time::Instant::now();
        while acked.lock().expect("lock").is_empty() && flowing.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100 + rng.next() % 600));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("writer thread");
        }
        let acked = acked.lock().expect("lock").clone();
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged"
        );
        all_acked.extend(acked);
        pre_crash = Some(last_cp.lock().expect("lock").clone());
    }
    let unique: HashSet<&String> = all_acked.iter().collect();
    assert_eq!(unique.len(), all_acked.len(), "ids are unique");
    eprintln!(
        "crash test: {ROUNDS} rounds of kill -9, {} acknowledged writes, none lost",
        all_acked.len()
    );
}

fn write_some(url: &str, key: &SigningKey, subject: &str, n: u64) -> Vec<String> {
    let client = Client::new(url).expect("client");
    let mut ids = Vec::new();
    let envs: Vec<Vec<u8>> = (0..n).map(|i| envelope(key, subject, i)).collect();
    for chunk in envs.chunks(50) {
        for r in client.assert_batch(chunk).expect("batch") {
            ids.push(r.expect("accepted").id);
        }
    }
    ids
}

fn all_readable(server: &Server, ids: &[String]) {
    let client = Client::new(&server.url()).expect("client");
    for id in ids {
        assert!(
            client.assertion(id).expect("read").is_some(),
            "{id} missing"
        );
    }
}

/// `stemedb verify` passes on the stopped data directory `dir` and counts `records` WAL records.
fn wal_holds(dir: &str, records: usize) {
    let out = std::process::Command::new(common::BIN)
        .args(["verify", dir])
        .output()
        .expect("verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("/ {records} records")),
        "the WAL must hold all {records} records: {text}"
    );
}

#[test]
fn torn_tails_are_cut_and_nothing_acknowledged_is_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().expect("utf-8");
    let small = ["--wal-segment-bytes", "65536"];
    let k = key(9);
    let server = start(tmp.path(), &serve_args(dir_s, &small), &[]);
    let mut ids = write_some(&server.url(), &k, "torn/a", 400);
    server.kill9();
    let wal = dir.join("wal");
    assert!(
        fs::read_dir(&wal).expect("wal").count() > 2,
        "several segments"
    );

    // 1. Random bytes after the last record (a torn group after kill -9).
    let mut rng = Lcg(7);
    let garbage: Vec<u8> = (0..137).map(|_| rng.next() as u8).collect();
    OpenOptions::new()
        .append(true)
        .open(last_segment(&wal))
        .expect("open")
        .write_all(&garbage)
        .expect("append");
    let server = start(tmp.path(), &serve_args(dir_s, &small), &[]);
    let logs = &server.startup_logs;
    assert!(
        logs.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("truncating a damaged WAL tail"))),
        "the cut is logged: {logs:?}"
    );
    all_readable(&server, &ids);
    ids.extend(write_some(&server.url(), &k, "torn/b", 30));
    server.stop();

    // 2. The last record cut short (after a clean stop its data is in the durable checkpoint):
    // it was acknowledged, so the cut records are written back into the WAL from the store.
    let seg = last_segment(&wal);
    let len = fs::metadata(&seg).expect("meta").len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    let server = start(tmp.path(), &serve_args(dir_s, &small), &[]);
    assert!(
        server.startup_logs.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("writing them back into the WAL from the store"))),
        "the rewrite is logged: {:?}",
        server.startup_logs
    );
    all_readable(&server, &ids);
    let client = Client::new(&server.url()).expect("client");
    let cp_key = client.checkpoint_key().expect("key");
    let before = client.verified_checkpoint(&cp_key).expect("cp");
    assert_eq!(before.size, ids.len() as u64);
    ids.extend(write_some(&server.url(), &k, "torn/c", 30));
    server.kill9();
    let server = start(tmp.path(), &serve_args(dir_s, &small), &[]);
    all_readable(&server, &ids);
    let client = Client::new(&server.url()).expect("client");
    let after = client.verified_checkpoint(&cp_key).expect("cp");
    assert_eq!(after.size, ids.len() as u64);
    let proof = client
        .consistency(before.size, Some(after.size))
        .expect("proof");
    verify_consistency(&proof, &before, &after).expect("consistent");
    server.stop();
    // The WAL holds every acknowledged record again, with no gap (archives replay it).
    wal_holds(dir_s, ids.len());

    // 2b. The WAL ends short with nothing to cut (a start killed between the cut and the
    // rewrite, or lost trailing segments): the next start writes the records back all the same.
    let mut segs: Vec<_> = fs::read_dir(&wal)
        .expect("wal")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    for seg in &segs[segs.len() - 2..] {
        fs::remove_file(seg).expect("remove");
    }
    let server = start(tmp.path(), &serve_args(dir_s, &small), &[]);
    all_readable(&server, &ids);
    server.stop();
    wal_holds(dir_s, ids.len());

    // 3. A flipped byte in a sealed segment: start-up refuses, naming the file and offset.
    let first = wal.join("segment-00000001.log");
    let mut bytes = fs::read(&first).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    fs::write(&first, &bytes).expect("write");
    let out = command(tmp.path(), &serve_args(dir_s, &small), &[])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "start must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("segment-00000001.log"), "{err}");
    assert!(err.contains("byte offset"), "{err}");
}

#[test]
fn fsync_failure_turns_the_server_read_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().expect("utf-8");
    let k = key(3);
    let server = start(
        tmp.path(),
        &serve_args(dir_s, &[]),
        &[("STEMEDB_FAULT_FSYNC_AFTER", "5")],
    );
    let client = Client::new(&server.url()).expect("client");
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(
            client
                .assert_envelope(&envelope(&k, "fsync/x", i))
                .expect("accepted")
                .id,
        );
    }
    // The write whose fsync failed: its outcome is unknown (the record may be on disk).
    match client.assert_envelope(&envelope(&k, "fsync/x", 5)) {
        Err(ClientError::Problem {
            status: 503, code, ..
        }) => assert_eq!(code, "outcome_unknown"),
        other => panic!("the write whose fsync failed: {other:?}"),
    }
    for i in 6..8 {
        match client.assert_envelope(&envelope(&k, "fsync/x", i)) {
            Err(ClientError::Problem {
                status: 503, code, ..
            }) => assert_eq!(code, "read_only"),
            other => panic!("write {i} after the fsync failure: {other:?}"),
        }
    }
    let (status, ctype, body) = get(&server.addr, "/v1/ready");
    assert_eq!(status, 503, "{body}");
    assert_eq!(ctype, "application/problem+json");
    assert!(body.contains("\"code\":\"read_only\""), "{body}");
    let (_, _, metrics) = get(&server.addr, "/metrics");
    assert_eq!(
        metric(&metrics, "stemedb_read_only"),
        Some(1.0),
        "{metrics}"
    );
    // Reads keep working.
    assert!(client.assertion(&acked[0]).expect("read").is_some());
    server.kill9();
    // After a restart (the operator fixed the disk) everything acknowledged is there.
    let server = start(tmp.path(), &serve_args(dir_s, &[]), &[]);
    all_readable(&server, &acked);
    assert_eq!(get(&server.addr, "/v1/ready").0, 200);
}

#[test]
fn group_commit_makes_one_fsync_serve_many_concurrent_writers() {
    const WRITERS: usize = 64;
    const EACH: u64 = 25;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let server = start(
        tmp.path(),
        &serve_args(dir.to_str().expect("utf-8"), &[]),
        &[],
    );
    let barrier = Arc::new(std::sync::Barrier::new(WRITERS));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, barrier) = (server.url(), barrier.clone());
            std::thread::spawn(move || {
                let client = Client::new(&url).expect("client");
                let k = key(w as u8);
                let envs: Vec<Vec<u8>> = (0..EACH)
                    .map(|i| envelope(&k, &format!("group/w{w}"), i))
                    .collect();
                barrier.wait();
                for e in envs {
                    client.assert_envelope(&e).expect("accepted");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let (_, _, metrics) = get(&server.addr, "/metrics");
    let writes = metric(&metrics, "stemedb_wal_group_commit_size_sum").expect("sum");
    let fsyncs = metric(&metrics, "stemedb_wal_group_commit_size_count").expect("count");
    assert_eq!(writes, (WRITERS as u64 * EACH) as f64);
    let ratio = writes / fsyncs;
    eprintln!("group commit: {writes} writes, {fsyncs} fsyncs, {ratio:.1} writes per fsync");
    assert!(
        ratio >= 2.0,
        "64 concurrent writers should share fsyncs: {writes} writes in {fsyncs} fsyncs"
    );
}

/// A durable checkpoint (the merger's fsyncs and durable commit) that fails turns the server
/// read-only; nothing acknowledged is lost, and after a restart the log is a consistent
/// extension of every checkpoint signed before.
#[test]
fn a_failed_checkpoint_during_merges_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let dir_s = dir.to_str().expect("utf-8");
    let k = key(5);
    let flags = [
        "--memtable-rows",
        "50",
        "--memtable-ms",
        "20",
        "--checkpoint-interval-ms",
        "50",
    ];
    let server = start(
        tmp.path(),
        &serve_args(dir_s, &flags),
        &[("STEMEDB_FAULT_CHECKPOINT_AFTER", "3")],
    );
    let client = Client::new(&server.url()).expect("client");
    let cp_key = client.checkpoint_key().expect("key");
    let mut acked = Vec::new();
    let mut signed = Vec::new();
    let mut refused = None;
    for i in 0..400u64 {
        match client.assert_envelope(&envelope(&k, "merge/fail", i)) {
            Ok(a) => acked.push(a.id),
            Err(ClientError::Problem {
                status: 503, code, ..
            }) => {
                refused = Some(code);
                break;
            }
            Err(e) => panic!("write {i}: {e}"),
        }
        if i % 20 == 0 {
            signed.push(client.verified_checkpoint(&cp_key).expect("checkpoint"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        refused.as_deref(),
        Some("read_only"),
        "the failed checkpoint turned it read-only"
    );
    let (status, _, body) = get(&server.addr, "/v1/ready");
    assert_eq!(status, 503, "{body}");
    // Reads keep working, from the memtables the merger could not retire.
    for id in &acked {
        assert!(client.assertion(id).expect("read").is_some(), "{id}");
    }
    server.kill9();
    let server = start(tmp.path(), &serve_args(dir_s, &flags), &[]);
    all_readable(&server, &acked);
    let client = Client::new(&server.url()).expect("client");
    let now = client.verified_checkpoint(&cp_key).expect("checkpoint");
    assert!(now.size >= acked.len() as u64);
    for old in &signed {
        let proof = client.consistency(old.size, Some(now.size)).expect("proof");
        verify_consistency(&proof, old, &now).expect("consistent with what was signed");
    }
    eprintln!(
        "failed checkpoint: {} acknowledged before read-only, {} signed checkpoints consistent",
        acked.len(),
        signed.len()
    );
    server.stop();
}
