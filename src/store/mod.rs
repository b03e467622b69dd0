//! Storage: one trait that every backend implements, shaped after Restate's per-table storage
//! API. A [`Transaction`] is a backend-neutral set of writes to the tables (cases, history events,
//! timers, callback tokens, idempotency records, API tokens); [`Store::commit`] applies it atomically, keeps
//! the indexes in step with each case, and returns only once it is on disk.
//!
//! Backends: [`sled`](self::sled) (embedded, the default). The conformance suite in
//! `tests/conformance/` is what any backend must pass.

pub mod sled;

use std::future::Future;

use jiff::Timestamp;

use crate::auth::ApiToken;
use crate::case::{CallbackTarget, Case, CaseId, Event, IdempotencyRecord, Timer};
use crate::registry::{Change, Published};
use crate::webhooks::{Notification, Webhook};

/// The version of the on-disk format. A store written by another format version is refused.
pub const FORMAT_VERSION: u32 = 4;

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
    #[error("the store in {path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("case {case_id} was changed by another writer (expected revision {expected})")]
    Conflict { case_id: CaseId, expected: u64 },
    #[error("case {case_id} already exists")]
    Exists { case_id: CaseId },
    /// Idempotency records are insert-only: two requests racing with one key cannot both win.
    #[error("idempotency key `{key}` is already taken")]
    KeyTaken { key: String },
    #[error("storage I/O error in {path}: {detail}")]
    Io { path: String, detail: String },
}

/// A write to the case record. `expected_rev` is the revision read before the change (`None`
/// for a new case); the commit fails with [`StoreError::Conflict`] if another writer got there
/// first.
#[derive(Debug, Clone)]
pub struct CaseWrite {
    pub case: Case,
    pub expected_rev: Option<u64>,
}

/// A set of writes committed together, or not at all.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub cases: Vec<CaseWrite>,
    pub events: Vec<(CaseId, Event)>,
    /// Timers to add. A case has at most one timer of a kind: to move one, the same
    /// transaction clears the old one (the engine's `Change` does both).
    pub set_timers: Vec<Timer>,
    /// Timers to remove, as they were set (their due time included).
    pub clear_timers: Vec<Timer>,
    pub put_tokens: Vec<(String, CallbackTarget)>,
    pub delete_tokens: Vec<String>,
    /// Inserted only if absent; otherwise the commit fails with [`StoreError::KeyTaken`].
    pub put_idempotency: Vec<(String, IdempotencyRecord)>,
    /// API tokens, keyed by digest: a new one, or a revoked one written over the old.
    pub put_api_tokens: Vec<ApiToken>,
    /// Appended to the notification feed, each under the next sequence number, in commit order.
    pub notify: Vec<Notification>,
    /// Registered (or replaced) unconditionally.
    pub put_webhooks: Vec<Webhook>,
    /// Written only if a webhook with the same id is still registered: a delivery's progress
    /// never brings back a webhook deleted meanwhile.
    pub update_webhooks: Vec<Webhook>,
    pub delete_webhooks: Vec<String>,
    /// Published definitions, by (kind, id, version): a new one, or a deprecated one written
    /// over the old. Publishing never replaces a definition: the registry checks that first.
    pub put_definitions: Vec<Published>,
    /// Appended to the registry's audit trail.
    pub registry_changes: Vec<Change>,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
            && self.events.is_empty()
            && self.set_timers.is_empty()
            && self.clear_timers.is_empty()
            && self.put_tokens.is_empty()
            && self.delete_tokens.is_empty()
            && self.put_idempotency.is_empty()
            && self.put_api_tokens.is_empty()
            && self.notify.is_empty()
            && self.put_webhooks.is_empty()
            && self.update_webhooks.is_empty()
            && self.delete_webhooks.is_empty()
            && self.put_definitions.is_empty()
            && self.registry_changes.is_empty()
    }
}

/// A page of case ids from an index, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub ids: Vec<CaseId>,
    pub next: Option<CaseId>,
}

/// Which way an index is read: oldest case first or newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// A place in an index: a value and a case under it.
pub type Position = (String, CaseId);

/// A read of the entries of one index whose values lie in `from..to`, in (value, case) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRange {
    /// Inclusive.
    pub from: String,
    /// Exclusive.
    pub to: String,
    /// Where the previous page ended (exclusive): the next page starts after it in `order`.
    pub after: Option<Position>,
    pub order: Order,
    pub limit: usize,
}

pub trait Store: Send + Sync + 'static {
    /// Applies every write of `tx` atomically and returns once it is durable. Concurrent
    /// commits share disk syncs (group commit).
    fn commit(&self, tx: &Transaction) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn case(&self, id: CaseId) -> impl Future<Output = Result<Option<Case>, StoreError>> + Send;

    /// History events of a case with `seq >= from`, in order, at most `limit`.
    fn history(
        &self,
        id: CaseId,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// Timers due at or before `until`, earliest first, at most `limit`.
    fn due_timers(
        &self,
        until: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Timer>, StoreError>> + Send;

    /// Cases under index entry `(name, value)`, after `cursor` (exclusive), in case-id order.
    fn cases_by(
        &self,
        name: &str,
        value: &str,
        cursor: Option<CaseId>,
        order: Order,
        limit: usize,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Entries of index `name` in a range of values, with their cases: how the `due` index
    /// answers "which steps are due before…" and the `incident` index lists incidents by age.
    fn index_range(
        &self,
        name: &str,
        range: &IndexRange,
    ) -> impl Future<Output = Result<Vec<Position>, StoreError>> + Send;

    fn token(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Option<CallbackTarget>, StoreError>> + Send;

    fn idempotency(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// The API token with this digest, revoked or not.
    fn api_token(
        &self,
        digest: &str,
    ) -> impl Future<Output = Result<Option<ApiToken>, StoreError>> + Send;

    /// Every API token ever issued, revoked ones included (they are few).
    fn api_tokens(&self) -> impl Future<Output = Result<Vec<ApiToken>, StoreError>> + Send;

    /// Notifications after sequence number `after`, in order, at most `limit`; only those
    /// durable on disk, so none reports a change a crash could still undo.
    fn feed(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(u64, Notification)>, StoreError>> + Send;

    /// The sequence number of the last durable notification (0 if none yet).
    fn feed_end(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Forgets the notifications up to `upto`, once every webhook has them.
    fn trim_feed(&self, upto: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn webhooks(&self) -> impl Future<Output = Result<Vec<Webhook>, StoreError>> + Send;

    /// Every published definition, in (kind, id, version) order.
    fn definitions(&self) -> impl Future<Output = Result<Vec<Published>, StoreError>> + Send;

    /// The registry's audit trail, oldest first.
    fn registry_changes(&self) -> impl Future<Output = Result<Vec<Change>, StoreError>> + Send;
}
