//! Model-based fuzzing of WAL recovery, in the spirit of redb's `fuzz_redb`: random groups are
//! appended to a real WAL (real files, real fsync, on tmpfs when there is one), then bytes are
//! cut, flipped or zeroed at random places, then the log is opened again and the outcome is
//! checked against a model of what was acknowledged:
//!
//! - recovery yields exactly a prefix of the acknowledged groups, and cuts only groups that are
//!   damaged and have nothing undamaged after them in the last segment (a torn tail); or
//! - it refuses to open with `Corrupt`, and only when some damaged group is followed by an
//!   intact one, lies in a sealed segment, or a segment header is damaged; nothing is changed.
//!
//! Never anything else. Run: `cargo +nightly fuzz run wal_recovery -- -max_total_time=600`.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stemedb_wal::{Record, Wal, WalError, WalOptions, segment_name};

/// Reads the fuzzer's bytes as small numbers; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
}

/// One acknowledged group: where its bytes are and what it holds.
struct Group {
    segment: u32,
    start: u64,
    end: u64,
    count: u64,
}

fn body(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)).collect()
}

fn last_segment(dir: &Path) -> (u32, u64) {
    let segs = stemedb_wal::list_segments(dir).expect("list");
    let (id, path) = segs.last().expect("a segment");
    (*id, fs::metadata(path).expect("meta").len())
}

fn run(data: &[u8]) {
    let mut input = Input(data);
    let base = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let tmp = tempfile::Builder::new()
        .prefix("wal-fuzz")
        .tempdir_in(base)
        .expect("tempdir");
    let dir = tmp.path();
    let opts = WalOptions {
        segment_bytes: 128 + u64::from(input.u8()) * 8,
        fail_fsync_after: None,
    };
    let n_groups = 1 + usize::from(input.u8() % 24);
    let mut groups: Vec<Group> = Vec::new();
    let mut lens: Vec<usize> = Vec::new();
    {
        let (mut wal, _) = Wal::open(dir, opts.clone()).expect("fresh open");
        for _ in 0..n_groups {
            let count = 1 + u64::from(input.u8() % 6);
            let first_seq = wal.next_seq();
            let bodies: Vec<Vec<u8>> = (0..count)
                .map(|i| {
                    let len = usize::from(input.u8() % 80);
                    lens.push(len);
                    body(first_seq + i, len)
                })
                .collect();
            let records: Vec<Record> = bodies.iter().map(|b| Record { kind: 1, body: b }).collect();
            let before = last_segment(dir);
            assert_eq!(wal.append_group(&records).expect("append"), first_seq);
            let after = last_segment(dir);
            let start = if after.0 == before.0 { before.1 } else { 32 };
            groups.push(Group { segment: after.0, start, end: after.1, count });
        }
    }
    // The files as written, then damaged.
    let segs = stemedb_wal::list_segments(dir).expect("list");
    let original: Vec<(u32, Vec<u8>)> =
        segs.iter().map(|(id, p)| (*id, fs::read(p).expect("read"))).collect();
    let mut damaged: Vec<Vec<u8>> = original.iter().map(|(_, b)| b.clone()).collect();
    let n_ops = input.u8() % 4;
    for _ in 0..n_ops {
        let op = input.u8() % 3;
        let which = if op == 0 { damaged.len() - 1 } else { usize::from(input.u8()) % damaged.len() };
        let file = &mut damaged[which];
        if file.is_empty() {
            continue;
        }
        let at = usize::from(input.u16()) % file.len();
        match op {
            0 => file.truncate(usize::from(input.u16()) % (file.len() + 1)),
            1 => file[at] ^= input.u8() | 1,
            _ => {
                let n = 1 + usize::from(input.u8() % 16);
                for b in file.iter_mut().skip(at).take(n) {
                    *b = 0;
                }
            }
        }
    }
    for ((id, _), bytes) in original.iter().zip(&damaged) {
        fs::write(dir.join(segment_name(*id)), bytes).expect("write damage");
    }

    // The model.
    let last_id = original.last().map(|(id, _)| *id).expect("a segment");
    let file_of = |id: u32| original.iter().position(|(i, _)| *i == id).expect("known segment");
    let is_damaged = |g: &Group| {
        let i = file_of(g.segment);
        let (orig, now) = (&original[i].1, &damaged[i]);
        (now.len() as u64) < g.end
            || now[g.start as usize..g.end as usize] != orig[g.start as usize..g.end as usize]
    };
    let mut header_refuses = false;
    for (i, (id, orig)) in original.iter().enumerate() {
        let now = &damaged[i];
        let torn_new = *id == last_id && now.len() <= 32;
        if !torn_new && (now.len() < 32 || now[..32] != orig[..32]) {
            header_refuses = true;
        }
    }
    let bad: Vec<usize> = (0..groups.len()).filter(|i| is_damaged(&groups[*i])).collect();
    let expected: Option<usize> = if header_refuses {
        None
    } else {
        match bad.first() {
            None => Some(groups.len()),
            Some(&k) => {
                let tail_only = (k..groups.len())
                    .all(|i| bad.contains(&i) && groups[i].segment == last_id);
                tail_only.then_some(k)
            }
        }
    };

    match (Wal::open(dir, opts.clone()), expected) {
        (Ok((wal, _)), Some(k)) => {
            let want: u64 = groups[..k].iter().map(|g| g.count).sum();
            let mut got = 0u64;
            wal.replay_from(0, |seq, kind, b| {
                assert_eq!(seq, got, "records out of order");
                assert_eq!(kind, 1);
                assert_eq!(b, body(seq, lens[seq as usize]).as_slice(), "record {seq} changed");
                got += 1;
            })
            .expect("replay after open");
            assert_eq!(got, want, "recovered {got} records, expected the {k} intact groups ({want})");
            assert_eq!(wal.next_seq(), want);
            // The recovered log takes new groups and reopens cleanly.
            let mut wal = wal;
            let b = body(want, 5);
            wal.append_group(&[Record { kind: 1, body: &b }]).expect("append after recovery");
            drop(wal);
            let (wal, report) = Wal::open(dir, opts).expect("reopen after recovery");
            assert_eq!(report.truncated_bytes, 0);
            assert_eq!(wal.next_seq(), want + 1);
        }
        (Err(WalError::Corrupt { .. }), None) => {
            // Refused, and nothing was changed.
            for ((id, _), bytes) in original.iter().zip(&damaged) {
                let now = fs::read(dir.join(segment_name(*id))).expect("read after refusal");
                assert_eq!(&now, bytes, "a refused open changed segment {id}");
            }
        }
        (Ok((wal, _)), None) => panic!(
            "opened at {} records, but damaged groups {bad:?} are not a torn tail (header damage: {header_refuses})",
            wal.next_seq()
        ),
        (Err(e), Some(k)) => panic!("refused ({e}), but damaged groups {bad:?} are a torn tail from group {k}"),
        (Err(e), None) => panic!("refused with a non-corruption error: {e}"),
    }
}

fuzz_target!(|data: &[u8]| run(data));
