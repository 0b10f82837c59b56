//! The tree against RFC 9162's recursive definitions (MTH, PATH, PROOF) for every size up to
//! 200, plus property tests of the verifiers.

use proptest::prelude::*;
use std::collections::HashMap;
use stemedb_merkle::{
    Frontier, Hash, NodeSource, consistency_proof, empty_root, inclusion_proof, leaf_hash,
    node_hash, root, verify_consistency, verify_inclusion,
};

/// The RFC's definitions, written as literally as possible over a list of leaf hashes.
mod reference {
    use super::*;

    fn k_of(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    pub fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = k_of(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    pub fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = k_of(n);
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = k_of(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }

    pub fn proof(m: usize, d: &[Hash]) -> Vec<Hash> {
        subproof(m, d, true)
    }
}

/// Nodes kept in a map, filled only through `Frontier::push` (as the store does).
#[derive(Default)]
struct MapSource(HashMap<(u32, u64), Hash>);

impl NodeSource for MapSource {
    type Error = String;
    fn node(&self, level: u32, index: u64) -> Result<Hash, String> {
        self.0
            .get(&(level, index))
            .copied()
            .ok_or_else(|| format!("missing node ({level}, {index})"))
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            leaf_hash(&id)
        })
        .collect()
}

fn build(d: &[Hash]) -> (MapSource, Vec<Hash>, Frontier) {
    let mut src = MapSource::default();
    let mut f = Frontier::new();
    let mut roots = vec![f.root()];
    for leaf in d {
        for (level, index, hash) in f.push(*leaf) {
            assert!(
                src.0.insert((level, index), hash).is_none(),
                "node stored twice"
            );
        }
        roots.push(f.root());
    }
    (src, roots, f)
}

#[test]
fn every_size_up_to_200_matches_the_rfc_definitions() {
    let d = leaves(200);
    let (src, roots, _) = build(&d);
    for n in 0..=200usize {
        let expected = reference::mth(&d[..n]);
        assert_eq!(roots[n], expected, "frontier root, size {n}");
        assert_eq!(root(&src, n as u64), Ok(expected), "stored root, size {n}");
        let reloaded = Frontier::load(&src, n as u64).expect("load frontier");
        assert_eq!(reloaded.root(), expected, "reloaded frontier, size {n}");
        for m in 0..n {
            let p = inclusion_proof(&src, m as u64, n as u64).expect("in range");
            assert_eq!(p, reference::path(m, &d[..n]), "PATH({m}, {n})");
            assert!(verify_inclusion(&d[m], m as u64, n as u64, &p, &expected));
        }
        for (m, root_m) in roots.iter().enumerate().take(n + 1).skip(1) {
            let p = consistency_proof(&src, m as u64, n as u64).expect("in range");
            let want = if m == n {
                vec![]
            } else {
                reference::proof(m, &d[..n])
            };
            assert_eq!(p, want, "PROOF({m}, {n})");
            assert!(
                verify_consistency(m as u64, n as u64, root_m, &expected, &p),
                "verify PROOF({m}, {n})"
            );
        }
    }
}

#[test]
fn empty_tree_and_out_of_range_requests() {
    assert_eq!(
        hex(&empty_root()),
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    );
    let (src, _, _) = build(&leaves(5));
    assert!(inclusion_proof(&src, 5, 5).is_err());
    assert!(consistency_proof(&src, 6, 5).is_err());
    assert_eq!(consistency_proof(&src, 0, 5), Ok(vec![]));
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

proptest! {
    /// A proof verifies only for its own leaf, index, size and root: changing any of them, or
    /// any hash of the path, makes verification fail.
    #[test]
    fn inclusion_proofs_fail_when_anything_changes(n in 1usize..300, m_seed in any::<u64>(), flip in any::<(usize, u8)>()) {
        let d = leaves(n);
        let (src, roots, _) = build(&d);
        let m = (m_seed % n as u64) as usize;
        let p = inclusion_proof(&src, m as u64, n as u64).expect("in range");
        prop_assert!(verify_inclusion(&d[m], m as u64, n as u64, &p, &roots[n]));
        prop_assert!(!verify_inclusion(&d[(m + 1) % n], m as u64, n as u64, &p, &roots[n]) || n == 1);
        // (A different size with the same root can verify: the size is bound by the signed
        // checkpoint that carries the root, not by the path.)
        prop_assert!(!verify_inclusion(&d[m], n as u64, n as u64, &p, &roots[n]), "index past the end");
        if !p.is_empty() {
            let mut bad = p.clone();
            let i = flip.0 % bad.len();
            bad[i][flip.1 as usize % 32] ^= 1;
            prop_assert!(!verify_inclusion(&d[m], m as u64, n as u64, &bad, &roots[n]));
        }
    }

    #[test]
    fn consistency_proofs_fail_when_anything_changes(n in 2usize..300, m_seed in any::<u64>(), flip in any::<(usize, u8)>()) {
        let d = leaves(n);
        let (src, roots, _) = build(&d);
        let m = 1 + (m_seed % (n as u64 - 1)) as usize;
        let p = consistency_proof(&src, m as u64, n as u64).expect("in range");
        prop_assert!(verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &p));
        prop_assert!(!verify_consistency(m as u64, n as u64, &roots[m - 1], &roots[n], &p));
        prop_assert!(!verify_consistency(m as u64, n as u64, &roots[m], &roots[n - 1], &p));
        let mut bad = p.clone();
        let i = flip.0 % bad.len();
        bad[i][flip.1 as usize % 32] ^= 1;
        prop_assert!(!verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &bad));
    }
}
