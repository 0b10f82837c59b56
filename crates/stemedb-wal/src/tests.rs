//! WAL tests on real files with real fsync.

use super::*;

fn body(i: u64) -> Vec<u8> {
    format!("record number {i} {}", "x".repeat((i % 50) as usize)).into_bytes()
}

fn write(wal: &mut Wal, from: u64, n: u64) {
    let bodies: Vec<Vec<u8>> = (from..from + n).map(body).collect();
    let recs: Vec<Record> = bodies.iter().map(|b| Record { kind: 1, body: b }).collect();
    assert_eq!(wal.append_group(&recs).expect("append"), from);
}

fn all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    wal.replay_from(0, |seq, kind, b| {
        assert_eq!(kind, 1);
        out.push((seq, b.to_vec()));
    })
    .expect("replay");
    out
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        fail_fsync_after: None,
    }
}

#[test]
fn append_reopen_replay_and_roll() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let (mut wal, report) = Wal::open(tmp.path(), small()).expect("open");
        assert_eq!(report, RecoveryReport::default());
        for g in 0..30 {
            write(&mut wal, g * 10, 10);
        }
        assert!(
            wal.segment_count() > 3,
            "rolled into {} segments",
            wal.segment_count()
        );
    }
    let (wal, report) = Wal::open(tmp.path(), small()).expect("reopen");
    assert_eq!(report.records, 300);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(wal.next_seq(), 300);
    let got = all(&wal);
    assert_eq!(got.len(), 300);
    for (i, (seq, b)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(b, &body(i as u64));
    }
    let mut tail = Vec::new();
    wal.replay_from(295, |seq, _, _| tail.push(seq))
        .expect("replay tail");
    assert_eq!(tail, vec![295, 296, 297, 298, 299]);
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    names.pop().expect("a segment")
}

/// A way of damaging the last segment.
type Damage = Box<dyn Fn(&Path)>;

#[test]
fn torn_tails_are_truncated_and_nothing_before_them_is_lost() {
    let tails: Vec<(&str, Damage)> = vec![
        (
            "random bytes appended",
            Box::new(|p: &Path| {
                let mut f = OpenOptions::new().append(true).open(p).expect("open");
                f.write_all(&[0x5a, 0x00, 0x00, 0x00, 1, 2, 3, 4, 1, 9, 9])
                    .expect("write");
            }),
        ),
        (
            "last record cut short",
            Box::new(|p: &Path| {
                let len = fs::metadata(p).expect("meta").len();
                let f = OpenOptions::new().write(true).open(p).expect("open");
                f.set_len(len - 3).expect("truncate");
            }),
        ),
        (
            "zeros appended",
            Box::new(|p: &Path| {
                let mut f = OpenOptions::new().append(true).open(p).expect("open");
                f.write_all(&[0u8; 100]).expect("write");
            }),
        ),
    ];
    for (what, damage) in tails {
        let tmp = tempfile::tempdir().expect("tempdir");
        {
            let (mut wal, _) = Wal::open(tmp.path(), small()).expect("open");
            for g in 0..12 {
                write(&mut wal, g * 5, 5);
            }
        }
        damage(&last_segment(tmp.path()));
        let (mut wal, report) = Wal::open(tmp.path(), small()).expect(what);
        assert!(report.truncated_bytes > 0, "{what}: nothing truncated");
        let expected = if what == "last record cut short" {
            59
        } else {
            60
        };
        assert_eq!(all(&wal).len(), expected, "{what}");
        // The log keeps working after the cut, and reopens cleanly.
        write(&mut wal, expected as u64, 3);
        drop(wal);
        let (wal, report) = Wal::open(tmp.path(), small()).expect("reopen");
        assert_eq!(report.truncated_bytes, 0, "{what}");
        assert_eq!(all(&wal).len(), expected + 3, "{what}");
    }
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_stops_the_open_naming_file_and_offset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let (mut wal, _) = Wal::open(tmp.path(), small()).expect("open");
        for g in 0..30 {
            write(&mut wal, g * 10, 10);
        }
    }
    let first = tmp.path().join(segment_name(1));
    let mut bytes = fs::read(&first).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&first, &bytes).expect("write");
    let err = match Wal::open(tmp.path(), small()) {
        Ok(_) => panic!("open must fail on a corrupt sealed segment"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("segment-00000001.log"), "{msg}");
    assert!(msg.contains("byte offset"), "{msg}");
    assert!(matches!(err, WalError::Corrupt { .. }), "{msg}");
}

#[test]
fn a_bad_header_is_corruption_but_a_torn_new_segment_is_recovered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let (mut wal, _) = Wal::open(tmp.path(), small()).expect("open");
        write(&mut wal, 0, 10);
    }
    // A crash right after creating segment 2, before its header reached the disk.
    fs::write(tmp.path().join(segment_name(2)), b"STEM").expect("write");
    let (wal, _) = Wal::open(tmp.path(), small()).expect("recovers");
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(all(&wal).len(), 10);
    drop(wal);
    // A damaged header of a segment holding records is corruption.
    let path = tmp.path().join(segment_name(1));
    let mut bytes = fs::read(&path).expect("read");
    bytes[3] ^= 1;
    fs::write(&path, bytes).expect("write");
    assert!(matches!(
        Wal::open(tmp.path(), small()),
        Err(WalError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn fsync_failure_turns_the_log_read_only_for_good() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = WalOptions {
        segment_bytes: DEFAULT_SEGMENT_BYTES,
        fail_fsync_after: Some(2),
    };
    let (mut wal, _) = Wal::open(tmp.path(), opts).expect("open");
    write(&mut wal, 0, 1);
    write(&mut wal, 1, 1);
    let b = body(2);
    let err = wal.append_group(&[Record { kind: 1, body: &b }]);
    assert!(matches!(err, Err(WalError::WriteFailed(_))), "{err:?}");
    assert!(wal.failure().is_some());
    let err = wal.append_group(&[Record { kind: 1, body: &b }]);
    assert!(matches!(err, Err(WalError::ReadOnly(_))), "{err:?}");
}

#[test]
fn oversized_records_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(tmp.path(), small()).expect("open");
    let big = vec![0u8; MAX_RECORD_BYTES + 1];
    assert!(matches!(
        wal.append_group(&[Record {
            kind: 1,
            body: &big
        }]),
        Err(WalError::RecordTooLarge(_))
    ));
    assert!(wal.failure().is_none());
    write(&mut wal, 0, 1);
}
