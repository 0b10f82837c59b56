//! What the store keeps of a verified assertion on its way to the log: the envelope bytes as
//! received and the few statement fields the indexes and lenses read. The statement's object is
//! reduced to its value key here, so a queued batch holds no JSON value tree (design §7: memory
//! for bodies in flight stays within about twice their bytes).

use stemedb_core::{AssertionId, Statement, Verified};

use crate::lens::{ValueKey, value_key};

/// A verified assertion ready for the commit thread.
///
/// Invariant: built only from a `Verified` (or, on replay, from envelope bytes that verified when
/// they were accepted), so its fields are the checked statement's.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub(crate) id: AssertionId,
    // A slice of the request body where it came from one (no copy per envelope, design §7).
    pub(crate) raw: bytes::Bytes,
    pub(crate) fields: Fields,
}

/// The statement fields the store indexes (fields private to the store).
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    pub(crate) subject: String,
    pub(crate) predicate: String,
    pub(crate) agent: [u8; 32],
    pub(crate) ts: i64,
    pub(crate) confidence: f64,
    pub(crate) retract: bool,
    pub(crate) supersedes: Vec<AssertionId>,
    pub(crate) valid_from: Option<i64>,
    pub(crate) valid_until: Option<i64>,
    pub(crate) value: ValueKey,
}

impl Fields {
    /// The fields of a checked statement.
    pub fn of(st: &Statement) -> Fields {
        Fields {
            subject: st.subject().to_owned(),
            predicate: st.predicate().to_owned(),
            agent: *st.agent(),
            ts: st.ts(),
            confidence: st.confidence(),
            retract: st.retract(),
            supersedes: st.supersedes().to_vec(),
            valid_from: st.valid_from(),
            valid_until: st.valid_until(),
            value: value_key(st.object()),
        }
    }

    /// The fields of an envelope that verified when it was accepted (read back from the WAL,
    /// whose records are checksummed): a light parse of the payload instead of every rule
    /// again. Gives exactly what `Fields::of` gives for the same envelope (the object is read
    /// by the same JSON reader, so its value key is the same).
    pub(crate) fn from_stored(raw: &[u8]) -> Result<Fields, String> {
        use base64::Engine as _;
        #[derive(serde::Deserialize)]
        struct Env<'a> {
            #[serde(borrow)]
            payload: std::borrow::Cow<'a, str>,
        }
        #[derive(serde::Deserialize)]
        struct Payload {
            subject: String,
            predicate: String,
            object: serde_json::Value,
            agent: String,
            ts: i64,
            confidence: Option<f64>,
            #[serde(default)]
            supersedes: Vec<String>,
            #[serde(default)]
            retract: bool,
            valid_from: Option<i64>,
            valid_until: Option<i64>,
        }
        let env: Env<'_> = serde_json::from_slice(raw).map_err(|e| format!("envelope: {e}"))?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env.payload.as_bytes())
            .map_err(|e| format!("payload: {e}"))?;
        let p: Payload = serde_json::from_slice(&payload).map_err(|e| format!("statement: {e}"))?;
        let agent = stemedb_core::parse_agent(&p.agent).map_err(|e| e.to_string())?;
        let supersedes = p
            .supersedes
            .iter()
            .map(|s| AssertionId::parse(s).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Fields {
            subject: p.subject,
            predicate: p.predicate,
            agent,
            ts: p.ts,
            confidence: p.confidence.unwrap_or(1.0),
            retract: p.retract,
            supersedes,
            valid_from: p.valid_from,
            valid_until: p.valid_until,
            value: value_key(&p.object),
        })
    }

    /// The subject's segments, in order.
    pub(crate) fn segments(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.subject.split('/')
    }
}

impl Entry {
    /// Keeps what the store needs of `verified`, whose envelope arrived as `raw` (a `Vec` or a
    /// `Bytes` slice of the request body, taken without a copy).
    pub fn new(verified: Verified, raw: impl Into<bytes::Bytes>) -> Entry {
        let fields = Fields::of(verified.statement());
        Entry {
            id: verified.id(),
            raw: raw.into(),
            fields,
        }
    }

    /// The assertion id.
    pub fn id(&self) -> AssertionId {
        self.id
    }

    /// The signing agent.
    pub fn agent(&self) -> &[u8; 32] {
        &self.fields.agent
    }

    /// Bytes of the envelope as received.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// True for an empty envelope (never, for a verified one).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_light_parse_of_a_stored_envelope_equals_the_checked_one() {
        let key = stemedb_core::signing_key_from_seed(&[3; 32]);
        let agent = hex::encode(key.verifying_key().as_bytes());
        let objects = [
            r#"{"b":[1,2.5,{"x":null}],"a":"\u00e9"}"#,
            "1e300",
            "-0.0",
            "9007199254740991",
            r#""text""#,
        ];
        for (i, object) in objects.iter().enumerate() {
            let extra = if i % 2 == 0 {
                format!(
                    r#","confidence":0.25,"supersedes":["{}"],"retract":true,"valid_from":5,"valid_until":9"#,
                    "ab".repeat(32)
                )
            } else {
                String::new()
            };
            let payload = format!(
                r#"{{"v":1,"subject":"a/b{i}","predicate":"p.q","object":{object},"agent":"{agent}","ts":{i}{extra}}}"#
            );
            let v = stemedb_core::sign(&key, payload.into_bytes()).expect("valid");
            let raw = v.envelope().encode();
            let checked = Fields::of(v.statement());
            assert_eq!(
                Fields::from_stored(&raw).expect("parses"),
                checked,
                "{object}"
            );
        }
    }
}
