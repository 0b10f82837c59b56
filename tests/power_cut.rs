//! Power cuts, simulated with the project's lazy-writes shim (`tests/lazyfs/lazyfs.c`, an
//! LD_PRELOAD library): the real binary runs under load with small memtables and frequent
//! merges and durable checkpoints; the shim keeps the durable image of its data directory (file
//! contents as of their last fsync, directory entries as of their directory's last fsync); the
//! server is killed and the directory is rebuilt from that image alone, keeping at random a torn
//! prefix of what each file had appended since its last fsync. That is what a power cut may
//! leave. The restarted server must hold every acknowledged write, and its log must be a
//! consistent extension of every checkpoint it signed before the cut.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Lcg, start};
use stemedb_client::{Client, ClientError, verify_consistency, verify_inclusion};
use stemedb_core::{SigningKey, sign, signing_key_from_seed};

fn envelope(key: &SigningKey, subject: &str, n: u64) -> Vec<u8> {
    let agent = hex::encode(key.verifying_key().as_bytes());
    let payload = format!(
        r#"{{"v":1,"subject":"{subject}","predicate":"p","object":{n},"agent":"{agent}","ts":{}}}"#,
        1_700_000_000_000u64 + n % 100_000
    );
    match sign(key, payload.into_bytes()) {
        Ok(v) => v.envelope().encode(),
        Err(e) => panic!("test statement must be valid: {e}"),
    }
}

/// Builds the shim with the system C compiler (scripts/test.sh installs one).
fn build_shim(out: &Path) -> PathBuf {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/lazyfs/lazyfs.c");
    let so = out.join("lazyfs.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(src)
        .args(["-ldl", "-lpthread"])
        .status()
        .expect(
            "a C compiler (cc) is required for the power-cut test; scripts/test.sh installs gcc",
        );
    assert!(status.success(), "building the lazy-writes shim failed");
    so
}

fn shadow_name(rel: &str) -> String {
    if rel.is_empty() {
        "%root".to_string()
    } else {
        rel.replace('/', "%")
    }
}

/// Makes `shadow` the durable image of `dir` as it is now (everything in it counts as synced).
fn init_shadow(dir: &Path, shadow: &Path) {
    let _ = fs::remove_dir_all(shadow);
    fs::create_dir_all(shadow.join("ino")).expect("mkdir");
    fs::create_dir_all(shadow.join("dirs")).expect("mkdir");
    fn walk(base: &Path, rel: &str, shadow: &Path) {
        let here = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        let mut listing = String::new();
        for e in fs::read_dir(&here).expect("read dir") {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(e.path()).expect("meta");
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if meta.is_dir() {
                listing.push_str(&format!("d {name}\n"));
                walk(base, &child, shadow);
            } else if meta.is_file() {
                listing.push_str(&format!("f {} {name}\n", meta.ino()));
                fs::copy(e.path(), shadow.join("ino").join(meta.ino().to_string())).expect("copy");
            }
        }
        fs::write(shadow.join("dirs").join(shadow_name(rel)), listing).expect("write");
    }
    walk(dir, "", shadow);
}

/// What survived: the tree of `real` rebuilt from `shadow` into `out`. A file whose real
/// content grew past its durable image keeps, at random, a prefix of the growth (a torn write).
/// Returns the bytes of torn growth kept.
fn rebuild(real: &Path, shadow: &Path, out: &Path, rng: &mut Lcg) -> u64 {
    let mut torn = 0;
    fn entries(shadow: &Path, rel: &str) -> Vec<(bool, Option<u64>, String)> {
        let text =
            fs::read_to_string(shadow.join("dirs").join(shadow_name(rel))).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                if let Some(name) = l.strip_prefix("d ") {
                    return Some((true, None, name.to_string()));
                }
                let rest = l.strip_prefix("f ")?;
                let (ino, name) = rest.split_once(' ')?;
                Some((false, ino.parse().ok(), name.to_string()))
            })
            .collect()
    }
    let mut stack = vec![String::new()];
    fs::create_dir_all(out).expect("mkdir");
    while let Some(rel) = stack.pop() {
        for (is_dir, ino, name) in entries(shadow, &rel) {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if is_dir {
                fs::create_dir_all(out.join(&child)).expect("mkdir");
                stack.push(child);
                continue;
            }
            let Some(ino) = ino else { continue };
            let mut content =
                fs::read(shadow.join("ino").join(ino.to_string())).unwrap_or_default();
            let real_path = real.join(&child);
            if let Ok(meta) = fs::metadata(&real_path)
                && meta.ino() == ino
                && meta.len() > content.len() as u64
                && rng.next().is_multiple_of(2)
                && let Ok(now) = fs::read(&real_path)
            {
                let grown = now.len() - content.len();
                let keep = (rng.next() as usize) % (grown + 1);
                content.extend_from_slice(&now[content.len()..content.len() + keep]);
                torn += keep as u64;
            }
            fs::write(out.join(&child), content).expect("write");
        }
    }
    torn
}

#[test]
fn power_cuts_under_load_lose_no_acknowledged_write() {
    const ROUNDS: usize = 8;
    let tmp = tempfile::tempdir().expect("tempdir");
    let shim = build_shim(tmp.path());
    let keys: Arc<Vec<SigningKey>> = Arc::new(
        (0..3u8)
            .map(|i| signing_key_from_seed(&[i + 90; 32]))
            .collect(),
    );
    let mut rng = Lcg(0xc0ffee);
    let mut dir = tmp.path().join("data-0");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut acked_all: Vec<String> = Vec::new();
    let mut signed_before: Vec<stemedb_merkle::Checkpoint> = Vec::new();
    let mut torn_total = 0;
    let flags = |d: &str| -> Vec<String> {
        [
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            d,
            "--wal-segment-bytes",
            "65536",
            "--checkpoint-interval-ms",
            "100",
            "--memtable-rows",
            "150",
            "--memtable-ms",
            "30",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    for round in 0..ROUNDS {
        let shadow = tmp.path().join(format!("shadow-{round}"));
        init_shadow(&dir, &shadow);
        let d = dir.to_str().expect("utf-8").to_string();
        let args = flags(&d);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = [
            ("LD_PRELOAD", shim.to_str().expect("utf-8")),
            ("LAZYFS_ROOT", d.as_str()),
            ("LAZYFS_SHADOW", shadow.to_str().expect("utf-8")),
        ];
        let server = start(tmp.path(), &args, &env);
        let client = Client::new(&server.url()).expect("client");
        let cp_key = client.checkpoint_key().expect("key");
        // After the previous cut: every acknowledged write is here, and the log extends every
        // checkpoint signed before.
        let now = client.verified_checkpoint(&cp_key).expect("checkpoint");
        assert!(
            now.size >= acked_all.len() as u64,
            "round {round}: tree size {} < {} acknowledged",
            now.size,
            acked_all.len()
        );
        for id in &acked_all {
            assert!(
                client.assertion(id).expect("read").is_some(),
                "round {round}: acknowledged {id} lost in a power cut"
            );
        }
        for old in &signed_before {
            let proof = client.consistency(old.size, Some(now.size)).expect("proof");
            verify_consistency(&proof, old, &now).expect("the log extends what was signed");
        }
        if let Some(id) = acked_all.last() {
            let p = client.inclusion(id, Some(now.size)).expect("inclusion");
            verify_inclusion(&p, &now).expect("inclusion verifies");
        }
        signed_before = vec![now];

        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let signed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..4usize {
            let (url, acked, stop, keys) =
                (server.url(), acked.clone(), stop.clone(), keys.clone());
            threads.push(std::thread::spawn(move || {
                let client = Client::new(&url).expect("client");
                let key = &keys[w % keys.len()];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let subject = format!("power/r{round}/w{w}/s{}", n % 13);
                    let seq = (round as u64) << 30 | (w as u64) << 24 | n;
                    if n % 4 == 3 {
                        let batch: Vec<Vec<u8>> = (0..8)
                            .map(|i| envelope(key, &subject, seq * 10 + i))
                            .collect();
                        match client.assert_batch(&batch) {
                            Ok(rs) => {
                                let mut a = acked.lock().expect("lock");
                                for r in rs {
                                    a.push(r.expect("accepted").id);
                                }
                            }
                            Err(ClientError::Http { .. }) => break,
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    } else {
                        match client.assert_envelope(&envelope(key, &subject, seq * 10)) {
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
            let (url, stop, signed, cp_key) =
                (server.url(), stop.clone(), signed.clone(), cp_key.clone());
            threads.push(std::thread::spawn(move || {
                let client = Client::new(&url).expect("client");
                while !stop.load(Ordering::Relaxed) {
                    match client.verified_checkpoint(&cp_key) {
                        Ok(cp) => signed.lock().expect("lock").push(cp),
                        Err(ClientError::Http { .. }) => break,
                        Err(e) => panic!("checkpoint: {e}"),
                    }
                    std::thread::sleep(Duration::from_millis(30));
                }
            }));
        }
        let flowing = std::time::Instant::now();
        while acked.lock().expect("lock").len() < 20 && flowing.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300 + rng.next() % 900));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("thread");
        }
        acked_all.extend(acked.lock().expect("lock").iter().cloned());
        let signed = signed.lock().expect("lock").clone();
        // Keep the largest and a few others (each one is checked after the cut).
        let mut by_size: HashMap<u64, stemedb_merkle::Checkpoint> = HashMap::new();
        for cp in signed {
            by_size.insert(cp.size, cp);
        }
        let mut sizes: Vec<u64> = by_size.keys().copied().collect();
        sizes.sort_unstable();
        for s in sizes.iter().rev().take(3).chain(sizes.iter().take(1)) {
            if let Some(cp) = by_size.get(s) {
                signed_before.push(cp.clone());
            }
        }
        // The power cut: only the durable image survives.
        let next = tmp.path().join(format!("data-{}", round + 1));
        torn_total += rebuild(&dir, &shadow, &next, &mut rng);
        dir = next;
    }
    // The last cut, checked once more.
    let d = dir.to_str().expect("utf-8").to_string();
    let args = flags(&d);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = start(tmp.path(), &args, &[]);
    let client = Client::new(&server.url()).expect("client");
    let cp_key = client.checkpoint_key().expect("key");
    let now = client.verified_checkpoint(&cp_key).expect("checkpoint");
    for id in &acked_all {
        assert!(client.assertion(id).expect("read").is_some(), "lost {id}");
    }
    for old in &signed_before {
        let proof = client.consistency(old.size, Some(now.size)).expect("proof");
        verify_consistency(&proof, old, &now).expect("consistent");
    }
    eprintln!(
        "power cuts: {ROUNDS} cuts under load, {} acknowledged writes, none lost; {torn_total} \
         bytes of torn, unsynced growth kept across the cuts",
        acked_all.len()
    );
    server.stop();
}
