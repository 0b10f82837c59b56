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
