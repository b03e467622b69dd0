//! Hooks on case changes: what follows every committed change of a case (the webhook feed,
//! the on-time figures) without the engine knowing any of them.

use super::Transaction;
use crate::case::{Case, CaseId, Event};

/// One change of a case as it is committed: the case as it will be stored and the events the
/// change appends to its history.
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    pub case: &'a Case,
    pub events: &'a [(CaseId, Event)],
}

/// One change of a case as it is about to be committed, for the hooks to add their writes.
#[derive(Debug)]
pub struct Preparing<'a> {
    pub case: &'a Case,
    pub events: &'a [(CaseId, Event)],
    /// What the case was counted under ([`Case::tallies`], taken out of `case` while the hooks
    /// run): a hook that keeps counters replaces it with what the case counts under now, and
    /// adds the difference to the transaction's counts.
    pub tallies: &'a mut Vec<String>,
}

/// Follows case changes. Both calls run on the engine's path of every change, under the case's
/// lock: they must be quick and must not block.
pub trait Hook: Send + Sync {
    /// Adds this hook's own writes to the transaction that commits `change`, so that they are
    /// durable with it or not at all (a notification is never lost, a count never drifts).
    fn prepare(&self, _change: &mut Preparing<'_>, _tx: &mut Transaction) {}

    /// Called once `change` is durable, before anything acts on it.
    fn committed(&self, _change: &Committed<'_>) {}
}
