//! The timer loop: claims due timers from the store (never holding future ones in memory) and
//! fires each. A claim is this node's for the claim lease (`Config::claim_lease`): no other node
//! fires the timer meanwhile, and if this node stalls past it, another takes the timer over and
//! this node's commits for it are refused (fencing).

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::store::Store;

/// How often the store is asked for due timers when nothing wakes the loop earlier.
const TICK: Duration = Duration::from_millis(100);
/// Timers claimed at a time. A full batch is followed by another at once.
const BATCH: usize = 512;

impl<S: Store + Clone> Engine<S> {
    pub(super) async fn timer_loop(self: Arc<Self>) {
        while !self.stopping() {
            let now = self.config.clock.now();
            let lease = self.config.claim_lease;
            let claimed = match self.store.claim_timers(&self.node, now, lease, BATCH).await {
                Ok(c) => c,
                Err(e) => {
                    if !self.store_failures.absorbs("claiming due timers", &e) {
                        tracing::error!(error = %e, "cannot claim due timers");
                    }
                    tokio::time::sleep(TICK).await;
                    continue;
                }
            };
            let full = claimed.len() == BATCH;
            for claim in claimed {
                let late = now.duration_since(claim.timer.due_at);
                self.metrics
                    .timer_fired(claim.timer.kind.label(), late.unsigned_abs());
                let engine = self.clone();
                tokio::spawn(async move {
                    let (case, kind) = (claim.timer.case_id, claim.timer.kind.clone());
                    if let Err(e) = engine.on_timer(claim).await
                        && !engine.store_failures.absorbs("a timer", &e)
                    {
                        tracing::warn!(case_id = %case, trace_id = %case.simple(), step = kind.step().unwrap_or("-"), timer = kind.label(), error = %e, "a timer could not be handled; it fires again when its claim lapses");
                    }
                });
            }
            if full {
                continue;
            }
            // Jitter, so that nodes sharing a store do not poll in step.
            let tick = TICK.mul_f64(0.75 + fastrand::f64() / 2.0);
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.timers_changed.notified() => {}
            }
        }
    }
}
