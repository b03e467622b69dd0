//! The timer loop: reads due timers from the store (never holding future ones in memory) and
//! fires each once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Engine;
use crate::case::{CaseId, TimerKind};
use crate::store::Store;

/// How often the store is asked for due timers when nothing wakes the loop earlier.
const TICK: Duration = Duration::from_millis(100);
const BATCH: usize = 512;

impl<S: Store + Clone> Engine<S> {
    pub(super) async fn timer_loop(self: Arc<Self>) {
        let firing: Arc<Mutex<HashSet<(CaseId, TimerKind)>>> = Arc::default();
        while !self.stopping() {
            let due = match self.store.due_timers(self.config.clock.now(), BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read due timers");
                    tokio::time::sleep(TICK).await;
                    continue;
                }
            };
            for timer in due {
                let id = (timer.case_id, timer.kind.clone());
                if !firing.lock().expect("not poisoned").insert(id.clone()) {
                    continue;
                }
                let engine = self.clone();
                let firing = firing.clone();
                tokio::spawn(async move {
                    if let Err(e) = engine.on_timer(timer).await {
                        tracing::warn!(error = %e, "a timer could not be handled; it stays due");
                    }
                    firing.lock().expect("not poisoned").remove(&id);
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.timers_changed.notified() => {}
            }
        }
    }
}
