//! Per-case mutual exclusion in one process: a fixed table of async mutexes, a case hashed to
//! one. Memory stays bounded however many cases exist; two cases rarely share a slot, and when
//! they do they merely wait for each other.
//!
//! A slot also remembers the last case committed under it while that case is busy (a call in
//! flight, or a poll due within seconds), so that the next change starts from memory instead
//! of a store read. Only the holder of the slot's lock reads or writes it. Within this node
//! every change of a case is committed under its lock; another node sharing the store may
//! still change the case, so the remembered case is only a likely copy: a change decided on a
//! stale one fails the store's revision check, [`CaseLock::load`] has emptied the slot by then,
//! and the change is decided again from the store.

use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

use super::Call;
use crate::case::{Case, CaseId, StepStatus};
use crate::store::{Store, StoreError};
use crate::workflow::definition::Workflow;

/// A case whose next poll is at most this far away stays in memory between polls.
const SHORT_POLL: Duration = Duration::from_secs(10);

/// How many slots an engine has. A case remembered in a slot is lost when another busy case
/// hashes to it, and read back from the store (and decoded) at its next change: in the engine
/// benchmark under callgrind (500 birth cases, 64 starts in flight), 195 changes did so with
/// 4,096 slots and 75 with 16,384. A slot holds its case boxed, so an empty one is a few words.
pub const SLOTS: usize = 16_384;

pub struct Locks {
    slots: Vec<Mutex<Option<Box<Case>>>>,
}

/// The lock of one case, held until dropped.
pub struct CaseLock<'a> {
    id: CaseId,
    slot: MutexGuard<'a, Option<Box<Case>>>,
}

impl Locks {
    pub fn new(n: usize) -> Locks {
        Locks {
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub async fn lock(&self, id: CaseId) -> CaseLock<'_> {
        let (hi, lo) = id.as_u64_pair();
        let slot = ((hi ^ lo) % self.slots.len() as u64) as usize;
        CaseLock {
            id,
            slot: self.slots[slot].lock().await,
        }
    }
}

impl CaseLock<'_> {
    /// The case as stored: from the slot if it remembers this case, else from the store.
    pub async fn load<S: Store>(&mut self, store: &S) -> Result<Option<Case>, StoreError> {
        match self.slot.take() {
            Some(case) if case.id == self.id => Ok(Some(*case)),
            _ => store.case(self.id).await,
        }
    }

    /// Remembers the case just committed under this lock if it will change again soon: calls
    /// are about to leave, a step's call is still in flight (independent branches answer one
    /// by one), or a step polls at a short interval. A case that waits on a callback, a long
    /// poll or a backoff is not kept in memory.
    pub fn remember_if_busy(&mut self, case: Case, wf: &Workflow, calls: &[Call]) {
        let busy = !calls.is_empty()
            || case.steps.iter().any(|(id, step)| match step.status {
                StepStatus::Calling => true,
                StepStatus::Polling => wf
                    .step(id)
                    .and_then(|s| s.adapter.poll.as_ref())
                    .is_some_and(|p| p.interval <= SHORT_POLL),
                _ => false,
            });
        if busy && case.id == self.id {
            *self.slot = Some(Box::new(case));
        }
    }
}
