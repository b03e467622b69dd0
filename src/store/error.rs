//! The store's one error type.

use crate::case::CaseId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the data directory {path} is in use by another civicflow process; stop it, or give this one another --data directory"
    )]
    Locked { path: String },
    #[error(
        "the store in {path} has format version {found}, but this civicflow reads version {expected}"
    )]
    Incompatible {
        path: String,
        found: String,
        expected: u32,
    },
    /// A database whose schema is older than this civicflow's: `civicflow migrate` brings it up.
    #[error(
        "the database {path} has schema version {found}, and this civicflow needs version {expected}: run `civicflow migrate --store <url>` (or `serve --migrate`)"
    )]
    Unmigrated {
        path: String,
        found: u32,
        expected: u32,
    },
    /// A database migrated by a newer civicflow: this one would not know its tables.
    #[error(
        "the database {path} has schema version {found}, newer than this civicflow knows ({expected}); run a civicflow at least as new as the one that migrated it"
    )]
    Newer {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("the store in {path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    /// One record of one case cannot be read: the case cannot be shown or moved on, while
    /// every other case can.
    #[error(
        "the record of case {case_id} in table `{table}` is damaged ({detail}); `civicflow store check` lists every damaged record"
    )]
    Damaged {
        case_id: CaseId,
        table: &'static str,
        detail: String,
    },
    #[error("case {case_id} was changed by another writer (expected revision {expected})")]
    Conflict { case_id: CaseId, expected: u64 },
    #[error("case {case_id} already exists")]
    Exists { case_id: CaseId },
    /// Idempotency records are insert-only: two requests racing with one key cannot both win.
    #[error("idempotency key `{key}` is already taken")]
    KeyTaken { key: String },
    /// The commit was made under a claim another node has since taken over (or the claimed
    /// work is gone): whatever the claimant decided under it must not happen.
    #[error(
        "{work} is no longer held under claim epoch {epoch}; another node took it over or it was done"
    )]
    Fenced { work: String, epoch: u64 },
    /// A configuration change (definitions, webhooks, API tokens) was checked against version
    /// `expected`, but another change landed first: check it again against the new state.
    #[error("the configuration changed meanwhile (expected version {expected}, found {found})")]
    ConfigChanged { expected: u64, found: u64 },
    /// An agency's circuit was written by another node or an operator since it was read.
    #[error("the circuit of agency `{agency}` changed meanwhile (expected version {expected})")]
    CircuitChanged { agency: String, expected: u64 },
    #[error("storage I/O error in {path}: {detail}")]
    Io { path: String, detail: String },
    /// The store takes no writes for now (a full disk, a failing device): every write is refused
    /// at once, without touching the disk, until a write succeeds again. Nothing was written.
    #[error(
        "the store in {path} takes no writes for now ({detail}); civicflow resumes by itself when writes succeed again"
    )]
    Unavailable { path: String, detail: String },
}

impl StoreError {
    /// Whether the storage itself failed (a write or read the disk or database refused), as
    /// opposed to a request that lost a race or a record that is damaged: the caller can only
    /// wait and try again.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, StoreError::Io { .. } | StoreError::Unavailable { .. })
    }
}
