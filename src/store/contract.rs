//! The storage contract: the [`Store`] trait and the shapes of its reads.

use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;

use super::claimed_work::{Claimed, NodeId};
use super::shared_records::{ApiToken, Circuit, Notification, Published, RegistryChange, Webhook};
use super::{StoreError, Transaction};
use crate::case::{CallbackTarget, Case, CaseId, Event, IdempotencyRecord, Timer};
use crate::personal_data::ConsentRecord;

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

/// What a backup held: its records and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub records: u64,
    pub bytes: u64,
}

/// Commits this store made durable since it was opened, and in how many groups: what group
/// commit saves (sled: one disk sync per group; PostgreSQL: one transaction per group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Groups {
    pub commits: u64,
    pub groups: u64,
}

/// The contract between the engine and its storage: the promises every backend keeps, whether
/// it is embedded in one process (sled) or shared by several nodes (PostgreSQL). The
/// conformance suite in `tests/conformance/` checks each of them on every backend.
///
/// 1. **Atomic and durable.** [`Store::commit`] applies all of a transaction or none of it, and
///    returns `Ok` only once it would survive a crash (a power cut included). Nothing may act on
///    a change before its commit returned: that is what makes an agency call, an HTTP answer or
///    a callback acknowledgement safe.
/// 2. **Optimistic per case.** A case write names the revision it was read at; the commit fails
///    with [`StoreError::Conflict`] if the stored case has moved on (another request, another
///    node), and writes nothing. The engine then reads the case again and decides again.
///    Idempotency records are insert-only ([`StoreError::KeyTaken`]). An agency's circuit is
///    written by version the same way ([`StoreError::CircuitChanged`]).
/// 3. **Indexes follow the case** in the same commit, by difference with the previous record.
/// 4. **Work is claimed under a lease and fenced** ([`claimed_work`](super::claimed_work)): a due timer is
///    handed to one claimant at a time ([`Store::claim_timers`]); no other claimant gets it while
///    the lease holds, anyone may after it lapses, and every claim has a new, larger epoch.
///    A commit carrying a [`Fence`](super::Fence) applies only if the work is still held under
///    that epoch (and, for a timer, is still stored); otherwise [`StoreError::Fenced`]. A
///    webhook's delivery is claimed the same way ([`Store::claim_webhook`]), renewed by its
///    holder while it delivers. A PostgreSQL backend claims with
///    `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING`, the epoch and lease in
///    the row, and checks the fence in the committing transaction; sled, which one process
///    owns, keeps claims in memory.
/// 5. **A gapless change feed whose positions never move back.** Notifications get positions
///    in the order their commits became visible, and [`Store::feed`] never returns a position
///    while a smaller one may still appear: a reader that moves its cursor over what it read
///    never skips one. A position is a notification's delivery id, so it is never handed out
///    twice: positions grow across a restart, a trim of the whole feed, a reopen after writes
///    failed, a restore, and (PostgreSQL) across nodes; a commit that ends after a webhook's
///    registration was answered writes its notifications. sled numbers them on its one writer
///    thread, shows only what is synced, and keeps the position it trimmed up to. A backend
///    with concurrent transactions must not number with a plain sequence (a higher value can
///    commit before a lower one) nor by transaction id (every reader would wait for the
///    oldest transaction on the server, and a restore into another server starts ids again
///    low): PostgreSQL writes them unnumbered and numbers them as a reader seals them, one
///    sealer at a time.
/// 6. **Shared configuration has a version.** Every commit that changes definitions or
///    webhooks moves [`Store::config_version`] on by one (API tokens do not: every request
///    reads its token), visible once durable; nodes watch
///    it to reload what they keep in memory, and a change checked against what it read carries
///    [`Transaction::expect_config`] so that two nodes' changes cannot both pass (one
///    publication at a time across nodes).
/// 7. **Reads see only committed writes**, and a read that finds a damaged record says so
///    ([`StoreError::Corrupt`]) rather than panicking or guessing. An idempotency record is
///    durable when read, since a client is answered from it. A store whose writes failed
///    refuses writes ([`StoreError::Unavailable`]) and reads only what is on disk.
/// 8. **Counters add up.** [`Transaction::counts`] are added in the same commit as the rest, so
///    a counter is always the sum of what every applied commit added: concurrent commits lose no
///    addition, a refused commit adds nothing. Counters that every commit touches must not
///    serialize the commits (PostgreSQL adds into one row per connection and sums on read).
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

    /// Timers due at or before `until`, earliest first, at most `limit`, claimed or not: a read
    /// for inspection. Firing them goes through [`Store::claim_timers`].
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

    /// The idempotency record under `key`, durable when returned ([`Store::settle`]): its caller
    /// tells a client the work is done.
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

    /// The position of the last durable notification (0 if none yet). Positions grow but need
    /// not be consecutive: how many lie after one is [`Store::feed_count`].
    fn feed_end(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many notifications [`Store::feed`] would show after `after`, all of them.
    fn feed_count(&self, after: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Forgets the notifications up to `upto`, once every webhook has them.
    fn trim_feed(&self, upto: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn webhooks(&self) -> impl Future<Output = Result<Vec<Webhook>, StoreError>> + Send;

    /// Every published definition, in (kind, id, version) order.
    fn definitions(&self) -> impl Future<Output = Result<Vec<Published>, StoreError>> + Send;

    /// Every agency's circuit ever written, in agency order.
    fn circuits(&self) -> impl Future<Output = Result<Vec<Circuit>, StoreError>> + Send;

    /// The consent records of the person with pseudonym `subject`, one per agreement, in
    /// agreement order.
    fn consents_of(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Vec<ConsentRecord>, StoreError>> + Send;

    /// How many entries the audit log holds that a reader may rely on: durable on disk (and,
    /// on PostgreSQL, sealed: numbered and chained, which this call does first).
    fn audit_size(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` audit entries from index `from` on, in index order, as stored (the bytes
    /// their Merkle leaves hash); only those counted by [`Store::audit_size`].
    fn audit_entries(
        &self,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<u8>)>, StoreError>> + Send;

    /// The indexes of the audit entries about case `id`, in order.
    fn audit_of_case(
        &self,
        id: CaseId,
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;

    /// Up to `limit` signed tree heads of size `from` or more, in size order.
    fn tree_heads(
        &self,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<crate::audit::TreeHead>, StoreError>> + Send;

    /// The signed tree head of the largest size, if any.
    fn latest_tree_head(
        &self,
    ) -> impl Future<Output = Result<Option<crate::audit::TreeHead>, StoreError>> + Send;

    /// The registry's audit trail, oldest first.
    fn registry_changes(
        &self,
    ) -> impl Future<Output = Result<Vec<RegistryChange>, StoreError>> + Send;

    /// Claims for `node`, for `lease`, up to `limit` timers due at or before `until` that no
    /// claimant holds under a live lease, earliest first, each under a new epoch. A claim ends
    /// when its lease lapses or its timer is cleared.
    fn claim_timers(
        &self,
        node: &NodeId,
        until: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Claimed>, StoreError>> + Send;

    /// Claims the delivery of webhook `id` for `node`, for `lease`: the epoch of the claim, or
    /// `None` while another node holds it. The holder claiming again before its lease lapses
    /// renews it under the same epoch.
    fn claim_webhook(
        &self,
        node: &NodeId,
        id: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Writes a consistent copy of the whole store to `out` while it serves (commits go on),
    /// blocking the calling thread until it is done; `None` for a backend copied with its own
    /// tools (PostgreSQL: `pg_dump`, see docs/operations.md).
    fn backup_to(&self, out: &mut dyn std::io::Write) -> Option<Result<Copied, StoreError>>;

    /// Returns once every write this store's reads may have shown is durable: what tells a
    /// client that its request is already done, from a read rather than from its own commit,
    /// waits for it (sled readers may see a group before its sync; PostgreSQL readers see only
    /// committed transactions). Fails while the store cannot write.
    fn settle(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// `Ok` while this store takes writes; the condition that stops them otherwise
    /// ([`StoreError::Unavailable`]: a full disk, a database that is a read-only standby), or
    /// the error that stopped the check. What readiness (`/v1/ready`) answers from.
    fn writable(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The version of the shared configuration (definitions, webhooks, API tokens), as durable.
    fn config_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The commits this store (this process's handle on it) made durable, and in how many
    /// groups.
    fn groups(&self) -> Groups;

    /// The counters named from `from` (inclusive) to `to` (exclusive), in name order, each with
    /// the sum of what every commit added to it; counters at 0 may be left out.
    fn counts(
        &self,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;
}
