//! Packed value-log records (format 4): an envelope in the one spelling StemeDB's signers write,
//! kept as its decoded parts instead of its JSON text, and given back byte for byte.
//!
//! An accepted envelope is JSON around two base64 strings and a hex key id, and its statement
//! names the agent again in hex: about 570 bytes for 165 bytes of statement text, 64 of
//! signature and 32 of key. When the envelope is exactly
//!
//! ```text
//! {"payloadType":"T","payload":"B64","signatures":[{"keyid":"HEX","sig":"B64"}]}
//! ```
//!
//! (or the same without `"keyid":"HEX",`), the record keeps `T` (one flag bit when it is the
//! assertion type), the key id as 32 bytes, the signature as 64, and the statement with the one
//! occurrence of the key id's hex (the statement's `agent`) cut out. [`pack`] then rebuilds the
//! envelope from what it kept and keeps the packed form only if the rebuild equals the input, so
//! a packed record always unpacks to the bytes received. Any other spelling (whitespace, another
//! key order, escapes) is stored as received. A JSON text never starts with [`PACKED`], so the
//! two kinds of record tell themselves apart by their first byte.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// First byte of a packed record.
pub(crate) const PACKED: u8 = 0x01;
/// The statement type StemeDB accepts (`stemedb_core`'s `PAYLOAD_TYPE`).
const ASSERTION_TYPE: &[u8] = b"application/vnd.stemedb.assertion.v1+json";

const HAS_KEYID: u8 = 1;
const ASSERTION_TYPE_FLAG: u8 = 2;
const KEYID_CUT: u8 = 4;
const KNOWN_FLAGS: u8 = HAS_KEYID | ASSERTION_TYPE_FLAG | KEYID_CUT;

const OPEN: &[u8] = b"{\"payloadType\":\"";
const PAYLOAD: &[u8] = b"\",\"payload\":\"";
const SIGS_KEYID: &[u8] = b"\",\"signatures\":[{\"keyid\":\"";
const KEYID_SIG: &[u8] = b"\",\"sig\":\"";
const SIGS: &[u8] = b"\",\"signatures\":[{\"sig\":\"";
const CLOSE: &[u8] = b"\"}]}";

/// The parts of a packed record.
struct Parts<'a> {
    payload_type: &'a [u8],
    keyid: Option<[u8; 32]>,
    sig: [u8; 64],
    /// Where the key id's hex was cut out of the statement.
    cut: Option<usize>,
    /// The statement, without the cut.
    rest: &'a [u8],
}

/// `s` after `prefix`, if it starts with it.
fn after<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    s.strip_prefix(prefix)
}

/// The text up to the next `"` and what follows it (from the quote on).
fn until_quote(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(b'"', s)?;
    Some((&s[..end], &s[end..]))
}

fn lower_hex_32(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Candidates by first byte tried before [`first_occurrence`] falls back to `memmem`.
const FIRST_BYTE_TRIES: usize = 16;

/// Where `needle` (non-empty) first occurs in `haystack`. An honest statement names the key id's
/// hex once and has few other places that start like it, so the first candidates by first byte
/// find it; `memmem::find` builds a two-way searcher for every call (about a third of `pack`'s
/// time in a profile), so it is only the fallback, which keeps a statement made of that one
/// byte (a hostile signer's) linear.
fn first_occurrence(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut tried = 0;
    for at in memchr::memchr_iter(first, haystack) {
        if haystack.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        tried += 1;
        if tried == FIRST_BYTE_TRIES {
            return memchr::memmem::find(&haystack[at + 1..], needle).map(|i| at + 1 + i);
        }
    }
    None
}

/// Appends the packed form of `envelope` to `out` and returns true, or leaves `out` as it was
/// and returns false when the envelope is not in the packed spelling.
pub(crate) fn pack(envelope: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    if try_pack(envelope, out).is_some() && rebuild(&out[start..]).as_deref() == Some(envelope) {
        return true;
    }
    out.truncate(start);
    false
}

fn try_pack(envelope: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let s = after(envelope, OPEN)?;
    let (payload_type, s) = until_quote(s)?;
    if payload_type.contains(&b'\\') || payload_type.len() > usize::from(u16::MAX) {
        return None;
    }
    let s = after(s, PAYLOAD)?;
    let (payload_b64, s) = until_quote(s)?;
    let (keyid, s) = match after(s, SIGS_KEYID) {
        Some(s) => {
            let (hex_text, s) = until_quote(s)?;
            (
                Some((lower_hex_32(hex_text)?, hex_text)),
                after(s, KEYID_SIG)?,
            )
        }
        None => (None, after(s, SIGS)?),
    };
    let (sig_b64, s) = until_quote(s)?;
    if s != CLOSE {
        return None;
    }
    let statement = STANDARD.decode(payload_b64).ok()?;
    let sig: [u8; 64] = STANDARD.decode(sig_b64).ok()?.try_into().ok()?;
    let cut = keyid.and_then(|(_, hex_text)| first_occurrence(&statement, hex_text));
    if cut.is_some_and(|at| at > usize::from(u16::MAX)) {
        return None;
    }
    let mut flags = 0;
    if keyid.is_some() {
        flags |= HAS_KEYID;
    }
    if payload_type == ASSERTION_TYPE {
        flags |= ASSERTION_TYPE_FLAG;
    }
    if cut.is_some() {
        flags |= KEYID_CUT;
    }
    out.push(PACKED);
    out.push(flags);
    if flags & ASSERTION_TYPE_FLAG == 0 {
        out.extend_from_slice(&(payload_type.len() as u16).to_le_bytes());
        out.extend_from_slice(payload_type);
    }
    if let Some((bytes, _)) = keyid {
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&sig);
    match cut {
        Some(at) => {
            out.extend_from_slice(&(at as u16).to_le_bytes());
            out.extend_from_slice(&statement[..at]);
            out.extend_from_slice(&statement[at + 64..]);
        }
        None => out.extend_from_slice(&statement),
    }
    Some(())
}

fn take<'a>(s: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if s.len() < n {
        return None;
    }
    let (head, tail) = s.split_at(n);
    *s = tail;
    Some(head)
}

fn parts(body: &[u8]) -> Option<Parts<'_>> {
    let mut s = body;
    let head = take(&mut s, 2)?;
    let (tag, flags) = (head[0], head[1]);
    if tag != PACKED || flags & !KNOWN_FLAGS != 0 {
        return None;
    }
    let payload_type = if flags & ASSERTION_TYPE_FLAG != 0 {
        ASSERTION_TYPE
    } else {
        let n = take(&mut s, 2)?;
        take(&mut s, usize::from(u16::from_le_bytes([n[0], n[1]])))?
    };
    let keyid = match flags & HAS_KEYID {
        0 => None,
        _ => Some(take(&mut s, 32)?.try_into().ok()?),
    };
    let sig: [u8; 64] = take(&mut s, 64)?.try_into().ok()?;
    let cut = match flags & KEYID_CUT {
        0 => None,
        _ => {
            keyid?;
            let n = take(&mut s, 2)?;
            let at = usize::from(u16::from_le_bytes([n[0], n[1]]));
            if at > s.len() {
                return None;
            }
            Some(at)
        }
    };
    Some(Parts {
        payload_type,
        keyid,
        sig,
        cut,
        rest: s,
    })
}

/// A key id as its 64 lower-case hex digits.
fn hex64(keyid: &[u8; 32]) -> [u8; 64] {
    let mut text = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(keyid, &mut text);
    text
}

/// The statement of parts `p`, with the key id's hex put back.
fn statement_of(p: &Parts<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.rest.len() + 64);
    match (p.cut, &p.keyid) {
        (Some(at), Some(keyid)) => {
            out.extend_from_slice(&p.rest[..at]);
            out.extend_from_slice(&hex64(keyid));
            out.extend_from_slice(&p.rest[at..]);
        }
        _ => out.extend_from_slice(p.rest),
    }
    out
}

/// The envelope a packed `body` stands for; `None` if it does not parse.
fn rebuild(body: &[u8]) -> Option<Vec<u8>> {
    let p = parts(body)?;
    let mut out = Vec::with_capacity(body.len() * 2 + 64);
    out.extend_from_slice(OPEN);
    out.extend_from_slice(p.payload_type);
    out.extend_from_slice(PAYLOAD);
    out.extend_from_slice(STANDARD.encode(statement_of(&p)).as_bytes());
    match &p.keyid {
        Some(keyid) => {
            out.extend_from_slice(SIGS_KEYID);
            out.extend_from_slice(&hex64(keyid));
            out.extend_from_slice(KEYID_SIG);
        }
        None => out.extend_from_slice(SIGS),
    }
    out.extend_from_slice(STANDARD.encode(p.sig).as_bytes());
    out.extend_from_slice(CLOSE);
    Some(out)
}

/// The envelope a value-log record body holds: a packed body rebuilt, any other as it is.
/// `None`: a body that starts with [`PACKED`] but does not parse (corruption).
pub(crate) fn envelope(body: Vec<u8>) -> Option<Vec<u8>> {
    if body.first() != Some(&PACKED) {
        return Some(body);
    }
    rebuild(&body)
}

/// The statement (the signed payload bytes) of a packed record body; `None` for a body that
/// is not packed, `Some(None)` for one that starts with [`PACKED`] but does not parse.
pub(crate) fn statement(body: &[u8]) -> Option<Option<Vec<u8>>> {
    if body.first() != Some(&PACKED) {
        return None;
    }
    Some(parts(body).map(|p| statement_of(&p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope_of(
        payload_type: &str,
        statement: &[u8],
        keyid: Option<&str>,
        sig: &[u8],
    ) -> Vec<u8> {
        let sigs = match keyid {
            Some(k) => format!(r#"[{{"keyid":"{k}","sig":"{}"}}]"#, STANDARD.encode(sig)),
            None => format!(r#"[{{"sig":"{}"}}]"#, STANDARD.encode(sig)),
        };
        format!(
            r#"{{"payloadType":"{payload_type}","payload":"{}","signatures":{sigs}}}"#,
            STANDARD.encode(statement)
        )
        .into_bytes()
    }

    const AGENT: &str = "ff4b7821a508c80a6657dd477609f7a37018b32a4dda8289a05b2675ceacca14";

    fn statement_text() -> Vec<u8> {
        format!(
            r#"{{"v":1,"subject":"fleet/eu-west/rack-0/server-0/cpu","predicate":"load.p99","object":{{"value":0,"unit":"percent"}},"agent":"{AGENT}","ts":1700000000000,"confidence":0.9}}"#
        )
        .into_bytes()
    }

    fn roundtrip(env: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![9, 9];
        if !pack(env, &mut out) {
            assert_eq!(
                out,
                vec![9, 9],
                "a refused pack leaves the buffer as it was"
            );
            return None;
        }
        assert_eq!(&out[..2], &[9, 9]);
        let body = out.split_off(2);
        assert_eq!(
            envelope(body.clone()).as_deref(),
            Some(env),
            "unpacks to the input"
        );
        Some(body)
    }

    #[test]
    fn the_signers_spelling_packs_to_about_half_and_unpacks_to_the_same_bytes() {
        let st = statement_text();
        let env = envelope_of(
            "application/vnd.stemedb.assertion.v1+json",
            &st,
            Some(AGENT),
            &[7u8; 64],
        );
        let body = roundtrip(&env).expect("packs");
        // tag, flags, key id, signature, cut offset, statement without the 64 hex digits.
        assert_eq!(body.len(), 2 + 32 + 64 + 2 + st.len() - 64);
        assert!(
            body.len() * 2 < env.len(),
            "{} of {}",
            body.len(),
            env.len()
        );
        assert_eq!(statement(&body), Some(Some(st)));
    }

    #[test]
    fn other_types_no_keyid_and_no_agent_in_the_statement_pack_too() {
        let st = b"{\"anything\":true}".to_vec();
        for (pt, keyid) in [
            ("application/x-other", Some(AGENT)),
            ("application/vnd.stemedb.assertion.v1+json", None),
            ("", None),
        ] {
            let env = envelope_of(pt, &st, keyid, &[0xA5; 64]);
            let body = roundtrip(&env).expect("packs");
            assert_eq!(statement(&body), Some(Some(st.clone())));
        }
    }

    #[test]
    fn every_other_spelling_is_stored_as_received() {
        let st = statement_text();
        let good = envelope_of(
            "application/vnd.stemedb.assertion.v1+json",
            &st,
            Some(AGENT),
            &[1u8; 64],
        );
        let text = String::from_utf8(good.clone()).expect("utf8");
        let variants = [
            text.replace("\",\"", "\", \""),            // whitespace
            format!("{text}\n"),                        // trailing newline
            format!(" {text}"),                         // leading space
            text.replace(AGENT, &AGENT.to_uppercase()), // upper-case hex
            text.replace("payloadType", "payloadtype"), // another key
            text.replace("+json", "\\u002bjson"),       // an escape in the type
            text.replacen("==", "", 1),                 // unpadded base64
            text.replace(r#""}]}"#, r#"","x":1}]}"#),   // an extra field
            envelope_of("t", &st, Some(AGENT), &[1u8; 63]) // a 63-byte signature
                .into_iter()
                .map(char::from)
                .collect(),
        ];
        for v in variants {
            assert_eq!(roundtrip(v.as_bytes()), None, "packed {v}");
        }
    }

    #[test]
    fn the_key_ids_hex_is_found_where_it_first_occurs() {
        assert_eq!(first_occurrence(b"abcabc", b"bc"), Some(1));
        assert_eq!(first_occurrence(b"aab", b"ab"), Some(1));
        assert_eq!(first_occurrence(b"xxab", b"ab"), Some(2));
        assert_eq!(first_occurrence(b"xxa", b"ab"), None);
        assert_eq!(first_occurrence(b"", b"ab"), None);
        assert_eq!(first_occurrence(b"ab", b""), None);
        // Past the first-byte tries the fallback still finds the first occurrence, and a
        // haystack of the needle's first byte stays linear.
        let mut hay = vec![b'a'; 100];
        hay.extend_from_slice(b"abc");
        assert_eq!(first_occurrence(&hay, b"abc"), Some(100));
        let mut hay = b"xx".to_vec();
        hay.extend(std::iter::repeat_n(b'a', 20).chain(*b"ab"));
        assert_eq!(first_occurrence(&hay, b"aab"), Some(21));
        assert_eq!(first_occurrence(&vec![b'a'; 1 << 16], &[b'a'; 63]), Some(0));
        assert_eq!(first_occurrence(&vec![b'a'; 1 << 16], b"ab"), None);
    }

    #[test]
    fn a_damaged_packed_body_is_reported_not_guessed() {
        let env = envelope_of(
            "application/vnd.stemedb.assertion.v1+json",
            &statement_text(),
            Some(AGENT),
            &[3u8; 64],
        );
        let body = roundtrip(&env).expect("packs");
        for cut in [1, 2, 30, 97, 99] {
            assert_eq!(envelope(body[..cut].to_vec()), None, "cut at {cut}");
        }
        let mut bad_flags = body.clone();
        bad_flags[1] |= 0x80;
        assert_eq!(envelope(bad_flags), None);
        let mut far_cut = body.clone();
        far_cut[98] = 0xFF;
        far_cut[99] = 0xFF;
        assert_eq!(envelope(far_cut.clone()), None);
        assert_eq!(statement(&far_cut), Some(None));
        // A JSON body is not packed.
        assert_eq!(envelope(b"{}".to_vec()).as_deref(), Some(&b"{}"[..]));
        assert_eq!(statement(b"{}"), None);
    }

    proptest! {
        #[test]
        fn any_envelope_either_packs_losslessly_or_stays_as_it_is(
            statement in proptest::collection::vec(any::<u8>(), 0..300),
            with_agent in any::<bool>(),
            keyid in proptest::option::of(proptest::array::uniform32(any::<u8>())),
            sig in proptest::collection::vec(any::<u8>(), 62..66),
            junk in proptest::option::of((0usize..700, any::<u8>())),
        ) {
            let keyhex = keyid.map(hex::encode);
            let mut st = statement;
            if let (true, Some(k)) = (with_agent, &keyhex) {
                let at = st.len() / 2;
                st.splice(at..at, k.bytes());
            }
            let mut env = envelope_of(
                "application/vnd.stemedb.assertion.v1+json",
                &st,
                keyhex.as_deref(),
                &sig,
            );
            if let Some((at, byte)) = junk {
                let at = at % env.len();
                env[at] = byte;
            }
            let mut out = Vec::new();
            if pack(&env, &mut out) {
                prop_assert_eq!(envelope(out.clone()), Some(env.clone()));
                prop_assert!(out.len() < env.len());
            } else {
                prop_assert!(out.is_empty());
            }
        }
    }
}
