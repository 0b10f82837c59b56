//! Roots and proofs computed from stored complete subtrees, and incremental append.

use crate::{Hash, empty_root, node_hash, split_point};

/// Where the hashes of complete subtrees live.
///
/// `node(level, index)` is the root of the perfect subtree over leaves
/// `[index * 2^level, (index + 1) * 2^level)`; level 0 is the leaf hashes. Every such subtree
/// inside the current tree size must be available.
pub trait NodeSource {
    /// The error a lookup can fail with (for example an I/O error).
    type Error;
    /// The hash of a complete subtree.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a proof could not be produced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofRequestError<E> {
    /// The request is outside the tree (index ≥ size, or from > to).
    #[error("{0}")]
    OutOfRange(String),
    /// The node source failed.
    #[error("node source: {0}")]
    Source(E),
}

/// MTH over leaves `[start, end)`, using stored subtrees. In the RFC recursion every left part
/// is a perfect, aligned subtree, so it is one lookup.
fn mth<S: NodeSource>(s: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start.is_multiple_of(n) {
        return s.node(n.trailing_zeros(), start >> n.trailing_zeros());
    }
    let k = split_point(n);
    let left = mth(s, start, start + k)?;
    let right = mth(s, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves.
pub fn root<S: NodeSource>(s: &S, size: u64) -> Result<Hash, S::Error> {
    mth(s, 0, size)
}

/// RFC 9162 §2.1.3.1 PATH(m, D[start:end]), appended leaf-to-root to `out`.
fn path<S: NodeSource>(
    s: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(s, m, start, start + k, out)?;
        out.push(mth(s, start + k, end)?);
    } else {
        path(s, m - k, start + k, end, out)?;
        out.push(mth(s, start, start + k)?);
    }
    Ok(())
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<S: NodeSource>(
    s: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofRequestError<S::Error>> {
    if index >= size {
        return Err(ProofRequestError::OutOfRange(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    let mut out = Vec::new();
    path(s, index, 0, size, &mut out).map_err(ProofRequestError::Source)?;
    Ok(out)
}

/// RFC 9162 §2.1.4.1 SUBPROOF(m, D[start:end], b).
fn subproof<S: NodeSource>(
    s: &S,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(mth(s, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(s, m, start, start + k, complete, out)?;
        out.push(mth(s, start + k, end)?);
    } else {
        subproof(s, m - k, start + k, end, false, out)?;
        out.push(mth(s, start, start + k)?);
    }
    Ok(())
}

/// The consistency proof from tree size `from` to tree size `to`. Empty when `from` is 0 or
/// equal to `to`.
pub fn consistency_proof<S: NodeSource>(
    s: &S,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, ProofRequestError<S::Error>> {
    if from > to {
        return Err(ProofRequestError::OutOfRange(format!(
            "from ({from}) is larger than to ({to})"
        )));
    }
    let mut out = Vec::new();
    if from == 0 || from == to {
        return Ok(out);
    }
    subproof(s, from, 0, to, true, &mut out).map_err(ProofRequestError::Source)?;
    Ok(out)
}

/// The right edge of the tree: the roots of the perfect subtrees that make up the current size,
/// largest (leftmost) first. Appending a leaf returns every node that became complete, so the
/// store can persist each node exactly once and never rehash old leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    // Invariant: `stack[i]` is the root of a perfect subtree of `2^levels[i]` leaves; levels are
    // strictly decreasing and their powers of two sum to `size`.
    size: u64,
    stack: Vec<(u32, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from stored nodes (one lookup per set
    /// bit of `size`).
    pub fn load<S: NodeSource>(s: &S, size: u64) -> Result<Frontier, S::Error> {
        let mut stack = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                stack.push((level, s.node(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Frontier { size, stack })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash. Returns the nodes that became complete, as `(level, index, hash)`,
    /// starting with the leaf itself (level 0).
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let mut created = Vec::new();
        self.push_into(leaf, &mut created);
        created
    }

    /// [`Frontier::push`] that appends the completed nodes to `created` (no allocation per
    /// leaf once `created` has room).
    pub fn push_into(&mut self, leaf: Hash, created: &mut Vec<(u32, u64, Hash)>) {
        created.push((0, self.size, leaf));
        let mut level = 0u32;
        let mut hash = leaf;
        let mut index = self.size;
        while let Some(&(top_level, top_hash)) = self.stack.last() {
            if top_level != level {
                break;
            }
            self.stack.pop();
            hash = node_hash(&top_hash, &hash);
            level += 1;
            index >>= 1;
            created.push((level, index, hash));
        }
        self.stack.push((level, hash));
        self.size += 1;
    }

    /// The root of the current tree.
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}
