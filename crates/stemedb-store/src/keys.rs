//! Index key and value encodings. Every index is a redb table keyed by bytes, so each query is a
//! range scan over a key prefix, and every key ends in the same 16 bytes: `ts` (big-endian u64
//! of the signed `ts`, which is never negative) and the log index (big-endian u64).
//!
//! Everything before those 16 bytes is the *group key*: it names exactly one
//! (subject, predicate) group, so the rows of a group are contiguous in every index and a lens
//! can resolve a group from one run of the scan. Layouts (each subject segment is followed by
//! `0x00`; `0x01` closes the subject; the predicate is followed by `0x00`):
//!
//! | table | key |
//! |---|---|
//! | `subject.idx` | segments, `0x01`, predicate, `0x00`, ts, log index |
//! | `concept_path.idx` | segments in reverse order, `0x01`, predicate, `0x00`, ts, log index |
//! | `predicate.idx` | predicate, `0x00`, segments, `0x01`, ts, log index |
//! | `agent.idx` | agent key (32 bytes), segments, `0x01`, predicate, `0x00`, ts, log index |
//!
//! Segment and predicate characters are printable, so:
//! - exact subject `a/b`: prefix `a\0b\0\x01` of `subject.idx`
//! - prefix `a/b` (on segment boundaries): prefix `a\0b\0` of `subject.idx` (matches `a/b` and
//!   `a/b/...`, never `a/b2`)
//! - tail `x/y`: prefix `y\0x\0` of `concept_path.idx`.
//!
//! The log index ends every key: it makes keys unique, orders ties in `ts` by arrival, and lets
//! a query "as of tree size N" skip rows with log index ≥ N without a lookup.
//!
//! Index rows have no value. What a lens needs to pick and rank the live assertions of a group
//! is an [`IndexValue`] (133 bytes, checksummed), stored once per assertion in `by_seq` under
//! its log index, so a query ranks a group with one `by_seq` lookup per row and reads only the
//! winner's envelope from the value log.

use stemedb_core::AssertionId;

use crate::StoreError;
use crate::entry::Fields;
use crate::lens::ValueKey;
use crate::vlog::Pointer;

/// Separator after each subject segment.
pub const SEGMENT_END: u8 = 0x00;
/// Marks the end of the subject.
pub const SUBJECT_END: u8 = 0x01;
/// Bytes after the group key: `ts` and log index.
pub const KEY_SUFFIX_BYTES: usize = 16;

/// Key bytes held inline by an [`IndexKeyBuf`]: an `agent.idx` key of a five-segment subject
/// and a short predicate fits (32 + 34 + 1 + 8 + 1 + 16 = 92 bytes), so the memtable's skip
/// lists compare keys without a second cache miss and store them without an allocation each.
pub const INLINE_KEY_BYTES: usize = 96;

/// An index key as the memtable holds it: inline up to [`INLINE_KEY_BYTES`], on the heap past.
pub type IndexKeyBuf = smallvec::SmallVec<[u8; INLINE_KEY_BYTES]>;

/// Which index a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// `subject.idx`
    Subject,
    /// `concept_path.idx`
    ReversedSubject,
    /// `predicate.idx`
    Predicate,
    /// `agent.idx`
    Agent,
}

impl IndexKind {
    /// A stable byte for cursors.
    pub fn tag(self) -> u8 {
        match self {
            IndexKind::Subject => 1,
            IndexKind::ReversedSubject => 2,
            IndexKind::Predicate => 3,
            IndexKind::Agent => 4,
        }
    }
}

/// Where key bytes are written: a `Vec` (prefixes, redb keys) or an [`IndexKeyBuf`].
trait KeyOut {
    fn put(&mut self, bytes: &[u8]);
    fn byte(&mut self, b: u8);
}

impl KeyOut for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn byte(&mut self, b: u8) {
        self.push(b);
    }
}

impl KeyOut for IndexKeyBuf {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn byte(&mut self, b: u8) {
        self.push(b);
    }
}

fn push_segments<'a>(out: &mut impl KeyOut, segments: impl Iterator<Item = &'a str>) {
    for s in segments {
        out.put(s.as_bytes());
        out.byte(SEGMENT_END);
    }
}

fn push_suffix(out: &mut impl KeyOut, ts: i64, log_index: u64) {
    out.put(&(ts as u64).to_be_bytes());
    out.put(&log_index.to_be_bytes());
}

/// Key of an assertion with fields `st` (at `log_index`) in index `kind`.
pub fn index_key(kind: IndexKind, st: &Fields, log_index: u64) -> IndexKeyBuf {
    let mut k = IndexKeyBuf::new();
    match kind {
        IndexKind::Subject | IndexKind::ReversedSubject | IndexKind::Agent => {
            if kind == IndexKind::Agent {
                k.extend_from_slice(&st.agent);
            }
            if kind == IndexKind::ReversedSubject {
                push_segments(&mut k, st.segments().rev());
            } else {
                push_segments(&mut k, st.segments());
            }
            k.push(SUBJECT_END);
            k.extend_from_slice(st.predicate.as_bytes());
            k.push(0x00);
        }
        IndexKind::Predicate => {
            k.extend_from_slice(st.predicate.as_bytes());
            k.push(0x00);
            push_segments(&mut k, st.segments());
            k.push(SUBJECT_END);
        }
    }
    push_suffix(&mut k, st.ts, log_index);
    k
}

/// Key in the supersedes table: target id, then the superseding assertion's log index.
pub fn supersedes_key(target: &[u8; 32], log_index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(target);
    k.extend_from_slice(&log_index.to_be_bytes());
    k
}

/// The superseding log index of a supersedes key.
pub fn supersedes_key_index(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(32..40)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// `IndexValue::superseded_at` of an assertion nothing supersedes.
pub const NOT_SUPERSEDED: u64 = u64::MAX;

/// The prefix that selects subjects matching `segments` exactly (`exact`), or at or below them.
/// Given the segments in reverse order it selects, in `concept_path.idx`, subjects ending in them.
pub fn subject_prefix<'a>(segments: impl Iterator<Item = &'a str>, exact: bool) -> Vec<u8> {
    let mut k = Vec::new();
    push_segments(&mut k, segments);
    if exact {
        k.push(SUBJECT_END);
    }
    k
}

/// `ts` and log index from the last 16 bytes of an index key.
pub fn key_suffix(key: &[u8]) -> Option<(i64, u64)> {
    let n = key.len().checked_sub(KEY_SUFFIX_BYTES)?;
    let ts = u64::from_be_bytes(key[n..n + 8].try_into().ok()?);
    let li = u64::from_be_bytes(key[n + 8..].try_into().ok()?);
    Some((ts as i64, li))
}

/// The group key: an index key without its `ts` and log index.
pub fn group_key(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(KEY_SUFFIX_BYTES)]
}

fn join_segments<'a>(segs: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut s = String::new();
    for (i, seg) in segs.enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.push_str(std::str::from_utf8(seg).ok()?);
    }
    Some(s)
}

/// Splits `segs 0x00 … segs 0x00` (without the closing `0x01`) into segments.
fn split_segments(b: &[u8]) -> Vec<&[u8]> {
    let b = b.strip_suffix(&[SEGMENT_END]).unwrap_or(b);
    b.split(|c| *c == SEGMENT_END).collect()
}

/// The (subject, predicate) a group key of index `kind` names.
pub fn decode_group(kind: IndexKind, group: &[u8]) -> Result<(String, String), StoreError> {
    let bad = || StoreError::Corrupt(format!("index {kind:?} holds a malformed key"));
    let (subject, predicate) = match kind {
        IndexKind::Subject | IndexKind::ReversedSubject | IndexKind::Agent => {
            let g = if kind == IndexKind::Agent {
                group.get(32..).ok_or_else(bad)?
            } else {
                group
            };
            let end = g.iter().position(|c| *c == SUBJECT_END).ok_or_else(bad)?;
            let pred = g[end + 1..].strip_suffix(&[0x00]).ok_or_else(bad)?;
            let segs = split_segments(&g[..end]);
            let subject = if kind == IndexKind::ReversedSubject {
                join_segments(segs.into_iter().rev())
            } else {
                join_segments(segs.into_iter())
            };
            (subject.ok_or_else(bad)?, pred)
        }
        IndexKind::Predicate => {
            let end = group.iter().position(|c| *c == 0x00).ok_or_else(bad)?;
            let rest = group[end + 1..]
                .strip_suffix(&[SUBJECT_END])
                .ok_or_else(bad)?;
            let subject = join_segments(split_segments(rest).into_iter()).ok_or_else(bad)?;
            (subject, &group[..end])
        }
    };
    let predicate = std::str::from_utf8(predicate)
        .map_err(|_| bad())?
        .to_owned();
    Ok((subject, predicate))
}

/// The predicate of a group key of index `kind`, without allocating.
pub fn group_predicate(kind: IndexKind, group: &[u8]) -> Option<&[u8]> {
    match kind {
        IndexKind::Subject | IndexKind::ReversedSubject | IndexKind::Agent => {
            let end = group.iter().rposition(|c| *c == SUBJECT_END)?;
            group[end + 1..].strip_suffix(&[0x00])
        }
        IndexKind::Predicate => {
            let end = group.iter().position(|c| *c == 0x00)?;
            Some(&group[..end])
        }
    }
}

/// The value of the `assertions` table: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AssertionRecord {
    pub log_index: u64,
    pub received_at_ms: i64,
    pub pointer: Pointer,
}

impl AssertionRecord {
    pub(crate) fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&self.log_index.to_le_bytes());
        b[8..16].copy_from_slice(&self.received_at_ms.to_le_bytes());
        b[16..20].copy_from_slice(&self.pointer.segment.to_le_bytes());
        b[20..28].copy_from_slice(&self.pointer.offset.to_le_bytes());
        b[28..32].copy_from_slice(&self.pointer.len.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<AssertionRecord, StoreError> {
        let b: &[u8; 32] = b
            .try_into()
            .map_err(|_| StoreError::Corrupt("assertion record is not 32 bytes".into()))?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        Ok(AssertionRecord {
            log_index: u64_at(0),
            received_at_ms: u64_at(8) as i64,
            pointer: Pointer {
                segment: u32_at(16),
                offset: u64_at(20),
                len: u32_at(28),
            },
        })
    }
}

/// Flag bit: the assertion is a retraction.
const FLAG_RETRACT: u8 = 1;
const FLAG_VALID_FROM: u8 = 2;
const FLAG_VALID_UNTIL: u8 = 4;
// The row does not record validity (it was rewritten from a 113-byte row, e.g. to mark it
// superseded): read the statement.
const FLAG_VALIDITY_UNKNOWN: u8 = 8;

/// The `by_seq` value of an assertion: what a lens needs to choose and rank live assertions
/// without reading the envelope. Layout (133 bytes, little-endian): id `[32]`, agent `[32]`,
/// confidence `f64`, flags `u8` (bit 0: retract, bit 1: `valid_from` present, bit 2:
/// `valid_until` present, bit 3: validity not recorded), value-log segment `u32`, offset `u64`, length `u32`, the object's
/// value key `[16]`, the log index of the first assertion that supersedes this one (`u64::MAX`:
/// none), `valid_from` `i64` and `valid_until` `i64` (0 when absent), then the CRC-32C of
/// the 129 bytes before it, checked on every read: redb does not check its pages when it reads
/// them, so a damaged row answers an error instead of a wrong agent, id or pointer.
///
/// Rows of 129 bytes (written before the checksum, 2026-12-03) decode unchecked.
/// Rows written before valid time was indexed are 113 bytes (no validity fields); they decode
/// with `validity_known` false and a `valid_at` query reads their statement instead. Such a
/// row rewritten later (a correction marks it superseded) keeps `validity_known` false (bit 3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexValue {
    /// The assertion id.
    pub id: AssertionId,
    /// The agent's public key.
    pub agent: [u8; 32],
    /// The statement's confidence.
    pub confidence: f64,
    /// True for a retraction.
    pub retract: bool,
    /// Where the envelope is in the value log.
    pub pointer: Pointer,
    /// The object's value key (`lens::value_key`).
    pub value: ValueKey,
    /// Log index of the earliest assertion that supersedes this one (`NOT_SUPERSEDED`: none),
    /// so "superseded as of tree size N" is `superseded_at < N`.
    pub superseded_at: u64,
    /// Start of the validity interval (inclusive), Unix ms; `None`: open.
    pub valid_from: Option<i64>,
    /// End of the validity interval (exclusive), Unix ms; `None`: open.
    pub valid_until: Option<i64>,
    /// False for a row of the older 113-byte layout, which does not record validity.
    pub validity_known: bool,
}

/// Bytes of an encoded [`IndexValue`].
pub const INDEX_VALUE_BYTES: usize = 133;
/// Bytes of a row before its checksum: the fields.
const INDEX_VALUE_FIELDS: usize = 129;
/// Bytes of a row of the layout before valid time was indexed.
const INDEX_VALUE_BYTES_V1: usize = 113;

/// Whether `[from, until)` (a missing bound is open) contains `t` (design §6).
pub fn interval_contains(from: Option<i64>, until: Option<i64>, t: i64) -> bool {
    from.is_none_or(|f| f <= t) && until.is_none_or(|u| t < u)
}

impl IndexValue {
    /// Whether the assertion holds at `t` (valid time); `None` when the row does not record
    /// its validity (an older row: read the statement).
    pub fn valid_at(&self, t: i64) -> Option<bool> {
        self.validity_known
            .then(|| interval_contains(self.valid_from, self.valid_until, t))
    }

    /// Encodes the value.
    pub fn encode(&self) -> [u8; INDEX_VALUE_BYTES] {
        let mut b = [0u8; INDEX_VALUE_BYTES];
        b[..32].copy_from_slice(self.id.as_bytes());
        b[32..64].copy_from_slice(&self.agent);
        b[64..72].copy_from_slice(&self.confidence.to_le_bytes());
        let mut flags = if self.retract { FLAG_RETRACT } else { 0 };
        if self.valid_from.is_some() {
            flags |= FLAG_VALID_FROM;
        }
        if self.valid_until.is_some() {
            flags |= FLAG_VALID_UNTIL;
        }
        if !self.validity_known {
            flags |= FLAG_VALIDITY_UNKNOWN;
        }
        b[72] = flags;
        b[73..77].copy_from_slice(&self.pointer.segment.to_le_bytes());
        b[77..85].copy_from_slice(&self.pointer.offset.to_le_bytes());
        b[85..89].copy_from_slice(&self.pointer.len.to_le_bytes());
        b[89..105].copy_from_slice(&self.value);
        b[105..113].copy_from_slice(&self.superseded_at.to_le_bytes());
        b[113..121].copy_from_slice(&self.valid_from.unwrap_or(0).to_le_bytes());
        b[121..129].copy_from_slice(&self.valid_until.unwrap_or(0).to_le_bytes());
        let crc = crc32c::crc32c(&b[..INDEX_VALUE_FIELDS]);
        b[INDEX_VALUE_FIELDS..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a value (any layout); a checksummed row whose checksum fails is `Corrupt`.
    pub fn decode(b: &[u8]) -> Result<IndexValue, StoreError> {
        match b.len() {
            INDEX_VALUE_BYTES => {
                let (fields, crc) = b.split_at(INDEX_VALUE_FIELDS);
                if crc32c::crc32c(fields).to_le_bytes() != crc {
                    return Err(StoreError::Corrupt(format!(
                        "by_seq row of assertion {}: checksum mismatch (the index database is \
                         damaged; `stemedb verify` names every such row)",
                        hex::encode(&b[..32])
                    )));
                }
            }
            INDEX_VALUE_FIELDS | INDEX_VALUE_BYTES_V1 => {}
            n => {
                return Err(StoreError::Corrupt(format!(
                    "index value is {n} bytes, not {INDEX_VALUE_BYTES} (or \
                     {INDEX_VALUE_FIELDS} or {INDEX_VALUE_BYTES_V1}, the older layouts)"
                )));
            }
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        let mut agent = [0u8; 32];
        agent.copy_from_slice(&b[32..64]);
        let arr8 = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            a
        };
        let arr4 = |i: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[i..i + 4]);
            a
        };
        let mut value = [0u8; 16];
        value.copy_from_slice(&b[89..105]);
        let flags = b[72];
        let validity_known = b.len() >= INDEX_VALUE_FIELDS && flags & FLAG_VALIDITY_UNKNOWN == 0;
        let bound = |flag: u8, at: usize| {
            (validity_known && flags & flag != 0).then(|| i64::from_le_bytes(arr8(at)))
        };
        Ok(IndexValue {
            value,
            superseded_at: u64::from_le_bytes(arr8(105)),
            id: AssertionId::from_bytes(id),
            agent,
            confidence: f64::from_le_bytes(arr8(64)),
            retract: flags & FLAG_RETRACT != 0,
            pointer: Pointer {
                segment: u32::from_le_bytes(arr4(73)),
                offset: u64::from_le_bytes(arr8(77)),
                len: u32::from_le_bytes(arr4(85)),
            },
            valid_from: bound(FLAG_VALID_FROM, 113),
            valid_until: bound(FLAG_VALID_UNTIL, 121),
            validity_known,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row with every field set, validity recorded.
    fn sample_row() -> IndexValue {
        IndexValue {
            id: AssertionId::from_bytes([7; 32]),
            agent: [9; 32],
            confidence: 0.25,
            retract: true,
            pointer: Pointer {
                segment: 3,
                offset: 1 << 40,
                len: 999,
            },
            value: [5; 16],
            superseded_at: 12,
            valid_from: Some(-3),
            valid_until: None,
            validity_known: true,
        }
    }

    #[test]
    fn every_flipped_byte_of_a_lens_row_is_caught_and_older_rows_still_read() {
        let v = sample_row();
        let row = v.encode();
        assert_eq!(IndexValue::decode(&row).expect("decode"), v);
        for i in 0..row.len() {
            let mut bad = row;
            bad[i] ^= 1;
            assert!(
                matches!(IndexValue::decode(&bad), Err(StoreError::Corrupt(_))),
                "byte {i}"
            );
        }
        // A row written before the checksum: the same fields, unchecked.
        assert_eq!(
            IndexValue::decode(&row[..INDEX_VALUE_FIELDS]).expect("older row"),
            v
        );
        assert!(IndexValue::decode(&row[..INDEX_VALUE_FIELDS + 1]).is_err());
    }

    fn st(subject: &str, predicate: &str) -> Fields {
        let p = format!(
            r#"{{"v":1,"subject":"{subject}","predicate":"{predicate}","object":1,"agent":"{}","ts":5}}"#,
            "ab".repeat(32)
        );
        Fields::of(&stemedb_core::Statement::from_payload(p.as_bytes()).expect("valid"))
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_only() {
        let cases = [
            // (query, subject, exact?, prefix?, tail?)
            ("fleet/eu", "fleet/eu", true, true, true),
            ("fleet/eu", "fleet/eu/server-1", false, true, false),
            ("fleet/eu", "fleet/eu2", false, false, false),
            ("fleet/eu", "fleet/eu2/x", false, false, false),
            ("server-1/cpu", "fleet/eu/server-1/cpu", false, false, true),
            (
                "server-1/cpu",
                "fleet/eu/xserver-1/cpu",
                false,
                false,
                false,
            ),
            ("cpu", "a/cpu", false, false, true),
            ("cpu", "a/cpu/x", false, false, false),
        ];
        for (query, subject, exact, prefix, tail) in cases {
            let s = st(subject, "p");
            let fwd = index_key(IndexKind::Subject, &s, 1);
            let rev = index_key(IndexKind::ReversedSubject, &s, 1);
            let q: Vec<&str> = query.split('/').collect();
            assert_eq!(
                fwd.starts_with(&subject_prefix(q.iter().copied(), true)),
                exact,
                "exact {query} vs {subject}"
            );
            assert_eq!(
                fwd.starts_with(&subject_prefix(q.iter().copied(), false)),
                prefix,
                "prefix {query} vs {subject}"
            );
            assert_eq!(
                rev.starts_with(&subject_prefix(q.iter().rev().copied(), false)),
                tail,
                "tail {query} vs {subject}"
            );
        }
    }

    #[test]
    fn every_index_decodes_its_group_and_suffix() {
        let kinds = [
            IndexKind::Subject,
            IndexKind::ReversedSubject,
            IndexKind::Predicate,
            IndexKind::Agent,
        ];
        for (subject, predicate) in [("a", "p"), ("fleet/eu/server-1", "cpu.load"), ("x/y", "q")] {
            let s = st(subject, predicate);
            for kind in kinds {
                let key = index_key(kind, &s, 77);
                assert_eq!(key_suffix(&key), Some((5, 77)), "{kind:?}");
                let g = group_key(&key);
                let (sub, pred) = decode_group(kind, g).expect("decodes");
                assert_eq!(
                    (sub.as_str(), pred.as_str()),
                    (subject, predicate),
                    "{kind:?}"
                );
                assert_eq!(
                    group_predicate(kind, g),
                    Some(predicate.as_bytes()),
                    "{kind:?}"
                );
            }
        }
    }

    #[test]
    fn index_value_round_trips() {
        let v = sample_row();
        assert_eq!(IndexValue::decode(&v.encode()).expect("decodes"), v);
        let closed = IndexValue {
            valid_from: None,
            valid_until: Some(1_700_000_000_000),
            ..v
        };
        assert_eq!(
            IndexValue::decode(&closed.encode()).expect("decodes"),
            closed
        );
        assert!(IndexValue::decode(&[0u8; 10]).is_err());
        // A row of the older layout: the same fields, validity unknown.
        let old = IndexValue::decode(&v.encode()[..113]).expect("decodes the old layout");
        assert_eq!(old.superseded_at, 12);
        assert!(!old.validity_known);
        assert_eq!(old.valid_at(0), None);
        // Rewritten (marked superseded) it stays unknown, not "always valid".
        let rewritten = IndexValue {
            superseded_at: 99,
            ..old
        };
        let again = IndexValue::decode(&rewritten.encode()).expect("decodes");
        assert!(!again.validity_known);
        assert_eq!(again.valid_at(0), None);
        assert_eq!(again.superseded_at, 99);
        assert_eq!(v.valid_at(-3), Some(true));
        assert_eq!(v.valid_at(-4), Some(false));
        assert_eq!(closed.valid_at(1_700_000_000_000), Some(false));
        assert_eq!(closed.valid_at(1_699_999_999_999), Some(true));
    }
}
