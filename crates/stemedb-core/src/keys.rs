//! Ed25519 private keys in PKCS#8 PEM, the format `openssl genpkey -algorithm ed25519` writes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;

use crate::error::{Error, Result};

/// DER of a PKCS#8 v1 `PrivateKeyInfo` for Ed25519 (RFC 8410), up to the 32-byte seed:
/// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Builds a signing key from its 32-byte seed (the RFC 8032 private key).
pub fn signing_key_from_seed(seed: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(seed)
}

/// Reads a PKCS#8 PEM private key (v1 as OpenSSL writes it, or v2 with the public key).
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey> {
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
        Error::Key(format!(
            "not an Ed25519 PKCS#8 PEM private key (expected \"-----BEGIN PRIVATE KEY-----\"): {e}"
        ))
    })
}

/// Writes a key as PKCS#8 v1 PEM, byte for byte what `openssl genpkey -algorithm ed25519` writes.
pub fn signing_key_to_pem(key: &SigningKey) -> String {
    let mut der = Vec::with_capacity(48);
    der.extend_from_slice(&PKCS8_V1_PREFIX);
    der.extend_from_slice(&key.to_bytes());
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(der)
    )
}

/// The public key of a signing key as 64 lowercase hex characters (a statement's `agent`).
pub fn public_key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_rfc8032_public_key() {
        // RFC 8032 section 7.1, test 1.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .ok()
                .and_then(|v| v.try_into().ok())
                .expect("literal is 32 bytes of hex");
        let key = signing_key_from_seed(&seed);
        assert_eq!(
            public_key_hex(&key),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let pem = signing_key_to_pem(&key);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"));
        let back = signing_key_from_pem(&pem).expect("own PEM reads back");
        assert_eq!(back.to_bytes(), seed);
    }

    #[test]
    fn bad_pem_is_a_key_error() {
        for bad in [
            "",
            "hello",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert_eq!(
                signing_key_from_pem(bad).map(|_| ()).map_err(|e| e.code()),
                Err("bad_key")
            );
        }
    }
}
