//! A step that waits for a CloudEvent before it calls its agency (`wait_for`): it takes an
//! event the case kept for it, or waits, under its working-day time (its due time: reminders,
//! escalation and the overdue incident follow it as for any step), until the engine delivers
//! one that matches. An event that comes before its step waits is kept until its time to live.

use serde_json::Value;

use crate::case::cloud_event::Action;
use crate::case::inbox::{Kept, Taken};
use crate::case::{CloudEvent, EventKind, IncidentReason, StepStatus, TimerKind};
use crate::engine::change::Change;
use crate::workflow::deadline::Deadline;
use crate::workflow::definition::{Step, Workflow};
use crate::workflow::triggers::{WaitFor, match_value, source_taken};

use super::progress::Decider;

/// Whether `event` is what `wait` waits for, from a case expecting `expected`.
fn meets(wait: &WaitFor, event: &CloudEvent, expected: Option<&str>) -> bool {
    if wait.event_type != event.event_type || !source_taken(&wait.sources, &event.source) {
        return false;
    }
    let Some(expected) = expected else {
        return false;
    };
    wait.from
        .eval(&event.to_value())
        .ok()
        .as_ref()
        .and_then(match_value)
        .is_some_and(|v| v == expected)
}

impl Decider {
    /// Before a step with `wait_for` runs: takes an event kept for it, or makes it wait. True
    /// if it waits (the step goes no further now).
    pub(super) fn wait_if_needed(&self, step: &Step, change: &mut Change) -> bool {
        let Some(wait) = &step.wait_for else {
            return false;
        };
        if change.case.inbox.taken.contains_key(&step.id) {
            return false;
        }
        let expected = change
            .case
            .inbox
            .expects
            .get(&step.id)
            .map(|e| e.value.clone());
        let kept =
            change.case.inbox.kept.iter().position(|k| {
                k.expires_at > change.now && meets(wait, &k.event, expected.as_deref())
            });
        if let Some(i) = kept {
            let kept = change.case.inbox.kept.remove(i);
            self.take(change, &step.id, kept.event);
            reset_expiry(change);
            return false;
        }
        let now = change.now;
        let due = self.calendar.due(now, wait.within);
        {
            let s = change.step_mut(&step.id);
            s.status = StepStatus::AwaitingEvent;
            s.started_at = Some(now);
            s.due_at = due.as_ref().ok().copied();
        }
        change.event(EventKind::EventAwaited {
            step: step.id.clone(),
            event_type: wait.event_type.clone(),
            value: expected,
            due_at: due.as_ref().ok().copied(),
        });
        match due {
            Ok(at) => self.schedule_due(change, Some(&step.id), at, &step.consequences),
            Err(e) => change.note_calendar_error(Some(&step.id), &e),
        }
        true
    }

    /// A CloudEvent reached the case: a waiting step whose match it meets takes it (and runs),
    /// else the case keeps it for a step that will wait for it, else it is noted in the
    /// history (an event for the case's business key that no step waits for).
    pub fn receive_event(&self, wf: &Workflow, change: &mut Change, event: CloudEvent) -> Action {
        // The same event again (a redelivery): what it did the first time.
        let same = |e: &CloudEvent| e.source == event.source && e.id == event.id;
        if change.case.inbox.taken.values().any(|t| same(&t.event)) {
            return Action::Taken;
        }
        if change.case.inbox.kept.iter().any(|k| same(&k.event)) {
            return Action::Kept;
        }
        let key = format!("{} {}", event.source, event.id);
        if change.case.inbox.noted.contains(&key) {
            return Action::Noted;
        }
        let mut keep_for: Option<u32> = None;
        for step in &wf.steps {
            let Some(wait) = &step.wait_for else { continue };
            if change.case.inbox.taken.contains_key(&step.id) {
                continue;
            }
            let expected = change
                .case
                .inbox
                .expects
                .get(&step.id)
                .map(|e| e.value.as_str());
            if !meets(wait, &event, expected) {
                continue;
            }
            let status = change.case.steps.get(&step.id).map(|s| s.status);
            if status == Some(StepStatus::AwaitingEvent) {
                self.take(change, &step.id, event);
                change.clear_incidents_of(&step.id, |r| r == IncidentReason::DeadlineMissed);
                change.case.deadlines.escalated.remove(&step.id);
                self.start_step(step, change);
                return Action::Taken;
            }
            if status == Some(StepStatus::Pending) {
                keep_for = keep_for.max(Some(wait.keep_early));
            }
        }
        let expires_at = keep_for.and_then(|days| {
            self.calendar
                .due(change.now, Deadline::WorkingDays(days))
                .ok()
        });
        let Some(expires_at) = expires_at else {
            change.event(EventKind::EventNoted {
                source: event.source.clone(),
                id: event.id.clone(),
                event_type: event.event_type.clone(),
            });
            let noted = &mut change.case.inbox.noted;
            if noted.len() >= crate::case::inbox::MAX_NOTED {
                noted.remove(0);
            }
            noted.push(key);
            return Action::Noted;
        };
        change.event(EventKind::EventReceived {
            source: event.source.clone(),
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            step: None,
        });
        let inbox = &mut change.case.inbox;
        if inbox.kept.len() >= crate::case::inbox::MAX_KEPT {
            inbox.kept.remove(0);
        }
        inbox.kept.push(Kept {
            event,
            received_at: change.now,
            expires_at,
        });
        reset_expiry(change);
        Action::Kept
    }

    /// Kept events whose time to live passed are forgotten.
    pub(super) fn expire_kept(&self, change: &mut Change) {
        let now = change.now;
        let ids: Vec<String> = change
            .case
            .inbox
            .kept
            .iter()
            .filter(|k| k.expires_at <= now)
            .map(|k| format!("{} {}", k.event.source, k.event.id))
            .collect();
        change.case.inbox.drop_expired(now);
        if !ids.is_empty() {
            change.event(EventKind::EventsExpired { ids });
        }
        reset_expiry(change);
    }

    fn take(&self, change: &mut Change, step: &str, event: CloudEvent) {
        change.event(EventKind::EventReceived {
            source: event.source.clone(),
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            step: Some(step.to_owned()),
        });
        let at = change.now;
        change.case.inbox.expects.remove(step);
        change
            .case
            .inbox
            .taken
            .insert(step.to_owned(), Taken { event, at });
    }
}

/// The inbox's expiry timer at its earliest kept event, or none.
fn reset_expiry(change: &mut Change) {
    match change.case.inbox.next_expiry() {
        Some(at) => change.set_timer(TimerKind::InboxExpiry, at),
        None => change.clear_timer(TimerKind::InboxExpiry),
    }
}

/// The event step `id` took, as expressions read it (`.event`).
pub(super) fn taken_event(change: &Change, id: &str) -> Option<Value> {
    change.case.inbox.taken.get(id).map(|t| t.event.to_value())
}
