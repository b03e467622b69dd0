//! Statutory deadlines: a callback that never comes becomes an incident when the step's due time
//! passes, without anyone waiting days. The engine runs in this process with a clock the test
//! skips forward; the HTTP API and the mock agencies are the real ones.

mod support;

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
