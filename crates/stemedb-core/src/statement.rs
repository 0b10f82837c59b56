//! The statement: what an agent claims, and every rule it must satisfy (design §2).

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::id::AssertionId;
use crate::json::{self, MAX_SAFE_INTEGER};

/// The only statement format version.
pub const STATEMENT_VERSION: u64 = 1;
/// Most segments in a subject concept path.
pub const MAX_SUBJECT_SEGMENTS: usize = 32;
/// Most characters in one subject segment.
pub const MAX_SEGMENT_CHARS: usize = 128;
/// Most characters in a predicate.
pub const MAX_PREDICATE_CHARS: usize = 256;
/// Most bytes of the `object` value, encoded as compact JSON.
pub const MAX_OBJECT_BYTES: usize = 64 * 1024;
/// Deepest nesting of the `object` value (a scalar is depth 0).
pub const MAX_OBJECT_DEPTH: usize = 32;
/// Most ids in `supersedes`.
pub const MAX_SUPERSEDES: usize = 16;
/// Most bytes of a statement payload: the object limit plus room for every other field at its
/// own limit and for insignificant whitespace.
pub const MAX_PAYLOAD_BYTES: usize = 72 * 1024;

const FIELDS: [&str; 11] = [
    "v",
    "subject",
    "predicate",
    "object",
    "agent",
    "ts",
    "confidence",
    "supersedes",
    "retract",
    "valid_from",
    "valid_until",
];

/// A statement that satisfies every rule of design §2.
///
/// Invariant: only `Statement::from_payload` builds one, so every getter returns checked data.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    subject: String,
    predicate: String,
    object: Value,
    agent: [u8; 32],
    ts: i64,
    confidence: f64,
    supersedes: Vec<AssertionId>,
    retract: bool,
    valid_from: Option<i64>,
    valid_until: Option<i64>,
}

impl Statement {
    /// Parses and validates statement bytes exactly as they were (or will be) signed.
    pub fn from_payload(payload: &[u8]) -> Result<Statement> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::TooLarge {
                what: "statement payload",
                actual: payload.len(),
                limit: MAX_PAYLOAD_BYTES,
            });
        }
        // The statement object is one level above `object`, so the payload may nest one deeper.
        let value = json::parse_strict(payload, MAX_OBJECT_DEPTH + 1)
            .map_err(|e| e.into_payload_error(MAX_OBJECT_DEPTH))?;
        Statement::from_value(value)
    }

    /// Validates a parsed JSON object as a statement.
    pub fn from_value(value: Value) -> Result<Statement> {
        let Value::Object(mut map) = value else {
            return Err(Error::Schema("statement must be a JSON object".into()));
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(Error::UnknownField(unknown.clone()));
        }
        match map.remove("v") {
            Some(Value::Number(n)) if n.as_u64() == Some(STATEMENT_VERSION) => {}
            Some(other) => {
                return Err(Error::Schema(format!(
                    "v must be {STATEMENT_VERSION}, got {other}"
                )));
            }
            None => return Err(missing("v")),
        }
        let subject = take_string(&mut map, "subject")?;
        validate_subject(&subject)?;
        let predicate = take_string(&mut map, "predicate")?;
        validate_predicate(&predicate)?;
        let object = map.remove("object").ok_or_else(|| missing("object"))?;
        check_object(&object)?;
        let agent = parse_agent(&take_string(&mut map, "agent")?)?;
        let ts = take_timestamp(&mut map, "ts")?.ok_or_else(|| missing("ts"))?;
        let confidence = match map.remove("confidence") {
            None => 1.0,
            Some(v) => parse_confidence(&v)?,
        };
        let supersedes = match map.remove("supersedes") {
            None => Vec::new(),
            Some(v) => parse_supersedes(v)?,
        };
        let retract = match map.remove("retract") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(Error::Schema(format!(
                    "retract must be a boolean, got {other}"
                )));
            }
        };
        if retract && supersedes.is_empty() {
            return Err(Error::Schema(
                "retract: true needs at least one id in supersedes".into(),
            ));
        }
        let valid_from = take_timestamp(&mut map, "valid_from")?;
        let valid_until = take_timestamp(&mut map, "valid_until")?;
        if let (Some(from), Some(until)) = (valid_from, valid_until)
            && from > until
        {
            return Err(Error::Validity { from, until });
        }
        Ok(Statement {
            subject,
            predicate,
            object,
            agent,
            ts,
            confidence,
            supersedes,
            retract,
            valid_from,
            valid_until,
        })
    }

    /// The concept path, `/`-separated.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// The segments of the concept path, in order.
    pub fn subject_segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.subject.split('/')
    }
    /// The predicate.
    pub fn predicate(&self) -> &str {
        &self.predicate
    }
    /// The claimed value.
    pub fn object(&self) -> &Value {
        &self.object
    }
    /// The signer's Ed25519 public key.
    pub fn agent(&self) -> &[u8; 32] {
        &self.agent
    }
    /// The signer's public key as 64 lowercase hex characters.
    pub fn agent_hex(&self) -> String {
        hex::encode(self.agent)
    }
    /// When the agent made the claim, Unix milliseconds.
    pub fn ts(&self) -> i64 {
        self.ts
    }
    /// The agent's confidence, 0.0..=1.0 (1.0 when absent).
    pub fn confidence(&self) -> f64 {
        self.confidence
    }
    /// The ids this statement corrects or retracts.
    pub fn supersedes(&self) -> &[AssertionId] {
        &self.supersedes
    }
    /// True when the superseded assertions no longer hold and this one carries no value.
    pub fn retract(&self) -> bool {
        self.retract
    }
    /// When the fact starts to hold in the world, Unix milliseconds.
    pub fn valid_from(&self) -> Option<i64> {
        self.valid_from
    }
    /// When the fact stops holding in the world, Unix milliseconds.
    pub fn valid_until(&self) -> Option<i64> {
        self.valid_until
    }
}

fn missing(field: &str) -> Error {
    Error::Schema(format!("missing required field \"{field}\""))
}

fn take_string(map: &mut Map<String, Value>, field: &str) -> Result<String> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::Schema(format!(
            "{field} must be a string, got {}",
            type_name(&other)
        ))),
        None => Err(missing(field)),
    }
}

fn take_timestamp(map: &mut Map<String, Value>, field: &str) -> Result<Option<i64>> {
    let Some(v) = map.remove(field) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(ms) if ms <= MAX_SAFE_INTEGER => Ok(Some(ms as i64)),
        _ => Err(Error::Timestamp(format!(
            "{field} must be a non-negative integer of Unix milliseconds, got {v}"
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | ':' | '@' | '+' | '-')
}

/// Checks a concept path: `/`-separated segments of 1..=128 characters of `[A-Za-z0-9._~:@+-]`,
/// at most 32 segments, no empty segment (so no leading, trailing or doubled `/`), and no segment
/// that is exactly `.` or `..`.
pub fn validate_subject(subject: &str) -> Result<()> {
    if subject.is_empty() {
        return Err(Error::Subject("subject is empty".into()));
    }
    let mut count = 0;
    for segment in subject.split('/') {
        count += 1;
        if count > MAX_SUBJECT_SEGMENTS {
            return Err(Error::Subject(format!(
                "more than {MAX_SUBJECT_SEGMENTS} segments"
            )));
        }
        if segment.is_empty() {
            return Err(Error::Subject(
                "empty segment (leading, trailing or doubled '/')".into(),
            ));
        }
        if segment.len() > MAX_SEGMENT_CHARS {
            return Err(Error::Subject(format!(
                "segment longer than {MAX_SEGMENT_CHARS} characters"
            )));
        }
        if let Some(c) = segment.chars().find(|c| !is_segment_char(*c)) {
            return Err(Error::Subject(format!(
                "character {c:?} not allowed (allowed: A-Z a-z 0-9 . _ ~ : @ + -)"
            )));
        }
        if segment == "." || segment == ".." {
            return Err(Error::Subject(format!(
                "segment {segment:?} is not allowed (a proxy, a URL library or a file-system \
                 export would rewrite it)"
            )));
        }
    }
    Ok(())
}

/// Checks a predicate: 1..=256 characters of `[A-Za-z0-9._~:@+-/]`.
pub fn validate_predicate(predicate: &str) -> Result<()> {
    if predicate.is_empty() {
        return Err(Error::Predicate("predicate is empty".into()));
    }
    if predicate.len() > MAX_PREDICATE_CHARS {
        return Err(Error::Predicate(format!(
            "longer than {MAX_PREDICATE_CHARS} characters"
        )));
    }
    if let Some(c) = predicate
        .chars()
        .find(|c| !(is_segment_char(*c) || *c == '/'))
    {
        return Err(Error::Predicate(format!(
            "character {c:?} not allowed (allowed: A-Z a-z 0-9 . _ ~ : @ + - /)"
        )));
    }
    Ok(())
}

/// Parses an agent key written as 64 lowercase hex characters.
pub fn parse_agent(agent: &str) -> Result<[u8; 32]> {
    if agent.len() != 64
        || !agent
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(Error::Agent(
            "must be 64 lowercase hex characters (an Ed25519 public key)".into(),
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(agent, &mut out).map_err(|e| Error::Agent(e.to_string()))?;
    Ok(out)
}

fn parse_confidence(v: &Value) -> Result<f64> {
    match v.as_f64() {
        Some(c) if (0.0..=1.0).contains(&c) => Ok(c),
        _ => Err(Error::Confidence(v.to_string())),
    }
}

fn parse_supersedes(v: Value) -> Result<Vec<AssertionId>> {
    let Value::Array(items) = v else {
        return Err(Error::Schema(format!(
            "supersedes must be an array of ids, got {}",
            type_name(&v)
        )));
    };
    if items.len() > MAX_SUPERSEDES {
        return Err(Error::TooManySupersedes {
            count: items.len(),
            max: MAX_SUPERSEDES,
        });
    }
    let mut out: Vec<AssertionId> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(s) = item else {
            return Err(Error::SupersedesId(format!("{item} is not a string")));
        };
        let id = AssertionId::parse(&s).map_err(|_| {
            Error::SupersedesId(format!("{s:?} is not 64 lowercase hex characters"))
        })?;
        if out.contains(&id) {
            return Err(Error::SupersedesId(format!("{s} is listed twice")));
        }
        out.push(id);
    }
    Ok(out)
}

/// Counts bytes without storing them.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check_object(object: &Value) -> Result<()> {
    // The strict parser already bounded the depth; measure the compact encoding's size.
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, object)
        .map_err(|e| Error::Schema(format!("object cannot be encoded: {e}")))?;
    if counter.0 > MAX_OBJECT_BYTES {
        return Err(Error::TooLarge {
            what: "object (compact JSON)",
            actual: counter.0,
            limit: MAX_OBJECT_BYTES,
        });
    }
    if depth(object) > MAX_OBJECT_DEPTH {
        return Err(Error::TooDeep {
            limit: MAX_OBJECT_DEPTH,
        });
    }
    Ok(())
}

/// Nesting depth of a value: 0 for a scalar, 1 + the deepest child for a container.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn base() -> Map<String, Value> {
        let v = serde_json::json!({
            "v": 1, "subject": "fleet/eu/server-1/cpu", "predicate": "load",
            "object": {"p50": 0.4}, "agent": AGENT, "ts": 1_700_000_000_000u64
        });
        match v {
            Value::Object(m) => m,
            _ => unreachable!("literal is an object"),
        }
    }

    fn with(field: &str, value: Value) -> Vec<u8> {
        let mut m = base();
        m.insert(field.into(), value);
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    }

    fn check(payload: &[u8], expected_code: Option<&str>) {
        let got = Statement::from_payload(payload);
        match (got, expected_code) {
            (Ok(_), None) => {}
            (Err(e), Some(code)) => assert_eq!(
                e.code(),
                code,
                "payload {} gave {e}",
                String::from_utf8_lossy(payload)
            ),
            (got, want) => panic!(
                "payload {}: got {got:?}, expected code {want:?}",
                String::from_utf8_lossy(payload)
            ),
        }
    }

    fn nested(levels: usize) -> Value {
        let mut v = Value::from(1);
        for _ in 0..levels {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn statement_rules_table() {
        use serde_json::json;
        let s = |x: &str| Value::String(x.to_string());
        let long_seg = "a".repeat(129);
        let max_seg = "a".repeat(128);
        let many = vec!["a"; 33].join("/");
        let most = vec!["a"; 32].join("/");
        let id = "ab".repeat(32);
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            (with("v", json!(1)), None),
            (with("v", json!(2)), Some("schema")),
            (with("v", json!("1")), Some("schema")),
            (with("v", json!(1.0)), Some("schema")),
            (with("subject", s("a")), None),
            (with("subject", s("A-z_0.9~:@+")), None),
            (with("subject", s(&max_seg)), None),
            (with("subject", s(&most)), None),
            (with("subject", s("")), Some("bad_subject")),
            (with("subject", s("/a")), Some("bad_subject")),
            (with("subject", s("a/")), Some("bad_subject")),
            (with("subject", s("a//b")), Some("bad_subject")),
            (with("subject", s(".")), Some("bad_subject")),
            (with("subject", s("a/..")), Some("bad_subject")),
            (with("subject", s("../etc")), Some("bad_subject")),
            (with("subject", s("a/./b")), Some("bad_subject")),
            (with("subject", s("a/.../b")), None),
            (with("subject", s(".hidden/..x")), None),
            (with("subject", s("a b")), Some("bad_subject")),
            (with("subject", s("é")), Some("bad_subject")),
            (with("subject", s(&long_seg)), Some("bad_subject")),
            (with("subject", s(&many)), Some("bad_subject")),
            (with("subject", json!(5)), Some("schema")),
            (with("predicate", s("has/part")), None),
            (with("predicate", s("")), Some("bad_predicate")),
            (
                with("predicate", s(&"p".repeat(257))),
                Some("bad_predicate"),
            ),
            (with("predicate", s("a?b")), Some("bad_predicate")),
            (with("agent", s(&AGENT.to_uppercase())), Some("bad_agent")),
            (with("agent", s("abcd")), Some("bad_agent")),
            (with("ts", json!(-1)), Some("bad_timestamp")),
            (with("ts", json!(1.5)), Some("bad_timestamp")),
            (with("ts", json!("1")), Some("bad_timestamp")),
            (with("confidence", json!(0)), None),
            (with("confidence", json!(1)), None),
            (with("confidence", json!(0.5)), None),
            (with("confidence", json!(1.01)), Some("bad_confidence")),
            (with("confidence", json!(-0.01)), Some("bad_confidence")),
            (with("confidence", json!("0.5")), Some("bad_confidence")),
            (with("supersedes", json!([id])), None),
            (with("supersedes", json!([id, id])), Some("bad_supersedes")),
            (with("supersedes", json!(["xyz"])), Some("bad_supersedes")),
            (with("supersedes", json!(id)), Some("schema")),
            (
                with("supersedes", json!(vec![String::new(); 17])),
                Some("too_many_supersedes"),
            ),
            (with("retract", json!(true)), Some("schema")),
            (with("retract", json!("yes")), Some("schema")),
            (with("valid_from", json!(5)), None),
            (with("valid_until", json!(4)), None),
            (with("extra", json!(1)), Some("unknown_field")),
            (with("object", nested(32)), None),
            (with("object", nested(33)), Some("too_deep")),
            (with("object", s(&"x".repeat(MAX_OBJECT_BYTES - 2))), None),
            (
                with("object", s(&"x".repeat(MAX_OBJECT_BYTES - 1))),
                Some("too_large"),
            ),
            (
                with("object", json!(9007199254740992u64)),
                Some("unsafe_integer"),
            ),
            (b"[1]".to_vec(), Some("schema")),
            (b"{\"v\":1,\"v\":1}".to_vec(), Some("duplicate_key")),
            (b"{\"v\":1".to_vec(), Some("bad_json")),
            (b"\xff".to_vec(), Some("bad_json")),
            (vec![b' '; MAX_PAYLOAD_BYTES + 1], Some("too_large")),
        ];
        for (payload, expected) in cases {
            check(&payload, expected);
        }
    }

    #[test]
    fn missing_fields_are_schema_errors() {
        for field in ["v", "subject", "predicate", "object", "agent", "ts"] {
            let mut m = base();
            m.remove(field);
            let bytes = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
            check(&bytes, Some("schema"));
        }
    }

    #[test]
    fn retract_and_validity_rules() {
        let mut m = base();
        m.insert("supersedes".into(), serde_json::json!(["cd".repeat(32)]));
        m.insert("retract".into(), Value::Bool(true));
        m.insert("valid_from".into(), Value::from(10));
        m.insert("valid_until".into(), Value::from(9));
        let bytes = serde_json::to_vec(&Value::Object(m.clone())).unwrap_or_default();
        check(&bytes, Some("bad_validity"));
        m.insert("valid_until".into(), Value::from(10));
        let bytes = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
        let st = Statement::from_payload(&bytes).expect("valid statement");
        assert!(st.retract());
        assert_eq!(st.supersedes().len(), 1);
        assert_eq!(st.valid_from(), Some(10));
    }
}
