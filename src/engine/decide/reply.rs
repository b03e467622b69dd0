//! What an agency's reply (to a request or a poll) or callback means for its step.

use std::time::Duration;

use jiff::SignedDuration;
use serde_json::{Map, Value};

use crate::adapters::http::{self, Outcome, Reply, text};
use crate::case::{EventKind, IncidentReason, StepStatus, TimerKind};
use crate::engine::CallbackAck;
use crate::engine::change::{Call, Change};
use crate::workflow::definition::{Step, Workflow};
use crate::workflow::spec::Mode;

use super::attempt::given_up;
use super::progress::Decider;

impl Decider {
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
            Outcome::NeedsSupplement(missing) => self.ask_supplement(step, change, missing),
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
            Outcome::RequestHashMismatch(error) => {
                given_up(change, step, call, reply, error.clone());
                self.fail(change, &step.id, IncidentReason::RequestHashMismatch, error)
            }
        }
        class
    }

    pub(in crate::engine) fn schedule_poll(&self, step: &Step, change: &mut Change) {
        self.schedule_poll_after(step, change, Duration::ZERO);
    }

    pub(in crate::engine) fn schedule_poll_after(
        &self,
        step: &Step,
        change: &mut Change,
        at_least: Duration,
    ) {
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
                    let message = format!(
                        "the callback's output does not match the adapter's output schema: {}",
                        crate::workflow::definition::SchemaViolation::prose(&problems)
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
            Ok(Decision::NeedsSupplement(missing)) => {
                change.event(EventKind::CallbackReceived {
                    step: step_id.into(),
                    result: Some("needs_supplement".to_owned()),
                });
                match crate::case::missing_of(&missing) {
                    Ok(missing) => self.ask_supplement(step, change, missing),
                    Err(e) => {
                        let message = format!("the agency's callback cannot be understood: {e}");
                        self.fail(change, step_id, IncidentReason::UnexpectedReply, message);
                    }
                }
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
}
