//! Signing and strict verification, one at a time or in batches.
//!
//! Acceptance rule (the same for `check`, `verify_batch` and offline `verify`): an envelope is
//! valid when its statement passes every rule, the signature `keyid` (if present) equals the
//! statement's `agent`, and the Ed25519 signature over the PAE verifies under RFC 8032 with the
//! strict checks libsodium also makes: canonical `S`, canonical encodings of `R` and `A`, neither
//! `R` nor `A` of small order, and the cofactorless equation. See `docs/spec.md`.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::envelope::{Envelope, PAYLOAD_TYPE, pae};
use crate::error::{Error, Result};
use crate::id::AssertionId;
use crate::statement::Statement;

/// An envelope whose statement passed every rule and whose signature verified.
///
/// Invariant: only `Prepared::verify`, `verify_batch` and `sign` build one.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    id: AssertionId,
    envelope: Envelope,
    statement: Statement,
}

impl Verified {
    /// The assertion id.
    pub fn id(&self) -> AssertionId {
        self.id
    }
    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    /// The statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }
    /// Takes the parts apart.
    pub fn into_parts(self) -> (AssertionId, Envelope, Statement) {
        (self.id, self.envelope, self.statement)
    }
}

/// An envelope whose statement passed every rule, with its signature not yet verified.
#[derive(Debug, Clone)]
pub struct Prepared {
    envelope: Envelope,
    statement: Statement,
    pae: Vec<u8>,
    key: VerifyingKey,
    sig: Signature,
}

impl Prepared {
    /// Checks everything but the signature equation: statement rules, keyid, key and
    /// signature encodings.
    pub fn new(envelope: Envelope) -> Result<Prepared> {
        let statement = Statement::from_payload(envelope.payload())?;
        if let Some(keyid) = envelope.keyid()
            && keyid.as_bytes() != statement.agent_hex().as_bytes()
        {
            return Err(Error::KeyMismatch {
                keyid: keyid.chars().take(80).collect(),
                agent: statement.agent_hex(),
            });
        }
        let key = strict_key(statement.agent())?;
        let sig = Signature::from_bytes(envelope.sig());
        strict_r(envelope.sig())?;
        let pae = pae(PAYLOAD_TYPE, envelope.payload());
        Ok(Prepared {
            envelope,
            statement,
            pae,
            key,
            sig,
        })
    }

    /// Decodes envelope bytes and prepares them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Prepared> {
        Prepared::new(Envelope::decode(bytes)?)
    }

    /// The statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// Verifies the signature on its own (RFC 8032 strict).
    pub fn verify(self) -> Result<Verified> {
        self.key
            .verify_strict(&self.pae, &self.sig)
            .map_err(|_| Error::BadSignature)?;
        Ok(self.into_verified())
    }

    fn into_verified(self) -> Verified {
        Verified {
            id: AssertionId::of_pae(&self.pae),
            envelope: self.envelope,
            statement: self.statement,
        }
    }
}

/// Refuses keys that are not canonical encodings of a curve point, or are of small order.
fn strict_key(agent: &[u8; 32]) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(agent)
        .map_err(|_| Error::WeakKey("not a point on the curve".into()))?;
    if key.is_weak() {
        return Err(Error::WeakKey("a point of small order".into()));
    }
    if key.to_edwards().compress().as_bytes() != agent {
        return Err(Error::WeakKey("not a canonical point encoding".into()));
    }
    Ok(key)
}

/// Refuses signatures whose `R` is not a canonical point encoding or is of small order, and
/// whose `S` is not reduced (the checks `verify_strict` makes, made before a batch).
fn strict_r(sig: &[u8; 64]) -> Result<()> {
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    let point = curve25519_dalek::edwards::CompressedEdwardsY(r)
        .decompress()
        .ok_or(Error::BadSignature)?;
    if point.is_small_order() || point.compress().to_bytes() != r {
        return Err(Error::BadSignature);
    }
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    if bool::from(curve25519_dalek::Scalar::from_canonical_bytes(s).is_none()) {
        return Err(Error::BadSignature);
    }
    Ok(())
}

/// Decodes, checks and verifies one envelope.
pub fn check(bytes: &[u8]) -> Result<Verified> {
    Prepared::from_bytes(bytes)?.verify()
}

/// Verifies many prepared envelopes at once. Each result is exactly what `Prepared::verify`
/// would give for that item; a bad item does not fail the others.
pub fn verify_batch(items: Vec<Prepared>) -> Vec<Result<Verified>> {
    if items.len() < 2 {
        return items.into_iter().map(Prepared::verify).collect();
    }
    let messages: Vec<&[u8]> = items.iter().map(|p| p.pae.as_slice()).collect();
    let sigs: Vec<Signature> = items.iter().map(|p| p.sig).collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|p| p.key).collect();
    if ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
        return items.into_iter().map(|p| Ok(p.into_verified())).collect();
    }
    // Some item is bad: find it (or them) one at a time.
    items.into_iter().map(Prepared::verify).collect()
}

/// Signs statement bytes with `key`. The statement must pass every rule and name `key`'s
/// public key as its `agent`.
pub fn sign(key: &SigningKey, payload: Vec<u8>) -> Result<Verified> {
    let statement = Statement::from_payload(&payload)?;
    let agent = statement.agent_hex();
    if statement.agent() != key.verifying_key().as_bytes() {
        return Err(Error::KeyMismatch {
            keyid: hex::encode(key.verifying_key().as_bytes()),
            agent,
        });
    }
    let pae = pae(PAYLOAD_TYPE, &payload);
    let sig = key.sign(&pae).to_bytes();
    let envelope = Envelope::new(payload, Some(agent), sig)?;
    Ok(Verified {
        id: AssertionId::of_pae(&pae),
        envelope,
        statement,
    })
}
