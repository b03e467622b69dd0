//! The step decisions: what a case does next, given its state and what just happened (a start,
//! a reply, a callback, a timer). Pure: they read the case and the workflow and write into the
//! [`Change`]; no store, no network, no clock but the change's `now`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use serde_json::{Map, Value, json};

use super::CallbackAck;
use super::change::{Call, Change};
use crate::adapters::http::{self, Metadata, Outcome, Reply, Request, build, text};
use crate::auth::random_hex;
use crate::calendar::Calendar;
use crate::case::{
    CallbackTarget, Case, CaseStatus, EventKind, IncidentReason, Rejection, StepStatus, Timer,
    TimerKind,
};
use crate::circuits::Circuits;
use crate::workflow::definition::{Adapter, Step, Workflow};
use crate::workflow::expr::{EvalError, Input, Part};
use crate::workflow::spec::{Method, Mode, OnRejection};

/// How long after an attempt's timeout the engine decides its reply is lost (the process
/// stopped mid-call) and tries again.
const WATCHDOG_MARGIN: Duration = Duration::from_secs(5);

/// How often a step held by its agency's open circuit looks again by itself. Held steps are
/// released as soon as the circuit closes; this timer is only what keeps a held step durable
/// and moving if that release is missed (the node releasing them died).
const HOLD_RECHECK: Duration = Duration::from_secs(300);

/// What the decisions need besides the case: the holiday calendar for statutory due times,
/// where agencies are and where they call back.
pub struct Decider {
    pub calendar: &'static Calendar,
    /// Base URL agencies call back.
    pub public_url: String,
    /// Agency id → base URL.
    pub agencies: BTreeMap<String, String>,
    /// Which agencies' calls are held.
    pub circuits: Arc<Circuits>,
}

fn case_meta(case: &Case) -> Value {
    json!({
        "id": case.id.to_string(),
        "workflow": case.workflow,
        "version": case.version,
        "started_on": case.started_on.to_string(),
        "started_at": case.started_at.to_string(),
    })
}

/// What a step's `if` and `with` see: the input, the outputs of the steps that succeeded, and
/// the case metadata, read where they are in the case rather than copied into one value.
fn step_context(case: &Case) -> Input<'_> {
    let steps = case
        .steps
        .iter()
        .filter_map(|(id, s)| {
            let output = s.output.as_ref()?;
            Some((
                id.as_str(),
                Part::Object(vec![("output", Part::Borrowed(output))]),
            ))
        })
        .collect();
    Input::of(Part::Object(vec![
        ("input", Part::Borrowed(&case.input)),
        ("steps", Part::Object(steps)),
        ("case", Part::Owned(case_meta(case))),
    ]))
}

/// Records that `call` failed and that no retry of it is scheduled (a poll asks again at its
/// interval, a held step waits for its agency, an unexpected reply waits for an operator).
fn given_up(change: &mut Change, step: &Step, call: &Call, reply: &Reply, error: String) {
    change.event(EventKind::AttemptFailed {
        step: step.id.clone(),
        attempt: call.attempt,
        error,
        status: reply.status(),
        retry_at: None,
    });
}

pub fn idempotency_key(case: &Case, step: &str, revision: u32) -> String {
    format!("{}:{step}:{revision}", case.id)
}

impl Decider {
    /// Starts every step whose needs are settled, skips or stops those that cannot run, and
    /// finishes the case when every step has its outcome.
    pub fn progress(&self, wf: &Workflow, change: &mut Change) {
        if change.case.status != CaseStatus::Running {
            return;
        }
        let stop_case = wf.steps.iter().find(|s| {
            s.on_rejection == OnRejection::StopCase
                && change.case.steps[&s.id].status == StepStatus::Rejected
        });
        let stop_reason =
            stop_case.map(|s| format!("the case stopped: step `{}` was refused", s.id));
        for step in &wf.steps {
            if change.case.steps[&step.id].status != StepStatus::Pending {
                continue;
            }
            if let Some(reason) = &stop_reason {
                self.settle(change, &step.id, StepStatus::Stopped, reason.clone());
                continue;
            }
            let needs: Vec<(&str, StepStatus)> = step
                .needs
                .iter()
                .map(|n| (n.as_str(), change.case.steps[n].status))
                .collect();
            if needs.iter().any(|(n, _)| change.case.is_held(n)) {
                continue;
            }
            if let Some((n, _)) = needs
                .iter()
                .find(|(_, s)| matches!(s, StepStatus::Rejected | StepStatus::Stopped))
            {
                let reason = format!("it needs step `{n}`, which did not succeed");
                self.settle(change, &step.id, StepStatus::Stopped, reason);
            } else if let Some((n, _)) = needs
                .iter()
                .find(|(n, _)| !change.case.steps[*n].provides_output())
                .filter(|(_, s)| *s == StepStatus::Skipped)
            {
                let reason = format!("it needs step `{n}`, which was skipped");
                self.settle(change, &step.id, StepStatus::Skipped, reason);
            } else if needs
                .iter()
                .all(|(n, _)| change.case.steps[*n].provides_output())
            {
                self.start_step(step, change);
            }
        }
        self.finish_if_done(wf, change);
    }

    fn settle(&self, change: &mut Change, step: &str, status: StepStatus, reason: String) {
        let now = change.now;
        let s = change.step_mut(step);
        s.status = status;
        s.note = Some(reason.clone());
        s.finished_at = Some(now);
        let kind = if status == StepStatus::Skipped {
            EventKind::StepSkipped {
                step: step.into(),
                reason,
            }
        } else {
            EventKind::StepStopped {
                step: step.into(),
                reason,
            }
        };
        change.event(kind);
    }

    fn finish_if_done(&self, wf: &Workflow, change: &mut Change) {
        let held = change
            .case
            .incidents
            .iter()
            .any(|i| i.reason == IncidentReason::RefusalAwaitingAction);
        if held || !change.case.steps.values().all(|s| s.status.is_final()) {
            return;
        }
        let steps = &change.case.steps;
        let refused_stop_case = wf.steps.iter().find(|s| {
            s.on_rejection == OnRejection::StopCase && steps[&s.id].status == StepStatus::Rejected
        });
        let any_success = steps.values().any(|s| s.status == StepStatus::Succeeded);
        let all_fine = steps
            .values()
            .all(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped));
        let refusals: Vec<String> = steps
            .iter()
            .filter_map(|(id, s)| {
                s.rejection
                    .as_ref()
                    .map(|r| format!("step `{id}` was refused: {} ({})", r.message, r.reason_code))
            })
            .collect();
        let (status, reason) = if all_fine {
            (CaseStatus::Completed, None)
        } else if refused_stop_case.is_some() || !any_success {
            (CaseStatus::Rejected, Some(refusals.join("; ")))
        } else {
            (CaseStatus::PartiallyCompleted, Some(refusals.join("; ")))
        };
        change.case.status = status;
        change.case.reason = reason.clone();
        change.case.finished_at = Some(change.now);
        change.close_incidents(|_| true);
        change.clear_timer(TimerKind::CaseDeadline);
        change.event(EventKind::CaseFinished { status, reason });
    }

    fn start_step(&self, step: &Step, change: &mut Change) {
        /// What the step's `if` and `with` make of the case as it stands.
        enum Read {
            Skipped(String),
            Invalid(EvalError),
            Input(Result<Value, EvalError>),
        }
        let read = {
            let ctx = step_context(&change.case);
            match step.condition.as_ref().map(|c| (c, c.eval_bool_in(&ctx))) {
                Some((c, Ok(false))) => Read::Skipped(c.source().to_owned()),
                Some((_, Err(e))) => Read::Invalid(e),
                None | Some((_, Ok(true))) => Read::Input(step.with.eval_in(&ctx)),
            }
        };
        let with = match read {
            Read::Skipped(condition) => {
                let reason = format!("its condition is false: {condition}");
                self.settle(change, &step.id, StepStatus::Skipped, reason);
                return;
            }
            Read::Invalid(e) => {
                self.fail(change, &step.id, IncidentReason::InvalidData, e.to_string());
                return;
            }
            Read::Input(with) => with,
        };
        let now = change.now;
        let due = self.calendar.due(now, step.deadline);
        {
            let s = change.step_mut(&step.id);
            s.started_at = Some(now);
            s.first_attempt_at = Some(now);
            s.due_at = due.as_ref().ok().copied();
        }
        match due {
            Ok(at) => change.set_timer(
                TimerKind::StepDeadline {
                    step: step.id.clone(),
                },
                at,
            ),
            Err(e) => change.note_calendar_error(Some(&step.id), &e),
        }
        let input = match with {
            Ok(v) => v,
            Err(e) => {
                self.fail(change, &step.id, IncidentReason::InvalidData, e.to_string());
                return;
            }
        };
        let violations = step.adapter.input.violations(&input);
        if !violations.is_empty() {
            let list: Vec<String> = violations
                .iter()
                .map(|v| format!("{} {}", v.field, v.message))
                .collect();
            let message = format!(
                "the step's input does not match {}'s input schema: {}",
                step.adapter.reference,
                list.join("; ")
            );
            self.fail(change, &step.id, IncidentReason::InvalidData, message);
            return;
        }
        let s = change.step_mut(&step.id);
        s.input = Some(input);
        if step.adapter.mode == Mode::Callback && s.callback_token.is_none() {
            let token = random_hex(24);
            s.callback_token = Some(token.clone());
            let revision = s.revision;
            change.tx.put_tokens.push((
                token,
                CallbackTarget {
                    case_id: change.case.id,
                    step: step.id.clone(),
                    revision,
                },
            ));
        }
        self.attempt_or_hold(step, change, 1);
    }

    /// Attempt `n`, unless the agency's circuit is open: then the step is held instead.
    fn attempt_or_hold(&self, step: &Step, change: &mut Change, n: u32) {
        if self.circuits.is_open(&step.adapter.agency) {
            self.hold(step, change, false);
        } else {
            self.begin_attempt(step, change, n);
        }
    }

    /// Holds the step's next attempt while its agency's circuit is open, with a timer that
    /// looks again later in case nothing releases it sooner. `to_back`: it was just tried (a
    /// probe, or a call that failed while the circuit was open) and goes behind the others.
    fn hold(&self, step: &Step, change: &mut Change, to_back: bool) {
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

    /// Makes attempt `n` durable (with its watchdog timer) and queues its request.
    pub fn begin_attempt(&self, step: &Step, change: &mut Change, n: u32) {
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
        change.calls.push(Call {
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
            meta: Metadata::new(change.case.id, key, message_id),
            timeout: step.timeout,
            ready_at: change.began,
        });
    }

    /// The URL, headers and body of a request to the adapter's agency.
    fn build_request(&self, adapter: &Adapter, ctx: &Input) -> Result<Request, String> {
        let base = self.agencies.get(&adapter.agency).ok_or_else(|| {
            format!(
                "agency `{}` has no base URL in the configuration",
                adapter.agency
            )
        })?;
        build(adapter, base, ctx)
    }

    pub(super) fn fail(
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

    fn succeed(&self, change: &mut Change, step: &str, output: Value) {
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

    fn reject(&self, step: &Step, change: &mut Change, reason_code: String, message: String) {
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
    fn retry_or_fail(
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

    /// Records what an agency's reply (to a request or a poll) means for the step.
    /// Records what an agency answered to `call`; the answer's class (see [`Outcome::class`]).
    pub fn apply_reply(
        &self,
        step: &Step,
        change: &mut Change,
        call: &Call,
        reply: &Reply,
    ) -> &'static str {
        let adapter = &step.adapter;
        let rules = match (call.poll, &adapter.poll) {
            (true, Some(poll)) => &poll.rules,
            _ => &adapter.reply,
        };
        let outcome = http::classify(rules, &adapter.output, reply);
        let class = outcome.class();
        match outcome {
            Outcome::Success(output) => self.succeed(change, &step.id, output),
            Outcome::Rejected {
                reason_code,
                message,
            } => self.reject(step, change, reason_code, message),
            Outcome::Pending if call.poll => {
                change.event(EventKind::PollAnswered {
                    step: step.id.clone(),
                    status: reply.status().unwrap_or_default(),
                    pending: true,
                });
                self.schedule_poll(step, change);
            }
            Outcome::Pending => {
                change.event(EventKind::StepAccepted {
                    step: step.id.clone(),
                    attempt: call.attempt,
                    status: reply.status().unwrap_or_default(),
                });
                // The agency has the request: an earlier attempt's failure is history now.
                change.step_mut(&step.id).error = None;
                match (adapter.mode, &adapter.poll) {
                    (Mode::Poll, Some(poll)) => {
                        let base = self
                            .agencies
                            .get(&adapter.agency)
                            .map_or("", String::as_str);
                        let url = poll
                            .url
                            .eval(reply.context())
                            .map_err(|e| {
                                format!("the status URL cannot be read from the reply: {e}")
                            })
                            .and_then(|url| http::status_url(base, &text(url)));
                        match url {
                            Ok(url) => {
                                let s = change.step_mut(&step.id);
                                s.poll_url = Some(url);
                                s.status = StepStatus::Polling;
                                change.clear_timer(TimerKind::Retry {
                                    step: step.id.clone(),
                                });
                                self.schedule_poll(step, change);
                            }
                            Err(message) => {
                                self.fail(
                                    change,
                                    &step.id,
                                    IncidentReason::UnexpectedReply,
                                    message,
                                );
                            }
                        }
                    }
                    _ => {
                        let s = change.step_mut(&step.id);
                        s.status = StepStatus::AwaitingCallback;
                        change.clear_timer(TimerKind::Retry {
                            step: step.id.clone(),
                        });
                    }
                }
            }
            Outcome::Retryable { error, retry_after } if call.poll => {
                given_up(change, step, call, reply, error);
                let wait = retry_after.unwrap_or_default();
                self.schedule_poll_after(step, change, wait);
            }
            // The agency is known to be down: the step waits for it, its budget untouched.
            Outcome::Retryable { error, .. } if self.circuits.is_open(&adapter.agency) => {
                given_up(change, step, call, reply, error.clone());
                change.step_mut(&step.id).error = Some(error);
                self.hold(step, change, true);
            }
            Outcome::Retryable { error, retry_after } => {
                self.retry_or_fail(step, change, error, reply.status(), retry_after)
            }
            Outcome::Unexpected(error) => {
                given_up(change, step, call, reply, error.clone());
                self.fail(change, &step.id, IncidentReason::UnexpectedReply, error)
            }
        }
        class
    }

    fn schedule_poll(&self, step: &Step, change: &mut Change) {
        self.schedule_poll_after(step, change, Duration::ZERO);
    }

    fn schedule_poll_after(&self, step: &Step, change: &mut Change, at_least: Duration) {
        let interval = step
            .adapter
            .poll
            .as_ref()
            .map_or(Duration::from_secs(5), |p| p.interval)
            .max(at_least);
        let at = change.now + SignedDuration::try_from(interval).unwrap_or_default();
        change.set_timer(
            TimerKind::Poll {
                step: step.id.clone(),
            },
            at,
        );
    }

    /// An agency's callback for a step of a locked case.
    pub fn on_callback(
        &self,
        wf: &Workflow,
        change: &mut Change,
        step_id: &str,
        headers: Value,
        body: Value,
    ) -> CallbackAck {
        let Some(step) = wf.step(step_id) else {
            return CallbackAck::StillPending;
        };
        let Some(rules) = &step.adapter.callback else {
            return CallbackAck::StillPending;
        };
        let context = Value::Object(Map::from_iter([
            ("headers".to_owned(), headers),
            ("body".to_owned(), body),
        ]));
        let decision = rules.decide(&context);
        use crate::workflow::definition::Decision;
        match decision {
            Ok(Decision::Pending) => CallbackAck::StillPending,
            Ok(Decision::Success(output)) => {
                change.event(EventKind::CallbackReceived {
                    step: step_id.into(),
                    result: Some("succeeded".to_owned()),
                });
                let problems = step.adapter.output.violations(&output);
                if problems.is_empty() {
                    self.succeed(change, step_id, output);
                } else {
                    let list: Vec<String> = problems
                        .iter()
                        .map(|p| format!("{} {}", p.field, p.message))
                        .collect();
                    let message = format!(
                        "the callback's output does not match the adapter's output schema: {}",
                        list.join("; ")
                    );
                    self.fail(change, step_id, IncidentReason::UnexpectedReply, message);
                }
                CallbackAck::Recorded
            }
            Ok(Decision::Rejection {
                reason_code,
                message,
            }) => {
                change.event(EventKind::CallbackReceived {
                    step: step_id.into(),
                    result: Some("rejected".to_owned()),
                });
                self.reject(step, change, reason_code, message);
                CallbackAck::Recorded
            }
            Ok(Decision::NoMatch) | Err(_) => {
                change.event(EventKind::CallbackReceived {
                    step: step_id.into(),
                    result: Some("not understood".to_owned()),
                });
                let detail = match decision {
                    Err(e) => e.to_string(),
                    _ => "it matches no rule of the adapter".to_owned(),
                };
                let message = format!("the agency's callback cannot be understood: {detail}");
                self.fail(change, step_id, IncidentReason::UnexpectedReply, message);
                CallbackAck::Recorded
            }
        }
    }

    /// A timer of the case came due (the change has already cleared it).
    pub fn on_timer(&self, wf: &Workflow, change: &mut Change, timer: &Timer) {
        match &timer.kind {
            TimerKind::Retry { step } => {
                let (Some(def), Some(s)) = (wf.step(step), change.case.steps.get(step)) else {
                    return;
                };
                match s.status {
                    StepStatus::Backoff => {
                        let n = s.attempt + 1;
                        self.attempt_or_hold(def, change, n);
                    }
                    StepStatus::WaitingForAgency if self.circuits.is_open(&s.agency) => {
                        self.hold(def, change, false);
                    }
                    StepStatus::WaitingForAgency => self.release(def, change),
                    StepStatus::Calling => {
                        let error = "no reply was recorded within the timeout: the server stopped or the reply was lost".to_owned();
                        self.retry_or_fail(def, change, error, None, None);
                    }
                    _ => {}
                }
            }
            TimerKind::Poll { step } => {
                let (Some(def), Some(s)) = (wf.step(step), change.case.steps.get(step)) else {
                    return;
                };
                if s.status != StepStatus::Polling {
                    return;
                }
                // Its agency is down: ask again at the next interval, without a call.
                if self.circuits.is_open(&s.agency) {
                    self.schedule_poll(def, change);
                    return;
                }
                let Some(url) = s.poll_url.clone() else {
                    return;
                };
                let (revision, attempt) = (s.revision, s.attempt);
                let (agency, adapter) = (s.agency.clone(), s.adapter.clone());
                let key = idempotency_key(&change.case, step, revision);
                // If the process stops mid-poll, this timer polls again.
                change.set_timer(
                    TimerKind::Poll { step: step.clone() },
                    change.now + def.timeout + WATCHDOG_MARGIN,
                );
                change.calls.push(Call {
                    case_id: change.case.id,
                    agency,
                    adapter,
                    step: step.clone(),
                    revision,
                    attempt,
                    poll: true,
                    method: Method::Get,
                    url,
                    headers: Vec::new(),
                    body: None,
                    meta: Metadata::new(change.case.id, key, uuid::Uuid::new_v4().to_string()),
                    timeout: def.timeout,
                    ready_at: change.began,
                });
            }
            TimerKind::StepDeadline { step } => {
                let Some(s) = change.case.steps.get(step) else {
                    return;
                };
                if !s.status.is_final() {
                    let message = format!(
                        "step `{step}` missed its statutory deadline ({})",
                        s.due_at.map(|d| d.to_string()).unwrap_or_default()
                    );
                    change.open_incident(Some(step), IncidentReason::DeadlineMissed, message);
                }
            }
            TimerKind::CaseDeadline => {
                if change.case.status == CaseStatus::Running {
                    let message = format!(
                        "the case missed its statutory deadline ({})",
                        change
                            .case
                            .due_at
                            .map(|d| d.to_string())
                            .unwrap_or_default()
                    );
                    change.open_incident(None, IncidentReason::DeadlineMissed, message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use jiff::Timestamp;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::case::{CaseId, Event};
    use crate::workflow::definition::Definitions;

    /// Tuesday 1 December 2026, 09:00 in Hanoi: a working day.
    fn now() -> Timestamp {
        "2026-12-01T02:00:00Z".parse().unwrap()
    }

    fn decider() -> Decider {
        let agencies = [
            ("civil-status", "http://civil-status.test"),
            ("police", "http://police.test"),
            ("social-security", "http://social-security.test"),
        ];
        Decider {
            calendar: Calendar::vietnam(),
            public_url: "http://civicflow.test".into(),
            agencies: agencies
                .iter()
                .map(|(a, u)| ((*a).to_owned(), (*u).to_owned()))
                .collect(),
            circuits: Arc::new(Circuits::new(crate::circuits::Settings::default())),
        }
    }

    fn birth() -> Arc<Workflow> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        Definitions::load(&[dir])
            .unwrap()
            .workflow("birth-registration", Some(1))
            .unwrap()
    }

    /// A birth case as the engine starts it, moved on as far as it goes.
    fn started(d: &Decider, wf: &Workflow) -> Change {
        let input: Value = serde_json::from_str(include_str!("../../examples/birth-input.json"))
            .expect("the example input is JSON");
        let case = Case {
            id: CaseId::now_v7(),
            workflow: wf.name.clone(),
            version: wf.version,
            status: CaseStatus::Running,
            input,
            business_keys: BTreeMap::new(),
            started_at: now(),
            started_on: "2026-12-01".parse().unwrap(),
            due_at: None,
            finished_at: None,
            reason: None,
            steps: wf
                .steps
                .iter()
                .map(|s| {
                    let state =
                        crate::case::StepState::new(&s.adapter.reference, &s.adapter.agency);
                    (s.id.clone(), state)
                })
                .collect(),
            incidents: Vec::new(),
            timers: BTreeMap::new(),
            next_seq: 0,
            tallies: Vec::new(),
            traceparent: None,
            rev: 0,
        };
        let mut change = Change::new(case, None, now(), Instant::now());
        d.progress(wf, &mut change);
        change
    }

    /// The next change of a case, `secs` after the last, as if the last was committed.
    fn next(change: Change, secs: i64) -> (Change, Vec<Call>) {
        let mut case = change.case;
        case.rev += 1;
        let rev = case.rev;
        let at = now() + jiff::SignedDuration::from_secs(secs);
        (
            Change::new(case, Some(rev), at, Instant::now()),
            change.calls,
        )
    }

    fn reply(status: u16, body: Value) -> Reply {
        Reply::answered(status, Map::new(), body, None)
    }

    fn kinds(events: &[(CaseId, Event)]) -> Vec<&'static str> {
        events
            .iter()
            .map(|(_, e)| match e.kind {
                EventKind::AttemptStarted { .. } => "attempt_started",
                EventKind::AttemptFailed { .. } => "attempt_failed",
                EventKind::StepSucceeded { .. } => "step_succeeded",
                EventKind::StepRejected { .. } => "step_rejected",
                EventKind::StepStopped { .. } => "step_stopped",
                EventKind::CaseFinished { .. } => "case_finished",
                EventKind::IncidentOpened { .. } => "incident_opened",
                _ => "other",
            })
            .collect()
    }

    fn registered() -> Value {
        json!({
            "child_personal_id": "001226123456",
            "birth_extract_number": "TK-1",
            "registration_number": "123/2026",
            "registered_on": "2026-12-01"
        })
    }

    #[test]
    fn a_new_case_calls_only_the_step_that_needs_nothing_with_its_watchdog_and_deadline() {
        let (d, wf) = (decider(), birth());
        let change = started(&d, &wf);
        let steps: Vec<&str> = change.calls.iter().map(|c| c.step.as_str()).collect();
        assert_eq!(steps, ["birth"]);
        let call = &change.calls[0];
        assert_eq!(call.url, "http://civil-status.test/v1/birth-registrations");
        assert_eq!(
            call.meta.idempotency_key,
            idempotency_key(&change.case, "birth", 1)
        );
        assert_eq!(change.case.steps["birth"].status, StepStatus::Calling);
        assert_eq!(change.case.steps["residence"].status, StepStatus::Pending);
        let watchdog = change.case.timers["retry/birth"];
        assert_eq!(watchdog, now() + jiff::SignedDuration::from_secs(15));
        assert!(change.case.timers["deadline/birth"] > now());
        assert_eq!(kinds(&change.tx.events), ["attempt_started"]);
    }

    /// A case whose birth the civil status registered a second after it started, moved on.
    fn registered_birth(d: &Decider, wf: &Arc<Workflow>) -> Change {
        let (mut change, calls) = next(started(d, wf), 1);
        d.apply_reply(
            wf.step("birth").unwrap(),
            &mut change,
            &calls[0],
            &reply(201, registered()),
        );
        d.progress(wf, &mut change);
        change
    }

    #[test]
    fn a_registered_birth_starts_residence_and_card_together() {
        let (d, wf) = (decider(), birth());
        let change = registered_birth(&d, &wf);
        let mut steps: Vec<&str> = change.calls.iter().map(|c| c.step.as_str()).collect();
        steps.sort();
        assert_eq!(steps, ["health_insurance", "residence"]);
        assert_eq!(change.case.steps["birth"].status, StepStatus::Succeeded);
        assert_eq!(
            change.case.steps["birth"].output.as_ref().unwrap()["child_personal_id"],
            "001226123456"
        );
        assert!(!change.case.timers.contains_key("retry/birth"));
        let cleared: Vec<String> = change.tx.clear_timers.iter().map(|t| t.kind.id()).collect();
        assert!(cleared.contains(&"retry/birth".to_owned()), "{cleared:?}");
        assert_eq!(
            kinds(&change.tx.events),
            ["step_succeeded", "attempt_started", "attempt_started"]
        );
    }

    /// Issue 33: a status URL is polled with the adapter's credentials, so only at the
    /// agency's own address; an absolute URL elsewhere, or a scheme-relative one, is an
    /// unexpected reply.
    #[test]
    fn a_status_url_away_from_the_agency_is_never_polled() {
        let (d, wf) = (decider(), birth());
        let card = wf.step("health_insurance").unwrap();
        let polled = |status_url: &str| {
            let (mut change, calls) = next(registered_birth(&d, &wf), 2);
            let call = calls.iter().find(|c| c.step == "health_insurance").unwrap();
            let accepted = json!({"status_url": status_url});
            d.apply_reply(card, &mut change, call, &reply(202, accepted));
            let s = &change.case.steps["health_insurance"];
            (s.status, s.poll_url.clone())
        };
        assert_eq!(
            polled("/v1/cards/1"),
            (
                StepStatus::Polling,
                Some("http://social-security.test/v1/cards/1".into())
            )
        );
        assert_eq!(
            polled("http://social-security.test/v1/cards/2"),
            (
                StepStatus::Polling,
                Some("http://social-security.test/v1/cards/2".into())
            )
        );
        for away in [
            "http://169.254.169.254/latest/meta-data/",
            "//elsewhere.test/v1/cards/1",
            "https://social-security.test/v1/cards/1",
            "http://social-security.test:8080/v1/cards/1",
        ] {
            assert_eq!(polled(away), (StepStatus::Failed, None), "{away}");
        }
    }

    /// Issue 33: an agency's `Retry-After` of any size neither panics (the reply task died,
    /// the case stuck with no incident) nor wraps to zero (a tight poll loop).
    #[test]
    fn a_huge_retry_after_neither_panics_nor_polls_at_once() {
        let (d, wf) = (decider(), birth());
        let change = registered_birth(&d, &wf);
        let card = wf.step("health_insurance").unwrap();
        let forever = Some(std::time::Duration::from_secs(u64::MAX));
        let unavailable = Reply::answered(503, Map::new(), json!({}), forever);

        let (mut change, calls) = next(change, 2);
        let call = calls.iter().find(|c| c.step == "health_insurance").unwrap();
        d.apply_reply(card, &mut change, call, &unavailable);
        let s = &change.case.steps["health_insurance"];
        let retry = change.case.timers.get("retry/health_insurance");
        assert!(
            s.status == StepStatus::Failed || retry.is_some_and(|t| *t > change.now),
            "{:?} {retry:?}",
            s.status
        );

        let change = registered_birth(&d, &wf);
        let (mut change, calls) = next(change, 2);
        let call = calls.iter().find(|c| c.step == "health_insurance").unwrap();
        let accepted = json!({"status_url": "/v1/cards/1"});
        d.apply_reply(card, &mut change, call, &reply(202, accepted));
        let (mut change, _) = next(change, 3);
        let mut poll = call.clone();
        poll.poll = true;
        d.apply_reply(card, &mut change, &poll, &unavailable);
        let at = change.case.timers["poll/health_insurance"];
        assert!(
            at >= change.now + jiff::SignedDuration::from_secs(5),
            "the next poll at {at}, now {}",
            change.now
        );
    }

    #[test]
    fn an_accepted_attempt_no_longer_shows_the_error_of_the_one_before() {
        let (d, wf) = (decider(), birth());
        let change = registered_birth(&d, &wf);
        let card = wf.step("health_insurance").unwrap();
        let (mut change, calls) = next(change, 2);
        let call = calls.iter().find(|c| c.step == "health_insurance").unwrap();
        d.apply_reply(card, &mut change, call, &reply(503, json!({})));
        assert!(change.case.steps["health_insurance"].error.is_some());

        let (mut change, _) = next(change, 3);
        let retry = TimerKind::Retry {
            step: "health_insurance".into(),
        };
        let timer = Timer {
            case_id: change.case.id,
            due_at: change.case.timers[&retry.id()],
            kind: retry,
        };
        change.clear_fired(&timer);
        d.on_timer(&wf, &mut change, &timer);
        let (mut change, calls) = next(change, 4);
        let accepted = json!({"status_url": "/v1/cards/1"});
        d.apply_reply(card, &mut change, &calls[0], &reply(202, accepted));
        let s = &change.case.steps["health_insurance"];
        assert_eq!(s.status, StepStatus::Polling);
        assert_eq!(
            s.error, None,
            "the 503 of attempt 1 is not the step's state now"
        );
    }

    #[test]
    fn a_failure_backs_off_and_a_refusal_stops_the_case_with_the_steps_after_it() {
        let (d, wf) = (decider(), birth());
        let step = wf.step("birth").unwrap();
        let (mut change, calls) = next(started(&d, &wf), 1);
        d.apply_reply(step, &mut change, &calls[0], &reply(503, json!({})));
        d.progress(&wf, &mut change);
        assert_eq!(change.case.steps["birth"].status, StepStatus::Backoff);
        assert!(change.calls.is_empty());
        let retry_at = change.case.timers["retry/birth"];
        assert!(retry_at >= change.now, "{retry_at}");
        assert_eq!(kinds(&change.tx.events), ["attempt_failed"]);

        // The retry timer comes due: attempt 2, same idempotency key.
        let (mut change, _) = next(change, 2);
        let timer = Timer {
            case_id: change.case.id,
            due_at: retry_at,
            kind: TimerKind::Retry {
                step: "birth".into(),
            },
        };
        change.clear_fired(&timer);
        d.on_timer(&wf, &mut change, &timer);
        assert_eq!(change.calls.len(), 1);
        assert_eq!(change.calls[0].attempt, 2);
        assert_eq!(
            change.calls[0].meta.idempotency_key,
            calls[0].meta.idempotency_key
        );

        let (mut change, calls) = next(change, 3);
        let refusal = json!({"reason_code": "PARENT_UNKNOWN", "message": "no such parent"});
        d.apply_reply(step, &mut change, &calls[0], &reply(422, refusal));
        d.progress(&wf, &mut change);
        assert_eq!(change.case.status, CaseStatus::Rejected);
        assert_eq!(change.case.steps["residence"].status, StepStatus::Stopped);
        assert_eq!(
            change.case.steps["health_insurance"].status,
            StepStatus::Stopped
        );
        assert!(change.calls.is_empty());
        assert!(change.case.timers.is_empty(), "{:?}", change.case.timers);
        assert_eq!(
            kinds(&change.tx.events),
            [
                "step_rejected",
                "step_stopped",
                "step_stopped",
                "case_finished"
            ]
        );
    }

    #[test]
    fn a_missed_deadline_opens_an_incident_and_a_timer_of_an_unknown_step_changes_nothing() {
        let (d, wf) = (decider(), birth());
        let (mut change, _) = next(started(&d, &wf), 1);
        let due = change.case.timers["deadline/birth"];
        let timer = |kind| Timer {
            case_id: change.case.id,
            due_at: due,
            kind,
        };
        let missed = timer(TimerKind::StepDeadline {
            step: "birth".into(),
        });
        let unknown = [
            timer(TimerKind::Retry {
                step: "gone".into(),
            }),
            timer(TimerKind::Poll {
                step: "gone".into(),
            }),
            timer(TimerKind::StepDeadline {
                step: "gone".into(),
            }),
        ];
        for t in &unknown {
            d.on_timer(&wf, &mut change, t);
        }
        assert!(change.tx.events.is_empty() && change.calls.is_empty());
        d.on_timer(&wf, &mut change, &missed);
        assert_eq!(kinds(&change.tx.events), ["incident_opened"]);
        assert_eq!(
            change.case.incidents[0].reason,
            IncidentReason::DeadlineMissed
        );
        assert_eq!(change.case.steps["birth"].status, StepStatus::Calling);
    }
}
