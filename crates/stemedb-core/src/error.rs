//! The one error type of `stemedb-core`.
//!
//! Every variant carries a stable machine code (`Error::code`) that clients and the HTTP layer
//! rely on, and a class (`Error::class`) that the HTTP layer maps to a status. This crate knows
//! nothing about HTTP: the mapping lives in `stemedb-server`.

/// How a caller should treat an error: the server maps each class to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The envelope itself could not be read (not JSON, wrong shape, bad base64): HTTP 400.
    Malformed,
    /// The envelope was read but the statement or its signature is not acceptable: HTTP 422.
    Invalid,
    /// A size limit was exceeded: HTTP 413.
    TooLarge,
}

/// Everything that can be wrong with an envelope, a statement, a key or a signature.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The envelope bytes are not a JSON object of the DSSE shape.
    #[error("malformed envelope: {0}")]
    MalformedEnvelope(String),
    /// `payloadType` is not the StemeDB assertion type.
    #[error("payloadType must be \"{expected}\", got \"{got}\"")]
    PayloadType { expected: &'static str, got: String },
    /// A base64 field is not canonical standard base64 with padding.
    #[error("{field} is not canonical standard base64 (RFC 4648 section 4, padded)")]
    Base64 { field: &'static str },
    /// The envelope does not carry exactly one signature.
    #[error("exactly one signature is required, found {0}")]
    SignatureCount(usize),
    /// A signature is not 64 bytes.
    #[error("signature must be 64 bytes, got {0}")]
    SignatureLength(usize),
    /// The signature's `keyid` names a different key than the statement's `agent`.
    #[error("signature keyid {keyid} does not match statement agent {agent}")]
    KeyMismatch { keyid: String, agent: String },
    /// The agent key is not a usable Ed25519 public key (not a curve point, or of small order).
    #[error("agent is not a valid Ed25519 public key: {0}")]
    WeakKey(String),
    /// The Ed25519 signature does not verify over the PAE with the agent's key.
    #[error("signature does not verify with the agent's key")]
    BadSignature,
    /// The payload is not UTF-8 JSON (or holds a non-finite number).
    #[error("payload is not valid JSON: {0}")]
    PayloadJson(String),
    /// A JSON object in the payload repeats a key.
    #[error("duplicate key \"{0}\" in payload")]
    DuplicateKey(String),
    /// The statement has a field the schema does not define.
    #[error("unknown field \"{0}\" in statement")]
    UnknownField(String),
    /// A field is missing or has the wrong type or value (for example `v` is not 1).
    #[error("schema: {0}")]
    Schema(String),
    /// `subject` breaks the concept-path rules.
    #[error("bad subject: {0}")]
    Subject(String),
    /// `predicate` breaks its rules.
    #[error("bad predicate: {0}")]
    Predicate(String),
    /// `agent` is not 64 lowercase hex characters.
    #[error("bad agent: {0}")]
    Agent(String),
    /// `confidence` is not a number in 0.0..=1.0.
    #[error("confidence must be a number in 0.0..=1.0, got {0}")]
    Confidence(String),
    /// An integer is outside the range every JSON parser reads exactly (±(2^53−1)).
    #[error("integer {0} is outside ±(2^53-1); encode it as a string")]
    UnsafeInteger(String),
    /// A timestamp field is negative or not an integer.
    #[error("bad timestamp: {0}")]
    Timestamp(String),
    /// `valid_from` is after `valid_until`.
    #[error("valid_from ({from}) is after valid_until ({until})")]
    Validity { from: i64, until: i64 },
    /// An entry of `supersedes` is not an assertion id.
    #[error("bad id in supersedes: {0}")]
    SupersedesId(String),
    /// More than the allowed number of `supersedes` entries.
    #[error("supersedes lists {count} ids, at most {max} allowed")]
    TooManySupersedes { count: usize, max: usize },
    /// Something is larger than its limit.
    #[error("{what} is {actual} bytes, limit {limit}")]
    TooLarge {
        what: &'static str,
        actual: usize,
        limit: usize,
    },
    /// The object nests deeper than allowed.
    #[error("object nesting depth exceeds {limit}")]
    TooDeep { limit: usize },
    /// A private key could not be read.
    #[error("bad key: {0}")]
    Key(String),
}

impl Error {
    /// The stable machine code for this error. Clients may match on it; it never changes meaning.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MalformedEnvelope(_) => "malformed_envelope",
            Error::PayloadType { .. } => "bad_payload_type",
            Error::Base64 { .. } => "bad_base64",
            Error::SignatureCount(_) => "signature_count",
            Error::SignatureLength(_) => "bad_signature",
            Error::KeyMismatch { .. } => "key_mismatch",
            Error::WeakKey(_) => "weak_key",
            Error::BadSignature => "bad_signature",
            Error::PayloadJson(_) => "bad_json",
            Error::DuplicateKey(_) => "duplicate_key",
            Error::UnknownField(_) => "unknown_field",
            Error::Schema(_) => "schema",
            Error::Subject(_) => "bad_subject",
            Error::Predicate(_) => "bad_predicate",
            Error::Agent(_) => "bad_agent",
            Error::Confidence(_) => "bad_confidence",
            Error::UnsafeInteger(_) => "unsafe_integer",
            Error::Timestamp(_) => "bad_timestamp",
            Error::Validity { .. } => "bad_validity",
            Error::SupersedesId(_) => "bad_supersedes",
            Error::TooManySupersedes { .. } => "too_many_supersedes",
            Error::TooLarge { .. } => "too_large",
            Error::TooDeep { .. } => "too_deep",
            Error::Key(_) => "bad_key",
        }
    }

    /// Which class of failure this is; the HTTP layer maps classes to statuses.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::MalformedEnvelope(_) | Error::Base64 { .. } | Error::Key(_) => {
                ErrorClass::Malformed
            }
            Error::TooLarge { .. } => ErrorClass::TooLarge,
            _ => ErrorClass::Invalid,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
