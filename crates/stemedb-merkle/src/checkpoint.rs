//! Signed checkpoints in the C2SP `tlog-checkpoint` signed-note format.
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n\n— <key name> <base64(key id || signature)>\n
//! ```
//! The signature is Ed25519 over the note body (the first three lines, each ending in `\n`).
//! The key id is the first 4 bytes of `SHA-256(key name || 0x0A || 0x01 || public key)`
//! (0x01 names the Ed25519 signature type).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::Hash;

/// The signature-type byte for Ed25519 in signed notes.
const ED25519_TYPE: u8 = 0x01;
/// The em dash that starts a signature line (U+2014).
const SIG_PREFIX: &str = "\u{2014} ";

/// A tree head: origin, size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (its name).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Root hash of the first `size` leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body that is signed.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }
}

/// Why a signed note was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The text is not a checkpoint note.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// No signature line by the expected key verifies.
    #[error("no valid signature by key {0}")]
    NoValidSignature(String),
}

/// Longest origin line accepted, bytes.
pub const MAX_ORIGIN_BYTES: usize = 256;

/// Checks an origin line, which is also the note's key name (C2SP `signed-note`,
/// `tlog-checkpoint`): non-empty, at most `MAX_ORIGIN_BYTES`, and no whitespace, control
/// character or `+`, any of which would make the note's first line or its signature line
/// ambiguous to a verifier.
pub fn validate_origin(origin: &str) -> Result<(), String> {
    if origin.is_empty() {
        return Err("the origin is empty".into());
    }
    if origin.len() > MAX_ORIGIN_BYTES {
        return Err(format!(
            "the origin is {} bytes, at most {MAX_ORIGIN_BYTES}",
            origin.len()
        ));
    }
    if let Some(c) = origin
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '+')
    {
        return Err(format!(
            "the origin {origin:?} holds {c:?}: no whitespace, control character or '+' (it is \
             the first line of every checkpoint and the key name of its signature line)"
        ));
    }
    Ok(())
}

/// The 4-byte key id of an Ed25519 note key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, ED25519_TYPE]);
    h.update(public_key);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Signs checkpoints with the server's Ed25519 key.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

impl NoteSigner {
    /// A signer that signs as `name` (by convention the log's origin).
    pub fn new(name: impl Into<String>, key: SigningKey) -> NoteSigner {
        let name = name.into();
        let id = key_id(&name, key.verifying_key().as_bytes());
        NoteSigner { name, key, id }
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.key.verifying_key().as_bytes()
    }

    /// The verifier key string: `<name>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn vkey(&self) -> String {
        let mut typed = vec![ED25519_TYPE];
        typed.extend_from_slice(&self.public_key());
        format!(
            "{}+{}+{}",
            self.name,
            hex_lower(&self.id),
            STANDARD.encode(typed)
        )
    }

    /// The signed note for `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let sig = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.id);
        blob.extend_from_slice(&sig.to_bytes());
        format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        )
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a signed checkpoint note and checks that a signature line by (`name`, `public_key`)
/// verifies. Other signature lines are ignored, as the signed-note format allows.
pub fn verify_note(
    text: &str,
    name: &str,
    public_key: &[u8; 32],
) -> Result<Checkpoint, CheckpointError> {
    let malformed = |m: &str| CheckpointError::Malformed(m.to_string());
    let (body, sigs) = text
        .split_once("\n\n")
        .ok_or_else(|| malformed("no blank line between body and signatures"))?;
    let body = format!("{body}\n");
    let mut lines = body.lines();
    let origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| malformed("no origin"))?;
    let size: u64 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| malformed("bad tree size"))?;
    let root: Hash = lines
        .next()
        .and_then(|l| STANDARD.decode(l).ok())
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| malformed("bad root hash"))?;
    let key = VerifyingKey::from_bytes(public_key)
        .map_err(|_| CheckpointError::NoValidSignature(name.to_string()))?;
    let want_id = key_id(name, public_key);
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
            return Err(malformed("signature line does not start with an em dash"));
        };
        let Some((line_name, b64)) = rest.split_once(' ') else {
            return Err(malformed("signature line has no space"));
        };
        if line_name != name {
            continue;
        }
        let Ok(blob) = STANDARD.decode(b64) else {
            continue;
        };
        if blob.len() != 68 || blob[..4] != want_id {
            continue;
        }
        let Ok(sig) = <[u8; 64]>::try_from(&blob[4..]) else {
            continue;
        };
        if key
            .verify_strict(body.as_bytes(), &Signature::from_bytes(&sig))
            .is_ok()
        {
            return Ok(Checkpoint {
                origin: origin.to_string(),
                size,
                root,
            });
        }
    }
    Err(CheckpointError::NoValidSignature(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_tamper() {
        let signer = NoteSigner::new("example.com/log", SigningKey::from_bytes(&[7u8; 32]));
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 12,
            root: [3u8; 32],
        };
        let note = signer.sign(&cp);
        assert!(note.starts_with("example.com/log\n12\nAwMD"), "{note}");
        assert!(note.contains("\n\n\u{2014} example.com/log "), "{note}");
        assert_eq!(
            verify_note(&note, "example.com/log", &signer.public_key()),
            Ok(cp)
        );
        let tampered = note.replacen("\n12\n", "\n13\n", 1);
        assert!(verify_note(&tampered, "example.com/log", &signer.public_key()).is_err());
        let other = NoteSigner::new("example.com/log", SigningKey::from_bytes(&[8u8; 32]));
        assert!(verify_note(&note, "example.com/log", &other.public_key()).is_err());
        let vkey = signer.vkey();
        let parts: Vec<&str> = vkey.splitn(3, '+').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].len(), 8);
    }

    /// The key id is computed exactly as the signed-note spec says (checked by hand:
    /// SHA-256("a\n\x01" || 32 zero bytes)).
    #[test]
    fn key_id_definition() {
        let mut h = Sha256::new();
        h.update(b"a\n\x01");
        h.update([0u8; 32]);
        let d = h.finalize();
        assert_eq!(key_id("a", &[0u8; 32]), [d[0], d[1], d[2], d[3]]);
    }
}
