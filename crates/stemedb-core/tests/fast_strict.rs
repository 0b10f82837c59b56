//! The strict equation in libsodium's order of checks (no decompression of `R`) accepts exactly
//! what `ed25519_dalek::VerifyingKey::verify_strict` accepts (issue 17). Checked on valid
//! signatures and on every edge case where implementations differ: each small-order `R` (and
//! the sign-bit variants), mixed-order `R`, non-canonical `R`, `R` off the curve, `S ≥ L`,
//! small-order and mixed-order keys, and single-bit flips. PyNaCl agrees with `verify_strict`
//! on the project's vectors (tests/interop), so it agrees with this too.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use stemedb_core::{batch_strict_verdicts, compare_strict_paths};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        b
    }
}

/// Signs `msg` under public point `big_a` (secret scalar `a`, so `big_a = [a]B + torsion`),
/// with nonce point `[r]B + extra`.
fn sign_raw(
    a: Scalar,
    big_a: EdwardsPoint,
    r: Scalar,
    extra: EdwardsPoint,
    msg: &[u8],
) -> [u8; 64] {
    let big_r = (ED25519_BASEPOINT_POINT * r + extra).compress();
    let k = Scalar::from_hash(
        Sha512::new()
            .chain_update(big_r.as_bytes())
            .chain_update(big_a.compress().as_bytes())
            .chain_update(msg),
    );
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(big_r.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

/// Every case checked, with `verify_strict`'s verdict, for the batched path at the end.
type Cases = Vec<(([u8; 32], Vec<u8>, [u8; 64]), bool, String)>;

struct Counts {
    accepted: u32,
    refused: u32,
    cases: Cases,
}

fn check(agent: &[u8; 32], msg: &[u8], sig: &[u8; 64], what: &str, counts: &mut Counts) {
    let (fast, dalek) = compare_strict_paths(agent, msg, sig);
    assert_eq!(fast, dalek, "{what}: fast {fast}, verify_strict {dalek}");
    if dalek {
        counts.accepted += 1;
    } else {
        counts.refused += 1;
    }
    counts
        .cases
        .push(((*agent, msg.to_vec(), *sig), dalek, what.to_string()));
}

#[test]
fn the_fast_strict_equation_agrees_with_verify_strict_on_every_edge_case() {
    let mut rng = Lcg(2026);
    let mut counts = Counts {
        accepted: 0,
        refused: 0,
        cases: Vec::new(),
    };
    let l_bytes: [u8; 32] = {
        // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&0x14de_f9de_a2f7_9cd6_5812_631a_5cf5_d3edu128.to_le_bytes());
        b[31] = 0x10;
        b
    };
    for case in 0..200u64 {
        let a = Scalar::from_bytes_mod_order(rng.bytes32());
        let big_a = ED25519_BASEPOINT_POINT * a;
        let agent = big_a.compress().to_bytes();
        let msg = format!("message {case} {}", rng.next()).into_bytes();
        let r = Scalar::from_bytes_mod_order(rng.bytes32());
        let good = sign_raw(a, big_a, r, EdwardsPoint::default(), &msg);
        check(&agent, &msg, &good, "valid", &mut counts);
        // Every small-order R, and its sign-bit variant.
        for t in EIGHT_TORSION {
            let mut bad = good;
            bad[..32].copy_from_slice(t.compress().as_bytes());
            check(&agent, &msg, &bad, "small-order R", &mut counts);
            bad[31] ^= 0x80;
            check(
                &agent,
                &msg,
                &bad,
                "small-order R, sign bit flipped",
                &mut counts,
            );
        }
        // Mixed-order R (a signer grinding torsion into its nonce).
        let t = EIGHT_TORSION[1 + (case as usize) % 7];
        check(
            &agent,
            &msg,
            &sign_raw(a, big_a, r, t, &msg),
            "mixed-order R",
            &mut counts,
        );
        // Non-canonical R (y + p), R off the curve, S + L.
        let mut bad = good;
        bad[..32].copy_from_slice(&{
            let mut y = [0xffu8; 32];
            y[0] = 0xed + (case % 18) as u8;
            y[31] = 0x7f | (good[31] & 0x80);
            y
        });
        check(&agent, &msg, &bad, "non-canonical R", &mut counts);
        let mut bad = good;
        bad[..32].copy_from_slice(&rng.bytes32());
        check(&agent, &msg, &bad, "random R", &mut counts);
        let mut bad = good;
        let s = Scalar::from_canonical_bytes(good[32..].try_into().unwrap_or_default());
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(good[32 + i]) + u16::from(l_bytes[i]) + carry;
            bad[32 + i] = v as u8;
            carry = v >> 8;
        }
        if carry == 0 && bool::from(s.is_some()) {
            check(&agent, &msg, &bad, "S + L", &mut counts);
        }
        // One flipped bit anywhere in the signature.
        let mut bad = good;
        let bit = (rng.next() % 512) as usize;
        bad[bit / 8] ^= 1 << (bit % 8);
        check(&agent, &msg, &bad, "flipped bit", &mut counts);
        // Small-order keys, and a mixed-order key with a ground signature that verifies.
        for t in EIGHT_TORSION {
            check(
                &t.compress().to_bytes(),
                &msg,
                &good,
                "small-order key",
                &mut counts,
            );
        }
        let torsion = EIGHT_TORSION[1 + (case as usize) % 7];
        let mixed = big_a + torsion;
        let mixed_agent = mixed.compress().to_bytes();
        for j in 0..8u64 {
            let r = Scalar::from(case * 100 + j + 1);
            let sig = sign_raw(a, mixed, r, EIGHT_TORSION[(j as usize) % 8], &msg);
            check(&mixed_agent, &msg, &sig, "mixed-order key", &mut counts);
        }
    }
    let (accepted, refused) = (counts.accepted, counts.refused);
    assert!(accepted >= 200, "valid signatures were checked: {accepted}");
    assert!(refused > 4000, "invalid ones too: {refused}");
    eprintln!(
        "fast strict equation: {accepted} accepted and {refused} refused, exactly as verify_strict"
    );
    // The batched path (one field inversion for many points, as `verify_batch` runs it) gives
    // each item the verdict it has alone: in one batch of every case, valid and invalid mixed,
    // and in batches of 1, 2 and 63 (each batch also starts at another case).
    let items: Vec<_> = counts
        .cases
        .iter()
        .map(|(item, _, _)| item.clone())
        .collect();
    for size in [items.len(), 1, 2, 63] {
        for (n, chunk) in items.chunks(size).enumerate() {
            let got = batch_strict_verdicts(chunk);
            assert_eq!(got.len(), chunk.len());
            for (i, verdict) in got.into_iter().enumerate() {
                let (_, want, what) = &counts.cases[n * size + i];
                assert_eq!(
                    verdict,
                    *want,
                    "batch of {size}, case {}: {what}",
                    n * size + i
                );
            }
        }
    }
}
