//! `stemedb-core`: statements, DSSE envelopes, assertion ids, and Ed25519 signing and strict
//! verification.
//!
//! Architecture Invariant: this crate does no I/O and knows nothing about HTTP or storage. Every
//! error has a stable machine code (`Error::code`) and a class (`Error::class`) that outer
//! layers map to their own terms.

mod envelope;
mod error;
mod id;
mod json;
mod keys;
mod statement;
mod verify;

pub use ed25519_dalek::SigningKey;
pub use envelope::{Envelope, MAX_ENVELOPE_BYTES, PAYLOAD_TYPE, pae};
pub use error::{Error, ErrorClass, Result};
pub use id::AssertionId;
pub use json::MAX_SAFE_INTEGER;
pub use keys::{public_key_hex, signing_key_from_pem, signing_key_from_seed, signing_key_to_pem};
pub use statement::{
    MAX_OBJECT_BYTES, MAX_OBJECT_DEPTH, MAX_PAYLOAD_BYTES, MAX_PREDICATE_CHARS, MAX_SEGMENT_CHARS,
    MAX_SUBJECT_SEGMENTS, MAX_SUPERSEDES, STATEMENT_VERSION, Statement, parse_agent,
    validate_predicate, validate_subject,
};
pub use verify::{
    Prepared, Verified, batch_strict_verdicts, check, compare_strict_paths, sign, verify_batch,
};

/// Parses statement JSON that may leave out `agent` and `ts`, fills them in, and returns the
/// bytes to sign. Used by `stemedb sign` and clients; the result still has to pass every rule.
pub fn complete_statement(json: &[u8], key: &SigningKey, now_ms: i64) -> Result<Vec<u8>> {
    let value = json::parse_strict(json, MAX_OBJECT_DEPTH + 1)
        .map_err(|e| e.into_payload_error(MAX_OBJECT_DEPTH))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(Error::Schema("statement must be a JSON object".into()));
    };
    map.entry("agent")
        .or_insert_with(|| serde_json::Value::String(public_key_hex(key)));
    map.entry("ts")
        .or_insert_with(|| serde_json::Value::from(now_ms));
    map.entry("v").or_insert_with(|| serde_json::Value::from(1));
    serde_json::to_vec(&serde_json::Value::Object(map))
        .map_err(|e| Error::Schema(format!("cannot encode statement: {e}")))
}
