//! How a case moves: the decisions taken under a case's lock, gathered in a [`Change`] that is
//! committed before any of its [`Call`]s is sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

use super::locks::CaseLock;
use super::{CallbackAck, Engine, Metrics, MissingWorkflow};
use crate::adapters::http::{self, Metadata, Outcome, Reply, Request, build, text};
use crate::auth::random_hex;
use crate::calendar::CalendarError;
use crate::case::{
    CallbackTarget, Case, CaseStatus, Event, EventKind, Incident, IncidentReason, Rejection,
    StepState, StepStatus, Timer, TimerKind,
};
use crate::store::{CaseWrite, Store, StoreError, Transaction};
use crate::webhooks::Notification;
use crate::workflow::definition::{Adapter, Step, Workflow};
use crate::workflow::expr::Input;
use crate::workflow::spec::{Method, Mode, OnRejection};

/// How long after an attempt's timeout the engine decides its reply is lost (the process
/// stopped mid-call) and tries again.
const WATCHDOG_MARGIN: Duration = Duration::from_secs(5);
/// How often a case whose workflow is not loaded is looked at again.
const ORPHAN_RECHECK: Duration = Duration::from_secs(60);

/// A request to send once the change that decided it is durable.
#[derive(Debug, Clone)]
pub struct Call {
    pub case_id: crate::case::CaseId,
    pub step: String,
    pub revision: u32,
    pub attempt: u32,
    pub poll: bool,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub meta: Metadata,
    pub timeout: Duration,
    /// When the trigger that decided this call arrived: the start of its step overhead.
    pub ready_at: Instant,
}

/// A case being changed: its new state, the events and timer changes that go with it, and the
/// calls to send after commit.
pub struct Change {
    pub case: Case,
    expected_rev: Option<u64>,
    pub tx: Transaction,
    pub calls: Vec<Call>,
    pub now: Timestamp,
    /// When the trigger of this change arrived (a request, an answer, a timer).
    pub began: Instant,
}

impl Change {
    pub fn new(case: Case, expected_rev: Option<u64>, now: Timestamp, began: Instant) -> Change {
        Change {
            case,
            expected_rev,
            tx: Transaction::default(),
            calls: Vec::new(),
            now,
            began,
        }
    }

    pub fn event(&mut self, kind: EventKind) {
        let seq = self.case.next_seq;
        self.case.next_seq += 1;
        self.tx.events.push((
            self.case.id,
            Event {
                seq,
                at: self.now,
                kind,
            },
        ));
    }

    /// Sets the case's timer of this kind, replacing the one it had.
    pub fn set_timer(&mut self, kind: TimerKind, due_at: Timestamp) {
        self.clear_timer(kind.clone());
        self.case.timers.insert(kind.id(), due_at);
        self.tx.set_timers.push(Timer {
            case_id: self.case.id,
            due_at,
            kind,
        });
    }

    pub fn step_mut(&mut self, id: &str) -> &mut StepState {
        self.case
            .steps
            .get_mut(id)
            .expect("step ids come from the case's own workflow version")
    }

    /// Ends a step's time at the agency: its timers go, and so do its open incidents.
    pub(super) fn close_step(&mut self, step: &str) {
        self.step_mut(step).finished_at = Some(self.now);
        for kind in step_timers(step) {
            self.clear_timer(kind);
        }
        self.case
            .incidents
            .retain(|i| i.step.as_deref() != Some(step));
    }

    /// Closes the open incidents of a step whose reason passes `which`.
    pub(super) fn clear_incidents_of(
        &mut self,
        step: &str,
        which: impl Fn(IncidentReason) -> bool,
    ) {
        self.case
            .incidents
            .retain(|i| i.step.as_deref() != Some(step) || !which(i.reason));
    }

    /// Clears the case's timer of this kind, if it has one: one set earlier in this change is
    /// simply not written, one already stored is removed.
    pub fn clear_timer(&mut self, kind: TimerKind) {
        let Some(due_at) = self.case.timers.remove(&kind.id()) else {
            return;
        };
        match self.tx.set_timers.iter().position(|t| t.kind == kind) {
            Some(unwritten) => {
                self.tx.set_timers.remove(unwritten);
            }
            None => self.tx.clear_timers.push(Timer {
                case_id: self.case.id,
                due_at,
                kind,
            }),
        }
    }

    /// Clears a timer that came due: the one the store holds, whatever the case records.
    fn clear_fired(&mut self, timer: &Timer) {
        let id = timer.kind.id();
        if self.case.timers.get(&id) == Some(&timer.due_at) {
            self.case.timers.remove(&id);
        }
        self.tx.clear_timers.push(timer.clone());
    }

    pub fn open_incident(&mut self, step: Option<&str>, reason: IncidentReason, message: String) {
        self.case.incidents.push(Incident {
            step: step.map(str::to_owned),
            reason,
            message: message.clone(),
            opened_at: self.now,
        });
        self.event(EventKind::IncidentOpened {
            step: step.map(str::to_owned),
            reason,
            message,
        });
    }

    pub fn note_calendar_error(&mut self, step: Option<&str>, e: &CalendarError) {
        self.open_incident(
            step,
            IncidentReason::InvalidData,
            format!("the statutory due time cannot be computed: {e}"),
        );
    }

    pub async fn commit<S: Store>(
        mut self,
        store: &S,
        metrics: &Metrics,
    ) -> Result<(Case, Vec<Call>), StoreError> {
        self.tx.cases.push(CaseWrite {
            case: self.case,
            expected_rev: self.expected_rev,
        });
        let handed = Instant::now();
        store.commit(&self.tx).await?;
        metrics.record_commit(handed.elapsed());
        let mut case = self.tx.cases.pop().expect("pushed above").case;
        case.rev = self.expected_rev.map_or(1, |r| r + 1);
        Ok((case, self.calls))
    }
}

fn step_timers(step: &str) -> [TimerKind; 3] {
    [
        TimerKind::Retry { step: step.into() },
        TimerKind::Poll { step: step.into() },
        TimerKind::StepDeadline { step: step.into() },
    ]
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
/// the case metadata.
fn step_context(case: &Case) -> Value {
    let steps: Map<String, Value> = case
        .steps
        .iter()
        .filter_map(|(id, s)| {
            s.output
                .as_ref()
                .map(|o| (id.clone(), json!({"output": o})))
        })
        .collect();
    json!({"input": case.input, "steps": steps, "case": case_meta(case)})
}

pub fn idempotency_key(case: &Case, step: &str, revision: u32) -> String {
    format!("{}:{step}:{revision}", case.id)
}

impl<S: Store + Clone> Engine<S> {
    /// Starts every step whose needs are settled, skips or stops those that cannot run, and
    /// finishes the case when every step has its outcome.
    pub(super) fn progress(&self, wf: &Workflow, change: &mut Change) {
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
        change.case.incidents.clear();
        change.clear_timer(TimerKind::CaseDeadline);
        change.event(EventKind::CaseFinished { status, reason });
    }

    fn start_step(&self, step: &Step, change: &mut Change) {
        let context = step_context(&change.case);
        let ctx = Input::new(&context);
        if let Some(condition) = &step.condition {
            match condition.eval_bool_in(&ctx) {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!("its condition is false: {}", condition.source());
                    self.settle(change, &step.id, StepStatus::Skipped, reason);
                    return;
                }
                Err(e) => {
                    self.fail(change, &step.id, IncidentReason::InvalidData, e.to_string());
                    return;
                }
            }
        }
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
        let input = match step.with.eval_in(&ctx) {
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
        self.begin_attempt(step, change, 1);
    }

    /// Makes attempt `n` durable (with its watchdog timer) and queues its request.
    pub(super) fn begin_attempt(&self, step: &Step, change: &mut Change, n: u32) {
        let case_id = change.case.id;
        let s = change.step_mut(&step.id);
        s.status = StepStatus::Calling;
        s.attempt = n;
        let revision = s.revision;
        let key = idempotency_key(&change.case, &step.id, revision);
        let message_id = uuid::Uuid::new_v4().to_string();
        let s = &change.case.steps[&step.id];
        let mut ctx = json!({
            "input": s.input,
            "case": case_meta(&change.case),
            "step": {"id": step.id, "attempt": n, "idempotency_key": key},
        });
        if let Some(token) = &s.callback_token {
            ctx["callback"] =
                json!({"url": format!("{}/v1/callbacks/{token}", self.config.public_url)});
        }
        let adapter = &step.adapter;
        let built = self.build_request(adapter, &ctx);
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
    fn build_request(&self, adapter: &Adapter, ctx: &Value) -> Result<Request, String> {
        let base = self.config.agencies.get(&adapter.agency).ok_or_else(|| {
            format!(
                "agency `{}` has no base URL in the configuration",
                adapter.agency
            )
        })?;
        build(adapter, base, ctx)
    }

    fn fail(&self, change: &mut Change, step: &str, reason: IncidentReason, message: String) {
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
        if spent > step.retry.max_attempts || elapsed + delay > step.retry.max_duration {
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
    fn apply_reply(&self, step: &Step, change: &mut Change, call: &Call, reply: &Reply) {
        let adapter = &step.adapter;
        let rules = match (call.poll, &adapter.poll) {
            (true, Some(poll)) => &poll.rules,
            _ => &adapter.reply,
        };
        let outcome = http::classify(rules, &adapter.output, reply);
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
                match (adapter.mode, &adapter.poll) {
                    (Mode::Poll, Some(poll)) => match poll.url.eval(&reply.context()) {
                        Ok(url) => {
                            let url = text(url);
                            let url = if url.starts_with("http://") || url.starts_with("https://") {
                                url
                            } else {
                                let base = self
                                    .config
                                    .agencies
                                    .get(&adapter.agency)
                                    .map(|b| b.trim_end_matches('/').to_owned())
                                    .unwrap_or_default();
                                format!("{base}{url}")
                            };
                            let s = change.step_mut(&step.id);
                            s.poll_url = Some(url);
                            s.status = StepStatus::Polling;
                            change.clear_timer(TimerKind::Retry {
                                step: step.id.clone(),
                            });
                            self.schedule_poll(step, change);
                        }
                        Err(e) => {
                            let message =
                                format!("the status URL cannot be read from the reply: {e}");
                            self.fail(change, &step.id, IncidentReason::UnexpectedReply, message);
                        }
                    },
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
                change.event(EventKind::AttemptFailed {
                    step: step.id.clone(),
                    attempt: call.attempt,
                    error,
                    status: reply.status(),
                    retry_at: None,
                });
                let wait = retry_after.unwrap_or_default();
                self.schedule_poll_after(step, change, wait);
            }
            Outcome::Retryable { error, retry_after } => {
                self.retry_or_fail(step, change, error, reply.status(), retry_after)
            }
            Outcome::Unexpected(error) => {
                change.event(EventKind::AttemptFailed {
                    step: step.id.clone(),
                    attempt: call.attempt,
                    error: error.clone(),
                    status: reply.status(),
                    retry_at: None,
                });
                self.fail(change, &step.id, IncidentReason::UnexpectedReply, error)
            }
        }
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
    pub(super) fn on_callback(
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
        let context = json!({"headers": headers, "body": body});
        let decision = rules.decide(&context);
        use crate::workflow::definition::Decision;
        match decision {
            Ok(Decision::Pending) => CallbackAck::StillPending,
            Ok(Decision::Success(output)) => {
                change.event(EventKind::CallbackReceived {
                    step: step_id.into(),
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
                });
                self.reject(step, change, reason_code, message);
                CallbackAck::Recorded
            }
            Ok(Decision::NoMatch) | Err(_) => {
                change.event(EventKind::CallbackReceived {
                    step: step_id.into(),
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
            tokio::spawn(async move {
                let to_wire = call.ready_at.elapsed();
                let reply = http::send(
                    &engine.http,
                    call.method,
                    &call.url,
                    &call.headers,
                    call.body.as_ref(),
                    &call.meta,
                    call.timeout,
                )
                .await;
                let received = Instant::now();
                if let Err(e) = engine.on_reply(&call, reply, received).await {
                    tracing::warn!(case = %call.case_id, step = %call.step, error = %e, "the reply could not be recorded; the watchdog timer will retry");
                }
                engine
                    .metrics
                    .record_step_overhead(to_wire + received.elapsed());
                if engine.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
                    engine.idle.notify_waiters();
                }
            });
        }
    }

    async fn on_reply(
        self: &Arc<Self>,
        call: &Call,
        reply: Reply,
        received: Instant,
    ) -> Result<(), StoreError> {
        let mut lock = self.locks.lock(call.case_id).await;
        let Some(case) = lock.load(&self.store).await? else {
            return Ok(());
        };
        let Ok(wf) = self.workflow_of(&case) else {
            return Ok(());
        };
        let Some(step) = wf.step(&call.step) else {
            return Ok(());
        };
        let s = &case.steps[&call.step];
        let expected = if call.poll {
            StepStatus::Polling
        } else {
            StepStatus::Calling
        };
        if s.revision != call.revision || s.attempt != call.attempt || s.status != expected {
            return Ok(());
        }
        let rev = case.rev;
        let mut change = Change::new(case, Some(rev), self.config.clock.now(), received);
        self.apply_reply(step, &mut change, call, &reply);
        self.finish_change(&wf, change, &mut lock).await
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
        self.progress(wf, &mut change);
        if self.notifying.load(Ordering::SeqCst) {
            let case = &change.case;
            let notes: Vec<Notification> = change
                .tx
                .events
                .iter()
                .filter_map(|(_, e)| Notification::of(case.id, &case.workflow, case.version, e))
                .collect();
            change.tx.notify.extend(notes);
        }
        change.commit(&self.store, &self.metrics).await
    }

    /// A timer came due for a case whose workflow is not loaded: the case cannot move, so it
    /// gets an incident (once) and the timer is tried again later, when the definition may be
    /// back after a restart.
    async fn park_orphan(
        &self,
        mut change: Change,
        kind: TimerKind,
        error: &MissingWorkflow,
    ) -> Result<(), StoreError> {
        tracing::error!(%error, "a timer of a case whose workflow is not loaded");
        let reported = change
            .case
            .incidents
            .iter()
            .any(|i| i.reason == IncidentReason::WorkflowNotLoaded);
        if !reported {
            change.open_incident(None, IncidentReason::WorkflowNotLoaded, error.to_string());
        }
        change.set_timer(kind, change.now + ORPHAN_RECHECK);
        change.commit(&self.store, &self.metrics).await.map(drop)
    }

    /// A timer of a case came due.
    pub(super) async fn on_timer(self: &Arc<Self>, timer: Timer) -> Result<(), StoreError> {
        let fired = Instant::now();
        let mut lock = self.locks.lock(timer.case_id).await;
        let Some(case) = lock.load(&self.store).await? else {
            return Ok(());
        };
        let rev = case.rev;
        let mut change = Change::new(case, Some(rev), self.config.clock.now(), fired);
        change.clear_fired(&timer);
        let wf = match self.workflow_of(&change.case) {
            Ok(wf) => wf,
            Err(e) => return self.park_orphan(change, timer.kind, &e).await,
        };
        match &timer.kind {
            TimerKind::Retry { step } => {
                let Some(def) = wf.step(step) else {
                    return Ok(());
                };
                match change.case.steps[step].status {
                    StepStatus::Backoff => {
                        let n = change.case.steps[step].attempt + 1;
                        self.begin_attempt(def, &mut change, n);
                    }
                    StepStatus::Calling => {
                        let error = "no reply was recorded within the timeout: the server stopped or the reply was lost".to_owned();
                        self.retry_or_fail(def, &mut change, error, None, None);
                    }
                    _ => {}
                }
            }
            TimerKind::Poll { step } => {
                let Some(def) = wf.step(step) else {
                    return Ok(());
                };
                let s = &change.case.steps[step];
                if s.status == StepStatus::Polling
                    && let Some(url) = s.poll_url.clone()
                {
                    let (revision, attempt) = (s.revision, s.attempt);
                    let key = idempotency_key(&change.case, step, revision);
                    // If the process stops mid-poll, this timer polls again.
                    change.set_timer(
                        TimerKind::Poll { step: step.clone() },
                        change.now + def.timeout + WATCHDOG_MARGIN,
                    );
                    change.calls.push(Call {
                        case_id: change.case.id,
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
                    let (case, calls) = change.commit(&self.store, &self.metrics).await?;
                    lock.remember_if_busy(case, &wf, &calls);
                    self.dispatch(calls);
                    return Ok(());
                }
            }
            TimerKind::StepDeadline { step } => {
                let s = &change.case.steps[step];
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
        self.finish_change(&wf, change, &mut lock).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn change(timers: &[(TimerKind, i64)]) -> Change {
        let case = Case {
            id: crate::case::CaseId::now_v7(),
            workflow: "w".into(),
            version: 1,
            status: CaseStatus::Running,
            input: Value::Null,
            business_keys: BTreeMap::new(),
            started_at: at(0),
            started_on: "2027-01-15".parse().unwrap(),
            due_at: None,
            finished_at: None,
            reason: None,
            steps: BTreeMap::new(),
            incidents: Vec::new(),
            timers: timers.iter().map(|(k, due)| (k.id(), at(*due))).collect(),
            next_seq: 0,
            rev: 1,
        };
        Change::new(case, Some(1), at(0), Instant::now())
    }

    fn dues(timers: &[Timer]) -> Vec<(String, i64)> {
        timers
            .iter()
            .map(|t| (t.kind.id(), t.due_at.as_second() - at(0).as_second()))
            .collect()
    }

    fn retry() -> TimerKind {
        TimerKind::Retry { step: "s".into() }
    }

    #[test]
    fn moving_a_stored_timer_clears_it_where_it_was() {
        let mut c = change(&[(retry(), 10)]);
        c.set_timer(retry(), at(20));
        assert_eq!(dues(&c.tx.clear_timers), [("retry/s".to_owned(), 10)]);
        assert_eq!(dues(&c.tx.set_timers), [("retry/s".to_owned(), 20)]);
        c.set_timer(retry(), at(30));
        assert_eq!(dues(&c.tx.clear_timers), [("retry/s".to_owned(), 10)]);
        assert_eq!(dues(&c.tx.set_timers), [("retry/s".to_owned(), 30)]);
        assert_eq!(c.case.timers.get("retry/s"), Some(&at(30)));
    }

    #[test]
    fn clearing_writes_only_what_the_store_holds() {
        let mut c = change(&[]);
        c.clear_timer(retry());
        assert!(c.tx.clear_timers.is_empty());
        c.set_timer(retry(), at(5));
        c.clear_timer(retry());
        assert!(c.tx.set_timers.is_empty() && c.tx.clear_timers.is_empty());
        assert!(c.case.timers.is_empty());

        let mut c = change(&[(retry(), 10), (TimerKind::CaseDeadline, 99)]);
        c.clear_timer(retry());
        assert_eq!(dues(&c.tx.clear_timers), [("retry/s".to_owned(), 10)]);
        assert_eq!(c.case.timers.len(), 1);
    }

    #[test]
    fn a_fired_timer_is_cleared_as_stored_even_if_the_case_disagrees() {
        let fired = |due: i64| Timer {
            case_id: crate::case::CaseId::nil(),
            due_at: at(due),
            kind: retry(),
        };
        let mut c = change(&[(retry(), 10)]);
        c.clear_fired(&fired(10));
        c.set_timer(retry(), at(40));
        assert_eq!(dues(&c.tx.clear_timers), [("retry/s".to_owned(), 10)]);
        assert_eq!(dues(&c.tx.set_timers), [("retry/s".to_owned(), 40)]);

        let mut c = change(&[(retry(), 50)]);
        c.clear_fired(&fired(10));
        assert_eq!(c.case.timers.get("retry/s"), Some(&at(50)));
        c.clear_timer(retry());
        assert_eq!(
            dues(&c.tx.clear_timers),
            [("retry/s".to_owned(), 10), ("retry/s".to_owned(), 50)]
        );
    }
}
