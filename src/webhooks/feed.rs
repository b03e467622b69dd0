//! The feed hook: every committed change of a case that finishes a step or the case adds its
//! notifications to the same commit, while any webhook is registered.

use std::sync::atomic::{AtomicBool, Ordering};

use super::Notification;
use crate::store::{Hook, Preparing, Store, StoreError, Transaction};

/// Whether any webhook is registered, as this node last read it: changes are reported to the
/// feed only then, so a server without subscribers writes nothing for them. Every node reads it
/// again when the shared configuration moves on, so a webhook registered on one node is fed by
/// the changes of every node within the configuration poll.
#[derive(Debug, Default)]
pub struct Feed {
    notifying: AtomicBool,
}

impl Feed {
    /// Reads whether any webhook is registered.
    pub async fn refresh<S: Store>(&self, store: &S) -> Result<(), StoreError> {
        let any = !store.webhooks().await?.is_empty();
        self.notifying.store(any, Ordering::SeqCst);
        Ok(())
    }

    /// A webhook was registered through this node: notify from now on, without a read.
    pub fn registered(&self) {
        self.notifying.store(true, Ordering::SeqCst);
    }
}

impl Hook for Feed {
    fn prepare(&self, change: &mut Preparing<'_>, tx: &mut Transaction) {
        if !self.notifying.load(Ordering::SeqCst) {
            return;
        }
        let case = change.case;
        tx.notify.extend(
            change
                .events
                .iter()
                .filter_map(|(_, e)| Notification::of(case.id, &case.workflow, case.version, e)),
        );
    }
}
