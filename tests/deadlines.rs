//! Statutory deadlines: a callback that never comes becomes an incident when the step's due time
//! passes, without anyone waiting days. The engine runs in this process with a clock the test
//! skips forward; the HTTP API and the mock agencies are the real ones.

mod support;

use civicflow::case::{CaseId, Timer, TimerKind};
use civicflow::store::{Store, Transaction};
use jiff::SignedDuration;
use serde_json::{Value, json};
use support::{InProcess, MANUAL_HEAD, birth_input, fetch, grant_consent};

#[tokio::test]
async fn a_callback_that_never_comes_opens_a_deadline_incident_and_a_late_one_still_counts() {
    let harness = InProcess::start().await;
    let police = harness.agencies["police"].clone();
    let mut input = birth_input("GCS-LATE");
    input["household_head_personal_id"] = json!(MANUAL_HEAD);
    let id = harness.start_birth(input).await;
    let case = harness
        .wait_for(&id, |c| {
            c["steps"]["residence"]["status"] == "awaiting_callback"
                && c["steps"]["health_insurance"]["status"] == "succeeded"
        })
        .await;
    assert_eq!(
        case["steps"]["residence"]["status"], "awaiting_callback",
        "{case:#}"
    );
    assert_eq!(
        case["steps"]["health_insurance"]["status"], "succeeded",
        "{case:#}"
    );
    assert!(case["incidents"].as_array().unwrap().is_empty(), "{case:#}");
    let due = case["steps"]["residence"]["due_at"]
        .as_str()
        .unwrap()
        .to_owned();

    // Two working days for the police, three for the whole case: skip well past both.
    harness.clock.skip(SignedDuration::from_hours(24 * 10));
    let case = harness
        .wait_for(&id, |c| c["incidents"].as_array().unwrap().len() == 2)
        .await;
    let incidents = case["incidents"].as_array().unwrap();
    let reasons: Vec<(&Value, &Value)> = incidents
        .iter()
        .map(|i| (&i["step"], &i["reason"]))
        .collect();
    assert!(
        reasons.contains(&(&json!("residence"), &json!("deadline_missed"))),
        "{case:#}"
    );
    assert!(
        reasons.contains(&(&Value::Null, &json!("deadline_missed"))),
        "{case:#}"
    );
    let message = incidents.iter().find(|i| i["step"] == "residence").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(message.contains(&due), "{message} should name {due}");
    // Still waiting: a deadline is a matter for a person, not a reason to drop the answer.
    assert_eq!(case["steps"]["residence"]["status"], "awaiting_callback");

    // The household head consents at last; the police call back and the case completes.
    grant_consent(&harness.http, &police).await;
    let case = harness.wait_for(&id, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["steps"]["residence"]["status"], "succeeded");
    // The answer closed the incidents; the history keeps that the deadlines were missed.
    assert!(case["incidents"].as_array().unwrap().is_empty(), "{case:#}");
    let history: Value = fetch(
        &harness.http,
        &format!("{}/v1/cases/{id}/history", harness.url),
    )
    .await;
    let missed = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "incident_opened" && e["reason"] == "deadline_missed")
        .count();
    assert_eq!(missed, 2, "{history:#}");
    // The history says the incidents closed, and what the callback brought.
    let events = history["events"].as_array().unwrap();
    let closed = events
        .iter()
        .filter(|e| e["type"] == "incident_closed" && e["reason"] == "deadline_missed")
        .count();
    assert_eq!(closed, 2, "{history:#}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "callback_received" && e["result"] == "succeeded"),
        "{history:#}"
    );
}

#[tokio::test]
async fn a_timer_whose_case_or_step_is_gone_is_cleared_not_fired_for_ever() {
    let harness = InProcess::start().await;
    let id = harness.start_birth(birth_input("GCS-GONE")).await;
    let case = harness.wait_for(&id, |c| c["status"] != "running").await;
    let history = format!("{}/v1/cases/{id}/history", harness.url);
    let before = fetch(&harness.http, &history).await;
    let store = harness.engine.store();
    let now = harness.clock.now();
    let timer = |case_id, kind| Timer {
        case_id,
        due_at: now,
        kind,
    };
    let gone = [
        timer(
            CaseId::now_v7(),
            TimerKind::Retry {
                step: "birth".into(),
            },
        ),
        timer(
            case["id"].as_str().unwrap().parse().unwrap(),
            TimerKind::Poll {
                step: "gone".into(),
            },
        ),
    ];
    let tx = Transaction {
        set_timers: gone.to_vec(),
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let due = store
            .due_timers(now + SignedDuration::from_hours(1), 100)
            .await
            .unwrap();
        if !due.iter().any(|t| gone.contains(t)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "still due after a minute: {due:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The case itself was not touched by a timer of a step it does not have.
    assert_eq!(fetch(&harness.http, &history).await, before);
}

/// Issue 33: after downtime, thousands of timers are due at once. A node fires at most a
/// bounded number at a time and claims no more than it can start, so that its claims do not
/// lapse unfired; every timer is still handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_due_timers_is_fired_a_bounded_number_at_a_time() {
    const DUE: usize = 3000;
    let harness = InProcess::start().await;
    let store = harness.engine.store();
    let now = harness.clock.now();
    let backlog: Vec<Timer> = (0..DUE)
        .map(|_| Timer {
            case_id: CaseId::now_v7(),
            due_at: now,
            kind: TimerKind::Retry {
                step: "birth".into(),
            },
        })
        .collect();
    let tx = Transaction {
        set_timers: backlog,
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    let mut most = 0;
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        most = most.max(harness.engine.timers_firing());
        let due = store
            .due_timers(now + SignedDuration::from_hours(1), 1)
            .await
            .unwrap();
        if due.is_empty() && harness.engine.timers_firing() == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "timers still due");
        tokio::task::yield_now().await;
    }
    assert!(most > 0, "no timer was seen firing");
    assert!(most <= 256, "{most} timers fired at once");
}
