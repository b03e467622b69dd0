//! The log as a reader sees it: the store's entries, and the Merkle tree over them kept in
//! memory (two hashes per entry), brought up to date from the store as it grows, so that a
//! root or a proof is lookups rather than a read of the whole log.

use tokio::sync::Mutex;

use super::merkle::{Hash, ProofError, Tree, leaf_hash};
use crate::store::{Store, StoreError};

/// How many entries one read takes while the tree catches up.
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

/// The audit log of one store.
pub struct Log<S> {
    store: S,
    tree: Mutex<Tree>,
}

impl<S: Store> Log<S> {
    pub fn new(store: S) -> Log<S> {
        Log {
            store,
            tree: Mutex::new(Tree::new()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Brings the tree up to the store's size; the size.
    pub async fn size(&self) -> Result<u64, LogError> {
        let size = self.store.audit_size().await?;
        let mut tree = self.tree.lock().await;
        while tree.size() < size {
            let page = self.store.audit_entries(tree.size(), PAGE).await?;
            if page.is_empty() {
                return Err(LogError::Gap {
                    index: tree.size(),
                    size,
                });
            }
            for (index, bytes) in page {
                if index != tree.size() {
                    return Err(LogError::Gap {
                        index: tree.size(),
                        size,
                    });
                }
                tree.push(leaf_hash(&bytes));
            }
        }
        Ok(size)
    }

    /// The root of the first `size` entries.
    pub async fn root(&self, size: u64) -> Result<Hash, LogError> {
        self.size().await?;
        Ok(self.tree.lock().await.root(size)?)
    }

    /// The leaf hash of entry `index` and its inclusion proof in the tree of `size` entries.
    pub async fn inclusion(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>), LogError> {
        self.size().await?;
        let tree = self.tree.lock().await;
        let proof = tree.inclusion(index, size)?;
        let leaf = tree
            .leaf(index)
            .ok_or(ProofError::NotInTree { index, size })?;
        Ok((leaf, proof))
    }

    /// The consistency proof from the tree of `from` entries to the tree of `to`.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        self.size().await?;
        Ok(self.tree.lock().await.consistency(from, to)?)
    }
}
