//! Moving a case on: which steps start, which are skipped or stopped because a step they
//! need failed, and when the case ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::random_hex;
use crate::calendar::Calendar;
use crate::case::{
    CallbackTarget, Case, CaseStatus, EventKind, IncidentReason, StepStatus, TimerKind,
};
use crate::circuits::Circuits;
use crate::engine::change::Change;
use crate::workflow::definition::{SchemaViolation, Step, Workflow};
use crate::workflow::expr::{EvalError, Input, Part};
use crate::workflow::spec::{Mode, OnRejection};

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
    /// This node's X-Road client (`INSTANCE/CLASS/MEMBER/SUBSYSTEM`), on every call.
    pub xroad_client: String,
    /// The key of citizens' pseudonyms: the end user an agency is told of.
    pub pseudonyms: crate::personal_data::PseudonymKey,
}

pub(super) fn case_meta(case: &Case) -> Value {
    let mut meta = json!({
        "id": case.id.to_string(),
        "workflow": case.workflow,
        "version": case.version,
        "started_on": case.started_on.to_string(),
        "started_at": case.started_at.to_string(),
    });
    // What the life event's legal limit made of the case, from its first step on: a late
    // registration is sent as one.
    if let Some(life) = &case.deadlines.life_event {
        meta["life_event"] = json!({
            "date": life.date.to_string(),
            "limit": life.limit.to_string(),
            "tier": life.tier.as_str(),
        });
    }
    meta
}

/// What a step's `if` and `with` see: the input, the outputs of the steps that succeeded, and
/// the case metadata, read where they are in the case rather than copied into one value.
pub(super) fn step_context(case: &Case) -> Input<'_> {
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

    pub(in crate::engine) fn settle(
        &self,
        change: &mut Change,
        step: &str,
        status: StepStatus,
        reason: String,
    ) {
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

    pub(in crate::engine) fn finish_if_done(&self, wf: &Workflow, change: &mut Change) {
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
        change.clear_timer(TimerKind::CaseReminder);
        change.event(EventKind::CaseFinished { status, reason });
    }

    /// The step is at its agency from now: its statutory time (and its retry budget) counts
    /// from here.
    pub(super) fn start_clock(&self, step: &Step, change: &mut Change) {
        let now = change.now;
        let due = self.calendar.due(now, step.deadline);
        {
            let s = change.step_mut(&step.id);
            s.started_at = Some(now);
            s.first_attempt_at = Some(now);
            s.due_at = due.as_ref().ok().copied();
        }
        match due {
            Ok(at) => self.schedule_due(change, Some(&step.id), at, &step.consequences),
            Err(e) => change.note_calendar_error(Some(&step.id), &e),
        }
    }

    pub(in crate::engine) fn start_step(&self, step: &Step, change: &mut Change) {
        /// What the step's `if` and `with` make of the case as it stands.
        enum Read {
            Skipped(String),
            Invalid(EvalError),
            Input(Result<Value, EvalError>),
            /// It waits for an event first: `with` may read it.
            Wait,
        }
        let read = {
            let ctx = step_context(&change.case);
            match step.condition.as_ref().map(|c| (c, c.eval_bool_in(&ctx))) {
                Some((c, Ok(false))) => Read::Skipped(c.source().to_owned()),
                Some((_, Err(e))) => Read::Invalid(e),
                None | Some((_, Ok(true))) if step.wait_for.is_some() => Read::Wait,
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
            Read::Wait => {
                if self.wait_if_needed(step, change) {
                    return;
                }
                let event = super::wait::taken_event(change, &step.id);
                let ctx = step_context(&change.case);
                match event {
                    Some(event) => step.with.eval_in(&ctx.with("event", event)),
                    None => step.with.eval_in(&ctx),
                }
            }
        };
        self.start_clock(step, change);
        let input = match with {
            Ok(v) => v,
            Err(e) => {
                self.fail(change, &step.id, IncidentReason::InvalidData, e.to_string());
                return;
            }
        };
        let violations = step.adapter.input.violations(&input);
        if !violations.is_empty() {
            let message = format!(
                "the step's input does not match {}'s input schema: {}",
                step.adapter.reference,
                SchemaViolation::prose(&violations)
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
}
