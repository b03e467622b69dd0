//! Hooks on case changes: what follows every committed change of a case (the webhook feed
//! today; metrics and the on-time figures next) without the engine knowing any of them.

use super::Transaction;
use crate::case::{Case, CaseId, Event};

/// One change of a case as it is committed: the case as it will be stored and the events the
/// change appends to its history.
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    pub case: &'a Case,
    pub events: &'a [(CaseId, Event)],
}

/// Follows case changes. Both calls run on the engine's path of every change, under the case's
/// lock: they must be quick and must not block.
pub trait Hook: Send + Sync {
    /// Adds this hook's own writes to the transaction that commits `change`, so that they are
    /// durable with it or not at all (a notification is never lost, a count never drifts).
    fn prepare(&self, _change: &Committed<'_>, _tx: &mut Transaction) {}

    /// Called once `change` is durable, before anything acts on it.
    fn committed(&self, _change: &Committed<'_>) {}
}
