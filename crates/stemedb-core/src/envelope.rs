//! The DSSE envelope: decode, encode and PAE (design §2, `docs/spec.md`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::id::AssertionId;
use crate::json;
use crate::statement::MAX_PAYLOAD_BYTES;

/// The only payload type StemeDB accepts.
pub const PAYLOAD_TYPE: &str = "application/vnd.stemedb.assertion.v1+json";

/// Most bytes of an encoded envelope: the base64 payload at its limit plus room for the rest.
pub const MAX_ENVELOPE_BYTES: usize = 128 * 1024;

/// An envelope's structure after decoding.
///
/// Invariant: built only by `Envelope::decode` or `Envelope::new`, so `payload_type` is
/// `PAYLOAD_TYPE`, there is exactly one signature, and `payload` is within its size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    payload: Vec<u8>,
    keyid: Option<String>,
    sig: [u8; 64],
}

#[derive(Serialize)]
struct EnvelopeJson<'a> {
    #[serde(rename = "payloadType")]
    payload_type: &'a str,
    payload: String,
    signatures: [SignatureJson<'a>; 1],
}

#[derive(Serialize)]
struct SignatureJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    keyid: Option<&'a str>,
    sig: String,
}

/// The DSSE pre-authentication encoding:
/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Decodes canonical standard base64 (padded, no stray bits); anything else is refused so that
/// one envelope has one spelling.
fn decode_b64(field: &'static str, s: &str) -> Result<Vec<u8>> {
    STANDARD.decode(s).map_err(|_| Error::Base64 { field })
}

impl Envelope {
    /// Builds an envelope from a payload and its signature.
    pub fn new(payload: Vec<u8>, keyid: Option<String>, sig: [u8; 64]) -> Result<Envelope> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::TooLarge {
                what: "statement payload",
                actual: payload.len(),
                limit: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(Envelope {
            payload,
            keyid,
            sig,
        })
    }

    /// Decodes envelope JSON. Checks the shape, the payload type, the base64 fields and the
    /// signature count; it does not look inside the payload or verify the signature.
    pub fn decode(bytes: &[u8]) -> Result<Envelope> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(Error::TooLarge {
                what: "envelope",
                actual: bytes.len(),
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        // Envelope, signatures array, signature object: three levels.
        let value = json::parse_strict(bytes, 3).map_err(|e| e.into_envelope_error())?;
        Envelope::from_value(value)
    }

    /// Decodes an envelope that is already parsed (for example an item of a batch request).
    pub fn from_value(value: Value) -> Result<Envelope> {
        let Value::Object(mut map) = value else {
            return Err(Error::MalformedEnvelope(
                "envelope must be a JSON object".into(),
            ));
        };
        if let Some(k) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "payloadType" | "payload" | "signatures"))
        {
            return Err(Error::MalformedEnvelope(format!("unknown field \"{k}\"")));
        }
        let payload_type = match map.remove("payloadType") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(Error::MalformedEnvelope(
                    "payloadType must be a string".into(),
                ));
            }
        };
        if payload_type != PAYLOAD_TYPE {
            return Err(Error::PayloadType {
                expected: PAYLOAD_TYPE,
                got: payload_type,
            });
        }
        let payload = match map.remove("payload") {
            Some(Value::String(s)) => s,
            _ => return Err(Error::MalformedEnvelope("payload must be a string".into())),
        };
        let signatures = match map.remove("signatures") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(Error::MalformedEnvelope(
                    "signatures must be an array".into(),
                ));
            }
        };
        if signatures.len() != 1 {
            return Err(Error::SignatureCount(signatures.len()));
        }
        let Some(Value::Object(mut sig_obj)) = signatures.into_iter().next() else {
            return Err(Error::MalformedEnvelope(
                "a signature must be an object".into(),
            ));
        };
        if let Some(k) = sig_obj
            .keys()
            .find(|k| !matches!(k.as_str(), "keyid" | "sig"))
        {
            return Err(Error::MalformedEnvelope(format!(
                "unknown field \"{k}\" in signature"
            )));
        }
        let keyid = match sig_obj.remove("keyid") {
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(Error::MalformedEnvelope("keyid must be a string".into())),
        };
        let sig_b64 = match sig_obj.remove("sig") {
            Some(Value::String(s)) => s,
            _ => return Err(Error::MalformedEnvelope("sig must be a string".into())),
        };
        let payload = decode_b64("payload", &payload)?;
        let sig = decode_b64("sig", &sig_b64)?;
        let sig: [u8; 64] = sig
            .as_slice()
            .try_into()
            .map_err(|_| Error::SignatureLength(sig.len()))?;
        Envelope::new(payload, keyid, sig)
    }

    /// Encodes the envelope as compact JSON: `payloadType`, `payload`, `signatures` in that order.
    pub fn encode(&self) -> Vec<u8> {
        let json = EnvelopeJson {
            payload_type: PAYLOAD_TYPE,
            payload: STANDARD.encode(&self.payload),
            signatures: [SignatureJson {
                keyid: self.keyid.as_deref(),
                sig: STANDARD.encode(self.sig),
            }],
        };
        // Serializing strings and a fixed struct into a Vec cannot fail.
        serde_json::to_vec(&json).expect("serializing strings into a Vec cannot fail")
    }

    /// The statement bytes exactly as signed.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// The signature's key id, when the signer gave one.
    pub fn keyid(&self) -> Option<&str> {
        self.keyid.as_deref()
    }
    /// The 64-byte Ed25519 signature.
    pub fn sig(&self) -> &[u8; 64] {
        &self.sig
    }
    /// The bytes that were signed.
    pub fn pae(&self) -> Vec<u8> {
        pae(PAYLOAD_TYPE, &self.payload)
    }
    /// The assertion id: `BLAKE3(PAE)`.
    pub fn id(&self) -> AssertionId {
        AssertionId::of_pae(&self.pae())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_definition() {
        // The worked example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    fn check(input: &str, code: &str) {
        match Envelope::decode(input.as_bytes()) {
            Ok(e) => panic!("{input} decoded to {e:?}, expected {code}"),
            Err(e) => assert_eq!(e.code(), code, "{input}: {e}"),
        }
    }

    #[test]
    fn decode_errors_table() {
        let sig = STANDARD.encode([7u8; 64]);
        let t = PAYLOAD_TYPE;
        check("not json", "malformed_envelope");
        check("[]", "malformed_envelope");
        check(
            &format!(
                r#"{{"payloadType":"{t}","payload":"e30=","signatures":[{{"sig":"{sig}"}}],"x":1}}"#
            ),
            "malformed_envelope",
        );
        check(
            &format!(
                r#"{{"payloadType":"{t}","payloadType":"{t}","payload":"e30=","signatures":[{{"sig":"{sig}"}}]}}"#
            ),
            "malformed_envelope",
        );
        check(
            &format!(
                r#"{{"payloadType":"text/plain","payload":"e30=","signatures":[{{"sig":"{sig}"}}]}}"#
            ),
            "bad_payload_type",
        );
        check(
            &format!(r#"{{"payloadType":"{t}","payload":"e30","signatures":[{{"sig":"{sig}"}}]}}"#),
            "bad_base64",
        );
        check(
            &format!(
                r#"{{"payloadType":"{t}","payload":"e3-=","signatures":[{{"sig":"{sig}"}}]}}"#
            ),
            "bad_base64",
        );
        check(
            &format!(
                r#"{{"payloadType":"{t}","payload":"e31=","signatures":[{{"sig":"{sig}"}}]}}"#
            ),
            "bad_base64",
        );
        check(
            &format!(r#"{{"payloadType":"{t}","payload":"e30=","signatures":[]}}"#),
            "signature_count",
        );
        check(
            &format!(
                r#"{{"payloadType":"{t}","payload":"e30=","signatures":[{{"sig":"{sig}"}},{{"sig":"{sig}"}}]}}"#
            ),
            "signature_count",
        );
        check(
            &format!(r#"{{"payloadType":"{t}","payload":"e30=","signatures":[{{"sig":"AAAA"}}]}}"#),
            "bad_signature",
        );
        check(
            &format!(
                r#"{{"payloadType":"{t}","payload":"e30=","signatures":[{{"sig":"{sig}","extra":1}}]}}"#
            ),
            "malformed_envelope",
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        let env = Envelope::new(b"{}".to_vec(), Some("ab".into()), [9u8; 64]).expect("small");
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes), Ok(env));
    }
}
