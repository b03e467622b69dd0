//! An incomplete dossier, as the decree has it (Decree 61/2018, Art. 15(3), 17, 19(4)): the
//! agency says once and completely what is missing; the agency's clock stops while the citizen
//! supplements; the step runs again with the completed dossier and its clock started again; no
//! answer by the citizen's deadline is a refusal, `not_supplemented` (form 03).

use jiff::Timestamp;

use crate::case::{
    EventKind, IncidentReason, Missing, RequestState, StepStatus, SupplementRequest, TimerKind,
};
use crate::engine::change::Change;
use crate::workflow::deadline::Deadline;
use crate::workflow::definition::{Step, Workflow};
use crate::workflow::spec::SupplementClock;

use super::progress::Decider;

impl Decider {
    /// The agency found the dossier incomplete: the citizen is asked, by a deadline, and the
    /// agency's clock (the step's, the case's) stops meanwhile.
    pub(super) fn ask_supplement(&self, step: &Step, change: &mut Change, missing: Vec<Missing>) {
        let id = step.id.as_str();
        let asked = change
            .case
            .deadlines
            .supplements
            .iter()
            .filter(|r| r.step == id)
            .count();
        let names: Vec<&str> = missing.iter().map(|m| m.name.as_str()).collect();
        let allowed = step.supplement.max_requests;
        if asked >= allowed as usize {
            let message = format!(
                "the agency asks for a supplement again ({}), but step `{id}` may ask {allowed} time(s): the decree asks for what is missing once, completely; settle it with the agency",
                names.join(", ")
            );
            self.fail(change, id, IncidentReason::UnexpectedReply, message);
            return;
        }
        let now = change.now;
        let due = match self
            .calendar
            .due(now, Deadline::WorkingDays(step.supplement.within))
        {
            Ok(due) => due,
            Err(e) => {
                change.note_calendar_error(Some(id), &e);
                return;
            }
        };
        // Counted to the due time's last day, not the midnight after it.
        let left = |until: Option<Timestamp>| {
            until.filter(|d| *d > now).and_then(|d| {
                let last = d - jiff::SignedDuration::from_nanos(1);
                self.calendar.working_days_between(now, last).ok()
            })
        };
        let step_left = left(change.case.steps[id].due_at);
        // The case's clock stops too, unless its time is already up or another step stopped it.
        let case_left = left(change.case.due_at);
        if case_left.is_some() {
            change.case.due_at = None;
            change.clear_timer(TimerKind::CaseDeadline);
            change.clear_timer(TimerKind::CaseReminder);
        }
        for kind in [
            TimerKind::Retry { step: id.into() },
            TimerKind::Poll { step: id.into() },
            TimerKind::StepDeadline { step: id.into() },
            TimerKind::Reminder { step: id.into() },
        ] {
            change.clear_timer(kind);
        }
        change.clear_incidents_of(id, |r| r == IncidentReason::DeadlineMissed);
        let s = change.step_mut(id);
        s.status = StepStatus::AwaitingSupplement;
        s.due_at = None;
        s.error = None;
        let number = asked as u32 + 1;
        let request_id = format!("{id}-{number}");
        change.case.deadlines.supplements.push(SupplementRequest {
            id: request_id.clone(),
            step: id.to_owned(),
            number,
            missing: missing.clone(),
            requested_at: now,
            due_at: due,
            state: RequestState::Open,
            answered_at: None,
            step_left,
            case_left,
        });
        change.set_timer(TimerKind::SupplementDue { step: id.into() }, due);
        change.event(EventKind::SupplementRequested {
            step: id.to_owned(),
            request_id,
            number,
            missing,
            due_at: due,
        });
    }

    /// The citizen's deadline passed: the step is refused, `not_supplemented`, and the case
    /// goes on (or ends) as the workflow says of a refusal.
    pub(super) fn supplement_due(&self, wf: &Workflow, change: &mut Change, step: &str) {
        let Some(def) = wf.step(step) else {
            return;
        };
        if change.case.steps.get(step).map(|s| s.status) != Some(StepStatus::AwaitingSupplement) {
            return;
        }
        let Some(open) = change.case.deadlines.open_request(step).cloned() else {
            return;
        };
        let now = change.now;
        change
            .case
            .deadlines
            .settle_open_request(step, RequestState::Expired, now);
        change.event(EventKind::SupplementExpired {
            step: step.to_owned(),
            request_id: open.id.clone(),
        });
        self.restart_case_clock(wf, change, &open, SupplementClock::Resume);
        let names: Vec<&str> = open.missing.iter().map(|m| m.name.as_str()).collect();
        let message = format!(
            "the dossier was not supplemented by {} ({}; request {}): refused as not supplemented",
            crate::calendar::due_day(open.due_at),
            names.join(", "),
            open.id
        );
        self.reject(def, change, "not_supplemented".to_owned(), message);
    }

    /// The step runs again with the completed dossier (its request answered, its revision
    /// moved on by the caller): its clock, and the case's, restart from zero or resume.
    pub(in crate::engine) fn rerun_supplemented(
        &self,
        wf: &Workflow,
        change: &mut Change,
        step: &Step,
        request: &SupplementRequest,
    ) {
        let clock = step.supplement.clock;
        self.start_step(step, change);
        let id = step.id.as_str();
        if clock == SupplementClock::Resume
            && let Some(n) = request.step_left
            && change.case.steps[id].due_at.is_some()
        {
            match self.calendar.due(change.now, Deadline::WorkingDays(n)) {
                Ok(due) => {
                    change.step_mut(id).due_at = Some(due);
                    self.schedule_due(change, Some(id), due, &step.consequences);
                }
                Err(e) => change.note_calendar_error(Some(id), &e),
            }
        }
        self.restart_case_clock(wf, change, request, clock);
    }

    /// Gives the case back the clock a request stopped, once no step waits for the citizen:
    /// from zero (`restart`) or with the working days it had left (`resume`).
    fn restart_case_clock(
        &self,
        wf: &Workflow,
        change: &mut Change,
        request: &SupplementRequest,
        clock: SupplementClock,
    ) {
        let waiting = change
            .case
            .steps
            .iter()
            .any(|(id, s)| *id != request.step && s.status == StepStatus::AwaitingSupplement);
        if waiting || change.case.due_at.is_some() {
            return;
        }
        let deadline = match (clock, request.case_left, wf.deadline) {
            (SupplementClock::Resume, Some(n), _) => Deadline::WorkingDays(n),
            (SupplementClock::Restart, _, Some(d)) => d,
            _ => return,
        };
        match self.calendar.due(change.now, deadline) {
            Ok(due) => {
                change.case.due_at = Some(due);
                self.schedule_due(change, None, due, &wf.consequences);
            }
            Err(e) => change.note_calendar_error(None, &e),
        }
    }
}
