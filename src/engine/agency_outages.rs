//! Agency outages as the engine lives them: opening a circuit when a run of failures says an
//! agency is down, probing it one call at a time, and releasing the held steps when it closes,
//! oldest first, at the bounded rate and concurrency of the agency's policy (a `tower` rate
//! limit over a concurrency limit), so that a recovering agency is not flooded.
//!
//! Every node follows the circuits in the store each [`CIRCUIT_POLL`]; whichever node sees a
//! closed circuit with steps still held releases them (nodes releasing at once each win a case
//! or find it moved on), and whichever node takes an open circuit's probe turn sends the probe.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tower::{Service, ServiceBuilder, ServiceExt};

use super::Engine;
use super::change::{Call, Change};
use super::drive::lost_race;
use crate::case::{CaseId, StepStatus, index};
use crate::circuits::{self, Circuit, CircuitState};
use crate::store::{IndexRange, Order, Position, Store, StoreError};

/// How often a node reads the circuits: how soon it follows one opened or closed elsewhere,
/// and releases steps held by a circuit that closed.
pub const CIRCUIT_POLL: Duration = Duration::from_secs(1);

/// How long a probe holds the turn: longer than any step's timeout, so that only a node that
/// died mid-probe loses it.
const PROBE_LEASE: Duration = Duration::from_secs(120);

/// Held steps read from the index at a time while releasing.
const RELEASE_PAGE: usize = 256;

/// What a released call showed: its reply's class, and the failure if it was retryable.
type Shown = (&'static str, Option<String>);

/// The `held` index values of `agency`'s steps: `<agency>/…`.
fn held_range(agency: &str, after: Option<Position>, limit: usize) -> IndexRange {
    IndexRange {
        from: format!("{agency}/"),
        // The character after `/`: every value that starts with `<agency>/`.
        to: format!("{agency}0"),
        after,
        order: Order::Ascending,
        limit,
    }
}

impl<S: Store + Clone> Engine<S> {
    /// Follows the circuits in the store, probes those whose probe is due, and releases the
    /// steps of closed ones; until the engine stops.
    pub async fn follow_circuits(self: Arc<Self>) {
        while !self.stopping() {
            if let Err(e) = self.tend_circuits().await
                && !self.store_failures.absorbs("following the circuits", &e)
            {
                tracing::error!(error = %e, "the agencies' circuits cannot be read");
            }
            tokio::time::sleep(CIRCUIT_POLL.mul_f64(0.75 + fastrand::f64() / 2.0)).await;
        }
    }

    async fn tend_circuits(self: &Arc<Self>) -> Result<(), StoreError> {
        let stored = self.store.circuits().await?;
        for agency in self.circuits().follow(stored) {
            tracing::info!(agency = %agency, "an agency's circuit was closed on another node");
        }
        let now = self.now();
        for agency in self.agencies().keys() {
            let circuit = self.circuits().get(agency);
            match circuit.state {
                CircuitState::Closed => {
                    if self.first_held(agency).await?.is_some() {
                        self.spawn_for(agency, |engine, agency| async move {
                            engine.release(&agency).await
                        });
                    }
                }
                CircuitState::Open => {
                    let due = circuit.probe_at.is_some_and(|at| at <= now);
                    if due && circuit.opened_by.is_none() {
                        self.spawn_for(agency, |engine, agency| async move {
                            engine.probe(&agency).await
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs `work` for `agency` unless this node already runs a probe or a release for it.
    fn spawn_for<F>(self: &Arc<Self>, agency: &str, work: impl FnOnce(Arc<Self>, String) -> F)
    where
        F: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        if !self
            .outage_work
            .lock()
            .expect("not poisoned")
            .insert(agency.to_owned())
        {
            return;
        }
        let future = work(self.clone(), agency.to_owned());
        let (engine, agency) = (self.clone(), agency.to_owned());
        tokio::spawn(async move {
            if let Err(e) = future.await
                && !engine.store_failures.absorbs("an agency's circuit", &e)
            {
                tracing::error!(agency = %agency, error = %e, "work on an agency's circuit stopped; it is taken up again within a second");
            }
            engine
                .outage_work
                .lock()
                .expect("not poisoned")
                .remove(&agency);
        });
    }

    /// The step held longest for `agency`, if any.
    async fn first_held(&self, agency: &str) -> Result<Option<Position>, StoreError> {
        let range = held_range(agency, None, 1);
        Ok(self
            .store
            .index_range(index::HELD, &range)
            .await?
            .into_iter()
            .next())
    }

    /// How many steps wait for `agency` (counted up to `limit`).
    pub async fn held_count(&self, agency: &str, limit: usize) -> Result<usize, StoreError> {
        let range = held_range(agency, None, limit);
        Ok(self.store.index_range(index::HELD, &range).await?.len())
    }

    /// Opens `agency`'s circuit after a run of failures ending with `last_error`.
    pub(super) async fn open_circuit(&self, agency: &str, last_error: String) {
        let policy = self.circuits().policy(agency);
        let open = circuits::open_on_failures(policy, last_error.clone(), self.now());
        match self.circuits().change(&self.store, agency, open).await {
            Ok(Some(_)) => tracing::warn!(
                agency = %agency,
                error = %last_error,
                failures = policy.threshold,
                "agency looks down: its circuit is open; calls to it are held and it is probed"
            ),
            Ok(None) => {}
            Err(e) if self.store_failures.absorbs("opening a circuit", &e) => {}
            Err(e) => {
                tracing::error!(agency = %agency, error = %e, "an agency's circuit cannot be opened")
            }
        }
    }

    /// Opens (`open`) or closes `agency`'s circuit by hand, for `by`, with `reason`; the
    /// circuit as it is now.
    pub async fn set_circuit(
        self: &Arc<Self>,
        agency: &str,
        open: bool,
        by: &str,
        reason: &str,
    ) -> Result<Circuit, StoreError> {
        let now = self.now();
        let (by, reason) = (by.to_owned(), reason.to_owned());
        let written = if open {
            let change = circuits::open_by_hand(by.clone(), reason.clone(), now);
            self.circuits().change(&self.store, agency, change).await?
        } else {
            let change = circuits::close(by.clone(), reason.clone(), now);
            self.circuits().change(&self.store, agency, change).await?
        };
        if written.is_some() {
            tracing::warn!(agency = %agency, by = %by, reason = %reason, state = if open { "open" } else { "closed" }, "an agency's circuit was set by hand");
            if !open {
                self.spawn_for(agency, |engine, agency| async move {
                    engine.release(&agency).await
                });
            }
        }
        Ok(self.circuits().get(agency))
    }

    /// Sends the step held longest for `agency` as a probe, if this node takes the turn: its
    /// answer closes the circuit and releases the others; a failure waits longer for the next.
    async fn probe(self: Arc<Self>, agency: &str) -> Result<(), StoreError> {
        let policy = self.circuits().policy(agency);
        let take = circuits::take_probe(self.now(), PROBE_LEASE);
        if self
            .circuits()
            .change(&self.store, agency, take)
            .await?
            .is_none()
        {
            return Ok(());
        }
        let shown = match self.first_held(agency).await? {
            Some((_, case_id)) => self.release_case(case_id, agency).await,
            None => Vec::new(),
        };
        let answered = shown.iter().any(|(class, _)| {
            matches!(*class, "succeeded" | "rejected" | "pending" | "unexpected")
        });
        if answered {
            let close = circuits::probe_answered(self.now());
            if self
                .circuits()
                .change(&self.store, agency, close)
                .await?
                .is_none()
            {
                // Opened by hand while the probe was out: it stays open.
                return Ok(());
            }
            tracing::warn!(agency = %agency, "agency answers again: its circuit is closed; held steps are released");
            return self.release(agency).await;
        }
        // Nothing sent (nothing held, or the case moved on) waits the shortest time again.
        let error = shown.into_iter().find_map(|(_, e)| e);
        let failed = circuits::probe_failed(policy, error, self.now());
        self.circuits().change(&self.store, agency, failed).await?;
        Ok(())
    }

    /// Releases `agency`'s held steps, oldest first, at the policy's rate and concurrency,
    /// until none is left or the circuit opens again.
    async fn release(self: &Arc<Self>, agency: &str) -> Result<(), StoreError> {
        let policy = self.circuits().policy(agency);
        let (engine, name) = (self.clone(), agency.to_owned());
        let mut service = ServiceBuilder::new()
            .rate_limit(policy.release_rate, Duration::from_secs(1))
            .concurrency_limit(policy.release_concurrency)
            .service_fn(move |case_id: CaseId| {
                let (engine, agency) = (engine.clone(), name.clone());
                async move { Ok::<_, Infallible>(engine.release_case(case_id, &agency).await) }
            });
        let mut running = tokio::task::JoinSet::new();
        let mut after = None;
        let mut released = 0usize;
        'pages: loop {
            let range = held_range(agency, after.take(), RELEASE_PAGE);
            let page = self.store.index_range(index::HELD, &range).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for (_, case_id) in page {
                if self.circuits().is_open(agency) || self.stopping() {
                    break 'pages;
                }
                let ready = match service.ready().await {
                    Ok(ready) => ready,
                    Err(never) => match never {},
                };
                running.spawn(ready.call(case_id));
                released += 1;
            }
            after = Some(last);
        }
        while running.join_next().await.is_some() {}
        if released > 0 {
            tracing::info!(agency = %agency, released, "held steps released");
        }
        Ok(())
    }

    /// Sends the held steps of one case at `agency` and waits for their replies: what each
    /// showed. Errors are logged: the step stays held, and is released again.
    async fn release_case(self: &Arc<Self>, case_id: CaseId, agency: &str) -> Vec<Shown> {
        let calls = match self.release_held(case_id, agency).await {
            Ok(calls) => calls,
            Err(e) => {
                if !self.store_failures.absorbs("releasing a held step", &e) {
                    tracing::warn!(case_id = %case_id, agency = %agency, error = %e, "a held step could not be released; it is tried again");
                }
                return Vec::new();
            }
        };
        if self.stopping() {
            // Durable with their watchdog timers: the next start sends them.
            return Vec::new();
        }
        let mut shown = Vec::with_capacity(calls.len());
        for call in calls {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            shown.push(self.run_call(call).await);
            if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.idle.notify_waiters();
            }
        }
        shown
    }

    /// Commits the next attempt of each step of `case_id` held for `agency`: the calls to send.
    async fn release_held(&self, case_id: CaseId, agency: &str) -> Result<Vec<Call>, StoreError> {
        let began = Instant::now();
        let mut lock = self.locks.lock(case_id).await;
        let mut round = 0;
        loop {
            round += 1;
            let Some(case) = lock.load(&self.store).await? else {
                return Ok(Vec::new());
            };
            let Ok(wf) = self.workflow_for(&case).await else {
                return Ok(Vec::new());
            };
            let held: Vec<String> = case
                .steps
                .iter()
                .filter(|(_, s)| s.status == StepStatus::WaitingForAgency && s.agency == agency)
                .map(|(id, _)| id.clone())
                .collect();
            if held.is_empty() {
                return Ok(Vec::new());
            }
            let rev = case.rev;
            let mut change = Change::new(case, Some(rev), self.now(), began);
            for id in &held {
                if let Some(step) = wf.step(id) {
                    self.decide.release(step, &mut change);
                }
            }
            match self.progress_and_commit(&wf, change).await {
                Ok((case, calls)) => {
                    lock.remember_if_busy(case, &wf, &calls);
                    return Ok(calls);
                }
                Err(e) if lost_race(&e, round) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
