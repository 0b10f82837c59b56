//! A strict JSON reader: one meaning for every document.
//!
//! `serde_json` alone keeps the last of two equal keys and reads integers beyond 2^53 exactly,
//! where JavaScript rounds them. A signed statement must mean the same thing to every parser, so
//! this reader rejects duplicate keys at any depth, integers outside ±(2^53−1), nesting beyond a
//! limit, and trailing bytes. Non-finite numbers cannot be written in JSON and `serde_json` rejects
//! literals that overflow a double, so every number that comes out is finite.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::Error;

/// The largest integer magnitude every JSON parser (IEEE doubles included) reads exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a strict parse failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StrictJsonError {
    /// Not JSON at all, or trailing bytes, or not UTF-8.
    Syntax(String),
    /// A key appears twice in one object.
    DuplicateKey(String),
    /// Containers nest deeper than the limit.
    TooDeep,
    /// An integer is outside ±(2^53−1).
    UnsafeInteger(String),
}

impl StrictJsonError {
    /// Turns a payload parse failure into the statement error with its own code.
    pub(crate) fn into_payload_error(self, depth_limit: usize) -> Error {
        match self {
            StrictJsonError::Syntax(m) => Error::PayloadJson(m),
            StrictJsonError::DuplicateKey(k) => Error::DuplicateKey(k),
            StrictJsonError::TooDeep => Error::TooDeep { limit: depth_limit },
            StrictJsonError::UnsafeInteger(n) => Error::UnsafeInteger(n),
        }
    }

    /// Turns an envelope parse failure into `MalformedEnvelope`.
    pub(crate) fn into_envelope_error(self) -> Error {
        let detail = match self {
            StrictJsonError::Syntax(m) => m,
            StrictJsonError::DuplicateKey(k) => format!("duplicate key \"{k}\""),
            StrictJsonError::TooDeep => "nested too deeply".to_string(),
            StrictJsonError::UnsafeInteger(n) => format!("unexpected number {n}"),
        };
        Error::MalformedEnvelope(detail)
    }
}

/// Parses `bytes` as one strict JSON value whose containers nest at most `max_depth` deep
/// (a scalar has depth 0, `[]` depth 1, `[[1]]` depth 2).
pub(crate) fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, StrictJsonError> {
    let ctx = Ctx {
        max_depth,
        failure: RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = ValueSeed {
        ctx: &ctx,
        depth: 0,
    }
    .deserialize(&mut de);
    let parsed = parsed.and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => Err(ctx
            .failure
            .into_inner()
            .unwrap_or_else(|| StrictJsonError::Syntax(e.to_string()))),
    }
}

struct Ctx {
    max_depth: usize,
    // The first semantic failure; serde's error type only carries a string.
    failure: RefCell<Option<StrictJsonError>>,
}

impl Ctx {
    fn fail<E: de::Error>(&self, why: StrictJsonError) -> E {
        let msg = format!("{why:?}");
        self.failure.borrow_mut().get_or_insert(why);
        E::custom(msg)
    }
}

#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    ctx: &'a Ctx,
    // Invariant: the number of containers that enclose the value being read.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.ctx.max_depth {
            return Err(self.ctx.fail(StrictJsonError::TooDeep));
        }
        Ok(ValueSeed {
            ctx: self.ctx,
            depth,
        })
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(self.ctx.fail(StrictJsonError::UnsafeInteger(v.to_string())));
        }
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_SAFE_INTEGER {
            return Err(self.ctx.fail(StrictJsonError::UnsafeInteger(v.to_string())));
        }
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(self
                .ctx
                .fail(StrictJsonError::Syntax("non-finite number".into()))),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.ctx.fail(StrictJsonError::DuplicateKey(key)));
            }
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, depth: usize, expected: Result<&str, StrictJsonError>) {
        let got = parse_strict(input.as_bytes(), depth).map(|v| v.to_string());
        match (&got, &expected) {
            (Ok(g), Ok(e)) => assert_eq!(g, e, "input {input}"),
            (Err(StrictJsonError::Syntax(_)), Err(StrictJsonError::Syntax(_))) => {}
            (Err(g), Err(e)) => assert_eq!(g, e, "input {input}"),
            _ => panic!("input {input}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn strict_parse_table() {
        let syntax = || Err(StrictJsonError::Syntax(String::new()));
        check(
            r#"{"a":1,"b":[true,null,"x"]}"#,
            8,
            Ok(r#"{"a":1,"b":[true,null,"x"]}"#),
        );
        check(
            r#"{"a":1,"a":2}"#,
            8,
            Err(StrictJsonError::DuplicateKey("a".into())),
        );
        check(
            r#"{"x":{"a":1,"a":1}}"#,
            8,
            Err(StrictJsonError::DuplicateKey("a".into())),
        );
        check("[[[1]]]", 3, Ok("[[[1]]]"));
        check("[[[[1]]]]", 3, Err(StrictJsonError::TooDeep));
        check("9007199254740991", 1, Ok("9007199254740991"));
        check("-9007199254740991", 1, Ok("-9007199254740991"));
        check(
            "9007199254740992",
            1,
            Err(StrictJsonError::UnsafeInteger("9007199254740992".into())),
        );
        check(
            "-9007199254740992",
            1,
            Err(StrictJsonError::UnsafeInteger("-9007199254740992".into())),
        );
        check("1.5e300", 1, Ok("1.5e+300"));
        check("1e400", 1, syntax());
        check("NaN", 1, syntax());
        check("Infinity", 1, syntax());
        check("{} x", 1, syntax());
        check("{\"a\":\"\\ud800\"}", 1, syntax());
        check("\u{feff}{}", 1, syntax());
        check("", 1, syntax());
    }

    #[test]
    fn invalid_utf8_is_a_syntax_error() {
        let bytes = b"{\"a\":\"\xff\"}";
        assert!(matches!(
            parse_strict(bytes, 4),
            Err(StrictJsonError::Syntax(_))
        ));
    }
}
