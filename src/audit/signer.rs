//! Signing tree heads: every so many entries or every so many seconds, whichever comes first,
//! a node signs the log as it then is. Several nodes may sign: a head names its key, and two
//! heads of one size sign the same root.

use std::sync::Arc;
use std::time::Duration;

use super::head::{HeadSigner, TreeHead};
use super::log::{Log, LogError};
use crate::store::{FailureLog, Store, Transaction};

/// How often the signer looks at the log's size.
const LOOK: Duration = Duration::from_millis(500);

/// When a head is signed, and with which key.
#[derive(Debug, Clone)]
pub struct SignerConfig {
    pub key: HeadSigner,
    /// A head once the log grew by this many entries since the last …
    pub every_entries: u64,
    /// … or once this long passed since it, if it grew at all.
    pub every: Duration,
}

impl SignerConfig {
    /// Signs with `key` every 1,000 entries or 10 seconds.
    pub fn new(key: HeadSigner) -> SignerConfig {
        SignerConfig {
            key,
            every_entries: 1_000,
            every: Duration::from_secs(10),
        }
    }
}

pub struct Signer<S> {
    log: Arc<Log<S>>,
    config: SignerConfig,
    /// A full or failing disk fails every try: logged once a minute, as other background work.
    store_failures: FailureLog,
}

impl<S: Store + Clone> Signer<S> {
    pub fn new(log: Arc<Log<S>>, config: SignerConfig) -> Signer<S> {
        Signer {
            log,
            config,
            store_failures: FailureLog::new(),
        }
    }

    /// Signs heads as the log grows, until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut since = tokio::time::Instant::now();
        // What failed last, so that a failure repeated at every look is logged once.
        let mut failing: Option<String> = None;
        loop {
            tokio::time::sleep(LOOK.min(self.config.every)).await;
            let due = since.elapsed() >= self.config.every;
            match self.sign(due).await {
                Ok(signed) => {
                    if signed.is_some() {
                        since = tokio::time::Instant::now();
                    }
                    if failing.take().is_some() {
                        tracing::info!("the audit log's tree heads are signed again");
                    }
                }
                Err(LogError::Store(e))
                    if self
                        .store_failures
                        .absorbs("signing the audit log's tree head", &e) => {}
                Err(e) => {
                    let said = e.to_string();
                    if failing.as_ref() != Some(&said) {
                        tracing::error!(error = %said, "the audit log's tree head cannot be signed; trying again");
                        failing = Some(said);
                    }
                }
            }
        }
    }

    /// Signs a head of the log as it is now, if it grew since the last head: at once when
    /// `due`, else once it grew by [`SignerConfig::every_entries`].
    pub async fn sign(&self, due: bool) -> Result<Option<TreeHead>, LogError> {
        let store = self.log.store();
        let (size, root) = self.log.head().await?;
        let signed = store.latest_tree_head().await?.map_or(0, |h| h.size);
        let grown = size.saturating_sub(signed);
        if grown == 0 || (!due && grown < self.config.every_entries) {
            return Ok(None);
        }
        let head = self.config.key.sign(size, &root, jiff::Timestamp::now());
        store
            .commit(&Transaction {
                put_tree_heads: vec![head.clone()],
                ..Transaction::default()
            })
            .await?;
        Ok(Some(head))
    }
}
