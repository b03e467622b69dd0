//! One try of a step: held while its agency is down, sent with its idempotency key and
//! watchdog, and what its failure, refusal or success makes of the step.

use std::time::Duration;

use jiff::SignedDuration;
use serde_json::{Value, json};

use crate::adapters::http::{Metadata, Reply, Request, Sender, build};
use crate::case::{Case, EventKind, IncidentReason, Rejection, StepStatus, TimerKind};
use crate::engine::change::{Call, Change};
use crate::workflow::definition::{Adapter, Step};
use crate::workflow::expr::{Input, Part};
use crate::workflow::spec::OnRejection;

use super::progress::{Decider, case_meta, idempotency_key};

/// How long after an attempt's timeout the engine decides its reply is lost (the process
/// stopped mid-call) and tries again.
pub(super) const WATCHDOG_MARGIN: Duration = Duration::from_secs(5);

/// How often a step held by its agency's open circuit looks again by itself. Held steps are
/// released as soon as the circuit closes; this timer is only what keeps a held step durable
/// and moving if that release is missed (the node releasing them died).
pub(super) const HOLD_RECHECK: Duration = Duration::from_secs(300);

/// Records that `call` failed and that no retry of it is scheduled (a poll asks again at its
/// interval, a held step waits for its agency, an unexpected reply waits for an operator).
pub(super) fn given_up(
    change: &mut Change,
    step: &Step,
    call: &Call,
    reply: &Reply,
    error: String,
) {
    change.event(EventKind::AttemptFailed {
        step: step.id.clone(),
        attempt: call.attempt,
        error,
        status: reply.status(),
        retry_at: None,
    });
}

impl Decider {
    /// Attempt `n`, unless the agency's circuit is open: then the step is held instead.
    pub(in crate::engine) fn attempt_or_hold(&self, step: &Step, change: &mut Change, n: u32) {
        if self.circuits.is_open(&step.adapter.agency) {
            self.hold(step, change, false);
        } else {
            self.begin_attempt(step, change, n);
        }
    }

    /// Holds the step's next attempt while its agency's circuit is open, with a timer that
    /// looks again later in case nothing releases it sooner. `to_back`: it was just tried (a
    /// probe, or a call that failed while the circuit was open) and goes behind the others.
    pub(in crate::engine) fn hold(&self, step: &Step, change: &mut Change, to_back: bool) {
        let now = change.now;
        let agency = step.adapter.agency.clone();
        let s = change.step_mut(&step.id);
        let was_held = s.status == StepStatus::WaitingForAgency;
        s.status = StepStatus::WaitingForAgency;
        if to_back || s.held_since.is_none() {
            s.held_since = Some(now);
        }
        change.set_timer(
            TimerKind::Retry {
                step: step.id.clone(),
            },
            now + SignedDuration::try_from(HOLD_RECHECK).unwrap_or_default(),
        );
        if !was_held {
            change.event(EventKind::StepHeld {
                step: step.id.clone(),
                agency,
            });
        }
    }

    /// Sends a held step's next attempt: its agency's circuit closed, or this call is the
    /// probe that tests it. The time it was held does not count against its retry budget.
    pub fn release(&self, step: &Step, change: &mut Change) {
        let now = change.now;
        let s = change.step_mut(&step.id);
        if let (Some(since), Some(first)) = (s.held_since, s.first_attempt_at) {
            s.first_attempt_at = Some(first + now.duration_since(since));
        }
        let n = s.attempt + 1;
        self.begin_attempt(step, change, n);
    }

    /// Makes attempt `n` durable (with its watchdog timer) and queues its request; or, when
    /// its exchange needs a consent the case does not hold, makes the step wait for it.
    pub fn begin_attempt(&self, step: &Step, change: &mut Change, n: u32) {
        if !self.exchange_allowed(step, change, n) {
            return;
        }
        let case_id = change.case.id;
        let s = change.step_mut(&step.id);
        s.status = StepStatus::Calling;
        s.attempt = n;
        s.held_since = None;
        let revision = s.revision;
        let key = idempotency_key(&change.case, &step.id, revision);
        let message_id = uuid::Uuid::new_v4().to_string();
        let s = &change.case.steps[&step.id];
        let input = s
            .input
            .as_ref()
            .map_or(Part::Owned(Value::Null), Part::Borrowed);
        let mut ctx = vec![
            ("input", input),
            ("case", Part::Owned(case_meta(&change.case))),
            (
                "step",
                Part::Owned(json!({"id": step.id, "attempt": n, "idempotency_key": key})),
            ),
        ];
        if let Some(token) = &s.callback_token {
            let url = format!("{}/v1/callbacks/{token}", self.public_url);
            ctx.push(("callback", Part::Owned(json!({ "url": url }))));
        }
        let adapter = &step.adapter;
        let user = self.end_user(step, &change.case);
        let built = self.build_request(adapter, &Input::of(Part::Object(ctx)));
        change.event(EventKind::AttemptStarted {
            step: step.id.clone(),
            adapter: step.adapter.reference.clone(),
            revision,
            attempt: n,
            idempotency_key: key.clone(),
            message_id: message_id.clone(),
            request: built
                .as_ref()
                .ok()
                .map(|r| format!("{} {}", adapter.method.as_str(), r.url)),
        });
        let Request { url, headers, body } = match built {
            Ok(request) => request,
            Err(e) => {
                let message = format!("the request cannot be built: {e}");
                self.fail(change, &step.id, IncidentReason::InvalidData, message);
                return;
            }
        };
        change.set_timer(
            TimerKind::Retry {
                step: step.id.clone(),
            },
            change.now + step.timeout + WATCHDOG_MARGIN,
        );
        Call {
            case_id,
            agency: change.case.steps[&step.id].agency.clone(),
            adapter: change.case.steps[&step.id].adapter.clone(),
            step: step.id.clone(),
            revision,
            attempt: n,
            poll: false,
            method: adapter.method,
            url,
            headers,
            body,
            meta: Metadata::new(
                change.case.id,
                key,
                message_id,
                Sender {
                    client: &self.xroad_client,
                    adapter: &step.adapter.reference,
                    user: user.as_deref(),
                },
            ),
            timeout: step.timeout,
            ready_at: change.began,
        }
        .queue(change);
    }

    /// The pseudonym of the citizen `step`'s exchange is made for, if its workflow names one.
    pub(in crate::engine) fn end_user(&self, step: &Step, case: &Case) -> Option<String> {
        let expr = step.exchange.as_ref()?.end_user.as_ref()?;
        let context = Input::of(Part::Object(vec![("input", Part::Borrowed(&case.input))]));
        match expr.eval_in(&context).ok()? {
            Value::String(id) if !id.is_empty() => Some(self.pseudonyms.pseudonym(&id)),
            _ => None,
        }
    }

    /// The URL, headers and body of a request to the adapter's agency.
    pub(in crate::engine) fn build_request(
        &self,
        adapter: &Adapter,
        ctx: &Input,
    ) -> Result<Request, String> {
        let base = self.agencies.get(&adapter.agency).ok_or_else(|| {
            format!(
                "agency `{}` has no base URL in the configuration",
                adapter.agency
            )
        })?;
        build(adapter, base, ctx)
    }

    pub(in crate::engine) fn fail(
        &self,
        change: &mut Change,
        step: &str,
        reason: IncidentReason,
        message: String,
    ) {
        let s = change.step_mut(step);
        s.status = StepStatus::Failed;
        s.error = Some(message.clone());
        change.clear_timer(TimerKind::Retry { step: step.into() });
        change.clear_timer(TimerKind::Poll { step: step.into() });
        change.open_incident(Some(step), reason, message);
    }

    pub(in crate::engine) fn succeed(&self, change: &mut Change, step: &str, output: Value) {
        let s = change.step_mut(step);
        s.status = StepStatus::Succeeded;
        s.output = Some(output.clone());
        s.error = None;
        change.close_step(step);
        change.event(EventKind::StepSucceeded {
            step: step.into(),
            output,
        });
    }

    pub(in crate::engine) fn reject(
        &self,
        step: &Step,
        change: &mut Change,
        reason_code: String,
        message: String,
    ) {
        let id = step.id.as_str();
        let s = change.step_mut(id);
        s.status = StepStatus::Rejected;
        s.rejection = Some(Rejection {
            reason_code: reason_code.clone(),
            message: message.clone(),
        });
        change.close_step(id);
        change.event(EventKind::StepRejected {
            step: id.into(),
            reason_code: reason_code.clone(),
            message: message.clone(),
        });
        if step.on_rejection == OnRejection::Hold {
            let message = format!(
                "the agency refused step `{id}` ({reason_code}: {message}); correct the data and re-run it, or let the refusal stand"
            );
            change.open_incident(Some(id), IncidentReason::RefusalAwaitingAction, message);
        }
    }

    /// A retryable failure of the current attempt: another attempt after a full-jitter backoff
    /// (or the agency's `Retry-After`, if longer), unless the policy is spent.
    pub(in crate::engine) fn retry_or_fail(
        &self,
        step: &Step,
        change: &mut Change,
        error: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) {
        let s = &change.case.steps[&step.id];
        let attempt = s.attempt;
        let next = attempt + 1;
        let first = s.first_attempt_at.unwrap_or(change.now);
        let elapsed = Duration::try_from(change.now.duration_since(first)).unwrap_or_default();
        let ceiling = step.retry.ceiling(next);
        let jitter = Duration::from_secs_f64(fastrand::f64() * ceiling.as_secs_f64());
        let delay = retry_after.map_or(jitter, |r| r.max(jitter));
        let spent = next.saturating_sub(s.budget_from);
        if spent > step.retry.max_attempts
            || elapsed.saturating_add(delay) > step.retry.max_duration
        {
            change.event(EventKind::AttemptFailed {
                step: step.id.clone(),
                attempt,
                error: error.clone(),
                status,
                retry_at: None,
            });
            let message = format!(
                "{attempt} attempt{} failed; the last: {error}",
                if attempt == 1 { "" } else { "s" }
            );
            self.fail(change, &step.id, IncidentReason::RetriesExhausted, message);
            return;
        }
        let retry_at = change.now + SignedDuration::try_from(delay).unwrap_or_default();
        let s = change.step_mut(&step.id);
        s.status = StepStatus::Backoff;
        s.error = Some(error.clone());
        change.set_timer(
            TimerKind::Retry {
                step: step.id.clone(),
            },
            retry_at,
        );
        change.event(EventKind::AttemptFailed {
            step: step.id.clone(),
            attempt,
            error,
            status,
            retry_at: Some(retry_at),
        });
    }
}
