//! RFC 6962 (Certificate Transparency) Merkle tree for an append-only audit log.
//!
//! Leaves are hashed as `SHA-256(0x00 || data)` and interior nodes as `SHA-256(0x01 || left || right)`. A tree
//! of `n > 1` leaves splits at the largest power of two smaller than `n`. Proofs are the RFC 6962 section 2.1
//! inclusion and consistency proofs, checked with the RFC 9162 section 2.1.3.2 and 2.1.4.2 algorithms.

use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Root of the empty tree, `MTH({})`: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Hash of a leaf entry: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new().chain_update([0x00]).chain_update(data).finalize().into()
}

/// Hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// Why a proof could not be built or did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size the index was checked against.
        size: u64,
    },
    /// The requested tree size is larger than the tree.
    SizeOutOfRange {
        /// The requested tree size.
        size: u64,
        /// The number of leaves the tree holds.
        len: u64,
    },
    /// A consistency range that is not `0 < from <= to`.
    InvalidRange {
        /// The older tree size.
        from: u64,
        /// The newer tree size.
        to: u64,
    },
    /// The proof has more or fewer hashes than the sizes call for.
    WrongProofLength,
    /// The proof leads to a root other than the expected one.
    RootMismatch,
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IndexOutOfRange { index, size } => write!(f, "index {index} is outside a tree of size {size}"),
            Self::SizeOutOfRange { size, len } => write!(f, "size {size} is beyond a tree of {len} leaves"),
            Self::InvalidRange { from, to } => write!(f, "invalid consistency range from size {from} to size {to}"),
            Self::WrongProofLength => f.write_str("proof has the wrong number of hashes"),
            Self::RootMismatch => f.write_str("proof does not lead to the expected root"),
        }
    }
}

impl std::error::Error for ProofError {}

/// In-memory tree over leaf hashes, keeping the hash of every complete subtree so that roots and proofs
/// for any tree size cost O(log^2 n) hash operations or better, never O(n).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// `levels[0]` holds the leaf hashes; `levels[k][i]` is the hash of the complete subtree of `2^k` leaves
    /// starting at leaf `i * 2^k`.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree over the given leaf hashes, in order.
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push(leaf);
        }
        tree
    }

    /// Appends a leaf hash, completing the parent subtrees it fills (amortised O(1) hashes).
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if level == self.levels.len() {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            let n = row.len();
            if !n.is_multiple_of(2) {
                return;
            }
            hash = node_hash(&row[n - 2], &row[n - 1]);
            level += 1;
        }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaf hash at `index`, if there is one.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(usize::try_from(index).ok()?).copied()
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Hash {
        self.range_hash(0, self.len())
    }

    /// Root of the tree formed by the first `size` leaves, `MTH(D[size])`.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        Ok(self.range_hash(0, size))
    }

    /// Audit path of leaf `index` in the tree of the first `size` leaves: RFC 6962 `PATH(index, D[size])`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        let (mut lo, mut hi) = (0, size);
        while hi - lo > 1 {
            let k = split(hi - lo);
            if index < lo + k {
                proof.push(self.range_hash(lo + k, hi));
                hi = lo + k;
            } else {
                proof.push(self.range_hash(lo, lo + k));
                lo += k;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// Proof that the tree of the first `from` leaves is a prefix of the tree of the first `to` leaves:
    /// RFC 6962 `PROOF(from, D[to])`. Equal sizes give an empty proof.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        if from == 0 || from > to {
            return Err(ProofError::InvalidRange { from, to });
        }
        self.check_size(to)?;
        let mut proof = Vec::new();
        let (mut lo, mut hi, mut m, mut whole) = (0, to, from, true);
        while m < hi - lo {
            let k = split(hi - lo);
            if m <= k {
                proof.push(self.range_hash(lo + k, hi));
                hi = lo + k;
            } else {
                proof.push(self.range_hash(lo, lo + k));
                lo += k;
                m -= k;
                whole = false;
            }
        }
        if !whole {
            proof.push(self.range_hash(lo, hi));
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let len = self.len();
        if size > len { Err(ProofError::SizeOutOfRange { size, len }) } else { Ok(()) }
    }

    /// `MTH(D[lo:hi])` for a range the RFC 6962 recursion produces: `lo` is a multiple of a power of two
    /// no smaller than `hi - lo`, so the range is a run of aligned complete subtrees of decreasing size,
    /// folded from the right.
    fn range_hash(&self, lo: u64, hi: u64) -> Hash {
        let mut rest = hi - lo;
        let mut end = hi;
        let mut acc: Option<Hash> = None;
        while rest != 0 {
            let level = rest.trailing_zeros();
            let start = end - (1 << level);
            let subtree = self.levels[level as usize][to_usize(start >> level)];
            acc = Some(acc.map_or(subtree, |right| node_hash(&subtree, &right)));
            end = start;
            rest &= rest - 1;
        }
        debug_assert_eq!(end, lo);
        acc.unwrap_or(EMPTY_ROOT)
    }
}

/// Largest power of two smaller than `n` (for `n >= 2`).
fn split(n: u64) -> u64 {
    1 << (n - 1).ilog2()
}

fn to_usize(position: u64) -> usize {
    usize::try_from(position).expect("positions are bounded by the length of an in-memory vector")
}

/// Checks an RFC 6962 inclusion proof for `leaf` at `index` in a tree of `size` leaves with root `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut node, mut last) = (index, size - 1);
    let mut hash = *leaf;
    for sibling in proof {
        if last == 0 {
            return Err(ProofError::WrongProofLength);
        }
        if node & 1 == 1 || node == last {
            hash = node_hash(sibling, &hash);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(ProofError::WrongProofLength);
    }
    if hash != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks an RFC 6962 consistency proof between the tree of `from` leaves with root `from_root` and the tree
/// of `to` leaves with root `to_root`. Equal sizes need an empty proof and equal roots.
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if from == 0 || from > to {
        return Err(ProofError::InvalidRange { from, to });
    }
    if from == to {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength);
        }
        return if from_root == to_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if proof.is_empty() {
        return Err(ProofError::WrongProofLength);
    }
    let mut path = proof.iter();
    let seed = if from.is_power_of_two() { from_root } else { path.next().ok_or(ProofError::WrongProofLength)? };
    let (mut node, mut last) = (from - 1, to - 1);
    while node & 1 == 1 {
        node >>= 1;
        last >>= 1;
    }
    let (mut old, mut new) = (*seed, *seed);
    for sibling in path {
        if last == 0 {
            return Err(ProofError::WrongProofLength);
        }
        if node & 1 == 1 || node == last {
            old = node_hash(sibling, &old);
            new = node_hash(sibling, &new);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            new = node_hash(&new, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 {
        return Err(ProofError::WrongProofLength);
    }
    if old != *from_root || new != *to_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The root of a list of leaf hashes computed from scratch (what a verifier that trusts nothing does).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [leaf] => *leaf,
        _ => {
            let (left, right) = leaves.split_at(1 << (leaves.len() - 1).ilog2());
            node_hash(&root_of(left), &root_of(right))
        }
    }
}

/// The first of the `signed` trees (sizes and roots, in size order) whose root the first leaves
/// of `leaves` do not hash to, with the size of the tree before it (0 for none): the first changed
/// leaf is at or after that size and before the other. Found by bisection, since once a leaf has
/// changed every larger tree's root differs. `None` when every root matches.
pub fn first_unmatched(leaves: &[Hash], signed: impl IntoIterator<Item = (u64, Hash)>) -> Option<(u64, u64)> {
    let mut signed: Vec<(u64, Hash)> =
        signed.into_iter().filter(|(size, _)| *size > 0 && *size <= leaves.len() as u64).collect();
    signed.sort_by_key(|(size, _)| *size);
    signed.dedup_by_key(|(size, _)| *size);
    let first = signed.partition_point(|(size, root)| root_of(&leaves[..*size as usize]) == *root);
    let (to, _) = *signed.get(first)?;
    let from = first.checked_sub(1).map_or(0, |before| signed[before].0);
    Some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_unmatched_tree_brackets_the_first_changed_leaf() {
        let leaves: Vec<Hash> = (0..20_u8).map(|byte| leaf_hash(&[byte])).collect();
        let signed: Vec<(u64, Hash)> = [3, 7, 8, 12, 20].map(|size| (size, root_of(&leaves[..size as usize]))).to_vec();
        assert_eq!(first_unmatched(&leaves, signed.clone()), None, "every root matches");
        for (changed, bracket) in [(0, (0, 3)), (2, (0, 3)), (3, (3, 7)), (7, (7, 8)), (11, (8, 12)), (19, (12, 20))] {
            let mut tampered = leaves.clone();
            tampered[changed] = leaf_hash(b"changed");
            assert_eq!(first_unmatched(&tampered, signed.clone()), Some(bracket), "leaf {changed}");
        }
        // Sizes out of order, repeated, or past the leaves held are taken in order, once, or not at all.
        let mut tampered = leaves.clone();
        tampered[9] = leaf_hash(b"changed");
        let mut shuffled: Vec<(u64, Hash)> = signed.iter().rev().cloned().collect();
        shuffled.push(signed[1]);
        shuffled.push((40, signed[0].1));
        assert_eq!(first_unmatched(&tampered, shuffled), Some((8, 12)));
    }

    const CT_INPUTS: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn hex(s: &str) -> Hash {
        let bytes: Vec<u8> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
        bytes.try_into().unwrap()
    }

    fn ct_leaves() -> Vec<Hash> {
        CT_INPUTS.iter().map(|data| leaf_hash(data)).collect()
    }

    fn sample(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// RFC 6962 2.1.1 `PATH(m, D[n])`, transcribed literally.
    fn reference_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        if leaves.len() <= 1 {
            return Vec::new();
        }
        let k = 1 << (leaves.len() - 1).ilog2();
        let (left, right) = leaves.split_at(k);
        let (mut path, sibling) = if m < k {
            (reference_path(m, left), root_of(right))
        } else {
            (reference_path(m - k, right), root_of(left))
        };
        path.push(sibling);
        path
    }

    /// RFC 6962 2.1.2 `SUBPROOF(m, D[n], b)`, transcribed literally.
    fn reference_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { Vec::new() } else { vec![root_of(leaves)] };
        }
        let k = 1 << (n - 1).ilog2();
        let (left, right) = leaves.split_at(k);
        let (mut proof, sibling) = if m <= k {
            (reference_subproof(m, left, whole), root_of(right))
        } else {
            (reference_subproof(m - k, right, false), root_of(left))
        };
        proof.push(sibling);
        proof
    }

    #[test]
    fn empty_tree() {
        assert_eq!(EMPTY_ROOT, <Hash>::from(Sha256::digest(b"")));
        let tree = Tree::new();
        assert!(tree.is_empty());
        assert_eq!(tree.len(), 0);
        assert_eq!(tree.root(), EMPTY_ROOT);
        assert_eq!(tree.root_at(0), Ok(EMPTY_ROOT));
        assert_eq!(root_of(&[]), EMPTY_ROOT);
        assert_eq!(tree.leaf(0), None);
    }

    #[test]
    fn rfc6962_roots() {
        let leaves = ct_leaves();
        assert_eq!(leaves[0], hex(CT_ROOTS[0]));
        assert_eq!(node_hash(&leaves[0], &leaves[1]), hex(CT_ROOTS[1]));
        let tree = Tree::from_leaf_hashes(leaves.iter().copied());
        for (n, want) in (1..=8u64).zip(CT_ROOTS) {
            assert_eq!(tree.root_at(n), Ok(hex(want)), "size {n}");
            assert_eq!(root_of(&leaves[..n as usize]), hex(want), "size {n}");
        }
        assert_eq!(tree.root(), hex(CT_ROOTS[7]));
        assert_eq!(tree.leaf(3), Some(leaves[3]));
        assert_eq!(tree.leaf(8), None);
    }

    #[test]
    fn rfc6962_inclusion_proofs() {
        let vectors: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let leaves = ct_leaves();
        let tree = Tree::from_leaf_hashes(leaves.iter().copied());
        for (index, size, want) in vectors {
            let want: Vec<Hash> = want.iter().map(|h| hex(h)).collect();
            assert_eq!(tree.inclusion_proof(index, size), Ok(want.clone()), "leaf {index} of {size}");
            let root = hex(CT_ROOTS[size as usize - 1]);
            assert_eq!(verify_inclusion(&leaves[index as usize], index, size, &want, &root), Ok(()));
        }
    }

    #[test]
    fn rfc6962_consistency_proofs() {
        let vectors: [(u64, u64, &[&str]); 5] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                2,
                8,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
        ];
        let tree = Tree::from_leaf_hashes(ct_leaves());
        for (from, to, want) in vectors {
            let want: Vec<Hash> = want.iter().map(|h| hex(h)).collect();
            assert_eq!(tree.consistency_proof(from, to), Ok(want.clone()), "{from} -> {to}");
            let (old, new) = (hex(CT_ROOTS[from as usize - 1]), hex(CT_ROOTS[to as usize - 1]));
            assert_eq!(verify_consistency(from, to, &old, &new, &want), Ok(()));
        }
    }

    #[test]
    fn every_proof_up_to_64_leaves_verifies() {
        let leaves = sample(64);
        let tree = Tree::from_leaf_hashes(leaves.iter().copied());
        let mut grown = Tree::new();
        for n in 1..=64u64 {
            let prefix = &leaves[..n as usize];
            grown.push(prefix[prefix.len() - 1]);
            let root = tree.root_at(n).unwrap();
            assert_eq!(root, root_of(prefix), "size {n}");
            assert_eq!(root, Tree::from_leaf_hashes(prefix.iter().copied()).root(), "size {n}");
            assert_eq!(root, grown.root(), "size {n}");
            for index in 0..n {
                let proof = tree.inclusion_proof(index, n).unwrap();
                assert_eq!(proof, reference_path(index as usize, prefix), "leaf {index} of {n}");
                assert_eq!(verify_inclusion(&prefix[index as usize], index, n, &proof, &root), Ok(()));
            }
            for from in 1..=n {
                let proof = tree.consistency_proof(from, n).unwrap();
                assert_eq!(proof, reference_subproof(from as usize, prefix, true), "{from} -> {n}");
                assert_eq!(verify_consistency(from, n, &tree.root_at(from).unwrap(), &root, &proof), Ok(()));
            }
        }
    }

    #[test]
    fn tampered_inclusion_proofs_fail() {
        let leaves = sample(64);
        let tree = Tree::from_leaf_hashes(leaves.iter().copied());
        for n in 1..=64u64 {
            let root = tree.root_at(n).unwrap();
            for index in 0..n {
                let leaf = leaves[index as usize];
                let proof = tree.inclusion_proof(index, n).unwrap();
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][i % 32] ^= 0x08;
                    assert_eq!(verify_inclusion(&leaf, index, n, &bad, &root), Err(ProofError::RootMismatch));
                }
                if let Some((_, shorter)) = proof.split_last() {
                    assert_eq!(verify_inclusion(&leaf, index, n, shorter, &root), Err(ProofError::WrongProofLength));
                    assert!(verify_inclusion(&leaf, index, n, &proof[1..], &root).is_err());
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert_eq!(verify_inclusion(&leaf, index, n, &longer, &root), Err(ProofError::WrongProofLength));
                for wrong in [index ^ 1, index + 1, index.wrapping_sub(1), n] {
                    if wrong != index {
                        assert!(
                            verify_inclusion(&leaf, wrong, n, &proof, &root).is_err(),
                            "{wrong} for {index} of {n}"
                        );
                    }
                }
                for wrong_size in [n * 2, n / 2] {
                    assert!(verify_inclusion(&leaf, index, wrong_size, &proof, &root).is_err());
                }
                let other = leaf_hash(b"not in the log");
                assert_eq!(verify_inclusion(&other, index, n, &proof, &root), Err(ProofError::RootMismatch));
                assert!(verify_inclusion(&leaf, index, n, &proof, &EMPTY_ROOT).is_err());
            }
        }
    }

    #[test]
    fn tampered_consistency_proofs_fail() {
        let tree = Tree::from_leaf_hashes(sample(64));
        for to in 2..=64u64 {
            let new = tree.root_at(to).unwrap();
            for from in 1..to {
                let old = tree.root_at(from).unwrap();
                let proof = tree.consistency_proof(from, to).unwrap();
                assert!(!proof.is_empty());
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][31 - i % 32] ^= 0x10;
                    assert_eq!(verify_consistency(from, to, &old, &new, &bad), Err(ProofError::RootMismatch));
                }
                let shorter = &proof[..proof.len() - 1];
                assert_eq!(verify_consistency(from, to, &old, &new, shorter), Err(ProofError::WrongProofLength));
                assert!(verify_consistency(from, to, &old, &new, &proof[1..]).is_err());
                assert_eq!(verify_consistency(from, to, &old, &new, &[]), Err(ProofError::WrongProofLength));
                let mut longer = proof.clone();
                longer.push(new);
                assert_eq!(verify_consistency(from, to, &old, &new, &longer), Err(ProofError::WrongProofLength));
                assert_eq!(verify_consistency(from, to, &new, &old, &proof), Err(ProofError::RootMismatch));
                assert!(verify_consistency(from, to, &old, &old, &proof).is_err());
                for (f, t) in [(from + 1, to), (from - 1, to), (from ^ 2, to), (from, to / 2), (from, to * 2)] {
                    if (f, t) != (from, to) {
                        assert!(verify_consistency(f, t, &old, &new, &proof).is_err(), "{f} -> {t} for {from} -> {to}");
                    }
                }
            }
            let previous = tree.root_at(to - 1).unwrap();
            assert_eq!(verify_consistency(to, to, &new, &new, &[]), Ok(()));
            assert_eq!(verify_consistency(to, to, &new, &previous, &[]), Err(ProofError::RootMismatch));
            assert_eq!(verify_consistency(to, to, &new, &new, &[new]), Err(ProofError::WrongProofLength));
        }
    }

    #[test]
    fn out_of_range_arguments_are_rejected() {
        let tree = Tree::from_leaf_hashes(sample(3));
        assert_eq!(tree.root_at(4), Err(ProofError::SizeOutOfRange { size: 4, len: 3 }));
        assert_eq!(tree.inclusion_proof(3, 3), Err(ProofError::IndexOutOfRange { index: 3, size: 3 }));
        assert_eq!(tree.inclusion_proof(0, 4), Err(ProofError::SizeOutOfRange { size: 4, len: 3 }));
        assert_eq!(tree.inclusion_proof(0, 0), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
        assert_eq!(tree.consistency_proof(0, 2), Err(ProofError::InvalidRange { from: 0, to: 2 }));
        assert_eq!(tree.consistency_proof(3, 2), Err(ProofError::InvalidRange { from: 3, to: 2 }));
        assert_eq!(tree.consistency_proof(1, 4), Err(ProofError::SizeOutOfRange { size: 4, len: 3 }));
        assert_eq!(tree.consistency_proof(3, 3), Ok(Vec::new()));
        let root = tree.root();
        assert_eq!(verify_inclusion(&root, 0, 0, &[], &root), Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
        assert_eq!(verify_consistency(0, 3, &EMPTY_ROOT, &root, &[]), Err(ProofError::InvalidRange { from: 0, to: 3 }));
        assert_eq!(verify_consistency(3, 2, &root, &root, &[]), Err(ProofError::InvalidRange { from: 3, to: 2 }));
    }

    #[test]
    fn errors_display() {
        let cases = [
            (ProofError::IndexOutOfRange { index: 5, size: 3 }, "index 5 is outside a tree of size 3"),
            (ProofError::SizeOutOfRange { size: 9, len: 8 }, "size 9 is beyond a tree of 8 leaves"),
            (ProofError::InvalidRange { from: 4, to: 2 }, "invalid consistency range from size 4 to size 2"),
            (ProofError::WrongProofLength, "proof has the wrong number of hashes"),
            (ProofError::RootMismatch, "proof does not lead to the expected root"),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
            let _: &dyn std::error::Error = &error;
        }
    }

    #[test]
    fn million_leaf_tree() {
        const N: u64 = 1_000_000;
        let counter = |i: u64| {
            let mut hash = [0; 32];
            hash[..8].copy_from_slice(&i.to_be_bytes());
            hash
        };
        let leaves: Vec<Hash> = (0..N).map(counter).collect();
        let tree = Tree::from_leaf_hashes(leaves.iter().copied());
        assert_eq!(tree.len(), N);
        let root = tree.root();
        assert_eq!(root, root_of(&leaves));
        let index = N / 2 + 7;
        let proof = tree.inclusion_proof(index, N).unwrap();
        assert_eq!(proof.len(), 20);
        assert_eq!(verify_inclusion(&counter(index), index, N, &proof, &root), Ok(()));
        assert!(verify_inclusion(&counter(index + 1), index, N, &proof, &root).is_err());

        let from = 777_777;
        let old = tree.root_at(from).unwrap();
        let consistency = tree.consistency_proof(from, N).unwrap();
        assert_eq!(verify_consistency(from, N, &old, &root, &consistency), Ok(()));

        let size = 999_999;
        let proof = tree.inclusion_proof(index, size).unwrap();
        assert_eq!(verify_inclusion(&counter(index), index, size, &proof, &tree.root_at(size).unwrap()), Ok(()));
    }
}
