//! The value log: envelopes in append-only segments `db/values/NNNNNNNN.vlog`, written in
//! log-index order. Record: `len u32 LE | crc32c(body) u32 LE | body`, the body either the
//! envelope as received or, from format 4 on, its packed form (`packed.rs`), which reads back as
//! the same bytes. redb holds only pointers.
//! Derived state: on open it is cut back to the last durable checkpoint and rebuilt from the WAL.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::StoreError;

/// Roll to a new value-log segment past this size.
pub const VLOG_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const RECORD_HEADER: u64 = 8;

/// Where an envelope lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    /// Segment number.
    pub segment: u32,
    /// Byte offset of the record header.
    pub offset: u64,
    /// Body length.
    pub len: u32,
}

/// The end of the log: the active segment and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Active segment number (1-based; 0 means "nothing written yet").
    pub segment: u32,
    /// Bytes in the active segment.
    pub len: u64,
}

fn seg_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:08}.vlog"))
}

/// Appends to the value log (owned by the commit thread).
pub struct VlogWriter {
    dir: PathBuf,
    pos: Position,
    file: Option<File>,
    buf: Vec<u8>,
    // One record being built (kept to reuse its allocation).
    scratch: Vec<u8>,
    // Log indexes from here on are packed when their spelling allows; earlier ones (written by
    // a format-3 server, and rebuilt after a crash) are written as received, so that a rebuilt
    // record lands where redb's pointer says.
    pack_from: u64,
}

impl VlogWriter {
    /// Opens the log and cuts it back to `pos` (removing later segments); records of log index
    /// `pack_from` and later are packed (`packed.rs`) when they can be.
    pub fn open(dir: &Path, pos: Position, pack_from: u64) -> io::Result<VlogWriter> {
        stemedb_wal::create_dir_durable(dir)?;
        let mut removed = false;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".vlog"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if n > pos.segment {
                fs::remove_file(entry.path())?;
                removed = true;
            }
        }
        // The cut is made durable, so that records it removed cannot come back after a power
        // cut and be counted as applied ones (`records_after`).
        if removed {
            stemedb_wal::sync_dir(dir)?;
        }
        let file = if pos.segment > 0 {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(seg_path(dir, pos.segment))?;
            if f.metadata()?.len() != pos.len {
                f.set_len(pos.len)?;
                f.sync_all()?;
            }
            Some(f)
        } else {
            None
        };
        Ok(VlogWriter {
            dir: dir.to_path_buf(),
            pos,
            file,
            buf: Vec::new(),
            scratch: Vec::new(),
            pack_from,
        })
    }

    /// The current end of the log (after `flush`).
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Queues the envelope of log index `log_index`; returns where it will live. Nothing is
    /// written until `flush`.
    pub fn append(&mut self, log_index: u64, envelope: &[u8]) -> io::Result<Pointer> {
        // The record as it would be written: header placeholder, then the body.
        let mut record = std::mem::take(&mut self.scratch);
        record.clear();
        record.extend_from_slice(&[0u8; RECORD_HEADER as usize]);
        if log_index < self.pack_from || !crate::packed::pack(envelope, &mut record) {
            record.extend_from_slice(envelope);
        }
        let body_len = record.len() - RECORD_HEADER as usize;
        let crc = crc32c::crc32c(&record[RECORD_HEADER as usize..]);
        record[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        let full = self.pos.len + self.buf.len() as u64 + record.len() as u64 > VLOG_SEGMENT_BYTES;
        if (self.pos.segment == 0 || full)
            && let Err(e) = self.flush().and_then(|()| self.roll())
        {
            self.scratch = record;
            return Err(e);
        }
        let offset = self.pos.len + self.buf.len() as u64;
        self.buf.extend_from_slice(&record);
        self.scratch = record;
        Ok(Pointer {
            segment: self.pos.segment,
            offset,
            len: body_len as u32,
        })
    }

    fn roll(&mut self) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        let next = self.pos.segment + 1;
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(seg_path(&self.dir, next))?;
        stemedb_wal::sync_dir(&self.dir)?;
        self.file = Some(f);
        self.pos = Position {
            segment: next,
            len: 0,
        };
        Ok(())
    }

    /// Writes queued records to the file (no fsync).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(f) = &self.file else {
            return Err(io::Error::other("value log has no active segment"));
        };
        f.write_all_at(&self.buf, self.pos.len)?;
        self.pos.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// How many whole records (length and checksum intact) the log holds after `pos`, in order,
/// up to the first that is not: evidence of what the commit thread applied (it writes a record
/// only after the record's WAL group was fsync'd) before the log is cut back to `pos` on open.
pub fn records_after(dir: &Path, pos: Position) -> io::Result<u64> {
    let mut segment = pos.segment.max(1);
    let mut offset = if pos.segment == 0 { 0 } else { pos.len };
    let mut records = 0u64;
    loop {
        let path = seg_path(dir, segment);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                use std::io::{Read as _, Seek as _};
                if f.metadata()?.len() < offset {
                    // Shorter than the durable position: nothing after it to count (and
                    // nothing to step over into the next segment).
                    return Ok(records);
                }
                f.seek(io::SeekFrom::Start(offset))?;
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(records),
            Err(e) => return Err(e),
        }
        let mut at = 0usize;
        while let Some(header) = bytes.get(at..at.saturating_add(RECORD_HEADER as usize)) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let start = at + RECORD_HEADER as usize;
            let body = match bytes.get(start..start.saturating_add(len)) {
                Some(b) if len > 0 => b,
                _ => break,
            };
            if crc32c::crc32c(body) != crc {
                break;
            }
            records += 1;
            at = start + len;
        }
        // The writer rolls only after the segment's last record, fsync'd: a segment that does
        // not end in a whole record is where the writing stopped, whatever follows it.
        if at != bytes.len() {
            return Ok(records);
        }
        segment += 1;
        offset = 0;
        if !seg_path(dir, segment).exists() {
            return Ok(records);
        }
    }
}

/// What [`VlogReader::read_statement`] found.
pub enum Stored {
    /// A packed record's statement.
    Statement(Vec<u8>),
    /// A record stored as received: the whole envelope.
    Envelope(Vec<u8>),
}

/// Most value-log segments a reader keeps open; past it one is closed before another opens, so
/// a long-lived server holds a bounded number of descriptors however large the log grows.
pub const MAX_OPEN_SEGMENTS: usize = 64;

/// Reads envelopes by pointer; shared by every reader.
pub struct VlogReader {
    dir: PathBuf,
    // Invariant: at most `MAX_OPEN_SEGMENTS` entries.
    files: RwLock<HashMap<u32, Arc<File>>>,
}

impl VlogReader {
    /// A reader over `dir`.
    pub fn new(dir: &Path) -> VlogReader {
        VlogReader {
            dir: dir.to_path_buf(),
            files: RwLock::new(HashMap::new()),
        }
    }

    fn file(&self, segment: u32) -> io::Result<Arc<File>> {
        if let Some(f) = self
            .files
            .read()
            .map_err(|_| io::Error::other("poisoned lock"))?
            .get(&segment)
        {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(seg_path(&self.dir, segment))?);
        let mut files = self
            .files
            .write()
            .map_err(|_| io::Error::other("poisoned lock"))?;
        if files.len() >= MAX_OPEN_SEGMENTS
            && !files.contains_key(&segment)
            && let Some(evict) = files.keys().find(|k| **k != segment).copied()
        {
            // Readers holding the evicted `Arc` finish with it; the descriptor closes after.
            files.remove(&evict);
        }
        files.insert(segment, f.clone());
        Ok(f)
    }

    /// Reads and checks one envelope, as received: an I/O failure is [`StoreError::Io`]
    /// naming the segment; a record that fails its length or checksum, or a packed record that
    /// does not unpack, is [`StoreError::Corrupt`].
    pub fn read(&self, p: Pointer) -> Result<Vec<u8>, StoreError> {
        let body = self.read_body(p)?;
        crate::packed::envelope(body).ok_or_else(|| self.unpackable(p))
    }

    /// The statement (signed payload bytes) at `p` when the record is packed, else the envelope
    /// as received; checked as [`VlogReader::read`] checks.
    pub fn read_statement(&self, p: Pointer) -> Result<Stored, StoreError> {
        let body = self.read_body(p)?;
        match crate::packed::statement(&body) {
            None => Ok(Stored::Envelope(body)),
            Some(Some(statement)) => Ok(Stored::Statement(statement)),
            Some(None) => Err(self.unpackable(p)),
        }
    }

    fn unpackable(&self, p: Pointer) -> StoreError {
        StoreError::Corrupt(format!(
            "value log record at {}:{} is packed but does not unpack",
            seg_path(&self.dir, p.segment).display(),
            p.offset
        ))
    }

    fn read_body(&self, p: Pointer) -> Result<Vec<u8>, StoreError> {
        let path = || seg_path(&self.dir, p.segment);
        let io = |source| StoreError::Io {
            path: path(),
            source,
        };
        let f = self.file(p.segment).map_err(io)?;
        let mut buf = vec![0u8; RECORD_HEADER as usize + p.len as usize];
        f.read_exact_at(&mut buf, p.offset).map_err(io)?;
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let body = buf.split_off(RECORD_HEADER as usize);
        if len != p.len || crc32c::crc32c(&body) != crc {
            return Err(StoreError::Corrupt(format!(
                "value log record at {}:{} fails its checksum",
                path().display(),
                p.offset
            )));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &[u8]) -> Vec<u8> {
        let mut rec = (body.len() as u32).to_le_bytes().to_vec();
        rec.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        rec.extend_from_slice(body);
        rec
    }

    /// `records_after` counts whole records from a position on, across a roll to the next
    /// segment, and stops at a cut record, a bad checksum or zeros (an empty record is not one).
    #[test]
    fn records_after_counts_whole_records_and_stops_at_the_first_bad_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let mut one = record(b"first");
        let at_second = one.len() as u64;
        one.extend(record(b"second"));
        one.extend(record(b"third"));
        fs::write(seg_path(dir, 1), &one).expect("write");
        let whole = |segment, len| records_after(dir, Position { segment, len }).expect("count");
        assert_eq!(whole(0, 0), 3, "from the start");
        assert_eq!(whole(1, at_second), 2);
        let mut two = record(b"fourth");
        two.extend(record(b"fifth"));
        fs::write(seg_path(dir, 2), &two).expect("write");
        assert_eq!(whole(1, at_second), 4, "on into the next segment");
        let mut cut = two.clone();
        cut.truncate(two.len() - 2);
        fs::write(seg_path(dir, 2), &cut).expect("write");
        assert_eq!(whole(1, at_second), 3, "a cut record is not counted");
        let mut flipped = two.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        fs::write(seg_path(dir, 2), &flipped).expect("write");
        assert_eq!(whole(1, at_second), 3, "nor one whose checksum fails");
        let mut zeros = record(b"fourth");
        zeros.extend([0u8; 64]);
        fs::write(seg_path(dir, 2), &zeros).expect("write");
        assert_eq!(whole(1, at_second), 3, "nor zeros");
        assert_eq!(whole(3, 0), 0, "a segment that does not exist holds none");
        // A segment that does not end in a whole record is where the writing stopped: a next
        // segment (a leftover) is not read.
        let mut torn = one.clone();
        torn.extend([7u8; 5]);
        fs::write(seg_path(dir, 1), &torn).expect("write");
        fs::write(seg_path(dir, 2), &two).expect("write");
        assert_eq!(whole(1, at_second), 2, "nothing after a torn end");
        fs::write(seg_path(dir, 1), &one[..4]).expect("write");
        assert_eq!(
            whole(1, at_second),
            0,
            "a segment cut below the position: none"
        );
    }

    #[test]
    fn a_reader_keeps_a_bounded_number_of_segments_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut pointers = Vec::new();
        for segment in 1..=(MAX_OPEN_SEGMENTS as u32 * 2 + 5) {
            let body = format!("envelope in segment {segment}").into_bytes();
            let mut rec = (body.len() as u32).to_le_bytes().to_vec();
            rec.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            rec.extend_from_slice(&body);
            fs::write(seg_path(tmp.path(), segment), &rec).expect("write");
            pointers.push((
                Pointer {
                    segment,
                    offset: 0,
                    len: body.len() as u32,
                },
                body,
            ));
        }
        let reader = VlogReader::new(tmp.path());
        for _ in 0..2 {
            for (p, body) in &pointers {
                assert_eq!(&reader.read(*p).expect("read"), body);
                let open = reader.files.read().map(|f| f.len()).unwrap_or(usize::MAX);
                assert!(open <= MAX_OPEN_SEGMENTS, "{open} segments open");
            }
        }
    }
}
