//! Ed25519 edge cases where verification rules differ between implementations.
//!
//! A signer who knows its private key can build a signature whose `R` carries a small-order
//! (torsion) component. RFC 8032 cofactorless verification, `verify_strict` and libsodium reject
//! it; a cofactorless batch equation with random-looking weights accepts it whenever the weight of
//! that item is a multiple of the torsion order, which a signer can grind for. StemeDB promises
//! one acceptance rule for single and batch verification, so both must reject these.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use stemedb_core::{Envelope, PAYLOAD_TYPE, Prepared, pae, signing_key_from_seed, verify_batch};

/// Signs `msg` with nonce point `[r]B + T` where `T` is the torsion point `EIGHT_TORSION[t]`.
fn sign_with_torsion_r(seed: &[u8; 32], msg: &[u8], r_seed: u64, t: usize) -> [u8; 64] {
    let h = Sha512::digest(seed);
    let mut a_bytes = [0u8; 32];
    a_bytes.copy_from_slice(&h[..32]);
    a_bytes[0] &= 248;
    a_bytes[31] &= 127;
    a_bytes[31] |= 64;
    let a = Scalar::from_bytes_mod_order(a_bytes);
    let big_a = (ED25519_BASEPOINT_POINT * a).compress();
    let r = Scalar::from(r_seed + 1_000_003) * Scalar::from(0x1234_5678_9abc_u64);
    let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[t]).compress();
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(big_r.as_bytes())
            .chain_update(big_a.as_bytes())
            .chain_update(msg),
    );
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(big_r.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

fn statement(agent: &str, n: u64) -> Vec<u8> {
    format!(r#"{{"v":1,"subject":"a/b","predicate":"p","object":{n},"agent":"{agent}","ts":1}}"#)
        .into_bytes()
}

#[test]
fn mixed_order_r_is_rejected_alone_and_in_every_batch() {
    let seed = [42u8; 32];
    let key = signing_key_from_seed(&seed);
    let agent = hex::encode(key.verifying_key().as_bytes());
    let honest: Vec<Prepared> = (0..3)
        .map(|n| {
            let signed = stemedb_core::sign(&key, statement(&agent, 100 + n)).expect("valid");
            Prepared::new(signed.envelope().clone()).expect("valid")
        })
        .collect();
    // Grind nonces and torsion points: a cofactorless batch with deterministic weights accepts
    // some of these; StemeDB must accept none.
    for attempt in 0..64u64 {
        let payload = statement(&agent, attempt);
        let msg = pae(PAYLOAD_TYPE, &payload);
        let sig = sign_with_torsion_r(&seed, &msg, attempt, 1 + (attempt as usize % 7));
        let env = Envelope::new(payload, Some(agent.clone()), sig).expect("small");
        let bad = Prepared::new(env);
        let Ok(bad) = bad else {
            // Refused before the equation (for example R of small order): also fine.
            continue;
        };
        assert!(
            bad.clone().verify().is_err(),
            "attempt {attempt}: strict accepted"
        );
        let mut batch = honest.clone();
        batch.insert(1, bad);
        let results = verify_batch(batch);
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        assert!(
            results[1].is_err(),
            "attempt {attempt}: batch accepted a mixed-order R that strict rejects"
        );
    }
}

/// `verify_batch` itself on real envelopes (the points of a batch are compressed together):
/// 64 envelopes of one agent, a quarter valid and the rest damaged four ways (one flipped bit
/// of `S`, another statement's signature, a mixed-order `R`, a small-order `R`), each result
/// equal to what `Prepared::verify` gives that envelope alone, in order, in one batch and in
/// batches of 5.
#[test]
fn verify_batch_gives_each_envelope_its_own_verdict() {
    let seed = [9u8; 32];
    let key = signing_key_from_seed(&seed);
    let agent = hex::encode(key.verifying_key().as_bytes());
    let signed: Vec<[u8; 64]> = (0..64u64)
        .map(|n| {
            let v = stemedb_core::sign(&key, statement(&agent, n)).expect("valid");
            *v.envelope().sig()
        })
        .collect();
    let prepared: Vec<Prepared> = (0..64u64)
        .filter_map(|n| {
            let payload = statement(&agent, n);
            let mut sig = signed[n as usize];
            match n % 4 {
                1 => sig[40] ^= 0x01,
                2 => sig = signed[(n as usize + 1) % 64],
                3 if n % 8 == 7 => {
                    // An `R` of small order: refused before its point is recomputed, so the
                    // batch's compressed points skip it.
                    sig[..32]
                        .copy_from_slice(EIGHT_TORSION[(n as usize / 8) % 8].compress().as_bytes());
                }
                3 => {
                    let msg = pae(PAYLOAD_TYPE, &payload);
                    sig = sign_with_torsion_r(&seed, &msg, n, 1 + (n as usize % 7));
                }
                _ => {}
            }
            let env = Envelope::new(payload, Some(agent.clone()), sig).expect("small");
            Prepared::new(env).ok()
        })
        .collect();
    assert!(prepared.len() >= 48, "most envelopes reach the equation");
    let alone: Vec<bool> = prepared
        .iter()
        .map(|p| p.clone().verify().is_ok())
        .collect();
    assert_eq!(
        alone.iter().filter(|ok| **ok).count(),
        16,
        "the valid quarter"
    );
    let whole: Vec<bool> = verify_batch(prepared.clone())
        .iter()
        .map(Result::is_ok)
        .collect();
    assert_eq!(whole, alone, "one batch of {}", prepared.len());
    let mut fives = Vec::new();
    for chunk in prepared.chunks(5) {
        fives.extend(verify_batch(chunk.to_vec()).iter().map(Result::is_ok));
    }
    assert_eq!(fives, alone, "batches of 5");
}
