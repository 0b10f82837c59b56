//! `stemedb-wal`: the write-ahead log.
//!
//! Format (little-endian throughout; docs/spec.md "Write-ahead log"):
//!
//! ```text
//! segment file  wal/segment-NNNNNNNN.log
//!   header (32 bytes): magic "STEMWAL\0" | version u32 = 2 | reserved u32 = 0 |
//!                      first_seq u64 | crc32c(previous 24 bytes) u32 | zero u32
//!   groups (version 2), one per `append_group`:
//!     frame (24 bytes): magic "SGRP" | len u32 | count u32 | first_seq u64 |
//!                       crc32c(the frame's first 20 bytes || the len bytes of records) u32
//!     records (len bytes): count records of
//!                       len u32 | crc32c(len || kind || body) u32 | kind u8 | body[len]
//! ```
//!
//! Record `i` of a segment has sequence number `first_seq + i`; sequence numbers continue across
//! segments. `Wal::append_group` writes a whole group as one frame with one `write` and one
//! `fdatasync`, and returns only after the fsync: a record is durable when `append_group`
//! returns `Ok`. Version 1 segments (records without group frames, written before issue 16) are
//! still read; each of their records counts as a group of one.
//!
//! Recovery (`Wal::open`) checks every segment (decision 0014). A bad group in the last segment
//! is a **torn tail** only when nothing valid follows it: then it and everything after it are
//! truncated (and logged), since no caller was answered for them (the next group is written only
//! after this one's fsync returned). A bad group followed by any group that verifies, a bad
//! group in a sealed segment, or a bad segment header is **corruption**: the open stops with an
//! error naming the file, the byte offset and the way out, and nothing is cut.
//!
//! After an fsync or write error the log is **failed**: every later append returns
//! `WalError::ReadOnly` until the process restarts. It never retries and forgets.
//!
//! Architecture Invariant: only this crate writes under `wal/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Segment size at which the log rolls to a new segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 10 * 1024 * 1024;
/// Largest record body accepted (on write and on read).
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Largest record area of one group frame (on write and on read).
pub const MAX_GROUP_BYTES: usize = 256 * 1024 * 1024;
/// Bytes of a segment header.
pub const HEADER_BYTES: u64 = 32;
/// Bytes of a record header (len, crc, kind).
pub const RECORD_HEADER_BYTES: usize = 9;
/// Bytes of a group frame header.
pub const FRAME_BYTES: usize = 24;
const MAGIC: &[u8; 8] = b"STEMWAL\0";
const FRAME_MAGIC: &[u8; 4] = b"SGRP";
/// Segment format written by this build.
const VERSION: u32 = 2;
/// The unframed format of earlier builds, still read.
const VERSION_1: u32 = 1;
/// What an operator does about corruption, for every corruption error.
pub const WAY_OUT: &str = "nothing was cut; restore from a backup plus the WAL archive \
    (stemedb restore --from BACKUP --wal-archive ARCHIVE), see docs/disaster-recovery.md";

/// Everything that can go wrong with the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O error outside the write path (open, read, create).
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Corruption that is not a torn tail: start-up must stop.
    #[error("WAL corruption in {path} at byte offset {offset}: {what}; {WAY_OUT}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// A write or fsync failed: the log is now read-only, and whether the group reached the
    /// disk is unknown.
    #[error("WAL write or fsync failed, the log is now read-only: {0}")]
    WriteFailed(String),
    /// An earlier write or fsync failed; nothing more is written until restart.
    #[error("WAL is read-only after an earlier write failure: {0}")]
    ReadOnly(String),
    /// A record body is larger than `MAX_RECORD_BYTES`, or a group larger than
    /// `MAX_GROUP_BYTES`; nothing was written.
    #[error("record or group of {0} bytes exceeds its limit")]
    RecordTooLarge(usize),
}

/// Options for opening the log.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Roll to a new segment when the next group would make the active one larger than this.
    pub segment_bytes: u64,
    /// Test hook: fail every fsync after this many successful ones (fault injection).
    pub fail_fsync_after: Option<u64>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fail_fsync_after: None,
        }
    }
}

/// One record to append.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Record kind (the store defines the kinds).
    pub kind: u8,
    /// Record body.
    pub body: &'a [u8],
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// Records found (after truncation).
    pub records: u64,
    /// Bytes cut from the end of the last segment as a torn tail.
    pub truncated_bytes: u64,
}

#[derive(Debug, Clone)]
struct Segment {
    id: u32,
    path: PathBuf,
    first_seq: u64,
    records: u64,
}

/// The write-ahead log of one data directory.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    // Invariant: `segments` is non-empty and sorted by id; the last one is the active segment,
    // open for append in `active`, whose length is `active_len`, and it is of format `VERSION`.
    segments: Vec<Segment>,
    active: File,
    active_len: u64,
    fsyncs: u64,
    failed: Option<String>,
}

/// The file name of segment `id`.
pub fn segment_name(id: u32) -> String {
    format!("segment-{id:08}.log")
}

fn parse_segment_name(name: &str) -> Option<u32> {
    name.strip_prefix("segment-")?
        .strip_suffix(".log")
        .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fsyncs a directory so that a created or renamed entry in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, fsyncing each parent a new directory was made in, so
/// the directory entries themselves survive a power cut.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => sync_dir(p)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

fn header(version: u32, first_seq: u64) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The version and first sequence number of a segment header, if it is one this build reads.
fn parse_header(h: &[u8]) -> Option<(u32, u64)> {
    let h: &[u8; HEADER_BYTES as usize] = h.get(..HEADER_BYTES as usize)?.try_into().ok()?;
    let version = u32::from_le_bytes(h[8..12].try_into().ok()?);
    let first_seq = u64::from_le_bytes(h[16..24].try_into().ok()?);
    (matches!(version, VERSION | VERSION_1) && *h == header(version, first_seq))
        .then_some((version, first_seq))
}

/// Encodes one record onto `out`.
pub fn encode_record(out: &mut Vec<u8>, kind: u8, body: &[u8]) -> Result<(), WalError> {
    if body.len() > MAX_RECORD_BYTES {
        return Err(WalError::RecordTooLarge(body.len()));
    }
    let len = (body.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, &[kind]);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    Ok(())
}

/// Encodes `records` as one group frame starting at sequence number `first_seq`.
fn encode_group(first_seq: u64, records: &[Record<'_>]) -> Result<Vec<u8>, WalError> {
    let body_len: usize = records
        .iter()
        .map(|r| r.body.len() + RECORD_HEADER_BYTES)
        .sum();
    if body_len > MAX_GROUP_BYTES {
        return Err(WalError::RecordTooLarge(body_len));
    }
    let mut buf = Vec::with_capacity(FRAME_BYTES + body_len);
    buf.extend_from_slice(FRAME_MAGIC);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    buf.extend_from_slice(&first_seq.to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    for r in records {
        encode_record(&mut buf, r.kind, r.body)?;
    }
    let mut crc = crc32c::crc32c(&buf[..20]);
    crc = crc32c::crc32c_append(crc, &buf[FRAME_BYTES..]);
    buf[20..24].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// One record inside a buffer: `(kind, body, bytes taken)`, or why it is not one.
fn parse_record(b: &[u8]) -> Result<(u8, &[u8], usize), String> {
    if b.len() < RECORD_HEADER_BYTES {
        return Err(format!(
            "{} bytes left, shorter than a record header",
            b.len()
        ));
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let kind = b[8];
    if len > MAX_RECORD_BYTES {
        return Err(format!("record length {len} is impossible"));
    }
    let Some(body) = b.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
        return Err(format!(
            "record of {len} bytes runs past the end of the file"
        ));
    };
    let mut want = crc32c::crc32c(&b[..4]);
    want = crc32c::crc32c_append(want, &[kind]);
    want = crc32c::crc32c_append(want, body);
    if want != crc {
        return Err("record checksum mismatch".into());
    }
    Ok((kind, body, RECORD_HEADER_BYTES + len))
}

/// A group frame whose checksum holds: `(first_seq, count, records area)`, or why not.
fn parse_frame(b: &[u8]) -> Result<(u64, u32, &[u8]), String> {
    if b.len() < FRAME_BYTES {
        return Err(format!(
            "{} bytes left, shorter than a group frame",
            b.len()
        ));
    }
    if &b[..4] != FRAME_MAGIC {
        return Err("no group frame here (bad magic)".into());
    }
    let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
    let count = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    let first_seq = u64::from_le_bytes(b[12..20].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
    if len > MAX_GROUP_BYTES {
        return Err(format!("group length {len} is impossible"));
    }
    let Some(records) = b.get(FRAME_BYTES..FRAME_BYTES + len) else {
        return Err(format!(
            "group of {len} bytes runs past the end of the file"
        ));
    };
    let mut want = crc32c::crc32c(&b[..20]);
    want = crc32c::crc32c_append(want, records);
    if want != crc {
        return Err("group checksum mismatch".into());
    }
    Ok((first_seq, count, records))
}

/// How a scan of one segment ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSpot {
    /// Byte offset of the first group (or version 1 record) that does not verify.
    pub offset: u64,
    /// Why it does not verify.
    pub why: String,
    /// Byte offset of a later group (or version 1 record) in the same file that does verify:
    /// when set, the bad spot is not a torn tail but corruption.
    pub valid_after: Option<u64>,
}

/// What reading one segment found.
struct Scanned {
    version: u32,
    first_seq: u64,
    records: u64,
    good_end: u64,
    len: u64,
    bad: Option<BadSpot>,
}

/// The first offset after `from` where a group frame (version 2) or a record (version 1)
/// verifies.
fn find_valid_after(buf: &[u8], from: usize, version: u32) -> Option<u64> {
    let mut at = from + 1;
    while at < buf.len() {
        let rest = &buf[at..];
        if version == VERSION {
            let i = rest.windows(4).position(|w| w == FRAME_MAGIC)?;
            if parse_frame(&rest[i..]).is_ok() {
                return Some((at + i) as u64);
            }
            at += i + 1;
        } else {
            if parse_record(rest).is_ok() {
                return Some(at as u64);
            }
            at += 1;
        }
    }
    None
}

/// Reads one segment. Calls `each(seq, kind, body)` for every good record, in order. A missing,
/// short or bad header is `Corrupt` at offset 0; a valid group frame whose sequence number or
/// records contradict it is `Corrupt` (it verified, so it is what was written); the first group
/// that does not verify ends the scan and is reported in `bad`.
/// Checks that a segment starting at `first_seq` follows one that ended before `want`.
fn check_first_seq(path: &Path, first_seq: u64, want: u64) -> Result<(), WalError> {
    if first_seq < want {
        return Err(WalError::Corrupt {
            path: path.to_path_buf(),
            offset: 16,
            what: format!(
                "segment starts at sequence {first_seq}, overlapping the previous one (expected {want})"
            ),
        });
    }
    if first_seq > want {
        // Written by `advance_to` after records the store already held durably were lost
        // from the WAL's tail; the store checks that it needs none of the missing ones.
        tracing::warn!(
            segment = %path.display(),
            first_seq,
            expected = want,
            "WAL sequence gap before this segment"
        );
    }
    Ok(())
}

/// Scans every segment (checksums of every group) on up to four threads; the results are in
/// the order of `paths`. Segments are independent until their sequence numbers are chained,
/// which the caller does in order afterwards.
fn scan_all(paths: &[PathBuf]) -> Vec<Result<Scanned, WalError>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(paths.len().max(1));
    if threads <= 1 {
        return paths
            .iter()
            .map(|p| scan_segment(p, None, |_, _, _| {}))
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<Result<Scanned, WalError>>> = (0..paths.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(p) = paths.get(i) else {
                            return mine;
                        };
                        mine.push((i, scan_segment(p, None, |_, _, _| {})));
                    }
                })
            })
            .collect();
        // A panicking scan leaves its slots empty: reported below, never skipped.
        for w in workers {
            if let Ok(results) = w.join() {
                for (i, r) in results {
                    out[i] = Some(r);
                }
            }
        }
    });
    out.into_iter()
        .zip(paths)
        .map(|(r, p)| {
            r.unwrap_or_else(|| {
                Err(WalError::Corrupt {
                    path: p.clone(),
                    offset: 0,
                    what: "the scan of this segment did not finish (a scanning thread panicked)"
                        .into(),
                })
            })
        })
        .collect()
}

fn scan_segment(
    path: &Path,
    expected_first_seq: Option<u64>,
    mut each: impl FnMut(u64, u8, &[u8]),
) -> Result<Scanned, WalError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(io_err(path))?;
    let len = buf.len() as u64;
    let corrupt = |offset: u64, what: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        what,
    };
    if len < HEADER_BYTES {
        return Err(corrupt(
            0,
            format!("file of {len} bytes has no complete header"),
        ));
    }
    let Some((version, first_seq)) = parse_header(&buf) else {
        return Err(corrupt(
            0,
            "bad segment header (magic, version or checksum)".into(),
        ));
    };
    if let Some(want) = expected_first_seq {
        check_first_seq(path, first_seq, want)?;
    }
    let mut pos = HEADER_BYTES as usize;
    let mut seq = first_seq;
    let bad = loop {
        if pos == buf.len() {
            break None;
        }
        let rest = &buf[pos..];
        if version == VERSION_1 {
            match parse_record(rest) {
                Ok((kind, body, taken)) => {
                    each(seq, kind, body);
                    seq += 1;
                    pos += taken;
                    continue;
                }
                Err(why) => break Some((pos, why)),
            }
        }
        let (group_seq, count, records) = match parse_frame(rest) {
            Ok(f) => f,
            Err(why) => break Some((pos, why)),
        };
        if group_seq != seq {
            return Err(corrupt(
                pos as u64,
                format!("group frame says sequence {group_seq}, expected {seq}"),
            ));
        }
        if count == 0 {
            return Err(corrupt(pos as u64, "empty group frame".into()));
        }
        let mut inner = 0usize;
        for _ in 0..count {
            match parse_record(&records[inner..]) {
                Ok((kind, body, taken)) => {
                    each(seq, kind, body);
                    seq += 1;
                    inner += taken;
                }
                Err(why) => {
                    return Err(corrupt(
                        (pos + FRAME_BYTES + inner) as u64,
                        format!("a record inside a verified group frame: {why}"),
                    ));
                }
            }
        }
        if inner != records.len() {
            return Err(corrupt(
                pos as u64,
                "group frame holds bytes after its last record".into(),
            ));
        }
        pos += FRAME_BYTES + records.len();
    };
    let bad = bad.map(|(offset, why)| BadSpot {
        offset: offset as u64,
        why,
        valid_after: find_valid_after(&buf, offset, version),
    });
    Ok(Scanned {
        version,
        first_seq,
        records: seq - first_seq,
        good_end: pos as u64,
        len,
        bad,
    })
}

impl Wal {
    /// Opens (or creates) the log in `dir`, checking every segment and truncating a torn tail of
    /// the last one.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, RecoveryReport), WalError> {
        Wal::open_at_least(dir, opts, 0)
    }

    /// [`Wal::open`] for a caller that knows the records below `floor` were acknowledged (its
    /// own files, written only after their group's fsync returned, hold them): a damaged last
    /// group whose cut would end the log below `floor` is corruption, not a torn tail, and
    /// nothing is cut. (Without such evidence the last group of the last segment cannot be told
    /// from a torn write: decision 0014.)
    pub fn open_at_least(
        dir: &Path,
        opts: WalOptions,
        floor: u64,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        create_dir_durable(dir).map_err(io_err(dir))?;
        let ids: Vec<u32> = list_segments(dir)?.into_iter().map(|(id, _)| id).collect();
        let mut report = RecoveryReport {
            segments: ids.len(),
            ..RecoveryReport::default()
        };
        let mut segments = Vec::with_capacity(ids.len().max(1));
        let mut next_seq: Option<u64> = None;
        let mut last_version = VERSION;
        let paths: Vec<PathBuf> = ids.iter().map(|id| dir.join(segment_name(*id))).collect();
        let scans = scan_all(&paths);
        for (i, (id, (path, scanned))) in ids.iter().zip(paths.into_iter().zip(scans)).enumerate() {
            let last = i + 1 == ids.len();
            let scanned = match scanned {
                Err(WalError::Corrupt { offset: 0, .. })
                    if last && file_len(&path)? <= HEADER_BYTES =>
                {
                    // A crash while creating this segment (the first one, or the next one at a
                    // roll): its header never became durable and it can hold no record.
                    // Remove it; the previous segment, if any, is the active one again.
                    tracing::warn!(segment = %path.display(), "removing a segment whose header was torn");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    sync_dir(dir).map_err(io_err(dir))?;
                    report.segments -= 1;
                    break;
                }
                other => other?,
            };
            if let Some(want) = next_seq {
                check_first_seq(&path, scanned.first_seq, want)?;
            }
            if let Some(bad) = &scanned.bad {
                if !last {
                    return Err(WalError::Corrupt {
                        path,
                        offset: bad.offset,
                        what: format!("{} (sealed segment: not a torn tail)", bad.why),
                    });
                }
                if let Some(after) = bad.valid_after {
                    return Err(WalError::Corrupt {
                        path,
                        offset: bad.offset,
                        what: format!(
                            "{}, but a valid group follows at byte offset {after}: not a torn \
                             tail (acknowledged records may follow it)",
                            bad.why
                        ),
                    });
                }
                let end = scanned.first_seq + scanned.records;
                if end < floor {
                    return Err(WalError::Corrupt {
                        path,
                        offset: bad.offset,
                        what: format!(
                            "{}, and cutting it would end the log at record {end}, but the \
                             store's files show records up to {floor} were applied after \
                             their fsync: not a torn tail (acknowledged records would be cut)",
                            bad.why
                        ),
                    });
                }
                let cut = scanned.len - scanned.good_end;
                tracing::warn!(
                    segment = %path.display(),
                    offset = scanned.good_end,
                    cut_bytes = cut,
                    reason = %bad.why,
                    "truncating a damaged WAL tail: a torn write, never acknowledged, unless the store \
                     holds those records (then it logs that it writes them back)"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(scanned.good_end).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                report.truncated_bytes = cut;
            }
            report.records += scanned.records;
            next_seq = Some(scanned.first_seq + scanned.records);
            last_version = scanned.version;
            segments.push(Segment {
                id: *id,
                path,
                first_seq: scanned.first_seq,
                records: scanned.records,
            });
        }
        // A group written whole but cut off before its fsync (never acknowledged) reads as whole
        // and is replayed: make it durable before anything is derived from it, so that a power
        // cut cannot take it back from under the value log, or from a retry told it is stored.
        if let Some(seg) = segments.last()
            && seg.records > 0
        {
            File::open(&seg.path)
                .and_then(|f| f.sync_data())
                .map_err(io_err(&seg.path))?;
        }
        let (active, active_len) = match segments.last() {
            Some(seg) if last_version == VERSION => {
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(io_err(&seg.path))?;
                let len = f.seek(SeekFrom::End(0)).map_err(io_err(&seg.path))?;
                (f, len)
            }
            Some(seg) => {
                // A version 1 segment is sealed as it is; new groups go to a framed segment.
                let (next, first) = (seg.id + 1, seg.first_seq + seg.records);
                let (seg, f) = create_segment(dir, next, first)?;
                segments.push(seg);
                (f, HEADER_BYTES)
            }
            None => {
                let first = next_seq.unwrap_or(0);
                let (seg, f) = create_segment(dir, 1, first)?;
                segments.push(seg);
                (f, HEADER_BYTES)
            }
        };
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                opts,
                segments,
                active,
                active_len,
                fsyncs: 0,
                failed: None,
            },
            report,
        ))
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.segments
            .last()
            .map(|s| s.first_seq + s.records)
            .unwrap_or(0)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Why the log is read-only, if it is.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Appends `records` as one group frame with one write and one fsync. Returns the sequence
    /// number of the first record. When this returns `Ok`, every record is durable. On
    /// `RecordTooLarge` nothing was written; on `WriteFailed` the group may or may not be on
    /// disk (a restart finds out), and the log is read-only from then on.
    pub fn append_group(&mut self, records: &[Record<'_>]) -> Result<u64, WalError> {
        if let Some(why) = &self.failed {
            return Err(WalError::ReadOnly(why.clone()));
        }
        let first = self.next_seq();
        if records.is_empty() {
            return Ok(first);
        }
        let buf = encode_group(first, records)?;
        if self.active_len > HEADER_BYTES
            && self.active_len + buf.len() as u64 > self.opts.segment_bytes
        {
            self.roll(first)?;
        }
        let result = self.active.write_all(&buf).and_then(|()| self.fsync());
        if let Err(e) = result {
            let why = format!("{e}");
            tracing::error!(error = %why, "WAL write/fsync failed: turning read-only");
            self.failed = Some(why.clone());
            return Err(WalError::WriteFailed(why));
        }
        self.active_len += buf.len() as u64;
        if let Some(seg) = self.segments.last_mut() {
            seg.records += records.len() as u64;
        }
        Ok(first)
    }

    fn fsync(&mut self) -> io::Result<()> {
        if let Some(limit) = self.opts.fail_fsync_after
            && self.fsyncs >= limit
        {
            return Err(io::Error::other("injected fsync failure (test hook)"));
        }
        self.active.sync_data()?;
        self.fsyncs += 1;
        Ok(())
    }

    /// Seals the active segment and starts the next one (file and directory fsync'd).
    fn roll(&mut self, first_seq: u64) -> Result<(), WalError> {
        let id = self.segments.last().map(|s| s.id + 1).unwrap_or(1);
        let (seg, file) = create_segment(&self.dir, id, first_seq).inspect_err(|e| {
            self.failed = Some(e.to_string());
        })?;
        self.segments.push(seg);
        self.active = file;
        self.active_len = HEADER_BYTES;
        Ok(())
    }

    /// Seals the active segment if it holds any record, so that an archiver can copy it; returns
    /// the sequence number every sealed segment now ends before.
    pub fn seal(&mut self) -> Result<u64, WalError> {
        if let Some(why) = &self.failed {
            return Err(WalError::ReadOnly(why.clone()));
        }
        let next = self.next_seq();
        if self.segments.last().map(|s| s.records > 0).unwrap_or(false) {
            self.roll(next)?;
        }
        Ok(next)
    }

    /// Makes the next record's sequence number `seq` when the log is behind it (records the
    /// store already holds durably were lost from the WAL's tail). Starts a new segment whose
    /// header says `seq`; an empty active segment is replaced rather than sealed.
    pub fn advance_to(&mut self, seq: u64) -> Result<(), WalError> {
        if self.next_seq() >= seq {
            return Ok(());
        }
        if let Some(why) = &self.failed {
            return Err(WalError::ReadOnly(why.clone()));
        }
        let empty_active = self
            .segments
            .last()
            .map(|s| s.records == 0)
            .unwrap_or(false);
        if empty_active
            && self.segments.len() > 1
            && let Some(seg) = self.segments.pop()
        {
            fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        tracing::warn!(
            from = self.next_seq(),
            to = seq,
            "advancing the WAL sequence"
        );
        self.roll(seq)
    }

    /// Calls `each(seq, kind, body)` for every record with sequence number `>= from_seq`, in
    /// order.
    pub fn replay_from(
        &self,
        from_seq: u64,
        mut each: impl FnMut(u64, u8, &[u8]),
    ) -> Result<(), WalError> {
        for (i, seg) in self.segments.iter().enumerate() {
            let end = self
                .segments
                .get(i + 1)
                .map(|s| s.first_seq)
                .unwrap_or(seg.first_seq + seg.records);
            if end <= from_seq {
                continue;
            }
            let scanned = scan_segment(&seg.path, Some(seg.first_seq), |seq, kind, body| {
                if seq >= from_seq {
                    each(seq, kind, body);
                }
            })?;
            if let Some(bad) = scanned.bad {
                return Err(WalError::Corrupt {
                    path: seg.path.clone(),
                    offset: bad.offset,
                    what: format!("changed since it was opened: {}", bad.why),
                });
            }
        }
        Ok(())
    }
}

/// What a read-only scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// Segment number from the file name.
    pub id: u32,
    /// Format version from the header (1: unframed records, 2: group frames).
    pub version: u32,
    /// Sequence number of its first record (from the header).
    pub first_seq: u64,
    /// Good records.
    pub records: u64,
    /// Byte offset where the good records end.
    pub good_end: u64,
    /// File length.
    pub len: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub bad: Option<String>,
    /// With `bad`: the offset of a later group that verifies. Then the damage is corruption even
    /// in the active segment, never a torn tail.
    pub valid_after: Option<u64>,
}

impl SegmentScan {
    /// The sequence number after its last good record.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.records
    }
}

/// The segments in `dir` as `(id, path)`, sorted by id. Other files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((id, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(id, _)| *id);
    Ok(out)
}

/// The segment number in a segment file name (`segment-NNNNNNNN.log`).
pub fn segment_id(name: &str) -> Option<u32> {
    parse_segment_name(name)
}

/// Reads one segment without changing it: checks the header and every group, and calls
/// `each(seq, kind, body)` for every good record. A bad header is an error; a bad group ends the
/// scan and is reported in `SegmentScan::bad` (a torn tail, if this is the active segment and
/// `valid_after` is `None`).
pub fn scan(path: &Path, each: impl FnMut(u64, u8, &[u8])) -> Result<SegmentScan, WalError> {
    let id = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_segment_name)
        .unwrap_or(0);
    let s = scan_segment(path, None, each)?;
    Ok(SegmentScan {
        id,
        version: s.version,
        first_seq: s.first_seq,
        records: s.records,
        good_end: s.good_end,
        len: s.len,
        valid_after: s.bad.as_ref().and_then(|b| b.valid_after),
        bad: s.bad.map(|b| b.why),
    })
}

/// Creates `dir` holding one empty segment numbered `id` whose first record will have sequence
/// number `first_seq` (a restored data directory's log starts after its snapshot). Refuses a
/// directory that already holds segments.
pub fn init(dir: &Path, id: u32, first_seq: u64) -> Result<(), WalError> {
    create_dir_durable(dir).map_err(io_err(dir))?;
    if !list_segments(dir)?.is_empty() {
        return Err(WalError::Io {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "the WAL already has segments"),
        });
    }
    create_segment(dir, id, first_seq).map(|_| ())
}

/// Writes a copy of segment `src` to `dest` holding only its records with sequence number below
/// `end_seq` (point-in-time restore), fsync'd, in this build's format. Returns how many records
/// it kept.
pub fn copy_prefix(src: &Path, dest: &Path, end_seq: u64) -> Result<u64, WalError> {
    let mut kept: Vec<(u8, Vec<u8>)> = Vec::new();
    let scanned = scan(src, |seq, kind, body| {
        if seq < end_seq {
            kept.push((kind, body.to_vec()));
        }
    })?;
    if let Some(why) = scanned.bad {
        return Err(WalError::Corrupt {
            path: src.to_path_buf(),
            offset: scanned.good_end,
            what: why,
        });
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(io_err(dest))?;
    let mut bytes = header(VERSION, scanned.first_seq).to_vec();
    let mut seq = scanned.first_seq;
    for chunk in kept.chunks(4096) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|(kind, body)| Record { kind: *kind, body })
            .collect();
        bytes.extend_from_slice(&encode_group(seq, &records)?);
        seq += records.len() as u64;
    }
    out.write_all(&bytes).map_err(io_err(dest))?;
    out.sync_all().map_err(io_err(dest))?;
    Ok(kept.len() as u64)
}

/// Removes a sealed segment that is archived and no longer needed (retention). Refuses the
/// highest-numbered segment, which may be the active one.
pub fn remove_sealed(dir: &Path, id: u32) -> Result<(), WalError> {
    let segments = list_segments(dir)?;
    match segments.last() {
        Some((last, _)) if *last > id => {}
        _ => {
            return Err(WalError::Io {
                path: dir.join(segment_name(id)),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the newest segment is never removed",
                ),
            });
        }
    }
    let path = dir.join(segment_name(id));
    fs::remove_file(&path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))
}

fn file_len(path: &Path) -> Result<u64, WalError> {
    Ok(fs::metadata(path).map_err(io_err(path))?.len())
}

fn create_segment(dir: &Path, id: u32, first_seq: u64) -> Result<(Segment, File), WalError> {
    let path = dir.join(segment_name(id));
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(&header(VERSION, first_seq))
        .map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))?;
    Ok((
        Segment {
            id,
            path,
            first_seq,
            records: 0,
        },
        f,
    ))
}

/// Test support: writes a version 1 (unframed) segment, as builds before issue 16 did, so that
/// reading old logs stays tested.
#[doc(hidden)]
pub fn write_v1_segment_for_tests(
    dir: &Path,
    id: u32,
    first_seq: u64,
    records: &[Record<'_>],
) -> Result<(), WalError> {
    let path = dir.join(segment_name(id));
    let mut bytes = header(VERSION_1, first_seq).to_vec();
    for r in records {
        encode_record(&mut bytes, r.kind, r.body)?;
    }
    fs::write(&path, bytes).map_err(io_err(&path))
}

#[cfg(test)]
mod tests;
