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
/// Timers one node fires at once. A node claims only what it can start now: after downtime
/// (100,000 timers due) it would otherwise claim them all within seconds, hold a task for each,
/// and let most claims lapse before it got to them, for another node to claim again.
pub(super) const MAX_FIRING: usize = 256;

impl<S: Store + Clone> Engine<S> {
    /// How many timers this node is firing now (at most [`MAX_FIRING`]).
    pub fn timers_firing(&self) -> usize {
        MAX_FIRING - self.firing.available_permits()
    }

    pub(super) async fn timer_loop(self: Arc<Self>) {
        while !self.stopping() {
            let first = Arc::clone(&self.firing)
                .acquire_owned()
                .await
                .expect("the firing semaphore is never closed");
            let mut places = vec![first];
            while places.len() < BATCH {
                match Arc::clone(&self.firing).try_acquire_owned() {
                    Ok(place) => places.push(place),
                    Err(_) => break,
                }
            }
            let limit = places.len();
            let now = self.config.clock.now();
            let lease = self.config.claim_lease;
            let claimed = match self.store.claim_timers(&self.node, now, lease, limit).await {
                Ok(c) => c,
                Err(e) => {
                    if !self.store_failures.absorbs("claiming due timers", &e) {
                        tracing::error!(error = %e, "cannot claim due timers");
                    }
                    tokio::time::sleep(TICK).await;
                    continue;
                }
            };
            let full = claimed.len() == limit;
            for (claim, place) in claimed.into_iter().zip(places) {
                let late = now.duration_since(claim.timer.due_at);
                self.metrics
                    .timer_fired(claim.timer.kind.label(), late.unsigned_abs());
                let engine = self.clone();
                tokio::spawn(async move {
                    let _place = place;
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
