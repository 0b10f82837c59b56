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
        // A cut inside the last group drops the whole group: it was never acknowledged.
        let expected = if what == "last record cut short" {
            55
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

/// Writes 12 groups of 5 records into one segment and returns its path and the byte ranges of
/// the groups.
fn one_segment_of_groups(dir: &Path) -> (PathBuf, Vec<(u64, u64)>) {
    let (mut wal, _) = Wal::open(dir, WalOptions::default()).expect("open");
    let path = dir.join(segment_name(1));
    let mut ranges = Vec::new();
    for g in 0..12 {
        let start = fs::metadata(&path).expect("meta").len();
        write(&mut wal, g * 5, 5);
        ranges.push((start, fs::metadata(&path).expect("meta").len()));
    }
    (path, ranges)
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[at as usize] ^= 0x10;
    fs::write(path, &bytes).expect("write");
}

#[test]
fn a_bad_group_followed_by_a_valid_one_is_corruption_not_a_torn_tail() {
    // Each case: which group gets a flipped byte, and whether the open must refuse.
    for (group, refuse) in [(0usize, true), (5, true), (10, true), (11, false)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (path, ranges) = one_segment_of_groups(tmp.path());
        let (start, end) = ranges[group];
        flip(&path, (start + end) / 2);
        match Wal::open(tmp.path(), WalOptions::default()) {
            Ok((wal, report)) => {
                assert!(!refuse, "group {group}: a later valid group was cut");
                assert_eq!(report.truncated_bytes, end - start, "group {group}");
                assert_eq!(all(&wal).len(), 55, "group {group}");
            }
            Err(e) => {
                assert!(
                    refuse,
                    "group {group}: the torn last group was refused: {e}"
                );
                let msg = e.to_string();
                assert!(
                    matches!(e, WalError::Corrupt { offset, .. } if offset == start),
                    "{msg}"
                );
                assert!(msg.contains("not a torn tail"), "{msg}");
                assert!(msg.contains("stemedb restore"), "the way out: {msg}");
                // Nothing was cut: the file is as it was.
                assert_eq!(fs::metadata(&path).expect("meta").len(), ranges[11].1);
            }
        }
    }
}

#[test]
fn a_torn_header_of_the_very_first_segment_is_recovered() {
    for torn in [&b""[..], b"STEM", &[0u8; 32][..]] {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(segment_name(1)), torn).expect("write");
        let (mut wal, _) = Wal::open(tmp.path(), small())
            .unwrap_or_else(|e| panic!("{} header bytes: {e}", torn.len()));
        assert_eq!(wal.next_seq(), 0);
        write(&mut wal, 0, 3);
        drop(wal);
        let (wal, _) = Wal::open(tmp.path(), small()).expect("reopen");
        assert_eq!(all(&wal).len(), 3);
    }
}

#[test]
fn version_1_segments_are_read_and_new_groups_go_to_a_framed_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bodies: Vec<Vec<u8>> = (0..7).map(body).collect();
    let recs: Vec<Record> = bodies.iter().map(|b| Record { kind: 1, body: b }).collect();
    write_v1_segment_for_tests(tmp.path(), 1, 0, &recs).expect("v1");
    let (mut wal, report) = Wal::open(tmp.path(), small()).expect("open v1");
    assert_eq!(report.records, 7);
    assert_eq!(wal.segment_count(), 2, "a framed segment was started");
    write(&mut wal, 7, 4);
    drop(wal);
    let (wal, _) = Wal::open(tmp.path(), small()).expect("reopen");
    let got = all(&wal);
    assert_eq!(got.len(), 11);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, (s, b))| *s == i as u64 && *b == body(i as u64))
    );
    let scan = scan(&tmp.path().join(segment_name(1)), |_, _, _| {}).expect("scan");
    assert_eq!((scan.version, scan.records), (1, 7));
}

#[test]
fn copy_prefix_keeps_exactly_the_records_below_the_cut() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (path, _) = one_segment_of_groups(tmp.path());
    let out = tempfile::tempdir().expect("tempdir");
    let dest = out.path().join(segment_name(1));
    assert_eq!(copy_prefix(&path, &dest, 23).expect("copy"), 23);
    let (wal, _) = Wal::open(out.path(), small()).expect("open copy");
    let got = all(&wal);
    assert_eq!(got.len(), 23);
    assert_eq!(got[22], (22, body(22)));
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
