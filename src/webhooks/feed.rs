//! The feed hook: every committed change of a case that finishes a step or the case adds its
//! notifications to the same commit. The store writes them only while a webhook is registered
//! (see [`Transaction::notify`]): the question is asked where the answer cannot be stale, so a
//! webhook registered through one node is fed by every node's changes from its registration on.

use super::Notification;
use crate::store::{Hook, Preparing, Transaction};

#[derive(Debug, Default)]
pub struct Feed;

impl Hook for Feed {
    fn prepare(&self, change: &mut Preparing<'_>, tx: &mut Transaction) {
        let case = change.case;
        let origin = case.origin.as_ref();
        tx.notify.extend(change.events.iter().filter_map(|(_, e)| {
            let mut n = Notification::of(case.id, &case.workflow, case.version, e)?;
            if let Some(origin) = origin {
                n.correlation_id = Some(origin.correlation_id.clone());
                if n.kind == super::STARTED {
                    n.causation_id = Some(origin.causation_id.clone());
                }
            }
            Some(n)
        }));
    }
}
