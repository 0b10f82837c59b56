//! `stemedb-merkle`: the RFC 9162 (Certificate Transparency v2) tree shape with BLAKE3 hashing,
//! inclusion and consistency proofs, their verifiers, and signed checkpoints in the C2SP
//! `tlog-checkpoint` signed-note format.
//!
//! Architecture Invariant: no I/O. Stored nodes come through the `NodeSource` trait; the store
//! decides where they live. Hashing (docs/spec.md "Merkle log"):
//! `leaf = BLAKE3(0x00 || id)`, `node = BLAKE3(0x01 || left || right)`, empty root `BLAKE3("")`.

mod checkpoint;
mod proof;
mod tree;

pub use checkpoint::{
    Checkpoint, CheckpointError, MAX_ORIGIN_BYTES, NoteSigner, key_id, validate_origin, verify_note,
};
pub use proof::{verify_consistency, verify_inclusion};
pub use tree::{Frontier, NodeSource, ProofRequestError, consistency_proof, inclusion_proof, root};

/// A 32-byte BLAKE3 hash.
pub type Hash = [u8; 32];

/// The leaf hash of an assertion id: `BLAKE3(0x00 || id)`.
pub fn leaf_hash(id: &[u8; 32]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0x00]);
    h.update(id);
    *h.finalize().as_bytes()
}

/// An interior node: `BLAKE3(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0x01]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// The root of the empty tree: `BLAKE3("")`.
pub fn empty_root() -> Hash {
    *blake3::hash(b"").as_bytes()
}

/// Largest power of two strictly below `n` (n ≥ 2).
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}
