//! Index key encodings. Every index is a redb table keyed by bytes with a unit value, so each
//! query is a range scan over a key prefix.
//!
//! Subject keys write each segment followed by `0x00`, then `0x01`, then the predicate and
//! `0x00`, then `ts` and the log index as big-endian u64. Segment characters are printable, so:
//! - exact subject `a/b`: prefix `a\0b\0\x01`
//! - prefix `a/b` (on segment boundaries): prefix `a\0b\0` (matches `a/b` and `a/b/...`, never `a/b2`)
//! - tail `x/y` (suffix of segments): prefix `y\0x\0` in the reversed-subject index.
//!
//! The log index ends every key: it makes keys unique, orders ties by arrival, and lets a query
//! "as of tree size N" skip entries with log index ≥ N without a lookup.

use stemedb_core::Statement;

/// Separator after each subject segment.
pub const SEGMENT_END: u8 = 0x00;
/// Marks the end of the subject.
pub const SUBJECT_END: u8 = 0x01;

fn push_segments<'a>(out: &mut Vec<u8>, segments: impl Iterator<Item = &'a str>) {
    for s in segments {
        out.extend_from_slice(s.as_bytes());
        out.push(SEGMENT_END);
    }
}

fn push_tail(out: &mut Vec<u8>, predicate: &str, ts: i64, log_index: u64) {
    out.push(SUBJECT_END);
    out.extend_from_slice(predicate.as_bytes());
    out.push(0x00);
    out.extend_from_slice(&(ts as u64).to_be_bytes());
    out.extend_from_slice(&log_index.to_be_bytes());
}

/// Key in the forward subject index.
pub fn subject_key(st: &Statement, log_index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(st.subject().len() + st.predicate().len() + 20);
    push_segments(&mut k, st.subject_segments());
    push_tail(&mut k, st.predicate(), st.ts(), log_index);
    k
}

/// Key in the reversed subject (concept path) index.
pub fn reversed_subject_key(st: &Statement, log_index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(st.subject().len() + st.predicate().len() + 20);
    push_segments(&mut k, st.subject_segments().rev());
    push_tail(&mut k, st.predicate(), st.ts(), log_index);
    k
}

/// Key in the predicate index.
pub fn predicate_key(st: &Statement, log_index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(st.predicate().len() + 17);
    k.extend_from_slice(st.predicate().as_bytes());
    k.push(0x00);
    k.extend_from_slice(&(st.ts() as u64).to_be_bytes());
    k.extend_from_slice(&log_index.to_be_bytes());
    k
}

/// Key in the agent index.
pub fn agent_key(st: &Statement, log_index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.extend_from_slice(st.agent());
    k.extend_from_slice(&(st.ts() as u64).to_be_bytes());
    k.extend_from_slice(&log_index.to_be_bytes());
    k
}

/// Key in the supersedes table: target id, then the superseding assertion's log index.
pub fn supersedes_key(target: &[u8; 32], log_index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(target);
    k.extend_from_slice(&log_index.to_be_bytes());
    k
}

/// The prefix that selects subjects matching `segments` exactly, at or below them (`prefix`),
/// or ending in them (`tail`, for the reversed index, given the segments in reversed order).
pub fn subject_prefix<'a>(segments: impl Iterator<Item = &'a str>, exact: bool) -> Vec<u8> {
    let mut k = Vec::new();
    push_segments(&mut k, segments);
    if exact {
        k.push(SUBJECT_END);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(subject: &str) -> Statement {
        let p = format!(
            r#"{{"v":1,"subject":"{subject}","predicate":"p","object":1,"agent":"{}","ts":5}}"#,
            "ab".repeat(32)
        );
        Statement::from_payload(p.as_bytes()).expect("valid")
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
            let s = st(subject);
            let fwd = subject_key(&s, 1);
            let rev = reversed_subject_key(&s, 1);
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
}
