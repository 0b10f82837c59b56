//! Signing and strict verification, one at a time or in batches.
//!
//! Acceptance rule (the same for `check`, `verify_batch` and offline `verify`): an envelope is
//! valid when its statement passes every rule, the signature `keyid` (if present) equals the
//! statement's `agent`, and the Ed25519 signature over the PAE verifies under RFC 8032 with the
//! strict checks libsodium also makes: canonical `S`, canonical encodings of `R` and `A`, neither
//! `R` nor `A` of small order, and the cofactorless equation. See `docs/spec.md`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha512};

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
        strict_r(envelope.sig())?;
        let pae = pae(PAYLOAD_TYPE, envelope.payload());
        Ok(Prepared {
            envelope,
            statement,
            pae,
            key,
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

    /// Verifies the signature on its own (RFC 8032 strict, libsodium's order of checks: see
    /// `strict_equation`).
    pub fn verify(self) -> Result<Verified> {
        if !strict_equation(&self.key, &self.pae, self.envelope.sig()) {
            return Err(Error::BadSignature);
        }
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

/// Most agent keys kept decoded; past it the cache starts over (agents are few, keys repeat).
const KEY_CACHE_MAX: usize = 4096;

/// Agent keys that passed `decode_strict_key`, so each agent's point is decompressed (a field
/// square root) once rather than once per assertion.
static KEY_CACHE: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();

/// Refuses keys that are not canonical encodings of a curve point, or are of small order.
fn strict_key(agent: &[u8; 32]) -> Result<VerifyingKey> {
    let cache = KEY_CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(keys) = cache.lock()
        && let Some(key) = keys.get(agent)
    {
        return Ok(*key);
    }
    let key = decode_strict_key(agent)?;
    if let Ok(mut keys) = cache.lock() {
        if keys.len() >= KEY_CACHE_MAX {
            keys.clear();
        }
        keys.insert(*agent, key);
    }
    Ok(key)
}

fn decode_strict_key(agent: &[u8; 32]) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(agent)
        .map_err(|_| Error::WeakKey("not a point on the curve".into()))?;
    if key.is_weak() {
        return Err(Error::WeakKey("a point of small order".into()));
    }
    if !is_canonical_encoding(agent) {
        return Err(Error::WeakKey("not a canonical point encoding".into()));
    }
    Ok(key)
}

/// Refuses signatures whose `R` is not a canonical point encoding or whose `S` is not reduced,
/// before the costly equation. The rest of libsodium's checks are `verify_strict`'s: it
/// decompresses `R`, refuses `R` and `A` of small order, and compares the recomputed `R` with
/// the signature's as bytes (so a non-canonical `R` could never pass it either).
fn strict_r(sig: &[u8; 64]) -> Result<()> {
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    if !is_canonical_encoding(&r) {
        return Err(Error::BadSignature);
    }
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    if bool::from(Scalar::from_canonical_bytes(s).is_none()) {
        return Err(Error::BadSignature);
    }
    Ok(())
}

/// True when `bytes` is the canonical encoding of a point that decompressed: the y coordinate
/// (low 255 bits, little-endian) is below p = 2^255 - 19. (The other non-canonical form, x = 0
/// with the sign bit set, only exists for y = 1 and y = -1, points of small order that are
/// refused anyway.) Checking bytes avoids a field inversion per point.
fn is_canonical_encoding(bytes: &[u8; 32]) -> bool {
    // y >= p exactly when the low 255 bits are all ones above bit 4 and the low byte >= 0xed.
    let top = bytes[31] & 0x7f;
    let all_ones = top == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff);
    !(all_ones && bytes[0] >= 0xed)
}

/// The canonical encodings of the eight points of small order (the torsion subgroup), and the
/// two encodings with the sign bit set whose `x` is 0 (`y = 1` and `y = -1`); libsodium's
/// blocklist for `R`.
fn small_order_encodings() -> &'static [[u8; 32]] {
    static LIST: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut v: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|p| p.compress().to_bytes())
            .collect();
        for p in [
            curve25519_dalek::constants::EIGHT_TORSION[0],
            curve25519_dalek::constants::EIGHT_TORSION[4],
        ] {
            let mut b = p.compress().to_bytes();
            b[31] |= 0x80;
            v.push(b);
        }
        v
    })
}

/// The strict verification equation, in libsodium's order: `R` not one of the small-order
/// encodings (compared as bytes; `strict_r` already refused a non-canonical `R` and an `S` not
/// below L), `A` from the key cache (decompressed once per agent, refused if of small order or
/// non-canonical), then `[S]B - [k]A` compressed and compared with `R` as bytes.
///
/// It accepts exactly what `VerifyingKey::verify_strict` accepts, one field exponentiation
/// cheaper: `verify_strict` decompresses `R` only to ask whether it has small order. An `R`
/// that is not a point, or not canonical, can never equal the canonical encoding of the
/// recomputed point, and the byte list names every encoding of a small-order point that could.
/// `tests/fast_strict.rs` checks the equivalence on the edge cases (small-order, mixed-order and
/// non-canonical `R`, `S ≥ L`, weak keys) against `verify_strict`.
fn strict_equation(key: &VerifyingKey, msg: &[u8], sig: &[u8; 64]) -> bool {
    recomputed_r(key, msg, sig).is_some_and(|p| p.compress().to_bytes()[..] == sig[..32])
}

/// `[S]B - [k]A` for `sig` on `msg` under `key`, or `None` when `R` is one of the small-order
/// encodings or `S` is not below L: what [`strict_equation`] compares with `R`.
fn recomputed_r(key: &VerifyingKey, msg: &[u8], sig: &[u8; 64]) -> Option<EdwardsPoint> {
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    if small_order_encodings().contains(&r) {
        return None;
    }
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))?;
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(r)
            .chain_update(key.as_bytes())
            .chain_update(msg),
    );
    let minus_a = -key.to_edwards();
    Some(EdwardsPoint::vartime_double_scalar_mul_basepoint(
        &k, &minus_a, &s,
    ))
}

/// [`strict_equation`] for many signatures at once, each verdict exactly its own: the points
/// are recomputed one by one and compressed together, with one field inversion for all of them
/// (Montgomery's trick, `EdwardsPoint::compress_batch_alloc`) where one each cost a serial
/// exponentiation (`pow2k`; the verification ceiling rose 14%, decision 0001). Compression is
/// a function of the point, so each encoding, and so each verdict, is the one
/// `strict_equation` gives.
fn strict_equations<'a>(
    items: impl Iterator<Item = (&'a VerifyingKey, &'a [u8], &'a [u8; 64])>,
) -> Vec<bool> {
    let mut sigs = Vec::new();
    let mut points = Vec::new();
    for (key, msg, sig) in items {
        let p = recomputed_r(key, msg, sig);
        if let Some(p) = p {
            points.push(p);
        }
        sigs.push((sig, p.is_some()));
    }
    let mut compressed = EdwardsPoint::compress_batch_alloc(&points).into_iter();
    sigs.into_iter()
        .map(|(sig, has_point)| {
            has_point
                && compressed
                    .next()
                    .is_some_and(|c| c.as_bytes()[..] == sig[..32])
        })
        .collect()
}

/// Test support: whether the fast strict equation accepts `sig` on `msg` under the 32-byte key
/// `agent`, beside `verify_strict`'s verdict (the two must always agree).
#[doc(hidden)]
pub fn compare_strict_paths(agent: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> (bool, bool) {
    let Ok(key) = decode_strict_key(agent) else {
        return (false, false);
    };
    let canonical = strict_r(sig).is_ok();
    let fast = canonical && strict_equation(&key, msg, sig);
    let dalek = canonical && key.verify_strict(msg, &Signature::from_bytes(sig)).is_ok();
    (fast, dalek)
}

/// Test support: the verdicts of the batched strict equation (one field inversion for all, as
/// `verify_batch` computes them) on many `(agent, msg, sig)` at once, an item with a bad key or
/// a non-canonical `R` or `S` refused as `Prepared::new` refuses it. Each must equal
/// [`compare_strict_paths`]'s verdict for that item alone.
#[doc(hidden)]
pub fn batch_strict_verdicts(items: &[([u8; 32], Vec<u8>, [u8; 64])]) -> Vec<bool> {
    let keys: Vec<Option<VerifyingKey>> = items
        .iter()
        .map(|(agent, _, sig)| {
            decode_strict_key(agent)
                .ok()
                .filter(|_| strict_r(sig).is_ok())
        })
        .collect();
    let checked: Vec<(&VerifyingKey, &[u8], &[u8; 64])> = items
        .iter()
        .zip(&keys)
        .filter_map(|((_, msg, sig), key)| key.as_ref().map(|k| (k, msg.as_slice(), sig)))
        .collect();
    let mut verdicts = strict_equations(checked.into_iter()).into_iter();
    keys.iter()
        .map(|k| k.is_some() && verdicts.next().unwrap_or(false))
        .collect()
}

/// Decodes, checks and verifies one envelope.
pub fn check(bytes: &[u8]) -> Result<Verified> {
    Prepared::from_bytes(bytes)?.verify()
}

/// Verifies many prepared envelopes at once. Each result is exactly what `Prepared::verify`
/// gives for that item, and a bad item does not fail the others.
///
/// This is the one entry point for bulk verification, so that the method can change without
/// touching callers. Today it checks each item's own strict equation and compresses the
/// recomputed points together (one field inversion for the batch): a cofactorless batch equation
/// (`ed25519_dalek::verify_batch`) is 2.8x faster but accepts signatures whose `R` carries a
/// small-order component that a signer can grind for, which libsodium and strict verification
/// reject; making the batch equation safe needs a torsion check of every `R`, and with it the
/// batch is slower than strict verification one by one. Measurements and the rejected options
/// are in `docs/decisions/0001-strict-batch-verification.md`.
pub fn verify_batch(items: Vec<Prepared>) -> Vec<Result<Verified>> {
    let verdicts = strict_equations(
        items
            .iter()
            .map(|p| (&p.key, p.pae.as_slice(), p.envelope.sig())),
    );
    items
        .into_iter()
        .zip(verdicts)
        .map(|(p, ok)| {
            if ok {
                Ok(p.into_verified())
            } else {
                Err(Error::BadSignature)
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_encoding_table() {
        let mut p_minus_1 = [0xffu8; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        let mut p = p_minus_1;
        p[0] = 0xed;
        let mut p_with_sign = p_minus_1;
        p_with_sign[31] = 0xff;
        let mut max = [0xffu8; 32];
        max[31] = 0x7f;
        let mut p_plus_sign = p;
        p_plus_sign[31] = 0xff;
        let cases = [
            ([0u8; 32], true),
            (p_minus_1, true),
            (p_with_sign, true),
            (p, false),
            (p_plus_sign, false),
            (max, false),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                is_canonical_encoding(&bytes),
                expected,
                "{}",
                hex::encode(bytes)
            );
        }
    }

    #[test]
    fn signatures_with_an_r_of_small_order_or_off_the_curve_are_refused() {
        let key = crate::signing_key_from_seed(&[7; 32]);
        let agent = hex::encode(key.verifying_key().as_bytes());
        let payload = format!(
            r#"{{"v":1,"subject":"a/b","predicate":"p","object":1,"agent":"{agent}","ts":1}}"#
        );
        let good = sign(&key, payload.into_bytes()).expect("valid");
        let sig = *good.envelope().sig();
        assert!(check(&good.envelope().encode()).is_ok());
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        // Bytes that are no R this key could have signed with (whether or not they decompress).
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        for r in [identity, minus_one, off_curve] {
            let mut bad = sig;
            bad[..32].copy_from_slice(&r);
            let env = Envelope::new(good.envelope().payload().to_vec(), None, bad).expect("env");
            assert!(
                matches!(check(&env.encode()), Err(Error::BadSignature)),
                "R = {} accepted",
                hex::encode(r)
            );
        }
    }

    #[test]
    fn non_canonical_agent_keys_are_refused() {
        // y = p + 2 encodes the same y as 2; if 2 is a valid y, the non-canonical form decompresses.
        for small_y in 0u8..19 {
            let mut enc = [0xffu8; 32];
            enc[0] = 0xed + small_y;
            enc[31] = 0x7f;
            assert!(
                strict_key(&enc).is_err(),
                "y = p + {small_y} accepted as a key"
            );
        }
    }
}
