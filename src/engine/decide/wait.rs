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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Instant;

    use jiff::Timestamp;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::adapters::http::Reply;
    use crate::calendar::Calendar;
    use crate::case::inbox::Expect;
    use crate::case::{Case, CaseId, CaseStatus, StepState};
    use crate::circuits::Circuits;
    use crate::workflow::definition::Definitions;

    const DECEASED: &str = "001068777888";

    /// Tuesday 1 December 2026, 09:00 in Hanoi.
    fn now() -> Timestamp {
        "2026-12-01T02:00:00Z".parse().unwrap()
    }

    fn decider() -> Decider {
        let agencies = [
            ("civil-status", "http://cs.test"),
            ("police", "http://police.test"),
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

    /// The shipped death chain with its deregistration waiting for the hospital's
    /// certificate, as version 4.
    fn waiting_death() -> Arc<Workflow> {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        let dir = std::env::temp_dir().join(format!("civicflow-wait-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let v3 = std::fs::read_to_string(shipped.join("death-registration-v3.yaml")).unwrap();
        let v4 = v3.replace("version: 3\n", "version: 4\n").replace(
            "    needs: [death]\n    with:\n      personal_id: ${ .input.deceased.personal_id }",
            "    needs: [death]
    wait_for:
      type: vn.gov.moh.death.certified.v1
      sources: [\"urn:vn:moh:hospital:\"]
      match: { from: \"${ .data.deceased.personal_id }\", expect: \"${ .input.deceased.personal_id }\" }
      within: 2 working days
    with:
      personal_id: ${ .event.data.deceased.personal_id }",
        );
        std::fs::write(dir.join("death-v4.yaml"), v4).unwrap();
        let defs = Definitions::load(&[shipped.join("adapters"), dir.clone()]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        defs.workflow("death-registration", Some(4)).unwrap()
    }

    fn certificate(id: &str, deceased: &str) -> CloudEvent {
        CloudEvent::from_json(json!({
            "specversion": "1.0", "id": id, "source": "urn:vn:moh:hospital:bach-mai",
            "type": "vn.gov.moh.death.certified.v1",
            "data": {"certificate_number": id, "deceased": {"personal_id": deceased}}
        }))
        .unwrap()
    }

    /// A death case as the engine starts it (its wait's expected value from the input).
    fn started(d: &Decider, wf: &Workflow) -> Change {
        let input = json!({"deceased": {"personal_id": DECEASED, "full_name": "Đỗ Văn Khải",
            "date_of_death": "2026-11-30", "place_of_death": "Hà Nội"},
            "requester_personal_id": "001190123456", "dossier_number": "D-1",
            "death_notice_number": "GBT-1",
            "last_address": {"commune_code": "00004", "detail": "5 Kim Mã"},
            "funeral_allowance": {"requested": false}});
        let mut case = Case {
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
                    let state = StepState::new(&s.adapter.reference, &s.adapter.agency);
                    (s.id.clone(), state)
                })
                .collect(),
            incidents: Vec::new(),
            timers: BTreeMap::new(),
            next_seq: 0,
            tallies: Vec::new(),
            deadlines: Default::default(),
            origin: None,
            inbox: Default::default(),
            traceparent: None,
            rev: 0,
        };
        case.inbox.expects.insert(
            "deregistration".into(),
            Expect {
                event_type: "vn.gov.moh.death.certified.v1".into(),
                value: DECEASED.into(),
            },
        );
        let mut change = Change::new(case, None, now(), Instant::now());
        d.progress(wf, &mut change);
        change
    }

    fn next(change: Change, secs: i64) -> (Change, Vec<crate::engine::change::Call>) {
        let mut case = change.case;
        case.rev += 1;
        let rev = case.rev;
        let at = now() + jiff::SignedDuration::from_secs(secs);
        (
            Change::new(case, Some(rev), at, Instant::now()),
            change.calls,
        )
    }

    /// The civil-status office registers the death.
    fn registered(d: &Decider, wf: &Workflow, change: Change) -> Change {
        let (mut change, calls) = next(change, 1);
        let body = json!({"death_extract_number": "TT-1", "registration_number": "9/2026",
            "registered_on": "2026-12-01"});
        let reply = Reply::answered(201, Map::new(), body, None);
        d.apply_reply(wf.step("death").unwrap(), &mut change, &calls[0], &reply);
        d.progress(wf, &mut change);
        change
    }

    #[test]
    fn an_early_event_is_kept_once_and_taken_when_its_step_waits() {
        let (d, wf) = (decider(), waiting_death());
        let change = started(&d, &wf);
        assert_eq!(
            change.case.steps["deregistration"].status,
            StepStatus::Pending
        );
        let (mut change, calls) = next(change, 0);
        let certified = certificate("GBT-1", DECEASED);
        assert_eq!(
            d.receive_event(&wf, &mut change, certified.clone()),
            Action::Kept
        );
        assert_eq!(change.case.inbox.kept.len(), 1);
        assert!(change.case.timers.contains_key("inbox"));
        // The same event again changes nothing; another for no step of it is noted.
        let events = change.tx.events.len();
        assert_eq!(d.receive_event(&wf, &mut change, certified), Action::Kept);
        assert_eq!(change.tx.events.len(), events);
        let other = certificate("GBT-2", "001075111222");
        assert_eq!(
            d.receive_event(&wf, &mut change, other.clone()),
            Action::Noted
        );
        assert_eq!(d.receive_event(&wf, &mut change, other), Action::Noted);
        assert_eq!(change.case.inbox.noted.len(), 1);
        change.calls = calls;
        let change = registered(&d, &wf, change);
        let s = &change.case.steps["deregistration"];
        assert_eq!(s.status, StepStatus::Calling, "{s:?}");
        assert_eq!(s.input.as_ref().unwrap()["personal_id"], DECEASED);
        assert!(change.case.inbox.kept.is_empty());
        assert!(!change.case.timers.contains_key("inbox"));
        assert_eq!(change.case.inbox.taken["deregistration"].event.id, "GBT-1");
        assert!(!change.case.inbox.expects.contains_key("deregistration"));
    }

    #[test]
    fn a_waiting_step_has_a_due_time_and_runs_when_its_event_comes() {
        let (d, wf) = (decider(), waiting_death());
        let change = registered(&d, &wf, started(&d, &wf));
        let s = &change.case.steps["deregistration"];
        assert_eq!(s.status, StepStatus::AwaitingEvent);
        // Two working days from Tuesday 1 December: the end of Thursday 3 December.
        assert_eq!(
            s.due_at,
            Some("2026-12-03T17:00:00Z".parse::<Timestamp>().unwrap())
        );
        assert!(change.case.timers.contains_key("deadline/deregistration"));
        let entries: Vec<String> = change
            .case
            .index_entries()
            .into_iter()
            .filter(|e| e.name == crate::case::index::AWAITS)
            .map(|e| e.value)
            .collect();
        assert_eq!(
            entries,
            [format!("vn.gov.moh.death.certified.v1 {DECEASED}")]
        );
        let (mut change, _) = next(change, 60);
        // Another death's certificate is not this step's.
        let other = certificate("GBT-2", "001075111222");
        assert_eq!(d.receive_event(&wf, &mut change, other), Action::Noted);
        assert_eq!(
            change.case.steps["deregistration"].status,
            StepStatus::AwaitingEvent
        );
        let taken = d.receive_event(&wf, &mut change, certificate("GBT-1", DECEASED));
        assert_eq!(taken, Action::Taken);
        let s = &change.case.steps["deregistration"];
        assert_eq!(s.status, StepStatus::Calling);
        assert_eq!(change.calls.len(), 1);
        assert_eq!(
            change.calls[0].url,
            "http://police.test/v1/residence-deregistrations"
        );
        let body: &Value = change.calls[0].body.as_ref().unwrap();
        assert_eq!(body["personal_id"], DECEASED);
        assert!(
            change
                .case
                .index_entries()
                .iter()
                .all(|e| e.name != crate::case::index::AWAITS)
        );
    }
}
