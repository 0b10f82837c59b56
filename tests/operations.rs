//! Operations on real servers and real files (issue 7): an online backup taken during writes
//! restores every acknowledged id and the same root; one flipped byte anywhere in a backup makes
//! `stemedb verify` fail naming the file; WAL segments archived to a real S3-compatible server
//! (s3s-fs, started here) restore to a chosen tree size and to the end; retention and the
//! archive's refusal to overwrite another history; `verify` on a stopped data directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BIN, Server, start};
use serde_json::Value;
use stemedb_client::Client;
use stemedb_core::{SigningKey, sign, signing_key_from_seed};

fn key(n: u8) -> SigningKey {
    signing_key_from_seed(&[n.wrapping_mul(13).wrapping_add(5); 32])
}

fn envelope(key: &SigningKey, n: u64) -> Vec<u8> {
    let agent = hex::encode(key.verifying_key().as_bytes());
    let payload = format!(
        r#"{{"v":1,"subject":"ops/item-{}","predicate":"observed","object":{{"n":{n}}},"agent":"{agent}","ts":{}}}"#,
        n % 97,
        1_700_000_000_000u64 + n
    );
    match sign(key, payload.into_bytes()) {
        Ok(v) => v.envelope().encode(),
        Err(e) => panic!("test statement must be valid: {e}"),
    }
}

fn serve(dir: &Path) -> Server {
    let d = dir.to_str().expect("utf-8 path");
    // Small WAL segments so archives hold several.
    start(
        dir.parent().unwrap_or(dir),
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            d,
            "--wal-segment-bytes",
            "131072",
        ],
        &[],
    )
}

/// Runs `stemedb ARGS` with `env`; returns exit code, stdout, stderr.
fn stemedb(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("STEMEDB_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run stemedb");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let (code, out, err) = stemedb(args, env);
    assert_eq!(code, 0, "stemedb {args:?} failed: {err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Posts `count` new assertions (numbered from `from`) in batches; returns (id, log index).
fn write(client: &Client, k: &SigningKey, from: u64, count: u64) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let envs: Vec<Vec<u8>> = (from..from + count).map(|n| envelope(k, n)).collect();
    for chunk in envs.chunks(100) {
        for r in client.assert_batch(chunk).expect("batch") {
            let a = r.expect("accepted");
            out.push((a.id, a.log_index.expect("logged")));
        }
    }
    out
}

/// (tree size, root hex) of a server's signed checkpoint.
fn head(client: &Client) -> (u64, String) {
    let key = client.checkpoint_key().expect("key");
    let cp = client
        .verified_checkpoint(&key)
        .expect("checkpoint verifies");
    (cp.size, hex::encode(cp.root))
}

/// The original server's root at `size`.
fn root_at(client: &Client, size: u64) -> String {
    client
        .consistency(size, None)
        .expect("consistency")
        .from_root
}

#[test]
fn an_online_backup_during_writes_restores_every_acked_id_and_the_same_root() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = serve(&data);
    let client = Client::new(&server.url()).expect("client");
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let writer = {
        let (acked, stop, count, url) = (acked.clone(), stop.clone(), count.clone(), server.url());
        std::thread::spawn(move || {
            let client = Client::new(&url).expect("client");
            let k = key(1);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let got = write(&client, &k, n, 50);
                n += 50;
                count.fetch_add(got.len() as u64, Ordering::SeqCst);
                acked.lock().expect("lock").extend(got);
            }
        })
    };
    while count.load(Ordering::SeqCst) < 2_000 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let backup = tmp.path().join("backup");
    let before = count.load(Ordering::SeqCst);
    let report = ok_json(
        &[
            "backup",
            "--data-dir",
            s(&data),
            "--to",
            s(&backup),
            "--json",
        ],
        &[],
    );
    let during = count.load(Ordering::SeqCst) - before;
    assert_eq!(report["online"], true, "{report}");
    let size = report["tree_size"].as_u64().expect("tree_size");
    assert!(
        size >= before,
        "the snapshot covers what was acked before it"
    );
    // Keep writing a little after the backup, then stop.
    let target = count.load(Ordering::SeqCst) + 500;
    while count.load(Ordering::SeqCst) < target {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    eprintln!("{during} writes acknowledged while the backup ran");
    assert!(
        during > 0,
        "writes must continue while the server takes the snapshot"
    );

    // The marker feeds the backup-age metric.
    let (_, _, metrics) = common::get(&server.addr, "/metrics");
    let last_backup =
        common::metric(&metrics, "stemedb_last_backup_timestamp_seconds").expect("backup metric");
    assert!(last_backup > 1.7e9, "{last_backup}");

    let (code, out, _) = stemedb(&["verify", s(&backup)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK"), "{out}");

    let want_root = root_at(&client, size);
    assert_eq!(report["root"].as_str(), Some(want_root.as_str()));
    let restored = tmp.path().join("restored");
    ok_json(
        &[
            "restore",
            "--from",
            s(&backup),
            "--data-dir",
            s(&restored),
            "--json",
        ],
        &[],
    );
    // A second restore into the now non-empty directory is refused.
    let (code, _, err) = stemedb(
        &["restore", "--from", s(&backup), "--data-dir", s(&restored)],
        &[],
    );
    assert_eq!(code, 2);
    assert!(err.contains("not empty"), "{err}");

    let again = serve(&restored);
    let rclient = Client::new(&again.url()).expect("client");
    assert_eq!(head(&rclient), (size, want_root.clone()));
    // The restored server signs with the same key: a client pinned to it keeps verifying.
    assert_eq!(
        rclient.checkpoint_key().expect("key"),
        client.checkpoint_key().expect("key")
    );
    let acked = acked.lock().expect("lock").clone();
    let mut inside = 0;
    for (id, index) in &acked {
        let got = rclient.assertion(id).expect("get");
        if *index < size {
            let v = got.unwrap_or_else(|| panic!("acked {id} (log index {index}) missing"));
            assert_eq!(v["log_index"].as_u64(), Some(*index));
            inside += 1;
        } else {
            assert!(got.is_none(), "{id} at {index} is after the snapshot");
        }
    }
    assert_eq!(
        inside, size,
        "every assertion below the snapshot's size was acked here"
    );
    // The restored server accepts new writes after the snapshot's end.
    let more = write(&rclient, &key(2), 0, 10);
    assert_eq!(more[0].1, size);
    again.stop();
    server.stop();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

fn files_under(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            files_under(&e.path(), base, out);
        } else {
            out.push(e.path().strip_prefix(base).expect("under").to_path_buf());
        }
    }
}

#[test]
fn one_flipped_byte_anywhere_in_a_backup_fails_verify_naming_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = serve(&data);
    let client = Client::new(&server.url()).expect("client");
    write(&client, &key(3), 0, 700);
    server.stop();
    // Offline: this process takes the lock and snapshots the stopped store.
    let backup = tmp.path().join("backup");
    let report = ok_json(
        &[
            "backup",
            "--data-dir",
            s(&data),
            "--to",
            s(&backup),
            "--json",
        ],
        &[],
    );
    assert_eq!(report["online"], false);
    assert_eq!(report["tree_size"], 700);
    let (code, out, _) = stemedb(&["verify", s(&backup)], &[]);
    assert_eq!(code, 0, "{out}");

    let mut files = Vec::new();
    files_under(&backup, &backup, &mut files);
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for (i, rel) in files.iter().enumerate() {
        let copy = tmp.path().join(format!("flip-{i}"));
        copy_dir(&backup, &copy);
        let path = copy.join(rel);
        let mut bytes = std::fs::read(&path).expect("read");
        assert!(!bytes.is_empty(), "{rel:?} is empty");
        // A different position in each file, never only the first byte.
        let at = (bytes.len() / 2 + i * 7) % bytes.len();
        bytes[at] ^= 0x20;
        std::fs::write(&path, &bytes).expect("write");
        let (code, out, err) = stemedb(&["verify", s(&copy)], &[]);
        assert_eq!(
            code, 1,
            "flipping byte {at} of {rel:?} must fail verify: {out}{err}"
        );
        let name = rel.to_str().expect("utf-8");
        // The hash file names the manifest it protects.
        let named = if name == "manifest.json.b3" {
            out.contains("manifest.json.b3")
        } else {
            out.contains(&format!("MISMATCH {name}:"))
        };
        assert!(named, "verify must name {name}:\n{out}");
        if i == 0 {
            // A damaged backup is never restored.
            let target = tmp.path().join("never");
            let (code, _, err) = stemedb(
                &["restore", "--from", s(&copy), "--data-dir", s(&target)],
                &[],
            );
            assert_eq!(code, 2);
            assert!(err.contains("does not verify"), "{err}");
            assert!(
                !target.exists(),
                "a failed restore leaves the target untouched"
            );
        }
        std::fs::remove_dir_all(&copy).expect("cleanup");
    }
}

/// An S3-compatible server (s3s-fs: objects are files under `root`) on a free port.
fn start_s3(root: &Path) -> String {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use s3s::auth::SimpleAuth;
    use s3s::service::S3ServiceBuilder;
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(
        "stemedb-test",
        "stemedb-test-secret",
    ));
    let service = b.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
    });
    format!("http://{addr}")
}

#[test]
fn wal_archived_to_s3_restores_to_a_chosen_tree_size_and_to_the_end() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s3_root = tmp.path().join("s3");
    std::fs::create_dir_all(s3_root.join("archive")).expect("bucket");
    let endpoint = start_s3(&s3_root);
    let env = [
        ("AWS_ACCESS_KEY_ID", "stemedb-test"),
        ("AWS_SECRET_ACCESS_KEY", "stemedb-test-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let target = "s3://archive/node-1/wal";

    let data = tmp.path().join("data");
    let server = serve(&data);
    let client = Client::new(&server.url()).expect("client");
    let k = key(4);
    write(&client, &k, 0, 600);
    let backup = tmp.path().join("backup");
    let b = ok_json(
        &[
            "backup",
            "--data-dir",
            s(&data),
            "--to",
            s(&backup),
            "--json",
        ],
        &[],
    );
    let base = b["tree_size"].as_u64().expect("size");
    assert_eq!(base, 600);
    let after = write(&client, &k, 600, 900);
    let total = after.last().expect("writes").1 + 1;
    let archived = ok_json(
        &[
            "wal-archive",
            "--data-dir",
            s(&data),
            "--to",
            target,
            "--json",
        ],
        &env,
    );
    assert!(
        archived["archived"]
            .as_array()
            .is_some_and(|a| a.len() >= 3),
        "{archived}"
    );
    // The active segment was sealed first: every acknowledged write is archived.
    assert_eq!(archived["archived_through"].as_u64(), Some(total));
    // The objects are really in the S3 server's storage.
    let stored: Vec<_> = std::fs::read_dir(s3_root.join("archive/node-1/wal"))
        .expect("objects on disk")
        .filter_map(|e| e.ok())
        .collect();
    assert!(stored.len() >= 6, "segments and sidecars: {}", stored.len());
    // A second run finds everything archived and uploads nothing.
    let again = ok_json(
        &[
            "wal-archive",
            "--data-dir",
            s(&data),
            "--to",
            target,
            "--json",
        ],
        &env,
    );
    assert_eq!(again["bytes"], 0, "{again}");
    let (_, _, metrics) = common::get(&server.addr, "/metrics");
    assert_eq!(
        common::metric(&metrics, "stemedb_wal_unarchived_segments"),
        Some(0.0)
    );
    assert!(
        common::metric(&metrics, "stemedb_last_wal_archive_timestamp_seconds")
            .is_some_and(|t| t > 1.7e9)
    );

    // Point in time: the backup plus archived records up to a chosen size.
    let chosen = base + 437;
    let pitr = tmp.path().join("pitr");
    let r = ok_json(
        &[
            "restore",
            "--from",
            s(&backup),
            "--data-dir",
            s(&pitr),
            "--wal-archive",
            target,
            "--to-tree-size",
            &chosen.to_string(),
            "--json",
        ],
        &env,
    );
    assert_eq!(r["tree_size"].as_u64(), Some(chosen));
    let (code, out, _) = stemedb(&["verify", s(&pitr)], &[]);
    assert_eq!(code, 0, "{out}");
    let p = serve(&pitr);
    let pclient = Client::new(&p.url()).expect("client");
    assert_eq!(head(&pclient), (chosen, root_at(&client, chosen)));
    for (id, index) in after.iter().step_by(37) {
        let got = pclient.assertion(id).expect("get");
        assert_eq!(got.is_some(), *index < chosen, "{id} at {index}");
    }
    // This restored server writes its own history after `chosen`; archiving it over the
    // original's objects is refused rather than overwriting them.
    write(&pclient, &key(5), 0, 900);
    let (code, _, err) = stemedb(
        &["wal-archive", "--data-dir", s(&pitr), "--to", target],
        &env,
    );
    assert_ne!(code, 0);
    assert!(err.contains("another history"), "{err}");
    p.stop();

    // To the end: every archived write is back (RPO 0 for archived data).
    let full = tmp.path().join("full");
    let r = ok_json(
        &[
            "restore",
            "--from",
            s(&backup),
            "--data-dir",
            s(&full),
            "--wal-archive",
            target,
            "--json",
        ],
        &env,
    );
    assert_eq!(r["tree_size"].as_u64(), Some(total));
    let f = serve(&full);
    let fclient = Client::new(&f.url()).expect("client");
    assert_eq!(head(&fclient), head(&client));
    f.stop();

    // Retention: archived segments covered by the durable checkpoint go (age limit 0 here).
    std::thread::sleep(Duration::from_millis(3_500)); // one checkpoint interval
    let before = stemedb_segments(&data);
    let kept = ok_json(
        &[
            "wal-archive",
            "--data-dir",
            s(&data),
            "--to",
            target,
            "--retention-days",
            "0",
            "--json",
        ],
        &env,
    );
    let removed = kept["removed"].as_array().map(Vec::len).unwrap_or(0);
    assert!(removed >= 3, "{kept}");
    assert_eq!(stemedb_segments(&data), before - removed);
    // The server keeps going, and restarts on the shortened WAL.
    write(&client, &k, 5_000, 10);
    let size = head(&client);
    server.stop();
    let back = serve(&data);
    assert_eq!(head(&Client::new(&back.url()).expect("client")), size);
    back.stop();
}

fn stemedb_segments(data: &Path) -> usize {
    std::fs::read_dir(data.join("wal"))
        .expect("wal")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count()
}

#[test]
fn verify_checks_a_stopped_data_dir_and_names_a_damaged_segment() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = serve(&data);
    let client = Client::new(&server.url()).expect("client");
    write(&client, &key(6), 0, 800);
    // A running server's directory is not verified in place.
    let (code, _, err) = stemedb(&["verify", "--data-dir", s(&data)], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("server is running"), "{err}");
    server.stop();
    let (code, out, _) = stemedb(&["verify", "--data-dir", s(&data), "--json"], &[]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["assertions_checked"], 800);
    assert_eq!(v["wal_records_checked"], 800);

    // A torn tail on the active segment is a note (the next start cuts it), not damage.
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .expect("wal")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    let last = segs.last().expect("segment").clone();
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&last, &bytes).expect("write");
    let (code, out, _) = stemedb(&["verify", "--data-dir", s(&data)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("torn tail"), "{out}");

    // A segment cut off while being created (its 32-byte header torn) is a note too, as the
    // start-up that removes it says (decision 0014). (The torn tail goes first: behind a
    // newer segment it would be damage in a sealed one.)
    std::fs::write(&last, &bytes[..bytes.len() - 7]).expect("cut the torn tail");
    let name = last.file_name().and_then(|n| n.to_str()).expect("name");
    let next_id: u64 = name
        .trim_start_matches("segment-")
        .trim_end_matches(".log")
        .parse()
        .expect("segment id");
    let created = data.join(format!("wal/segment-{:08}.log", next_id + 1));
    let mut header = bytes[..32].to_vec();
    header[9] ^= 0x01;
    std::fs::write(&created, &header).expect("write");
    let (code, out, _) = stemedb(&["verify", "--data-dir", s(&data)], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("torn header"), "{out}");
    std::fs::remove_file(&created).expect("remove");

    // One flipped byte in a sealed segment is damage, named.
    let first = &segs[0];
    let mut bytes = std::fs::read(first).expect("read");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(first, &bytes).expect("write");
    let (code, out, _) = stemedb(&["verify", "--data-dir", s(&data)], &[]);
    assert_eq!(code, 1, "{out}");
    let name = first.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(out.contains(&format!("MISMATCH wal/{name}")), "{out}");
}

/// Rewrites a backup's manifest (and its hash file) with `edit`, as an attacker who controls
/// the backup directory could.
fn rewrite_manifest(backup: &Path, edit: impl Fn(&mut Value)) {
    let path = backup.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    edit(&mut m);
    let text = serde_json::to_vec_pretty(&m).expect("json");
    std::fs::write(&path, &text).expect("write");
    std::fs::write(
        backup.join("manifest.json.b3"),
        blake3::hash(&text).to_hex().as_str(),
    )
    .expect("write hash");
}

/// Issue 16 item 12: restore takes only plain relative manifest paths, restores what it
/// verified, and with `--trusted-key` refuses a backup signed by any other key.
#[test]
fn restore_refuses_escaping_paths_and_an_untrusted_signer() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let server = serve(&data);
    let client = Client::new(&server.url()).expect("client");
    write(&client, &key(4), 0, 50);
    let real_key = client.checkpoint_key().expect("key").public_key;
    server.stop();
    let backup = tmp.path().join("backup");
    ok_json(
        &[
            "backup",
            "--data-dir",
            s(&data),
            "--to",
            s(&backup),
            "--json",
        ],
        &[],
    );
    // A secret outside the backup that a hostile manifest points at.
    let secret = tmp.path().join("secret.txt");
    std::fs::write(&secret, b"not yours").expect("write");
    let cases: Vec<(&str, String)> = vec![
        ("absolute", secret.display().to_string()),
        ("dot-dot", "../secret.txt".to_string()),
        ("inner dot-dot", "db/../../secret.txt".to_string()),
        ("dot", "./db/stemedb.redb".to_string()),
    ];
    for (what, path) in cases {
        let bad = tmp.path().join(format!("bad-{}", what.replace(' ', "-")));
        copy_dir(&backup, &bad);
        let hash = blake3::hash(b"not yours").to_hex().to_string();
        rewrite_manifest(&bad, |m| {
            m["files"]
                .as_array_mut()
                .expect("files")
                .push(serde_json::json!({"path": path, "bytes": 9, "blake3": hash}));
        });
        let target = tmp
            .path()
            .join(format!("target-{}", what.replace(' ', "-")));
        let (code, _, err) = stemedb(
            &["restore", "--from", s(&bad), "--data-dir", s(&target)],
            &[],
        );
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains("not a plain relative path"), "{what}: {err}");
        assert!(!target.exists(), "{what}: nothing restored");
        let (code, out, _) = stemedb(&["verify", s(&bad)], &[]);
        assert_eq!(code, 1, "{what}: verify names it: {out}");
    }
    // A pinned key that is not the signer's: refused. The signer's: restored.
    let stranger = hex::encode(key(9).verifying_key().as_bytes());
    let target = tmp.path().join("pinned-wrong");
    let (code, _, err) = stemedb(
        &[
            "restore",
            "--from",
            s(&backup),
            "--data-dir",
            s(&target),
            "--trusted-key",
            &stranger,
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not by the trusted key"), "{err}");
    assert!(!target.exists());
    let target = tmp.path().join("pinned-right");
    let report = ok_json(
        &[
            "restore",
            "--from",
            s(&backup),
            "--data-dir",
            s(&target),
            "--trusted-key",
            &real_key,
            "--json",
        ],
        &[],
    );
    assert_eq!(report["tree_size"], 50);
}
