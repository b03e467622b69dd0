//! Driving cases: sending the calls a committed change decided, and turning what comes back
//! (replies, timers) into the next change, under the case's lock.
//!
//! Every change is decided on the case as stored and committed under the revision it was read
//! at. If another writer (a request on this node, another node) changed the case first, the
//! commit fails with a conflict and the change is decided again from a fresh read, at most
//! [`REDECIDE`] times: a lost race is re-decided, never dropped.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use opentelemetry::trace::SpanKind;

use super::change::{Call, Change};
use super::exchanges::Exchanged;
use super::locks::CaseLock;
use super::{Engine, MissingWorkflow};
use crate::adapters::http::{self, Reply};
use crate::case::{Case, CaseId, IncidentReason, StepState, StepStatus, TimerKind};
use crate::circuits::Seen;
use crate::store::{Claimed, Store, StoreError, Transaction};
use crate::traces::{CaseSpan, parse_traceparent};
use crate::workflow::definition::Workflow;

/// How often a case whose workflow is not loaded is looked at again.
const ORPHAN_RECHECK: Duration = Duration::from_secs(60);

/// How often a timer of a case whose record is damaged comes due again.
const DAMAGED_RECHECK: Duration = Duration::from_secs(3600);

/// How many times one trigger (a reply, a timer, a callback, an operator's action) is decided
/// again after losing a race for the case. Each loss means another writer moved the case on,
/// so this bounds a burst, not a steady state.
pub(super) const REDECIDE: u32 = 8;

/// Which try of which step a call is: what its reply may change, while the step is still at it.
struct Attempt {
    case_id: CaseId,
    step: String,
    revision: u32,
    attempt: u32,
    poll: bool,
}

impl Attempt {
    fn of(call: &Call) -> Attempt {
        Attempt {
            case_id: call.case_id,
            step: call.step.clone(),
            revision: call.revision,
            attempt: call.attempt,
            poll: call.poll,
        }
    }

    fn is_current(&self, s: &StepState) -> bool {
        is_current(s, self.revision, self.attempt, self.poll)
    }
}

/// Whether step `s` is still at the try a call made (`revision`, `attempt`, a poll or not): a
/// reply to an earlier one is not used.
fn is_current(s: &StepState, revision: u32, attempt: u32, poll: bool) -> bool {
    let expected = if poll {
        StepStatus::Polling
    } else {
        StepStatus::Calling
    };
    s.revision == revision && s.attempt == attempt && s.status == expected
}

/// The message a panic carried, as text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Whether a failed commit is worth deciding again: the case moved on under us.
pub(super) fn lost_race(e: &StoreError, round: u32) -> bool {
    matches!(e, StoreError::Conflict { .. }) && round < REDECIDE
}

impl<S: Store + Clone> Engine<S> {
    /// Sends the calls of a committed change, each in its own task. While shutting down, new
    /// calls are not sent: they are durable with their watchdog timers, so the next start sends
    /// them.
    pub(super) fn dispatch(self: &Arc<Self>, calls: Vec<Call>) {
        if self.stopping() {
            return;
        }
        for call in calls {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            let engine = self.clone();
            // Boxed: the call's future (the exchange, then deciding and committing on its
            // reply) is kilobytes, and tokio moves an unboxed one into its task, then writes
            // over it as the task ends: three copies per call where one will do.
            tokio::spawn(Box::pin(async move {
                let attempt = Attempt::of(&call);
                let ran = AssertUnwindSafe(engine.run_call(call)).catch_unwind().await;
                if let Err(panic) = ran {
                    engine.call_panicked(&attempt, panic_text(&*panic)).await;
                }
                if engine.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                    engine.idle.notify_waiters();
                }
            }));
        }
    }

    /// A call's task panicked while it sent the call or recorded the reply: a fault of
    /// civicflow's own, which the step's watchdog would only meet again. The step fails with
    /// an incident that names it, so that an operator sees the case and can retry it, instead
    /// of a case that waits on nothing.
    async fn call_panicked(self: &Arc<Self>, attempt: &Attempt, panic: String) {
        tracing::error!(case_id = %attempt.case_id, step = %attempt.step, panic = %panic, "recording an agency's reply failed");
        let message = format!("civicflow failed while it recorded the agency's reply: {panic}");
        let mut lock = self.locks.lock(attempt.case_id).await;
        for round in 1.. {
            let Ok(Some(case)) = lock.load(&self.store).await else {
                return;
            };
            let Ok(wf) = self.workflow_for(&case).await else {
                return;
            };
            if !case
                .steps
                .get(&attempt.step)
                .is_some_and(|s| attempt.is_current(s))
            {
                return;
            }
            let rev = case.rev;
            let now = self.config.clock.now();
            let mut change = Change::new(case, Some(rev), now, Instant::now());
            self.decide.fail(
                &mut change,
                &attempt.step,
                IncidentReason::UnexpectedReply,
                message.clone(),
            );
            match self.finish_change(&wf, change, &mut lock).await {
                Err(e) if lost_race(&e, round) => continue,
                Err(e) => {
                    tracing::error!(case_id = %attempt.case_id, error = %e, "the failed step could not be recorded; its watchdog timer stays");
                    return;
                }
                Ok(()) => return,
            }
        }
    }

    /// Sends one call, records its reply, and tells the agency's circuit what it showed: the
    /// class of the reply (`"superseded"` when the step had moved on, `"not_recorded"` when
    /// the store failed), and the failure when it was a retryable one.
    pub(super) async fn run_call(self: &Arc<Self>, call: Call) -> (&'static str, Option<String>) {
        let to_wire = call.ready_at.elapsed();
        let sent = Instant::now();
        let from = SystemTime::now();
        let answer = http::send(
            &self.http,
            call.method,
            &call.url,
            &call.headers,
            call.body.as_ref(),
            &call.meta,
            call.timeout,
        )
        .await;
        let reply = &answer.reply;
        let received = Instant::now();
        let status = reply.status();
        // Kept for the circuit's record should the reply be a retryable failure.
        let no_answer = match reply {
            Reply::NoAnswer { error } => Some(error.clone()),
            Reply::Answered { .. } => None,
        };
        self.metrics
            .agency_call(&call.agency, &call.step, call.poll, status, received - sent);
        let span = CaseSpan::new(
            format!(
                "{} {}",
                if call.poll { "poll" } else { "attempt" },
                call.step
            ),
            SpanKind::Client,
            from,
        )
        .span_id(parse_traceparent(&call.meta.traceparent).map(|c| c.span_id()))
        .attribute("civicflow.agency", call.agency.clone())
        .attribute("civicflow.adapter", call.adapter.clone())
        .attribute("civicflow.step", call.step.clone())
        .attribute("civicflow.attempt", i64::from(call.attempt))
        .attribute("civicflow.revision", i64::from(call.revision));
        let span = match status {
            Some(s) => span.attribute("http.response.status_code", i64::from(s)),
            None => span,
        };
        let exchanged = Exchanged {
            call: call.named(answer.request_hash.clone()),
            sent: &answer,
        };
        let outcome = match self.on_reply(&call, &exchanged, received).await {
            Ok(Some(class)) => class,
            // The step had moved on (an operator, another node): the answer is not used, but
            // the exchange happened.
            Ok(None) => match self.log_exchange(exchanged, "superseded").await {
                Ok(()) => "superseded",
                Err(e) => {
                    self.store_failures.absorbs("logging an exchange", &e);
                    "superseded"
                }
            },
            Err(e) => {
                if !self.store_failures.absorbs("recording a reply", &e) {
                    tracing::warn!(case_id = %call.case_id, trace_id = %call.case_id.simple(), step = %call.step, error = %e, "the reply could not be recorded; the watchdog timer will retry");
                }
                "not_recorded"
            }
        };
        let failed = matches!(outcome, "retryable" | "unexpected" | "not_recorded");
        self.traces
            .case_span(call.case_id, span.outcome(outcome, failed));
        self.overhead
            .record_step_overhead(to_wire + received.elapsed());
        let failure = (outcome == "retryable").then(|| {
            no_answer
                .unwrap_or_else(|| format!("the agency answered {}", status.unwrap_or_default()))
        });
        let seen = match (outcome, &failure) {
            (_, Some(failure)) => Some(Seen::Failure(failure.clone())),
            ("succeeded" | "rejected" | "pending" | "unexpected", None) => Some(Seen::Answer),
            _ => None,
        };
        if let Some(seen) = seen
            && let Some(last_error) = self.decide.circuits.observe(&call.agency, seen)
        {
            let engine = self.clone();
            tokio::spawn(async move { engine.open_circuit(&call.agency, last_error).await });
        }
        (outcome, failure)
    }

    /// Records an agency's answer to `call`; its class, or `None` if the step had moved on
    /// and the answer is not used.
    async fn on_reply(
        self: &Arc<Self>,
        call: &Call,
        exchanged: &Exchanged<'_>,
        received: Instant,
    ) -> Result<Option<&'static str>, StoreError> {
        let mut lock = self.locks.lock(call.case_id).await;
        let mut round = 0;
        loop {
            round += 1;
            let Some(case) = lock.load(&self.store).await? else {
                return Ok(None);
            };
            let Ok(wf) = self.workflow_for(&case).await else {
                return Ok(None);
            };
            let Some(step) = wf.step(&call.step) else {
                return Ok(None);
            };
            let Some(s) = case.steps.get(&call.step) else {
                return Ok(None);
            };
            if !is_current(s, call.revision, call.attempt, call.poll) {
                return Ok(None);
            }
            let rev = case.rev;
            let mut change = Change::new(case, Some(rev), self.config.clock.now(), received);
            let class = self
                .decide
                .apply_reply(step, &mut change, call, &exchanged.sent.reply);
            let answered_at = change.now;
            change.tx.audit.push(exchanged.record(class, answered_at));
            match self.finish_change(&wf, change, &mut lock).await {
                Err(e) if lost_race(&e, round) => continue,
                done => return done.map(|()| Some(class)),
            }
        }
    }

    /// The end of every change after the case started: move the case on as far as it goes,
    /// commit, then send the calls decided (the lock slot remembers the case while they run).
    pub(super) async fn finish_change(
        self: &Arc<Self>,
        wf: &Workflow,
        change: Change,
        lock: &mut CaseLock<'_>,
    ) -> Result<(), StoreError> {
        let (case, calls) = self.progress_and_commit(wf, change).await?;
        lock.remember_if_busy(case, wf, &calls);
        self.dispatch(calls);
        Ok(())
    }

    /// Moves the case on as far as it goes and commits: the committed case and the calls to
    /// send.
    pub(super) async fn progress_and_commit(
        &self,
        wf: &Workflow,
        mut change: Change,
    ) -> Result<(Case, Vec<Call>), StoreError> {
        self.decide.progress(wf, &mut change);
        self.commit(change).await
    }

    /// Commits a change with the engine's hooks (and, when it ends the case, the timers that
    /// start the workflows chained to its end and erase its personal data when its retention
    /// is up).
    pub(super) async fn commit(&self, mut change: Change) -> Result<(Case, Vec<Call>), StoreError> {
        self.mark_chain(&mut change);
        self.mark_retention(&mut change);
        change
            .commit(&self.store, (&self.overhead, &self.metrics), &self.hooks)
            .await
    }

    /// A timer came due for a case whose workflow is not loaded: the case cannot move, so it
    /// gets an incident (once) and the timer is tried again later, when the definition may be
    /// back (a restart, a publication).
    async fn park_orphan(
        &self,
        mut change: Change,
        kind: TimerKind,
        error: &MissingWorkflow,
    ) -> Result<(), StoreError> {
        tracing::error!(case_id = %change.case.id, trace_id = %change.case.id.simple(), step = kind.step().unwrap_or("-"), %error, "a timer of a case whose workflow is not loaded");
        let reported = change
            .case
            .incidents
            .iter()
            .any(|i| i.reason == IncidentReason::WorkflowNotLoaded);
        if !reported {
            change.open_incident(None, IncidentReason::WorkflowNotLoaded, error.to_string());
        }
        change.set_timer(kind, change.now + ORPHAN_RECHECK);
        self.commit(change).await.map(drop)
    }

    /// A timer came due for a case whose record is damaged: that case cannot move, every other
    /// one goes on. The case is named among the incidents, and the timer is put off for
    /// [`DAMAGED_RECHECK`] (a record restored meanwhile then moves on) rather than fired again
    /// at every pass.
    async fn park_damaged(
        &self,
        claimed: &Claimed,
        (case_id, table, detail): (CaseId, &'static str, String),
    ) -> Result<(), StoreError> {
        tracing::error!(case_id = %case_id, trace_id = %case_id.simple(), table, %detail, "a timer of a case whose record is damaged is put off; `civicflow store check` lists every damaged record");
        self.damaged.lock().expect("not poisoned").insert(
            case_id,
            format!("its record in table `{table}` is damaged: {detail}"),
        );
        let mut later = claimed.timer.clone();
        later.due_at = self.config.clock.now() + DAMAGED_RECHECK;
        let tx = Transaction {
            clear_timers: vec![claimed.timer.clone()],
            set_timers: vec![later],
            fences: vec![claimed.fence()],
            ..Transaction::default()
        };
        self.store.commit(&tx).await
    }

    /// A timer this node claimed came due. Every commit made for it carries the claim, so if
    /// another node took the timer over meanwhile (this one stalled past the lease), nothing
    /// decided here happens.
    pub(super) async fn on_timer(self: &Arc<Self>, claimed: Claimed) -> Result<(), StoreError> {
        let fired = Instant::now();
        let timer = &claimed.timer;
        let mut lock = self.locks.lock(timer.case_id).await;
        let mut round = 0;
        loop {
            round += 1;
            let loaded = match lock.load(&self.store).await {
                Err(StoreError::Damaged {
                    case_id,
                    table,
                    detail,
                }) => return self.park_damaged(&claimed, (case_id, table, detail)).await,
                loaded => loaded?,
            };
            let done = match loaded {
                // The case is gone (it never is, but a timer must not fire for ever).
                None => {
                    let tx = Transaction {
                        clear_timers: vec![timer.clone()],
                        fences: vec![claimed.fence()],
                        ..Transaction::default()
                    };
                    self.store.commit(&tx).await
                }
                Some(case) => {
                    let rev = case.rev;
                    let mut change = Change::new(case, Some(rev), self.config.clock.now(), fired);
                    change.fence = Some(claimed.fence());
                    change.clear_fired(timer);
                    match self.workflow_for(&change.case).await {
                        Ok(_) if timer.kind == TimerKind::Chain => {
                            if !self.run_chains(&mut change).await? {
                                return Ok(());
                            }
                            self.commit(change).await.map(drop)
                        }
                        Ok(wf) if timer.kind == TimerKind::Erasure => {
                            self.erase_on_timer(&mut change, &wf).await?;
                            self.commit(change).await.map(drop)
                        }
                        Ok(wf) if timer.kind == TimerKind::ConsentCheck => {
                            self.recheck_waiting(&wf, &mut change).await?;
                            self.finish_change(&wf, change, &mut lock).await
                        }
                        Ok(wf) => {
                            self.decide.on_timer(&wf, &mut change, timer);
                            self.finish_change(&wf, change, &mut lock).await
                        }
                        Err(e) => self.park_orphan(change, timer.kind.clone(), &e).await,
                    }
                }
            };
            match done {
                Err(e) if lost_race(&e, round) => continue,
                Err(StoreError::Fenced { work, epoch }) => {
                    tracing::info!(case_id = %timer.case_id, trace_id = %timer.case_id.simple(), step = timer.kind.step().unwrap_or("-"), %work, epoch, "a timer firing is dropped: its claim was taken over by another node, or the timer was done meanwhile");
                    return Ok(());
                }
                done => return done,
            }
        }
    }
}
