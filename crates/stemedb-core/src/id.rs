//! Assertion ids: `hex(BLAKE3(PAE))`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The content address of an assertion: BLAKE3 of the envelope's PAE bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AssertionId([u8; 32]);

impl AssertionId {
    /// Hashes PAE bytes into an id.
    pub fn of_pae(pae: &[u8]) -> AssertionId {
        AssertionId(*blake3::hash(pae).as_bytes())
    }

    /// Wraps raw id bytes (for example read back from storage).
    pub fn from_bytes(bytes: [u8; 32]) -> AssertionId {
        AssertionId(bytes)
    }

    /// Parses 64 lowercase hex characters. Upper case is refused so that one id has one spelling.
    pub fn parse(s: &str) -> Result<AssertionId> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::Schema(
                "an assertion id is 64 lowercase hex characters".into(),
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| Error::Schema(e.to_string()))?;
        Ok(AssertionId(out))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for AssertionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for AssertionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssertionId({})", self.to_hex())
    }
}

impl FromStr for AssertionId {
    type Err = Error;
    fn from_str(s: &str) -> Result<AssertionId> {
        AssertionId::parse(s)
    }
}

impl serde::Serialize for AssertionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for AssertionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        AssertionId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let good = "0123456789abcdef".repeat(4);
        assert_eq!(
            AssertionId::parse(&good).map(|i| i.to_hex()),
            Ok(good.clone())
        );
        for bad in [
            String::new(),
            good.to_uppercase(),
            good[..63].to_string(),
            format!("{good}0"),
            "g".repeat(64),
            "../".repeat(21) + "a",
        ] {
            assert!(
                AssertionId::parse(&bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn id_is_blake3_of_pae() {
        // BLAKE3 of the empty input, from the BLAKE3 reference test vectors.
        assert_eq!(
            AssertionId::of_pae(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
