//! The Merkle tree of RFC 6962 (as restated by RFC 9162 §2.1): leaf and node hashes kept apart
//! by a prefix byte, a tree split at the largest power of two, inclusion and consistency
//! proofs and their verification. A few dozen lines of the RFC, checked against the test
//! vectors Certificate Transparency publishes; a crate would bring its own SHA-256 version.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf's hash, a node's, a root.
pub type Hash = [u8; 32];

/// The hash of a leaf: `SHA-256(0x00 || entry)`. The prefix keeps a leaf from ever passing
/// for a node (a second-preimage attack on the tree).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: the hash of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (`n > 1`): where RFC 6962 splits a tree.
fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a tree: the roots of its complete subtrees, largest first. All an
/// appender needs to know the root as the log grows: `log n` hashes, whatever its size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// One per bit set in `size`, from the highest.
    nodes: Vec<Hash>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf (its hash), merging the subtrees it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut below = self.size;
        while below & 1 == 1 {
            let left = self.nodes.pop().expect("one node per bit set");
            hash = node_hash(&left, &hash);
            below >>= 1;
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The Merkle Tree Hash of every leaf pushed.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// A log's leaves and the hashes of every complete, aligned subtree above them: any root,
/// inclusion or consistency proof is then a handful of lookups and at most `log n` hashes.
/// Grows by [`Tree::push`]; twice the leaves' size in memory.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// `levels[h][i]` is the hash of leaves `i·2^h .. (i+1)·2^h`.
    levels: Vec<Vec<Hash>>,
}

/// Why a proof cannot be made: the sizes asked for are not in the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("entry {index} is not in a tree of {size} entries")]
    NotInTree { index: u64, size: u64 },
    #[error("the log has {have} entries, fewer than the {size} asked for")]
    BeyondLog { size: u64, have: u64 },
    #[error(
        "a consistency proof goes from a smaller tree to a larger one, not from {from} to {to}"
    )]
    Backwards { from: u64, to: u64 },
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// How many leaves it holds.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf (its hash), completing the subtrees it closes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut height = 0;
        loop {
            if self.levels.len() == height {
                self.levels.push(Vec::new());
            }
            let level = &mut self.levels[height];
            level.push(hash);
            if level.len() % 2 == 1 {
                return;
            }
            hash = node_hash(&level[level.len() - 2], &level[level.len() - 1]);
            height += 1;
        }
    }

    /// The hash of leaf `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(index as usize).copied()
    }

    /// The Merkle Tree Hash of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.within(size)?;
        Ok(if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        })
    }

    /// An inclusion proof (RFC 9162 §2.1.3.1) of leaf `index` in the tree of the first `size`
    /// leaves.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.within(size)?;
        if index >= size {
            return Err(ProofError::NotInTree { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    /// A consistency proof (RFC 9162 §2.1.4.1) between the trees of the first `from` and the
    /// first `to` leaves: empty when either is empty or both are the same.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        self.within(to)?;
        if from > to {
            return Err(ProofError::Backwards { from, to });
        }
        let mut proof = Vec::new();
        if from > 0 && from < to {
            self.subproof(from, 0, to, true, &mut proof);
        }
        Ok(proof)
    }

    fn within(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::BeyondLog {
                size,
                have: self.size(),
            });
        }
        Ok(())
    }

    /// MTH of leaves `start..end` (`start < end`): stored when the range is a complete,
    /// aligned subtree, else split as RFC 6962 splits.
    fn subtree(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let height = n.trailing_zeros() as usize;
            return self.levels[height][(start >> height) as usize];
        }
        let k = split(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// PATH(m, D[start:end]), bottom up.
    fn path(&self, m: u64, start: u64, end: u64, proof: &mut Vec<Hash>) {
        let n = end - start;
        if n == 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, proof);
            proof.push(self.subtree(start + k, end));
        } else {
            self.path(m - k, start + k, end, proof);
            proof.push(self.subtree(start, start + k));
        }
    }

    /// SUBPROOF(m, D[start:end], whole), bottom up.
    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, proof: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                proof.push(self.subtree(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, proof);
            proof.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, proof);
            proof.push(self.subtree(start, start + k));
        }
    }
}

/// Whether `proof` shows that `leaf` is entry `index` of the tree of `size` entries whose root
/// is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Whether `proof` shows that the tree of `to` entries whose root is `to_root` extends the
/// tree of `from` entries whose root is `from_root`: the log only grew (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> bool {
    if from > to {
        return false;
    }
    if from == to {
        return proof.is_empty() && from_root == to_root;
    }
    if from == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(*from_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *from_root && sr == *to_root && s == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves of Certificate Transparency's reference tests.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// Their published roots, for the first 1 to 8 leaves.
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn tree(n: usize) -> Tree {
        let mut t = Tree::new();
        for l in &LEAVES[..n] {
            t.push(leaf_hash(&hex::decode(l).unwrap()));
        }
        t
    }

    fn hashes(hex_list: &[&str]) -> Vec<Hash> {
        hex_list
            .iter()
            .map(|h| hex::decode(h).unwrap().try_into().unwrap())
            .collect()
    }

    fn synthetic(n: u64) -> Tree {
        let mut t = Tree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_be_bytes()));
        }
        t
    }

    #[test]
    fn roots_are_certificate_transparencys_reference_roots() {
        let t = tree(8);
        assert_eq!(hex::encode(t.root(0).unwrap()), hex::encode(empty_root()));
        for (n, root) in ROOTS.iter().enumerate() {
            assert_eq!(
                hex::encode(t.root(n as u64 + 1).unwrap()),
                *root,
                "size {}",
                n + 1
            );
            assert_eq!(hex::encode(tree(n + 1).root(n as u64 + 1).unwrap()), *root);
        }
    }

    #[test]
    fn inclusion_proofs_are_the_published_ones_and_verify() {
        let t = tree(8);
        let root = t.root(8).unwrap();
        let published = [
            (
                0,
                hashes(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                5,
                hashes(&[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
        ];
        for (index, proof) in published {
            assert_eq!(t.inclusion(index, 8).unwrap(), proof);
            assert!(verify_inclusion(
                &t.leaf(index).unwrap(),
                index,
                8,
                &proof,
                &root
            ));
            assert!(!verify_inclusion(
                &t.leaf(index).unwrap(),
                index ^ 1,
                8,
                &proof,
                &root
            ));
        }
    }

    #[test]
    fn consistency_proofs_are_the_published_ones_and_verify() {
        let t = tree(8);
        let published = [
            (
                1,
                8,
                hashes(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                6,
                8,
                hashes(&[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (
                2,
                5,
                hashes(&[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
        ];
        for (from, to, proof) in published {
            assert_eq!(t.consistency(from, to).unwrap(), proof, "{from} to {to}");
            let (a, b) = (t.root(from).unwrap(), t.root(to).unwrap());
            assert!(verify_consistency(from, to, &a, &b, &proof));
            assert!(!verify_consistency(from, to, &b, &a, &proof));
        }
    }

    #[test]
    fn every_proof_of_every_small_tree_verifies_and_a_wrong_one_does_not() {
        let t = synthetic(40);
        for size in 1..=40 {
            let root = t.root(size).unwrap();
            for index in 0..size {
                let proof = t.inclusion(index, size).unwrap();
                assert!(verify_inclusion(
                    &t.leaf(index).unwrap(),
                    index,
                    size,
                    &proof,
                    &root
                ));
                let other = t.leaf((index + 1) % 40).unwrap();
                assert!(size == 1 || !verify_inclusion(&other, index, size, &proof, &root));
            }
            for from in 0..=size {
                let proof = t.consistency(from, size).unwrap();
                let old = t.root(from).unwrap();
                assert!(
                    verify_consistency(from, size, &old, &root, &proof),
                    "{from}..{size}"
                );
                if from > 0 && from < size {
                    let forged = node_hash(&old, &old);
                    assert!(!verify_consistency(from, size, &forged, &root, &proof));
                }
            }
        }
    }

    #[test]
    fn a_frontier_gives_the_trees_root_at_every_size() {
        let t = synthetic(70);
        let mut f = Frontier::default();
        assert_eq!(f.root(), empty_root());
        for i in 0..70 {
            f.push(t.leaf(i).unwrap());
            assert_eq!(f.root(), t.root(i + 1).unwrap(), "size {}", i + 1);
            assert_eq!(f.nodes.len() as u32, (i + 1).count_ones());
        }
    }

    #[test]
    fn sizes_beyond_the_log_are_refused() {
        let t = synthetic(5);
        assert_eq!(t.root(6), Err(ProofError::BeyondLog { size: 6, have: 5 }));
        assert_eq!(
            t.inclusion(5, 5),
            Err(ProofError::NotInTree { index: 5, size: 5 })
        );
        assert_eq!(
            t.consistency(4, 2),
            Err(ProofError::Backwards { from: 4, to: 2 })
        );
    }
}
