//! `stemedb-wal`: the write-ahead log.
//!
//! Format (little-endian throughout; docs/spec.md "Write-ahead log"):
//!
//! ```text
//! segment file  wal/segment-NNNNNNNN.log
//!   header (32 bytes): magic "STEMWAL\0" | version u32 = 1 | reserved u32 = 0 |
//!                      first_seq u64 | crc32c(previous 24 bytes) u32 | zero u32
//!   records:           len u32 | crc32c(len || kind || body) u32 | kind u8 | body[len]
//! ```
//!
//! Record `i` of a segment has sequence number `first_seq + i`; sequence numbers continue across
//! segments. `Wal::append_group` writes a whole group with one `write` and one `fdatasync`, and
//! returns only after the fsync: a record is durable when `append_group` returns `Ok`.
//!
//! Recovery (`Wal::open`) checks every segment. In the last segment a record that is cut short or
//! fails its checksum starts a torn tail: it and everything after it are truncated (and logged),
//! since no caller was answered for them. Anywhere else, a bad header or record stops the open
//! with an error naming the file and byte offset.
//!
//! After an fsync or write error the log is **failed**: every later append returns
//! `WalError::ReadOnly` until the process restarts. It never retries and forgets.
//!
//! Architecture Invariant: only this crate writes under `wal/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Segment size at which the log rolls to a new segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 10 * 1024 * 1024;
/// Largest record body accepted (on write and on read).
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of a segment header.
pub const HEADER_BYTES: u64 = 32;
/// Bytes of a record header (len, crc, kind).
pub const RECORD_HEADER_BYTES: usize = 9;
const MAGIC: &[u8; 8] = b"STEMWAL\0";
const VERSION: u32 = 1;

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
    #[error("WAL corruption in {path} at byte offset {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// A write or fsync failed: the log is now read-only.
    #[error("WAL write or fsync failed, the log is now read-only: {0}")]
    WriteFailed(String),
    /// An earlier write or fsync failed; nothing more is written until restart.
    #[error("WAL is read-only after an earlier write failure: {0}")]
    ReadOnly(String),
    /// A record body is larger than `MAX_RECORD_BYTES`.
    #[error("record of {0} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")]
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
    // open for append in `active`, whose length is `active_len`.
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

fn header(first_seq: u64) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
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

/// How reading one record ended.
enum ReadOutcome {
    Record(u8, Vec<u8>),
    End,
    Bad(String),
}

fn read_record<R: Read>(r: &mut R, remaining: u64) -> io::Result<ReadOutcome> {
    if remaining == 0 {
        return Ok(ReadOutcome::End);
    }
    if remaining < RECORD_HEADER_BYTES as u64 {
        return Ok(ReadOutcome::Bad(format!(
            "{remaining} bytes left, shorter than a record header"
        )));
    }
    let mut h = [0u8; RECORD_HEADER_BYTES];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let kind = h[8];
    if len > MAX_RECORD_BYTES {
        return Ok(ReadOutcome::Bad(format!(
            "record length {len} is impossible"
        )));
    }
    if (len as u64) > remaining - RECORD_HEADER_BYTES as u64 {
        return Ok(ReadOutcome::Bad(format!(
            "record of {len} bytes runs past the end of the file"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let mut want = crc32c::crc32c(&h[..4]);
    want = crc32c::crc32c_append(want, &[kind]);
    want = crc32c::crc32c_append(want, &body);
    if want != crc {
        return Ok(ReadOutcome::Bad("record checksum mismatch".into()));
    }
    Ok(ReadOutcome::Record(kind, body))
}

/// Scans one segment. Calls `each(seq, kind, body)` for every good record. Returns the byte
/// offset where good records end and, if reading stopped early, why.
fn scan_segment(
    path: &Path,
    expected_first_seq: Option<u64>,
    mut each: impl FnMut(u64, u8, &[u8]),
) -> Result<(u64, u64, u64, Option<String>), WalError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
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
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut h = [0u8; HEADER_BYTES as usize];
    r.read_exact(&mut h).map_err(io_err(path))?;
    let first_seq = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
    if &h[..8] != MAGIC || h != header(first_seq) {
        return Err(corrupt(
            0,
            "bad segment header (magic, version or checksum)".into(),
        ));
    }
    if let Some(want) = expected_first_seq {
        if first_seq < want {
            return Err(corrupt(
                16,
                format!(
                    "segment starts at sequence {first_seq}, overlapping the previous one (expected {want})"
                ),
            ));
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
    }
    let mut offset = HEADER_BYTES;
    let mut seq = first_seq;
    loop {
        match read_record(&mut r, len - offset).map_err(io_err(path))? {
            ReadOutcome::End => return Ok((first_seq, seq - first_seq, offset, None)),
            ReadOutcome::Bad(why) => return Ok((first_seq, seq - first_seq, offset, Some(why))),
            ReadOutcome::Record(kind, body) => {
                each(seq, kind, &body);
                offset += (RECORD_HEADER_BYTES + body.len()) as u64;
                seq += 1;
            }
        }
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, checking every segment and truncating a torn tail of
    /// the last one.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, RecoveryReport), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut ids: Vec<u32> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut report = RecoveryReport {
            segments: ids.len(),
            ..RecoveryReport::default()
        };
        let mut segments = Vec::with_capacity(ids.len().max(1));
        let mut next_seq: Option<u64> = None;
        for (i, id) in ids.iter().enumerate() {
            let path = dir.join(segment_name(*id));
            let last = i + 1 == ids.len();
            let scanned = scan_segment(&path, next_seq, |_, _, _| {});
            let (first_seq, records, good_end, bad) = match scanned {
                Err(WalError::Corrupt { offset: 0, .. })
                    if last && i > 0 && file_len(&path)? <= HEADER_BYTES =>
                {
                    // A crash while creating the next segment: its header never became
                    // durable and it holds no record. Remove it; the previous segment is the
                    // active one again.
                    tracing::warn!(segment = %path.display(), "removing a segment whose header was torn");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    sync_dir(dir).map_err(io_err(dir))?;
                    report.segments -= 1;
                    break;
                }
                other => other?,
            };
            if let Some(why) = bad {
                if !last {
                    return Err(WalError::Corrupt {
                        path,
                        offset: good_end,
                        what: format!("{why} (sealed segment: not a torn tail)"),
                    });
                }
                let len = fs::metadata(&path).map_err(io_err(&path))?.len();
                let cut = len - good_end;
                tracing::warn!(
                    segment = %path.display(),
                    offset = good_end,
                    cut_bytes = cut,
                    reason = %why,
                    "truncating torn WAL tail (never acknowledged)"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(good_end).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                report.truncated_bytes = cut;
            }
            report.records += records;
            next_seq = Some(first_seq + records);
            segments.push(Segment {
                id: *id,
                path,
                first_seq,
                records,
            });
        }
        let (active, active_len) = match segments.last() {
            Some(seg) => {
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(io_err(&seg.path))?;
                let len = f.seek(SeekFrom::End(0)).map_err(io_err(&seg.path))?;
                (f, len)
            }
            None => {
                let (seg, f) = create_segment(dir, 1, 0)?;
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

    /// Appends `records` with one write and one fsync. Returns the sequence number of the first
    /// record. When this returns `Ok`, every record is durable.
    pub fn append_group(&mut self, records: &[Record<'_>]) -> Result<u64, WalError> {
        if let Some(why) = &self.failed {
            return Err(WalError::ReadOnly(why.clone()));
        }
        let mut buf = Vec::with_capacity(
            records
                .iter()
                .map(|r| r.body.len() + RECORD_HEADER_BYTES)
                .sum(),
        );
        for r in records {
            encode_record(&mut buf, r.kind, r.body)?;
        }
        let first = self.next_seq();
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
            let (_, _, _, bad) =
                scan_segment(&seg.path, Some(seg.first_seq), |seq, kind, body| {
                    if seq >= from_seq {
                        each(seq, kind, body);
                    }
                })?;
            if let Some(why) = bad {
                return Err(WalError::Corrupt {
                    path: seg.path.clone(),
                    offset: 0,
                    what: format!("changed since it was opened: {why}"),
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

/// Reads one segment without changing it: checks the header and every record, and calls
/// `each(seq, kind, body)` for every good record. A bad header is an error; a bad record ends the
/// scan and is reported in `SegmentScan::bad` (a torn tail, if this is the active segment).
pub fn scan(path: &Path, each: impl FnMut(u64, u8, &[u8])) -> Result<SegmentScan, WalError> {
    let id = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_segment_name)
        .unwrap_or(0);
    let len = file_len(path)?;
    let (first_seq, records, good_end, bad) = scan_segment(path, None, each)?;
    Ok(SegmentScan {
        id,
        first_seq,
        records,
        good_end,
        len,
        bad,
    })
}

/// Creates `dir` holding one empty segment numbered `id` whose first record will have sequence
/// number `first_seq` (a restored data directory's log starts after its snapshot). Refuses a
/// directory that already holds segments.
pub fn init(dir: &Path, id: u32, first_seq: u64) -> Result<(), WalError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    if !list_segments(dir)?.is_empty() {
        return Err(WalError::Io {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "the WAL already has segments"),
        });
    }
    create_segment(dir, id, first_seq).map(|_| ())
}

/// Writes a copy of segment `src` to `dest` holding only its records with sequence number below
/// `end_seq` (point-in-time restore), fsync'd. Returns how many records it kept.
pub fn copy_prefix(src: &Path, dest: &Path, end_seq: u64) -> Result<u64, WalError> {
    let mut cut = None;
    let mut offset = HEADER_BYTES;
    let mut kept = 0u64;
    let scanned = scan(src, |seq, _, body| {
        if seq < end_seq {
            offset += (RECORD_HEADER_BYTES + body.len()) as u64;
            kept += 1;
        } else if cut.is_none() {
            cut = Some(offset);
        }
    })?;
    if let Some(why) = scanned.bad {
        return Err(WalError::Corrupt {
            path: src.to_path_buf(),
            offset: scanned.good_end,
            what: why,
        });
    }
    let keep = cut.unwrap_or(scanned.good_end);
    let mut input = File::open(src).map_err(io_err(src))?.take(keep);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(io_err(dest))?;
    io::copy(&mut input, &mut out).map_err(io_err(dest))?;
    out.sync_all().map_err(io_err(dest))?;
    Ok(kept)
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
    f.write_all(&header(first_seq)).map_err(io_err(&path))?;
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

#[cfg(test)]
mod tests;
