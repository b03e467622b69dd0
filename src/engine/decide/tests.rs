//! The decisions driven with the shipped workflows, no store, no network.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::adapters::http::Reply;
use crate::calendar::Calendar;
use crate::case::{
    Case, CaseId, CaseStatus, Event, EventKind, IncidentReason, StepStatus, Timer, TimerKind,
};
use crate::circuits::Circuits;
use crate::engine::change::{Call, Change};
use crate::workflow::definition::{Definitions, Workflow};

use super::Decider;
use super::progress::idempotency_key;

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
        xroad_client: crate::adapters::xroad::DEFAULT_CLIENT.into(),
        pseudonyms: crate::personal_data::PseudonymKey::from_bytes([1; 32]),
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
    let input: Value = serde_json::from_str(include_str!("../../../examples/birth-input.json"))
        .expect("the example input is JSON");
    let mut change = Change::new(case_of(wf, input), None, now(), Instant::now());
    d.progress(wf, &mut change);
    change
}

/// A new case of `wf` with `input`, as the engine writes it before its first step.
fn case_of(wf: &Workflow, input: Value) -> Case {
    Case {
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
                let state = crate::case::StepState::new(&s.adapter.reference, &s.adapter.agency);
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
        consents: Default::default(),
        retention: Default::default(),
        traceparent: None,
        rev: 0,
    }
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
            EventKind::Exchange { .. } => "exchange",
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
    // The exchange's basis is recorded before its first call.
    assert_eq!(kinds(&change.tx.events), ["exchange", "attempt_started"]);
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
        [
            "step_succeeded",
            "exchange",
            "attempt_started",
            "exchange",
            "attempt_started"
        ]
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

/// An extension request for the residence step of a registered birth.
fn extension(
    until: &str,
    party: Option<(crate::workflow::spec::Party, Option<&str>)>,
) -> super::ExtensionRequest {
    super::ExtensionRequest {
        step: Some("residence".into()),
        until: until.parse().unwrap(),
        reason_code: "verification".into(),
        reason: "the address is being verified".into(),
        by: "test".into(),
        party: party.map(|(p, a)| (p, a.map(str::to_owned))),
    }
}

#[test]
fn an_extension_is_checked_against_the_decree_and_the_workflow_and_moves_the_timers() {
    use super::ExtensionError;
    use crate::workflow::spec::Party;
    let (d, wf) = (decider(), birth());
    // Residence started Tuesday 1 December 2026: due at the close of Thursday 3 December, its
    // reminder at the start of Wednesday 2.
    let (mut change, _) = next(registered_birth(&d, &wf), 2);
    let due: Timestamp = "2026-12-03T17:00:00Z".parse().unwrap();
    assert_eq!(change.case.steps["residence"].due_at, Some(due));
    assert_eq!(
        change.case.timers["remind/residence"],
        "2026-12-01T17:00:00Z".parse::<Timestamp>().unwrap()
    );

    let refused = |change: &mut Change, ask| d.extend(&wf, change, &ask).unwrap_err();
    let operator = Some((Party::Operator, None));
    assert!(matches!(
        refused(&mut change, extension("2026-12-07", operator)),
        ExtensionError::NotAllowed { .. }
    ));
    let other = Some((Party::Agency, Some("civil-status")));
    assert!(matches!(
        refused(&mut change, extension("2026-12-07", other)),
        ExtensionError::OtherAgency { .. }
    ));
    let police = Some((Party::Agency, Some("police")));
    // Five working days past Thursday 3 December reach Thursday 10.
    assert_eq!(
        refused(&mut change, extension("2026-12-11", police)),
        ExtensionError::TooFar {
            until: "2026-12-11".parse().unwrap(),
            at_most: 5,
            due_day: "2026-12-03".parse().unwrap(),
            limit: "2026-12-10".parse().unwrap(),
        }
    );
    assert!(matches!(
        refused(&mut change, extension("2026-12-05", police)),
        ExtensionError::NotWorkingDay(_)
    ));
    assert!(change.tx.events.is_empty(), "a refusal records nothing");

    // On the due day itself it is too late: the dossier is reported late instead.
    let mut on_the_day = Change::new(
        change.case.clone(),
        Some(change.case.rev),
        "2026-12-03T02:00:00Z".parse().unwrap(),
        Instant::now(),
    );
    assert!(matches!(
        refused(&mut on_the_day, extension("2026-12-07", police)),
        ExtensionError::NoticeTooLate { .. }
    ));

    d.extend(&wf, &mut change, &extension("2026-12-07", police))
        .unwrap();
    let new_due: Timestamp = "2026-12-07T17:00:00Z".parse().unwrap();
    assert_eq!(change.case.steps["residence"].due_at, Some(new_due));
    assert_eq!(change.case.timers["deadline/residence"], new_due);
    // The new date's reminder: a working day before Monday 7 is Friday 4.
    assert_eq!(
        change.case.timers["remind/residence"],
        "2026-12-03T17:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(
        change
            .case
            .deadlines
            .extension
            .as_ref()
            .unwrap()
            .previous_due,
        due
    );
    assert!(matches!(
        refused(&mut change, extension("2026-12-08", police)),
        ExtensionError::AlreadyExtended { .. }
    ));
}

#[test]
fn an_overdue_step_is_escalated_to_its_agency_once_with_its_incident() {
    let (d, wf) = (decider(), birth());
    let (mut change, _) = next(registered_birth(&d, &wf), 2);
    let kind = TimerKind::StepDeadline {
        step: "residence".into(),
    };
    let timer = Timer {
        case_id: change.case.id,
        due_at: change.case.timers[&kind.id()],
        kind,
    };
    change.clear_fired(&timer);
    d.on_timer(&wf, &mut change, &timer);
    assert_eq!(
        change
            .case
            .deadlines
            .escalated
            .get("residence")
            .map(String::as_str),
        Some("agency:police")
    );
    let escalations = change
        .tx
        .events
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::Escalated { .. }))
        .count();
    assert_eq!(escalations, 1);
    assert_eq!(
        change.case.incidents[0].reason,
        IncidentReason::DeadlineMissed
    );
    assert!(
        change.case.incidents[0]
            .message
            .contains("escalated to agency:police")
    );
}

fn incomplete() -> Reply {
    reply(
        422,
        json!({"reason_code": "DOSSIER_INCOMPLETE", "message": "incomplete",
               "missing": [{"name": "mother.personal_id", "reason": "no ID"}]}),
    )
}

#[test]
fn an_incomplete_dossier_stops_the_agencys_clock_and_a_second_request_is_an_incident() {
    let (d, wf) = (decider(), birth());
    let step = wf.step("birth").unwrap();
    let (mut change, calls) = next(started(&d, &wf), 1);
    change.case.due_at = Some("2026-12-04T17:00:00Z".parse().unwrap());
    change.set_timer(TimerKind::CaseDeadline, change.case.due_at.unwrap());
    d.apply_reply(step, &mut change, &calls[0], &incomplete());
    let s = &change.case.steps["birth"];
    assert_eq!(s.status, StepStatus::AwaitingSupplement);
    assert_eq!(s.due_at, None, "the agency's clock is stopped");
    assert_eq!(change.case.due_at, None, "and so is the case's");
    assert!(!change.case.timers.contains_key("deadline/birth"));
    assert!(!change.case.timers.contains_key("deadline"));
    // Ten working days from Tuesday 1 December 2026: the close of Tuesday 15.
    let due: Timestamp = "2026-12-15T17:00:00Z".parse().unwrap();
    assert_eq!(change.case.timers["supplement/birth"], due);
    let request = &change.case.deadlines.supplements[0];
    assert_eq!((request.id.as_str(), request.number), ("birth-1", 1));
    assert_eq!(request.step_left, Some(1));
    assert_eq!(request.case_left, Some(3));

    // The agency asks again where the workflow allows one request: an operator settles it.
    let request = request.clone();
    change.case.deadlines.supplements[0].state = crate::case::RequestState::Answered;
    change.reset_step("birth", 2);
    d.rerun_supplemented(&wf, &mut change, step, &request);
    let (mut change, calls) = next(change, 2);
    assert_eq!(calls.len(), 1, "the step is sent again");
    d.apply_reply(step, &mut change, &calls[0], &incomplete());
    assert_eq!(change.case.steps["birth"].status, StepStatus::Failed);
    assert_eq!(change.case.deadlines.supplements.len(), 1);
    assert!(
        change.case.incidents[0].message.contains("may ask 1 time"),
        "{:?}",
        change.case.incidents
    );
}

/// Issue 36: a step that waits for a CloudEvent.
mod waiting {
    use super::*;
    use crate::case::CloudEvent;
    use crate::case::cloud_event::Action;
    use crate::case::inbox::Expect;

    const DECEASED: &str = "001068777888";

    /// The shipped death chain whose residence deregistration waits for the hospital's
    /// certificate (the tests' fixture, as version 4).
    fn waiting_death() -> Arc<Workflow> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let paths = [
            root.join("workflows/adapters"),
            root.join("tests/fixtures/death-registration-waiting.yaml"),
        ];
        Definitions::load(&paths)
            .unwrap()
            .workflow("death-registration", Some(4))
            .unwrap()
    }

    fn certificate(id: &str, deceased: &str) -> CloudEvent {
        CloudEvent::from_json(json!({
            "specversion": "1.0", "id": id, "source": "urn:vn:moh:hospital:bach-mai",
            "type": "vn.gov.moh.death.certified.v1",
            "data": {"certificate_number": id, "deceased": {"personal_id": deceased}}
        }))
        .unwrap()
    }

    /// A death case as the engine starts it: its wait's expected value from the input.
    fn started(d: &Decider, wf: &Workflow) -> Change {
        let input = json!({"deceased": {"personal_id": DECEASED, "full_name": "Đỗ Văn Khải",
            "date_of_death": "2026-11-30", "place_of_death": "Hà Nội"},
            "requester_personal_id": "001190123456", "dossier_number": "D-1",
            "death_notice_number": "GBT-1",
            "last_address": {"commune_code": "00004", "detail": "5 Kim Mã"},
            "funeral_allowance": {"requested": false}});
        let mut case = case_of(wf, input);
        let expect = Expect {
            event_type: "vn.gov.moh.death.certified.v1".into(),
            value: DECEASED.into(),
        };
        case.inbox.expects.insert("deregistration".into(), expect);
        let mut change = Change::new(case, None, now(), Instant::now());
        d.progress(wf, &mut change);
        change
    }

    /// The civil-status office registers the death.
    fn registered(d: &Decider, wf: &Workflow, change: Change) -> Change {
        let (mut change, calls) = next(change, 1);
        let body = json!({"death_extract_number": "TT-1", "registration_number": "9/2026",
            "registered_on": "2026-12-01"});
        d.apply_reply(
            wf.step("death").unwrap(),
            &mut change,
            &calls[0],
            &reply(201, body),
        );
        d.progress(wf, &mut change);
        change
    }

    fn awaits(change: &Change) -> Vec<String> {
        change
            .case
            .index_entries()
            .into_iter()
            .filter(|e| e.name == crate::case::index::AWAITS)
            .map(|e| e.value)
            .collect()
    }

    #[test]
    fn an_early_event_is_kept_once_and_taken_when_its_step_waits() {
        let (d, wf) = (decider(), waiting_death());
        let change = started(&d, &wf);
        assert_eq!(
            change.case.steps["deregistration"].status,
            StepStatus::Pending
        );
        assert_eq!(
            awaits(&change),
            [format!("vn.gov.moh.death.certified.v1 {DECEASED}")]
        );
        let (mut change, calls) = next(change, 0);
        let certified = certificate("GBT-1", DECEASED);
        assert_eq!(
            d.receive_event(&wf, &mut change, certified.clone()),
            Action::Kept
        );
        assert_eq!(change.case.inbox.kept.len(), 1);
        assert!(change.case.timers.contains_key("inbox"));
        // The same event again changes nothing; another, for no step of it, is noted once.
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
        assert!(awaits(&change).is_empty());
    }

    #[test]
    fn a_waiting_step_has_a_due_time_and_runs_when_its_event_comes() {
        let (d, wf) = (decider(), waiting_death());
        let change = registered(&d, &wf, started(&d, &wf));
        let s = &change.case.steps["deregistration"];
        assert_eq!(s.status, StepStatus::AwaitingEvent);
        // Two working days from Tuesday 1 December: the end of Thursday 3 December.
        assert_eq!(s.due_at, Some("2026-12-03T17:00:00Z".parse().unwrap()));
        assert!(change.case.timers.contains_key("deadline/deregistration"));
        let (mut change, _) = next(change, 60);
        let other = certificate("GBT-2", "001075111222");
        assert_eq!(d.receive_event(&wf, &mut change, other), Action::Noted);
        assert_eq!(
            change.case.steps["deregistration"].status,
            StepStatus::AwaitingEvent
        );
        let taken = d.receive_event(&wf, &mut change, certificate("GBT-1", DECEASED));
        assert_eq!(taken, Action::Taken);
        assert_eq!(
            change.case.steps["deregistration"].status,
            StepStatus::Calling
        );
        assert_eq!(change.calls.len(), 1);
        let call = &change.calls[0];
        assert_eq!(call.url, "http://police.test/v1/residence-deregistrations");
        assert_eq!(call.body.as_ref().unwrap()["personal_id"], DECEASED);
        assert!(awaits(&change).is_empty());
    }
}
