//! What operators do to a case that needs a person: retry a step now, skip it (supplying the
//! output later steps need), correct the case's data and re-run a step, cancel the case. Each
//! action is checked against the case's state under its lock, recorded in the history with who
//! did it and why, and committed before anything it decides is sent.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::SpanKind;

use serde_json::{Value, json};

use super::change::Change;
use super::decide::{ExtensionError, ExtensionRequest};
use super::drive::lost_race;
use super::supplements::{SupplementAsk, SupplementError};
use super::{Engine, MissingWorkflow, StartError};
use crate::case::{
    Case, CaseId, CaseStatus, EventKind, IncidentReason, OperatorActionKind, StepStatus, TimerKind,
};
use crate::store::{Store, StoreError};
use crate::traces::CaseSpan;
use crate::workflow::definition::{SchemaViolation, Workflow};

/// An operator's action on one case.
#[derive(Debug, Clone)]
pub enum Action {
    Retry {
        step: String,
    },
    Skip {
        step: String,
        /// The step's output as later steps need it; checked against the adapter's output
        /// schema. Without it, the steps that need this one are skipped too (or, for a refused
        /// step on hold, the refusal stands and they stop).
        output: Option<Value>,
    },
    Fix {
        step: String,
        /// The corrected case input, whole; checked against the workflow's input schema.
        input: Value,
    },
    Cancel,
    /// The one apology and new date of the case (the reason is the apology's).
    Extend(ExtensionRequest),
    /// The portal's supplement of an incomplete dossier.
    Supplement(SupplementAsk),
}

impl Action {
    pub fn kind(&self) -> OperatorActionKind {
        match self {
            Action::Retry { .. } => OperatorActionKind::Retry,
            Action::Skip { .. } => OperatorActionKind::Skip,
            Action::Fix { .. } => OperatorActionKind::Fix,
            Action::Cancel => OperatorActionKind::Cancel,
            Action::Extend(_) => OperatorActionKind::Extend,
            Action::Supplement(_) => OperatorActionKind::Supplement,
        }
    }

    fn step(&self) -> Option<&str> {
        match self {
            Action::Retry { step } | Action::Skip { step, .. } | Action::Fix { step, .. } => {
                Some(step)
            }
            Action::Extend(ask) => ask.step.as_deref(),
            Action::Supplement(_) | Action::Cancel => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no case {0}")]
    UnknownCase(CaseId),
    #[error("case {case_id} has no step `{step}`; its steps are {known}")]
    UnknownStep {
        case_id: CaseId,
        step: String,
        known: String,
    },
    /// The action does not fit the case's state; the message says why and what would.
    #[error("{0}")]
    Conflict(String),
    #[error("the output does not match the adapter's output schema")]
    InvalidOutput(Vec<SchemaViolation>),
    #[error("the corrected input does not match the workflow's input schema")]
    InvalidInput(Vec<SchemaViolation>),
    #[error("{0}")]
    InvalidData(String),
    #[error(transparent)]
    Extension(#[from] ExtensionError),
    #[error(transparent)]
    Supplement(#[from] SupplementError),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Missing(#[from] MissingWorkflow),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ActionError {
    /// The error's class, as traces name it.
    fn class(&self) -> &'static str {
        match self {
            ActionError::UnknownCase(_) => "unknown_case",
            ActionError::UnknownStep { .. } => "unknown_step",
            ActionError::Conflict(_) => "conflict",
            ActionError::InvalidOutput(_) | ActionError::InvalidInput(_) => "invalid",
            ActionError::InvalidData(_) => "invalid_data",
            ActionError::Extension(_) => "extension_refused",
            ActionError::Supplement(_) => "supplement_refused",
            ActionError::ShuttingDown => "shutting_down",
            ActionError::Missing(_) => "workflow_not_loaded",
            ActionError::Store(_) => "store_error",
        }
    }
}

impl<S: Store + Clone> Engine<S> {
    /// Applies an operator's action to a case. `by` names the operator, `reason` says why;
    /// both go into the history (not into the trace, which gets the action, the step and how
    /// it ended).
    pub async fn act(
        self: &Arc<Self>,
        case_id: CaseId,
        action: Action,
        by: &str,
        reason: &str,
    ) -> Result<Case, ActionError> {
        let from = SystemTime::now();
        let name = format!("operator {}", action.kind().as_str());
        let step = action.step().map(str::to_owned);
        let done = self.apply_action(case_id, action, by, reason).await;
        if !matches!(done, Err(ActionError::UnknownCase(_))) {
            let span = CaseSpan::new(name, SpanKind::Server, from);
            let span = match step {
                Some(step) => span.attribute("civicflow.step", step),
                None => span,
            };
            let span = match &done {
                Ok(_) => span.outcome("applied", false),
                Err(e) => span.outcome(e.class(), true),
            };
            self.traces.case_span(case_id, span);
        }
        done
    }

    async fn apply_action(
        self: &Arc<Self>,
        case_id: CaseId,
        action: Action,
        by: &str,
        reason: &str,
    ) -> Result<Case, ActionError> {
        let began = Instant::now();
        if self.stopping() {
            return Err(ActionError::ShuttingDown);
        }
        let mut lock = self.locks.lock(case_id).await;
        let mut round = 0;
        loop {
            round += 1;
            let case = lock
                .load(&self.store)
                .await?
                .ok_or(ActionError::UnknownCase(case_id))?;
            let wf = self.workflow_for(&case).await?;
            if let Some(step) = action.step()
                && !case.steps.contains_key(step)
            {
                let known: Vec<String> = case.steps.keys().map(|k| format!("`{k}`")).collect();
                return Err(ActionError::UnknownStep {
                    case_id,
                    step: step.to_owned(),
                    known: known.join(", "),
                });
            }
            let rev = case.rev;
            let mut change = Change::new(case, Some(rev), self.config.clock.now(), began);
            // The action is recorded before the events it causes (the steps it starts, the end).
            let recorded = change.tx.events.len();
            change.event(EventKind::OperatorAction {
                action: action.kind(),
                step: action.step().map(str::to_owned),
                by: by.to_owned(),
                reason: reason.to_owned(),
                details: Value::Null,
            });
            let detail = match &action {
                Action::Retry { step } => self.retry_now(&wf, &mut change, step)?,
                Action::Skip { step, output } => {
                    self.skip(&wf, &mut change, step, output.clone())?
                }
                Action::Fix { step, input } => self.fix(&wf, &mut change, step, input.clone())?,
                Action::Cancel => self.cancel(&mut change, by, reason)?,
                Action::Extend(ask) => {
                    self.decide.extend(&wf, &mut change, ask)?;
                    json!({"until": ask.until.to_string(), "reason_code": ask.reason_code})
                }
                Action::Supplement(ask) => self.supplement(&wf, &mut change, ask, by)?,
            };
            if let EventKind::OperatorAction { details: d, .. } =
                &mut change.tx.events[recorded].1.kind
            {
                *d = detail;
            }
            let (case, calls) = match self.progress_and_commit(&wf, change).await {
                Ok(done) => done,
                Err(e) if lost_race(&e, round) => continue,
                Err(e) => return Err(e.into()),
            };
            lock.remember_if_busy(case.clone(), &wf, &calls);
            self.dispatch(calls);
            return Ok(case);
        }
    }

    fn retry_now(
        &self,
        wf: &Workflow,
        change: &mut Change,
        id: &str,
    ) -> Result<Value, ActionError> {
        running(&change.case, "retry a step of")?;
        let s = &change.case.steps[id];
        let def = wf
            .step(id)
            .ok_or_else(|| unknown_in_version(&change.case, id))?;
        match s.status {
            StepStatus::Pending => Err(conflict(format!(
                "step `{id}` has not started: it waits for {}; there is nothing to retry",
                waits_for(&change.case, wf, id)
            ))),
            StepStatus::Calling => Err(conflict(format!(
                "a request of step `{id}` is in flight (attempt {}); wait for its reply",
                s.attempt
            ))),
            StepStatus::Rejected if change.case.is_held(id) => Err(conflict(format!(
                "the agency refused step `{id}`; sending the same request again gets the same answer: correct the data with `fix`, or let the refusal stand with `skip`"
            ))),
            status if status.is_final() => Err(conflict(format!(
                "step `{id}` has already {}; there is nothing to retry",
                finished_as(status)
            ))),
            StepStatus::AwaitingSupplement => {
                let asked = change
                    .case
                    .deadlines
                    .open_request(id)
                    .map(|r| format!(" (request {}, by {})", r.id, r.due_at))
                    .unwrap_or_default();
                Err(conflict(format!(
                    "step `{id}` waits for the citizen's supplement{asked}: the same dossier gets the same answer; it is sent again when the portal supplies what is missing, or when you correct the data with `fix`"
                )))
            }
            StepStatus::AwaitingEvent => {
                let expected = change
                    .case
                    .inbox
                    .expects
                    .get(id)
                    .map(|e| format!(" `{}` for `{}`", e.event_type, e.value))
                    .unwrap_or_default();
                Err(conflict(format!(
                    "step `{id}` waits for the event{expected}; it runs when the event arrives, or skip it, or correct the data with `fix`"
                )))
            }
            StepStatus::AwaitingConsent => {
                let agreement = def
                    .exchange
                    .as_ref()
                    .and_then(|e| e.consent.as_ref())
                    .map(|c| format!(" to `{}`", c.agreement))
                    .unwrap_or_default();
                Err(conflict(format!(
                    "step `{id}` waits for the citizen's consent{agreement}: its agency gets no call without it; it runs when the portal records the consent, or skip it, or cancel the case"
                )))
            }
            StepStatus::Polling => {
                // Ask the agency now instead of at the next poll; what the last poll met is
                // no longer the step's state.
                change.step_mut(id).error = None;
                change.set_timer(TimerKind::Poll { step: id.into() }, change.now);
                Ok(json!({"poll": "now"}))
            }
            _ => {
                let attempt = s.attempt;
                let built = s.input.is_some();
                change.clear_incidents_of(id, |r| r != IncidentReason::DeadlineMissed);
                let now = change.now;
                let s = change.step_mut(id);
                s.budget_from = attempt;
                s.first_attempt_at = Some(now);
                if built {
                    self.decide.begin_attempt(def, change, attempt + 1);
                } else {
                    // It failed before its request could be built: build it again.
                    change.step_mut(id).status = StepStatus::Pending;
                }
                Ok(json!({"attempt": attempt + 1}))
            }
        }
    }

    fn skip(
        &self,
        wf: &Workflow,
        change: &mut Change,
        id: &str,
        output: Option<Value>,
    ) -> Result<Value, ActionError> {
        running(&change.case, "skip a step of")?;
        let def = wf
            .step(id)
            .ok_or_else(|| unknown_in_version(&change.case, id))?;
        let s = &change.case.steps[id];
        let held = change.case.is_held(id);
        match s.status {
            StepStatus::Calling | StepStatus::AwaitingCallback | StepStatus::Polling => {
                return Err(conflict(format!(
                    "step `{id}` is running at the agency ({}); skipping it now could leave what the agency does unrecorded: wait for its answer, or retry it",
                    s.status.as_str()
                )));
            }
            StepStatus::Rejected if held => {}
            status if status.is_final() => {
                return Err(conflict(format!(
                    "step `{id}` has already {}; there is nothing to skip",
                    finished_as(status)
                )));
            }
            _ => {}
        }
        if let Some(output) = &output {
            let problems = def.adapter.output.violations(output);
            if !problems.is_empty() {
                return Err(ActionError::InvalidOutput(problems));
            }
        }
        change.close_step(id);
        let s = change.step_mut(id);
        let stands = held && output.is_none();
        if stands {
            // The refusal stands: the step stays refused, and what needs it stops.
            return Ok(json!({"refusal": "stands"}));
        }
        s.status = StepStatus::Skipped;
        s.note = Some("skipped by an operator".to_owned());
        let detail = json!({"output": output});
        s.output = output;
        Ok(detail)
    }

    fn fix(
        &self,
        wf: &Workflow,
        change: &mut Change,
        id: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        let case = &change.case;
        let status = case.steps[id].status;
        match status {
            _ if case.status == CaseStatus::Cancelled => {
                return Err(conflict(format!(
                    "case {} was cancelled; a cancelled case does not run again",
                    case.id
                )));
            }
            StepStatus::Rejected => {}
            _ if case.status != CaseStatus::Running => {
                return Err(conflict(format!(
                    "case {} has finished ({}) and step `{id}` was not refused; only a refused step of a finished case can be re-run",
                    case.id,
                    case.status.as_str()
                )));
            }
            StepStatus::Failed
            | StepStatus::Backoff
            | StepStatus::WaitingForAgency
            | StepStatus::AwaitingCallback
            | StepStatus::Polling
            | StepStatus::AwaitingSupplement
            | StepStatus::AwaitingEvent
            | StepStatus::AwaitingConsent => {}
            StepStatus::Pending => {
                return Err(conflict(format!(
                    "step `{id}` has not run yet: it waits for {}; correct the data when it needs it",
                    waits_for(case, wf, id)
                )));
            }
            StepStatus::Calling => {
                return Err(conflict(format!(
                    "a request of step `{id}` is in flight; wait for its reply before re-running it"
                )));
            }
            StepStatus::Succeeded => {
                return Err(conflict(format!(
                    "step `{id}` succeeded: the agency acted, and a legal act is not redone; correct it at the agency"
                )));
            }
            StepStatus::Skipped | StepStatus::Stopped => {
                return Err(conflict(format!(
                    "step `{id}` is {}: re-run the step it depends on instead",
                    status.as_str()
                )));
            }
        }
        let keys = self.checked_input(wf, &input)?;
        // An operator's correction answers the citizen's request too (the paper came to the
        // desk): it is no longer open.
        let now = change.now;
        change
            .case
            .deadlines
            .settle_open_request(id, crate::case::RequestState::Answered, now);
        let previous = std::mem::replace(&mut change.case.input, input);
        change.case.business_keys = keys;
        let reopen = change.case.status != CaseStatus::Running;
        if reopen {
            change.case.status = CaseStatus::Running;
            change.case.finished_at = None;
            change.case.reason = None;
            if let Some(due) = change.case.due_at
                && due > change.now
            {
                change.set_timer(TimerKind::CaseDeadline, due);
            }
            change.event(EventKind::CaseReopened);
        }
        change.close_step(id);
        let revision = change.case.steps[id].revision + 1;
        change.reset_step(id, revision);
        // What stopped or was skipped because of this step runs again once it has succeeded;
        // in a reopened case, so does every step the end stopped (a stopped step never acted).
        let later = dependants(wf, id);
        let ids: Vec<String> = change.case.steps.keys().cloned().collect();
        for other in ids {
            let s = &change.case.steps[&other];
            let waiting = match s.status {
                StepStatus::Stopped => reopen || later.contains(&other),
                StepStatus::Skipped => later.contains(&other) && s.output.is_none(),
                _ => false,
            };
            if waiting {
                let revision = s.revision;
                change.reset_step(&other, revision);
            }
        }
        Ok(json!({"revision": revision, "previous_input": previous}))
    }

    /// A corrected or supplemented case input, checked against the workflow's schema: the
    /// business keys it gives the case.
    pub(super) fn checked_input(
        &self,
        wf: &Workflow,
        input: &Value,
    ) -> Result<std::collections::BTreeMap<String, String>, ActionError> {
        let violations = wf.input.violations(input);
        if !violations.is_empty() {
            return Err(ActionError::InvalidInput(violations));
        }
        self.business_keys(wf, input).map_err(|e| match e {
            StartError::InvalidInput(v) => ActionError::InvalidInput(v),
            other => ActionError::InvalidData(other.to_string()),
        })
    }

    fn cancel(&self, change: &mut Change, by: &str, reason: &str) -> Result<Value, ActionError> {
        running(&change.case, "cancel")?;
        let why = format!("cancelled by {by}: {reason}");
        let now = change.now;
        let ids: Vec<String> = change.case.steps.keys().cloned().collect();
        for id in ids {
            let status = change.case.steps[&id].status;
            if status.is_final() {
                continue;
            }
            change.close_step(&id);
            let s = change.step_mut(&id);
            s.status = StepStatus::Stopped;
            s.note = Some(why.clone());
            s.finished_at = Some(now);
            change.event(EventKind::StepStopped {
                step: id,
                reason: why.clone(),
            });
        }
        change.case.status = CaseStatus::Cancelled;
        change.case.reason = Some(why.clone());
        change.case.finished_at = Some(now);
        change.close_incidents(|_| true);
        change.clear_timer(TimerKind::CaseDeadline);
        change.event(EventKind::CaseFinished {
            status: CaseStatus::Cancelled,
            reason: Some(why),
        });
        Ok(Value::Null)
    }
}

/// Puts a step back to pending, in `revision`: a new revision gets a new idempotency key.
fn conflict(message: String) -> ActionError {
    ActionError::Conflict(message)
}

fn running(case: &Case, what: &str) -> Result<(), ActionError> {
    if case.status == CaseStatus::Running {
        return Ok(());
    }
    Err(conflict(format!(
        "case {} has already finished ({}); there is no running case to {what}",
        case.id,
        case.status.as_str()
    )))
}

fn finished_as(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Rejected => "been refused by the agency",
        StepStatus::Skipped => "been skipped",
        _ => "stopped",
    }
}

fn unknown_in_version(case: &Case, id: &str) -> ActionError {
    ActionError::InvalidData(format!(
        "step `{id}` is not in workflow `{}` version {}",
        case.workflow, case.version
    ))
}

/// The steps a pending step waits for, for a message.
fn waits_for(case: &Case, wf: &Workflow, id: &str) -> String {
    let waiting: Vec<String> = wf
        .step(id)
        .map(|s| {
            s.needs
                .iter()
                .filter(|n| !case.steps[*n].status.is_final())
                .map(|n| format!("`{n}`"))
                .collect()
        })
        .unwrap_or_default();
    if waiting.is_empty() {
        "its turn".to_owned()
    } else {
        waiting.join(" and ")
    }
}

/// Every step that needs `id`, directly or not, in the workflow's order.
fn dependants(wf: &Workflow, id: &str) -> Vec<String> {
    let mut found: Vec<String> = vec![id.to_owned()];
    for step in &wf.steps {
        if step.needs.iter().any(|n| found.contains(n)) {
            found.push(step.id.clone());
        }
    }
    found.remove(0);
    found
}
