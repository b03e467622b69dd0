//! The log as a reader sees it: the store's entries, and what is computed from them. The root
//! of the whole log comes from its right edge (a [`Frontier`], `log n` hashes, brought up to
//! date from the store as it grows): what a signer needs. Proofs need the hash of any subtree:
//! the whole [`Tree`] (two hashes per entry) is built from the store the first time one is
//! asked, and kept up to date from then on, so a node that serves no auditor never holds it.

use tokio::sync::Mutex;

use super::merkle::{Frontier, Hash, ProofError, Tree, leaf_hash};
use crate::store::{Store, StoreError};

/// How many entries one read takes while catching up.
const PAGE: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("the audit log has no entry {index}, though the store counts {size} entries")]
    Gap { index: u64, size: u64 },
}

/// What grows leaf by leaf as entries are read.
trait Leaves {
    fn size(&self) -> u64;
    fn push(&mut self, leaf: Hash);
}

impl Leaves for Frontier {
    fn size(&self) -> u64 {
        Frontier::size(self)
    }
    fn push(&mut self, leaf: Hash) {
        Frontier::push(self, leaf);
    }
}

impl Leaves for Tree {
    fn size(&self) -> u64 {
        Tree::size(self)
    }
    fn push(&mut self, leaf: Hash) {
        Tree::push(self, leaf);
    }
}

/// The audit log of one store.
pub struct Log<S> {
    store: S,
    frontier: Mutex<Frontier>,
    tree: Mutex<Option<Tree>>,
}

impl<S: Store> Log<S> {
    pub fn new(store: S) -> Log<S> {
        Log {
            store,
            frontier: Mutex::new(Frontier::default()),
            tree: Mutex::new(None),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Reads the entries `leaves` lacks, up to the store's `size`.
    async fn catch_up(&self, leaves: &mut impl Leaves, size: u64) -> Result<(), LogError> {
        while leaves.size() < size {
            let page = self.store.audit_entries(leaves.size(), PAGE).await?;
            if page.is_empty() {
                return Err(LogError::Gap {
                    index: leaves.size(),
                    size,
                });
            }
            for (index, bytes) in page.into_iter().take_while(|(i, _)| *i < size) {
                if index != leaves.size() {
                    return Err(LogError::Gap {
                        index: leaves.size(),
                        size,
                    });
                }
                leaves.push(leaf_hash(&bytes));
            }
        }
        Ok(())
    }

    /// The log's size now, and its root.
    pub async fn head(&self) -> Result<(u64, Hash), LogError> {
        let size = self.store.audit_size().await?;
        let mut frontier = self.frontier.lock().await;
        self.catch_up(&mut *frontier, size).await?;
        Ok((frontier.size(), frontier.root()))
    }

    /// Runs `read` on the whole tree, built or brought up to the store's size first.
    async fn with_tree<T>(
        &self,
        read: impl FnOnce(&Tree) -> Result<T, ProofError>,
    ) -> Result<T, LogError> {
        let size = self.store.audit_size().await?;
        let mut tree = self.tree.lock().await;
        let tree = tree.get_or_insert_with(Tree::new);
        self.catch_up(tree, size).await?;
        Ok(read(tree)?)
    }

    /// The root of the first `size` entries.
    pub async fn root(&self, size: u64) -> Result<Hash, LogError> {
        self.with_tree(|t| t.root(size)).await
    }

    /// The leaf hash of entry `index` and its inclusion proof in the tree of `size` entries.
    pub async fn inclusion(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), LogError> {
        self.with_tree(|t| {
            let proof = t.inclusion(index, size)?;
            let leaf = t.leaf(index).ok_or(ProofError::NotInTree { index, size })?;
            Ok((leaf, proof))
        })
        .await
    }

    /// The consistency proof from the tree of `from` entries to the tree of `to`.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        self.with_tree(|t| t.consistency(from, to)).await
    }
}
