//! A step whose exchange's basis is consent: before each of its calls the case's copy of the
//! consent it needs is read; without a record that allows it the step waits, `awaiting_consent`,
//! under the wait's working-day time, and its agency gets no call. A consent recorded later
//! resumes it; a withdrawal makes every later call of the step wait again. Every exchange's
//! basis is written in the history before its first call.

use jiff::SignedDuration;

use crate::case::consents::Held;
use crate::case::{EventKind, IncidentReason, StepStatus, TimerKind};
use crate::engine::change::Change;
use crate::personal_data::ConsentRecord;
use crate::workflow::definition::{Step, Workflow};
use crate::workflow::exchange::ConsentNeed;

use super::progress::Decider;

/// How often a case with a step waiting for consent reads the consent records again by itself.
/// A consent reaches its cases as soon as it is recorded; this is only what keeps one recorded
/// just before its node stopped from being missed.
pub const CONSENT_RECHECK: SignedDuration = SignedDuration::from_hours(1);

impl Decider {
    /// Whether attempt `n` of `step` may call its agency now; if not, the step waits for
    /// consent. The exchange's basis is recorded before the step's first call, and before the
    /// first after a wait.
    pub(super) fn exchange_allowed(&self, step: &Step, change: &mut Change, n: u32) -> bool {
        let Some(exchange) = &step.exchange else {
            return true;
        };
        let waited = change
            .case
            .steps
            .get(&step.id)
            .is_some_and(|s| s.status == StepStatus::AwaitingConsent);
        let consent_id = match &exchange.consent {
            None => None,
            Some(need) => match change.case.consents.allowing(&step.id, need.given_as) {
                Some(held) => Some(held.id.clone()),
                None => {
                    self.await_consent(step, need, change);
                    return false;
                }
            },
        };
        if n == 1 || waited {
            change.event(EventKind::Exchange {
                step: step.id.clone(),
                purpose: exchange.purpose.clone(),
                lawful_basis: exchange.basis,
                law: exchange.law.clone(),
                consent_id,
                personal_data: exchange.personal_data.clone(),
            });
        }
        true
    }

    fn await_consent(&self, step: &Step, need: &ConsentNeed, change: &mut Change) {
        let now = change.now;
        if change
            .case
            .steps
            .get(&step.id)
            .is_some_and(|s| s.status == StepStatus::AwaitingConsent)
        {
            return;
        }
        let due = self.calendar.due(now, need.within);
        {
            let s = change.step_mut(&step.id);
            s.status = StepStatus::AwaitingConsent;
            s.held_since = None;
            s.started_at.get_or_insert(now);
            s.due_at = due.as_ref().ok().copied();
        }
        change.event(EventKind::ConsentAwaited {
            step: step.id.clone(),
            agreement: need.agreement.clone(),
            due_at: due.as_ref().ok().copied(),
        });
        change.set_timer(TimerKind::ConsentCheck, now + CONSENT_RECHECK);
        match due {
            Ok(at) => self.schedule_due(change, Some(&step.id), at, &step.consequences),
            Err(e) => change.note_calendar_error(Some(&step.id), &e),
        }
    }

    /// A consent the case needs was recorded, or withdrawn: the case's copy follows it, and
    /// the steps that waited for it call their agencies. False if it changes nothing here (the
    /// case needs no such consent, or has it as it is).
    pub fn consent_changed(
        &self,
        wf: &Workflow,
        change: &mut Change,
        record: &ConsentRecord,
    ) -> bool {
        let key = record.key();
        if !change.case.consents.needs.values().any(|k| *k == key) {
            return false;
        }
        let held = change.case.consents.held.get(&key);
        if !record.is_given() {
            if held.is_none_or(|h| h.id != record.id) {
                return false;
            }
            change.case.consents.held.remove(&key);
            change.event(EventKind::ConsentWithdrawn {
                agreement: record.agreement.clone(),
                consent_id: record.id.clone(),
            });
            return true;
        }
        let now_held = Held {
            id: record.id.clone(),
            given_as: record.given_as,
        };
        if held == Some(&now_held) {
            return false;
        }
        change.case.consents.held.insert(key.clone(), now_held);
        change.event(EventKind::ConsentGiven {
            agreement: record.agreement.clone(),
            consent_id: record.id.clone(),
        });
        for step in &wf.steps {
            let waiting = change.case.consents.needs.get(&step.id) == Some(&key)
                && change
                    .case
                    .steps
                    .get(&step.id)
                    .is_some_and(|s| s.status == StepStatus::AwaitingConsent);
            let allowed = step
                .exchange
                .as_ref()
                .and_then(|e| e.consent.as_ref())
                .is_some_and(|need| {
                    change
                        .case
                        .consents
                        .allowing(&step.id, need.given_as)
                        .is_some()
                });
            if waiting && allowed {
                self.resume_after_consent(step, change);
            }
        }
        true
    }

    /// The step's agency gets the dossier now: its statutory time (and the on-time table's)
    /// counts from here, as the agency had nothing before.
    fn resume_after_consent(&self, step: &Step, change: &mut Change) {
        change.clear_incidents_of(&step.id, |r| r == IncidentReason::DeadlineMissed);
        change.case.deadlines.escalated.remove(&step.id);
        self.start_clock(step, change);
        let n = change.case.steps[&step.id].attempt + 1;
        self.attempt_or_hold(step, change, n);
    }
}
