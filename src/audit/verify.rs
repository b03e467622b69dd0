//! Checking a whole log, offline: every entry in its place and readable, each chained to the
//! one before, every head signed by a trusted key over the root its entries give, every head
//! consistent with the one before, and (given one an auditor kept) the log grown from it.
//! What does not match is named: the first entry, or the head.
//!
//! An entry changed in place breaks the chain at the entry after it (which recorded its
//! hash), or breaks the signed root if it is the last one signed; an entry deleted leaves a
//! gap, or a head larger than the log; entries swapped say another index than their place.

use std::future::Future;

use super::entry::Entry;
use super::head::{TreeHead, TrustedKeys};
use super::merkle::{Hash, Tree, leaf_hash, verify_consistency};
use crate::store::Store;

/// How many entries one read takes.
const PAGE: usize = 5_000;

/// Where a log is read from: a store, a backup opened as one, or a running node's API.
pub trait Source {
    /// Up to `limit` stored entries from index `from` on, in index order, as stored.
    fn entries(
        &self,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<u8>)>, String>>;

    /// Every signed tree head, in size order.
    fn heads(&self) -> impl Future<Output = Result<Vec<TreeHead>, String>>;
}

/// A store as a [`Source`].
pub struct StoreSource<S>(pub S);

impl<S: Store> Source for StoreSource<S> {
    async fn entries(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String> {
        self.0
            .audit_entries(from, limit)
            .await
            .map_err(|e| e.to_string())
    }

    async fn heads(&self) -> Result<Vec<TreeHead>, String> {
        // Read first (and, on PostgreSQL, every record committed so far sealed into the log),
        // so the entries read next are at least those the heads sign.
        self.0.audit_size().await.map_err(|e| e.to_string())?;
        let mut heads = Vec::new();
        loop {
            let from = heads.last().map_or(0, |h: &TreeHead| h.size + 1);
            let page = self
                .0
                .tree_heads(from, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let done = page.len() < PAGE;
            heads.extend(page);
            if done {
                return Ok(heads);
            }
        }
    }
}

/// What does not match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("entry {index}: {why}")]
    Entry { index: u64, why: String },
    #[error("the tree head of size {size}: {why}")]
    Head { size: u64, why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the audit log does not verify: {0}")]
    Mismatch(#[from] Mismatch),
    #[error("the audit log cannot be read: {0}")]
    Read(String),
}

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub heads: usize,
    pub latest: Option<TreeHead>,
    /// Entries after the latest head: in the chain, but not signed yet.
    pub unsigned: u64,
}

/// What the first pass keeps of each entry: its leaf (in the tree) and the hash it recorded
/// of the entry before.
struct Read {
    tree: Tree,
    prevs: Vec<Hash>,
}

/// Verifies the log in `source` against the keys `trusted`; with `kept`, a head an auditor
/// kept from before, also that the log grew from it.
pub async fn verify(
    source: &impl Source,
    trusted: &TrustedKeys,
    kept: Option<&TreeHead>,
) -> Result<Verified, VerifyError> {
    let heads = source.heads().await.map_err(VerifyError::Read)?;
    let mut roots = Vec::with_capacity(heads.len());
    for head in heads.iter().chain(kept) {
        let root = trusted.verify(head).map_err(|e| Mismatch::Head {
            size: head.size,
            why: e.to_string(),
        })?;
        roots.push(root);
    }
    let read = read_all(source).await?;
    let n = read.tree.size();
    check_chain(&read)?;
    let mut before: Option<(u64, Hash)> = None;
    for (head, root) in heads.iter().zip(&roots) {
        check_head(&read, head, root, before)?;
        before = Some((head.size, *root));
    }
    if let (Some(kept), Some(root)) = (kept, roots.last()) {
        let grown = kept.size <= n && read.tree.root(kept.size).ok().as_ref() == Some(root);
        if !grown {
            return Err(Mismatch::Head {
                size: kept.size,
                why: "the log does not extend this head: its entries below that size give another root".into(),
            }
            .into());
        }
    }
    let latest = heads.last().cloned();
    Ok(Verified {
        entries: n,
        heads: heads.len(),
        unsigned: n - latest.as_ref().map_or(0, |h| h.size.min(n)),
        latest,
    })
}

/// Reads every entry: each in its place, readable, saying its own index.
async fn read_all(source: &impl Source) -> Result<Read, VerifyError> {
    let mut read = Read {
        tree: Tree::new(),
        prevs: Vec::new(),
    };
    let mut last_at = jiff::Timestamp::MIN;
    loop {
        let expected = read.tree.size();
        let page = source
            .entries(expected, PAGE)
            .await
            .map_err(VerifyError::Read)?;
        let done = page.len() < PAGE;
        for (index, bytes) in page {
            let expected = read.tree.size();
            let bad = |why: String| Mismatch::Entry {
                index: expected,
                why,
            };
            if index != expected {
                return Err(bad(format!("it is missing: the next stored entry is {index}")).into());
            }
            let entry =
                Entry::decode(&bytes).map_err(|e| bad(format!("it cannot be read ({e})")))?;
            if entry.index != index {
                let says = entry.index;
                return Err(bad(format!(
                    "it is stored in place {index} but says it is entry {says}"
                ))
                .into());
            }
            let prev = hex::decode(&entry.prev)
                .ok()
                .and_then(|b| Hash::try_from(b).ok())
                .ok_or_else(|| {
                    bad("the hash it records of the entry before is not 64 hex digits".into())
                })?;
            if entry.logged_at < last_at {
                return Err(bad("it was logged before the entry before it".into()).into());
            }
            last_at = entry.logged_at;
            read.tree.push(leaf_hash(&bytes));
            read.prevs.push(prev);
        }
        if done {
            return Ok(read);
        }
    }
}

/// Each entry records the leaf hash of the one before. At the first link that does not hold,
/// the entry before was changed, unless the entry itself was (then its own link to the next
/// breaks too).
fn check_chain(read: &Read) -> Result<(), Mismatch> {
    let n = read.tree.size();
    let leaf = |i: u64| read.tree.leaf(i).expect("read");
    let link_holds = |j: u64| {
        let recorded = read.prevs[j as usize];
        if j == 0 {
            recorded == [0; 32]
        } else {
            recorded == leaf(j - 1)
        }
    };
    let Some(j) = (0..n).find(|&j| !link_holds(j)) else {
        return Ok(());
    };
    let changed = if j == 0 || (j + 1 < n && !link_holds(j + 1)) {
        j
    } else {
        j - 1
    };
    Err(Mismatch::Entry {
        index: changed,
        why: if changed == j {
            format!(
                "it does not chain to the entry before, nor entry {} to it",
                j + 1
            )
        } else {
            format!("its hash is not the one entry {j} recorded of it: it was changed")
        },
    })
}

/// A head's root is the root of the entries below its size, and the head extends `before`.
fn check_head(
    read: &Read,
    head: &TreeHead,
    root: &Hash,
    before: Option<(u64, Hash)>,
) -> Result<(), Mismatch> {
    let n = read.tree.size();
    if head.size > n {
        return Err(Mismatch::Entry {
            index: n,
            why: format!(
                "it is missing: the log ends at {n} entries, but a head was signed at {}",
                head.size
            ),
        });
    }
    let computed = read.tree.root(head.size).expect("within the log");
    if computed != *root {
        // Every link holds (checked first): one entry changed would have broken the link of
        // the entry after it, so it is the last one the head covers; a chain rebuilt after a
        // change could start anywhere after the head before.
        let from = before.map_or(0, |(size, _)| size);
        let last = head.size.saturating_sub(1);
        return Err(Mismatch::Entry {
            index: last,
            why: format!(
                "the entries up to it do not give the root the head of size {} signed: it was changed (or entries {from} to {last} were rewritten and chained again)",
                head.size
            ),
        });
    }
    if let Some((size, before_root)) = before {
        let proof = read
            .tree
            .consistency(size.min(head.size), head.size)
            .expect("within the log");
        if size > head.size || !verify_consistency(size, head.size, &before_root, root, &proof) {
            return Err(Mismatch::Head {
                size: head.size,
                why: format!("it does not extend the head of size {size}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry::{Record, Tail, text_hash};
    use crate::audit::head::HeadSigner;

    struct Memory {
        entries: Vec<(u64, Vec<u8>)>,
        heads: Vec<TreeHead>,
    }

    impl Source for Memory {
        async fn entries(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, String> {
            Ok(self
                .entries
                .iter()
                .filter(|(i, _)| *i >= from)
                .take(limit)
                .cloned()
                .collect())
        }

        async fn heads(&self) -> Result<Vec<TreeHead>, String> {
            Ok(self.heads.clone())
        }
    }

    fn signer() -> HeadSigner {
        HeadSigner::from_seed([5; 32])
    }

    /// Ten entries, heads at 4 and 10.
    fn log() -> Memory {
        let mut tail = Tail::default();
        let mut tree = Tree::new();
        let mut entries = Vec::new();
        let mut heads = Vec::new();
        for n in 0..10u32 {
            let record = Record::Action {
                case_id: crate::case::CaseId::nil(),
                step: Some(format!("step{n}")),
                action: "retry".into(),
                by: "alice".into(),
                reason_hash: text_hash("down"),
            };
            let at = jiff::Timestamp::from_second(1_800_000_000 + i64::from(n)).unwrap();
            let (index, bytes) = tail.append(record, at);
            tree.push(leaf_hash(&bytes));
            entries.push((index, bytes));
            if index == 3 || index == 9 {
                let size = index + 1;
                heads.push(signer().sign(size, &tree.root(size).unwrap(), at));
            }
        }
        Memory { entries, heads }
    }

    fn trusted() -> TrustedKeys {
        TrustedKeys::of(&signer())
    }

    async fn mismatch(log: &Memory) -> Mismatch {
        match verify(log, &trusted(), None).await {
            Err(VerifyError::Mismatch(m)) => m,
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .replacen(from, to, 1)
            .into_bytes()
    }

    #[tokio::test]
    async fn an_untouched_log_verifies() {
        let verified = verify(&log(), &trusted(), None).await.unwrap();
        assert_eq!(
            (verified.entries, verified.heads, verified.unsigned),
            (10, 2, 0)
        );
    }

    #[tokio::test]
    async fn one_byte_changed_names_the_entry() {
        for index in [0usize, 5, 9] {
            let mut log = log();
            let step = format!("step{index}");
            log.entries[index].1 = replace(&log.entries[index].1, &step, &step.to_uppercase());
            let Mismatch::Entry { index: named, .. } = mismatch(&log).await else {
                panic!("an entry is named");
            };
            assert_eq!(named, index as u64);
        }
    }

    #[tokio::test]
    async fn a_changed_link_names_its_own_entry() {
        let mut log = log();
        let prev = Entry::decode(&log.entries[6].1).unwrap().prev;
        log.entries[6].1 = replace(&log.entries[6].1, &prev, &"1".repeat(64));
        assert!(matches!(
            mismatch(&log).await,
            Mismatch::Entry { index: 6, .. }
        ));
    }

    #[tokio::test]
    async fn an_entry_deleted_or_two_swapped_are_named() {
        let mut deleted = log();
        deleted.entries.remove(4);
        assert!(matches!(
            mismatch(&deleted).await,
            Mismatch::Entry { index: 4, .. }
        ));
        let mut last = log();
        last.entries.pop();
        assert!(matches!(
            mismatch(&last).await,
            Mismatch::Entry { index: 9, .. }
        ));
        let mut swapped = log();
        let (a, b) = (swapped.entries[2].1.clone(), swapped.entries[3].1.clone());
        swapped.entries[2].1 = b;
        swapped.entries[3].1 = a;
        assert!(matches!(
            mismatch(&swapped).await,
            Mismatch::Entry { index: 2, .. }
        ));
    }

    #[tokio::test]
    async fn a_head_signed_with_another_key_is_refused() {
        let mut log = log();
        let other = HeadSigner::from_seed([6; 32]);
        let h = &log.heads[1];
        log.heads[1] = other.sign(h.size, &h.root_hash().unwrap(), h.timestamp);
        assert!(matches!(
            mismatch(&log).await,
            Mismatch::Head { size: 10, .. }
        ));
    }

    #[tokio::test]
    async fn a_head_the_auditor_kept_must_be_extended() {
        let log = log();
        let kept = log.heads[0].clone();
        assert!(verify(&log, &trusted(), Some(&kept)).await.is_ok());
        let forged = signer().sign(4, &[7; 32], kept.timestamp);
        assert!(matches!(
            verify(&log, &trusted(), Some(&forged)).await,
            Err(VerifyError::Mismatch(Mismatch::Head { size: 4, .. }))
        ));
    }
}
