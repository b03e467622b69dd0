//! What a due time brings (Decree 61/2018, Art. 19(9), as Decree 118/2025 keeps it): a
//! reminder while an apology is still possible, an escalation and the overdue incident when the
//! time passes, the meaning a law gives an agency's silence, and the one apology with a new
//! date a dossier may get.

use jiff::Timestamp;
use jiff::civil::Date;

use crate::calendar::{CalendarError, close_of, due_day, vietnam_time};
use crate::case::deadlines::WHOLE_CASE;
use crate::case::{CaseStatus, EventKind, Extension, IncidentReason, StepStatus, TimerKind};
use crate::engine::change::Change;
use crate::workflow::deadline::Consequences;
use crate::workflow::definition::{SchemaViolation, Step, Workflow};
use crate::workflow::spec::{Party, SilenceOutcome};

use super::progress::{Decider, step_context};

/// An extension someone asks for.
#[derive(Debug, Clone)]
pub struct ExtensionRequest {
    /// The late step; `None` for the case as a whole.
    pub step: Option<String>,
    /// The new date: the dossier is due at its close.
    pub until: Date,
    pub reason_code: String,
    pub reason: String,
    /// Who grants it, as the history names them.
    pub by: String,
    /// The party the granter acts as; `None` for an admin, who may always.
    pub party: Option<(Party, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    #[error(
        "the case was already given a new date on {at} (due {due}); the decree allows a new date once"
    )]
    AlreadyExtended { at: Timestamp, due: Timestamp },
    #[error("the case is {0}: only a running case can be given a new date")]
    NotRunning(&'static str),
    #[error("step `{step}` is {status}: only a step still at its agency can be given a new date")]
    StepNotOpen { step: String, status: &'static str },
    #[error("{0} has no due time to move")]
    NoDueTime(String),
    #[error(
        "the apology and new date must be given at least a day before the due day ({due_day}); today is {today}, so the dossier is reported late instead"
    )]
    NoticeTooLate { due_day: Date, today: Date },
    #[error("the new date {until} is not after the due day it replaces ({due_day})")]
    NotLater { until: Date, due_day: Date },
    #[error(
        "the new date {until} is further than the workflow allows: at most {at_most} working day(s) after {due_day}, that is {limit}"
    )]
    TooFar {
        until: Date,
        at_most: u32,
        due_day: Date,
        limit: Date,
    },
    #[error("a {party} may not grant this extension; the workflow lets {allowed} grant it")]
    NotAllowed {
        party: &'static str,
        allowed: String,
    },
    #[error("an agency may extend only its own steps; step `{step}` is at {agency}")]
    OtherAgency { step: String, agency: String },
    #[error("the new date {0} is not a working day: the citizen could not collect the result")]
    NotWorkingDay(Date),
    #[error("the new date cannot be counted: {0}")]
    Calendar(CalendarError),
}

impl Decider {
    /// Sets the due-time timer of a step (or, without `step`, of the case) and its reminder.
    pub(in crate::engine) fn schedule_due(
        &self,
        change: &mut Change,
        step: Option<&str>,
        due: Timestamp,
        terms: &Consequences,
    ) {
        let (deadline, reminder) = match step {
            Some(s) => (
                TimerKind::StepDeadline { step: s.to_owned() },
                TimerKind::Reminder { step: s.to_owned() },
            ),
            None => (TimerKind::CaseDeadline, TimerKind::CaseReminder),
        };
        change.set_timer(deadline, due);
        let Some(n) = terms.remind_before else {
            return;
        };
        match self.calendar.reminder(due, n) {
            // A reminder that would come before now has no time left to serve: none.
            Ok(at) if at > change.now => change.set_timer(reminder, at),
            Ok(_) => change.clear_timer(reminder),
            Err(e) => change.note_calendar_error(step, &e),
        }
    }

    /// A reminder came due: the feed tells the portal and the agency the dossier is due soon.
    pub(super) fn remind(&self, change: &mut Change, step: Option<&str>) {
        if change.case.status != CaseStatus::Running {
            return;
        }
        let due = match step {
            Some(id) => match change.case.steps.get(id) {
                Some(s) if !s.status.is_final() => s.due_at,
                _ => return,
            },
            None => change.case.due_at,
        };
        if let Some(due_at) = due {
            change.event(EventKind::Reminded {
                step: step.map(str::to_owned),
                due_at,
            });
        }
    }

    /// A step's due time passed: a deemed outcome where the law gives the agency's silence one,
    /// else the overdue incident, and the escalation the workflow asks for.
    pub(super) fn step_due(&self, wf: &Workflow, change: &mut Change, step: &str) {
        let Some(s) = change.case.steps.get(step) else {
            return;
        };
        if s.status.is_final() {
            return;
        }
        let silent = matches!(s.status, StepStatus::AwaitingCallback | StepStatus::Polling);
        let (due, agency) = (s.due_at, s.agency.clone());
        let def = wf.step(step);
        if silent && let Some(def) = def.filter(|d| d.on_silence.is_some()) {
            self.deem(def, change);
            return;
        }
        let due_text = due.map(|d| d.to_string()).unwrap_or_default();
        let mut message = format!("step `{step}` missed its statutory deadline ({due_text})");
        if let Some(to) = def.and_then(|d| d.consequences.escalate_to) {
            let to = match to {
                Party::Agency => format!("agency:{agency}"),
                other => other.as_str().to_owned(),
            };
            message.push_str(&format!("; escalated to {to}"));
            self.escalate(change, step, to, due);
        }
        change.open_incident(Some(step), IncidentReason::DeadlineMissed, message);
    }

    /// The case's due time passed while it runs.
    pub(super) fn case_due(&self, wf: &Workflow, change: &mut Change) {
        if change.case.status != CaseStatus::Running {
            return;
        }
        let due = change.case.due_at;
        let due_text = due.map(|d| d.to_string()).unwrap_or_default();
        let mut message = format!("the case missed its statutory deadline ({due_text})");
        if let Some(to) = wf.consequences.escalate_to {
            message.push_str(&format!("; escalated to {}", to.as_str()));
            self.escalate(change, WHOLE_CASE, to.as_str().to_owned(), due);
        }
        change.open_incident(None, IncidentReason::DeadlineMissed, message);
    }

    fn escalate(&self, change: &mut Change, step: &str, to: String, due: Option<Timestamp>) {
        change
            .case
            .deadlines
            .escalated
            .insert(step.to_owned(), to.clone());
        change.event(EventKind::Escalated {
            step: (step != WHOLE_CASE).then(|| step.to_owned()),
            to,
            due_at: due.unwrap_or(change.now),
        });
    }

    /// The agency stayed silent past the due time, and a law says what that means.
    fn deem(&self, step: &Step, change: &mut Change) {
        let Some(silence) = &step.on_silence else {
            return;
        };
        let id = step.id.as_str();
        let output = match (silence.outcome, &silence.output) {
            (SilenceOutcome::Approved, Some(template)) => {
                let output = template.eval_in(&step_context(&change.case));
                match output {
                    Ok(output) => {
                        let violations = step.adapter.output.violations(&output);
                        if !violations.is_empty() {
                            let message = format!(
                                "the step is deemed approved on silence, but its `on_silence.output` does not match {}'s output schema: {}",
                                step.adapter.reference,
                                SchemaViolation::prose(&violations)
                            );
                            self.fail(change, id, IncidentReason::InvalidData, message);
                            return;
                        }
                        Some(output)
                    }
                    Err(e) => {
                        let message = format!(
                            "the step is deemed approved on silence, but its `on_silence.output` cannot be built: {e}"
                        );
                        self.fail(change, id, IncidentReason::InvalidData, message);
                        return;
                    }
                }
            }
            _ => None,
        };
        change.event(EventKind::SilenceDeemed {
            step: id.to_owned(),
            outcome: silence.outcome,
            legal_basis: silence.legal_basis.clone(),
        });
        match output {
            Some(output) => self.succeed(change, id, output),
            None => self.reject(
                step,
                change,
                "deemed_refusal".to_owned(),
                format!(
                    "no decision by the due time, which counts as a refusal: {}",
                    silence.legal_basis
                ),
            ),
        }
    }

    /// Gives the case its one apology and new date, after every check the decree and the
    /// workflow ask for.
    pub fn extend(
        &self,
        wf: &Workflow,
        change: &mut Change,
        ask: &ExtensionRequest,
    ) -> Result<(), ExtensionError> {
        let case = &change.case;
        if case.status != CaseStatus::Running {
            return Err(ExtensionError::NotRunning(case.status.as_str()));
        }
        if let Some(done) = &case.deadlines.extension {
            return Err(ExtensionError::AlreadyExtended {
                at: done.at,
                due: done.due,
            });
        }
        let (due, terms) = match &ask.step {
            Some(id) => {
                let s = &case.steps[id];
                if s.status.is_final() || s.status == StepStatus::Pending {
                    return Err(ExtensionError::StepNotOpen {
                        step: id.clone(),
                        status: s.status.as_str(),
                    });
                }
                if let Some((Party::Agency, Some(agency))) = &ask.party
                    && *agency != s.agency
                {
                    return Err(ExtensionError::OtherAgency {
                        step: id.clone(),
                        agency: s.agency.clone(),
                    });
                }
                let terms = wf.step(id).map(|d| &d.consequences);
                (s.due_at, terms.unwrap_or(&wf.consequences))
            }
            None => (case.due_at, &wf.consequences),
        };
        if let Some((party, _)) = &ask.party
            && !terms.extension.granted_by.contains(party)
        {
            let allowed: Vec<&str> = terms
                .extension
                .granted_by
                .iter()
                .map(|p| p.as_str())
                .collect();
            return Err(ExtensionError::NotAllowed {
                party: party.as_str(),
                allowed: format!("{} and admins", allowed.join(", ")),
            });
        }
        let whose = ask
            .step
            .as_ref()
            .map_or("the case".to_owned(), |s| format!("step `{s}`"));
        let due = due.ok_or(ExtensionError::NoDueTime(whose))?;
        let last_day = due_day(due);
        let today = change.now.to_zoned(vietnam_time()).date();
        if today >= last_day {
            return Err(ExtensionError::NoticeTooLate {
                due_day: last_day,
                today,
            });
        }
        if ask.until <= last_day {
            return Err(ExtensionError::NotLater {
                until: ask.until,
                due_day: last_day,
            });
        }
        if let Some(at_most) = terms.extension.at_most {
            let limit = self
                .calendar
                .after_due(due, at_most)
                .map(due_day)
                .map_err(ExtensionError::Calendar)?;
            if ask.until > limit {
                return Err(ExtensionError::TooFar {
                    until: ask.until,
                    at_most,
                    due_day: last_day,
                    limit,
                });
            }
        }
        let new_due = close_of(ask.until).map_err(ExtensionError::Calendar)?;
        // A return date is a day the office is open; one outside the calendar's years is the
        // granter's mistake to correct now, not a reminder's to trip on later.
        if !self
            .calendar
            .is_working_day(ask.until)
            .map_err(ExtensionError::Calendar)?
        {
            return Err(ExtensionError::NotWorkingDay(ask.until));
        }
        let terms = terms.clone();
        if let Some(id) = &ask.step {
            change.step_mut(id).due_at = Some(new_due);
            self.schedule_due(change, Some(id), new_due, &terms);
        }
        let case_due = change.case.due_at;
        let mut case_due_before = None;
        // A step's new date moves the case's due time when it is later, unless the case's day
        // has already come: then the case is late whatever the step's apology says.
        let case_in_time = case_due.is_some_and(|d| today < due_day(d) && d < new_due);
        if ask.step.is_none() || case_in_time {
            if ask.step.is_some() {
                case_due_before = case_due;
            }
            change.case.due_at = Some(new_due);
            let case_terms = wf.consequences.clone();
            self.schedule_due(change, None, new_due, &case_terms);
        }
        change.case.deadlines.extension = Some(Extension {
            step: ask.step.clone(),
            reason_code: ask.reason_code.clone(),
            reason: ask.reason.clone(),
            by: ask.by.clone(),
            at: change.now,
            previous_due: due,
            due: new_due,
            case_due_before,
        });
        change.event(EventKind::Extended {
            step: ask.step.clone(),
            reason_code: ask.reason_code.clone(),
            reason: ask.reason.clone(),
            by: ask.by.clone(),
            previous_due: due,
            due_at: new_due,
        });
        Ok(())
    }
}
