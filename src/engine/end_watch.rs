//! Waiting for a case to end without polling (`GET /v1/cases/{id}?wait=30s`): a waiter is a
//! future on a [`Notify`], woken by the commit that ends the case on this node; a case ended by
//! another node is seen at the next look at the store, once a second. Many waiters cost no
//! thread, and a case nobody waits for costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::Engine;
use crate::case::{Case, CaseId, CaseStatus};
use crate::store::{Committed, Hook, Store, StoreError};

/// How often a waiter looks at the store for an end made on another node.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// The cases someone waits for, each with what wakes its waiters.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    waiting: Mutex<HashMap<CaseId, Weak<Notify>>>,
}

impl Watchers {
    fn watch(&self, id: CaseId) -> Arc<Notify> {
        let mut waiting = self.waiting.lock().expect("not poisoned");
        if let Some(notify) = waiting.get(&id).and_then(Weak::upgrade) {
            return notify;
        }
        // Forget the cases nobody waits for any more, now and then.
        if waiting.len() >= 1024 {
            waiting.retain(|_, w| w.strong_count() > 0);
        }
        let notify = Arc::new(Notify::new());
        waiting.insert(id, Arc::downgrade(&notify));
        notify
    }
}

impl Hook for Watchers {
    fn committed(&self, change: &Committed<'_>) {
        if change.case.status == CaseStatus::Running {
            return;
        }
        let waiting = self.waiting.lock().expect("not poisoned");
        if let Some(notify) = waiting.get(&change.case.id).and_then(Weak::upgrade) {
            notify.notify_waiters();
        }
    }
}

impl<S: Store + Clone> Engine<S> {
    /// The case once it has ended, or as it is when `wait` has passed; `None` if there is no
    /// such case.
    pub async fn case_when_ended(
        &self,
        id: CaseId,
        wait: Duration,
    ) -> Result<Option<Case>, StoreError> {
        let until = tokio::time::Instant::now() + wait;
        let notify = self.watchers.watch(id);
        loop {
            // Armed before the read, so an end committed between the read and the wait wakes it.
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let case = self.store.case(id).await?;
            let ended = case
                .as_ref()
                .is_none_or(|c| c.status != CaseStatus::Running);
            let now = tokio::time::Instant::now();
            if ended || now >= until {
                return Ok(case);
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(LOOK_AGAIN.min(until - now)) => {}
            }
        }
    }
}
