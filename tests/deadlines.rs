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

/// The birth chain with a police step of six working days, reminded five before: started on
/// Wednesday 14 April 2027 at 10:00 in Hanoi, the step is due at the close of Friday 23 April
/// (Friday 16 April is Hung Kings' day), and five working days before that is Thursday 15.
fn six_day_residence() -> std::path::PathBuf {
    support::workflows_copy(|name, text| {
        if name != "birth-registration.yaml" {
            return text;
        }
        text.replace("deadline: 3 working days", "deadline: 15 working days")
            .replace(
                "    remind_before: 1 working day",
                "    deadline: 6 working days\n    remind_before: 5 working days",
            )
    })
}

async fn feed_kinds<S: Store>(store: &S, case_id: &str) -> Vec<(String, Option<String>, Value)> {
    store
        .feed(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, n)| n.case_id.to_string() == case_id)
        .map(|(_, n)| (n.kind, n.step, n.data))
        .collect()
}

fn events_of(history: &Value, kind: &str) -> Vec<Value> {
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

/// Issue 34: a reminder on the right working day, once; one apology and new date, a second
/// refused; the escalation to the police's supervisors when even the new date passes, once.
async fn reminders_extension_and_escalation<S: Store + Clone>(h: InProcess<S>) {
    let (status, _) = post(
        &h,
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/hook"}),
    )
    .await;
    assert_eq!(status, 201);
    h.skip_to("2027-04-14T03:00:00Z");
    let mut input = birth_input("GCS-REMIND");
    input["household_head_personal_id"] = json!(MANUAL_HEAD);
    let id = h.start_birth(input).await;
    let case = h
        .wait_for(&id, |c| {
            c["steps"]["residence"]["status"] == "awaiting_callback" || c["status"] != "running"
        })
        .await;
    assert_eq!(
        case["steps"]["residence"]["due_at"], "2027-04-23T17:00:00Z",
        "{case:#}"
    );
    // Born three days before today's real date (the mock registry checks it), registered in
    // April 2027: more than 60 days later.
    assert_eq!(case["life_event"]["tier"], "late", "{case:#}");
    let history_url = format!("{}/v1/cases/{id}/history", h.url);

    // Not before its time: the evening before Thursday 15 April, nothing.
    h.skip_to("2027-04-14T16:59:00Z");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let history = fetch(&h.http, &history_url).await;
    assert!(events_of(&history, "reminded").is_empty(), "{history:#}");

    // Thursday 15 April, 00:00 in Hanoi: the reminder, once.
    h.skip_to("2027-04-14T17:00:01Z");
    let mut reminded = Vec::new();
    for _ in 0..100 {
        reminded = events_of(&fetch(&h.http, &history_url).await, "reminded");
        if !reminded.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reminded.len(), 1, "{reminded:?}");
    assert_eq!(reminded[0]["step"], "residence");
    assert_eq!(reminded[0]["due_at"], "2027-04-23T17:00:00Z");

    // Monday 19 April: the police apologise and give a new date, Thursday 29 April. Five
    // working days from the 23rd reach Tuesday 4 May (30 April and 3 May are holidays), so
    // the 5th is too far.
    h.skip_to("2027-04-19T03:00:00Z");
    let police = h
        .token(civicflow::auth::Role::Agency("police".into()), "police")
        .await;
    let police = support::client_with(&police);
    let extend = |until: &str| {
        json!({"step": "residence", "until": until, "reason_code": "verification",
               "reason": "the household's address is being verified on site"})
    };
    let url = format!("{}/v1/cases/{id}/extension", h.url);
    let too_far = police
        .post(&url)
        .json(&extend("2027-05-05"))
        .send()
        .await
        .unwrap();
    assert_eq!(too_far.status(), 422);
    let body: Value = too_far.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2027-05-04"),
        "{body:#}"
    );
    let holiday = police
        .post(&url)
        .json(&extend("2027-04-30"))
        .send()
        .await
        .unwrap();
    assert_eq!(holiday.status(), 422);
    let granted = police
        .post(&url)
        .json(&extend("2027-04-29"))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    let case: Value = granted.json().await.unwrap();
    assert_eq!(case["steps"]["residence"]["due_at"], "2027-04-29T17:00:00Z");
    assert_eq!(case["extension"]["previous_due"], "2027-04-23T17:00:00Z");
    assert_eq!(
        case["extension"]["reason"],
        "the household's address is being verified on site"
    );
    // A new date is given once.
    let again = police
        .post(&url)
        .json(&extend("2027-04-28"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "already_extended", "{body:#}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("once"),
        "{body:#}"
    );

    // The new date passes: escalated to the police's supervisors, once, and listed as theirs.
    h.skip_to("2027-04-29T17:00:01Z");
    let case = h
        .wait_for(&id, |c| c["escalated"]["residence"].is_string())
        .await;
    assert_eq!(case["escalated"]["residence"], "agency:police", "{case:#}");
    h.skip_to("2027-05-06T03:00:00Z");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let history = fetch(&h.http, &history_url).await;
    let escalated = events_of(&history, "escalated");
    assert_eq!(escalated.len(), 1, "{history:#}");
    assert_eq!(escalated[0]["due_at"], "2027-04-29T17:00:00Z");
    let listed = fetch(
        &h.http,
        &format!(
            "{}/v1/deadlines?escalated_to=agency:police&overdue=true",
            h.url
        ),
    )
    .await;
    let rows = listed["items"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["case_id"] == id.as_str()
            && r["step"] == "residence"
            && r["overdue"] == true),
        "{listed:#}"
    );

    // The portal heard each of them.
    let kinds = feed_kinds(h.engine.store(), &id).await;
    let count = |kind: &str| kinds.iter().filter(|(k, _, _)| k == kind).count();
    // A reminder before each due time: the first, and the new date's.
    let reminders: Vec<&Value> = kinds
        .iter()
        .filter(|(k, _, _)| k == "step.reminder")
        .map(|(_, _, d)| &d["due_at"])
        .collect();
    assert_eq!(
        reminders,
        [
            &json!("2027-04-23T17:00:00Z"),
            &json!("2027-04-29T17:00:00Z")
        ],
        "{kinds:?}"
    );
    assert_eq!(count("case.extended"), 1, "{kinds:?}");
    assert_eq!(count("step.escalated"), 1, "{kinds:?}");
    let (_, step, data) = kinds.iter().find(|(k, _, _)| k == "case.extended").unwrap();
    assert_eq!(step.as_deref(), Some("residence"));
    assert_eq!(data["due_at"], "2027-04-29T17:00:00Z");
}

async fn post<S: Store + Clone>(h: &InProcess<S>, path: &str, body: &Value) -> (u16, Value) {
    let reply = h
        .http
        .post(format!("{}{path}", h.url))
        .json(body)
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

#[tokio::test]
async fn reminders_one_extension_and_escalation_fall_on_working_days_on_sled() {
    reminders_extension_and_escalation(InProcess::with_workflows(six_day_residence()).await).await;
}

#[tokio::test]
async fn reminders_one_extension_and_escalation_fall_on_working_days_on_postgres() {
    let h = InProcess::postgres_with_workflows(six_day_residence()).await;
    reminders_extension_and_escalation(h).await;
}

/// A residence step that the law deems approved when the police stay silent past its due time.
fn deemed_residence(outcome: &str) -> std::path::PathBuf {
    let outcome = outcome.to_owned();
    support::workflows_copy(move |name, text| {
        if name != "birth-registration.yaml" {
            return text;
        }
        let output = if outcome == "approved" {
            "\n      output:\n        registration_id: ${ \"DEEMED-\" + .input.dossier_number }\n        household_number: ${ .input.household_head_personal_id }\n        registered_on: ${ .case.started_on }"
        } else {
            ""
        };
        text.replace(
            "    remind_before: 1 working day\n",
            &format!("    remind_before: 1 working day\n    on_silence:\n      outcome: {outcome}\n      legal_basis: Test provision on deemed decisions, Art. 1{output}\n"),
        )
    })
}

async fn silence_is_deemed<S: Store + Clone>(h: InProcess<S>, outcome: &str) {
    let mut input = birth_input(&format!("GCS-SILENT-{outcome}"));
    input["household_head_personal_id"] = json!(MANUAL_HEAD);
    let id = h.start_birth(input).await;
    h.wait_for(&id, |c| {
        c["steps"]["residence"]["status"] == "awaiting_callback"
    })
    .await;
    h.clock.skip(SignedDuration::from_hours(24 * 10));
    // A refusal of this step waits for an operator (`on_rejection: hold`); an approval lets
    // the case complete.
    let case = h
        .wait_for(&id, |c| {
            c["steps"]["residence"]["status"] == "rejected" || c["status"] != "running"
        })
        .await;
    let history = fetch(&h.http, &format!("{}/v1/cases/{id}/history", h.url)).await;
    let deemed = events_of(&history, "silence_deemed");
    assert_eq!(deemed.len(), 1, "{history:#}");
    assert!(
        deemed[0]["legal_basis"]
            .as_str()
            .unwrap()
            .contains("Test provision")
    );
    if outcome == "approved" {
        assert_eq!(
            case["steps"]["residence"]["status"], "succeeded",
            "{case:#}"
        );
        assert_eq!(case["status"], "completed", "{case:#}");
    } else {
        assert_eq!(case["steps"]["residence"]["status"], "rejected", "{case:#}");
        assert_eq!(
            case["steps"]["residence"]["rejection"]["reason_code"],
            "deemed_refusal"
        );
    }
}

#[tokio::test]
async fn silence_past_the_due_time_is_deemed_as_the_law_declared_on_sled() {
    silence_is_deemed(
        InProcess::with_workflows(deemed_residence("refused")).await,
        "refused",
    )
    .await;
}

#[tokio::test]
async fn silence_past_the_due_time_is_deemed_as_the_law_declared_on_postgres() {
    let h = InProcess::postgres_with_workflows(deemed_residence("approved")).await;
    silence_is_deemed(h, "approved").await;
}

/// Issue 34: an escalation is decided once, at its due time, even when the node is killed as
/// the time comes. The real binary, its clock started just before the due time again and
/// again (`--clock-start`), killed with SIGKILL a little later each time.
async fn escalation_once_across_kills(backend: support::Backend) {
    let workflows = support::workflows_copy(|name, text| {
        if name != "birth-registration.yaml" {
            return text;
        }
        text.replace("    remind_before: 1 working day", "    deadline: 2 hours")
    });
    let data = std::env::temp_dir().join(format!("civicflow-kill-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", support::free_port());
    let store = backend.serve_args();
    let spawn = |clock: &str| {
        let mut args = vec![
            "--workflows",
            workflows.to_str().unwrap(),
            "--clock-start",
            clock,
        ];
        args.extend(store.iter().map(String::as_str));
        support::Server::spawn(&data, &listen, &support::with_mocks(&args))
    };
    let mut server = spawn("2027-04-14T03:00:00Z");
    let mut input = birth_input("GCS-KILLED");
    input["household_head_personal_id"] = json!(MANUAL_HEAD);
    let id = server.start_case("birth-registration", input).await;
    let path = format!("/v1/cases/{id}");
    let mut case = server.get(&path).await;
    for _ in 0..200 {
        if case["steps"]["residence"]["status"] == "awaiting_callback" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        case = server.get(&path).await;
    }
    let due: jiff::Timestamp = case["steps"]["residence"]["due_at"]
        .as_str()
        .unwrap_or_else(|| panic!("{case:#}"))
        .parse()
        .unwrap();
    server.kill();
    // Each start puts the clock a second before the due time; each kill comes a little later.
    let mut clock = due - SignedDuration::from_secs(1);
    for wait_ms in [600u64, 900, 1000, 1100, 1300] {
        clock += SignedDuration::from_millis(1);
        let mut s = spawn(&clock.to_string());
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        s.kill();
    }
    server = spawn(&(due + SignedDuration::from_secs(60)).to_string());
    let mut case = server.get(&path).await;
    for _ in 0..200 {
        if case["escalated"]["residence"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        case = server.get(&path).await;
    }
    assert_eq!(case["escalated"]["residence"], "agency:police", "{case:#}");
    let history = server.get(&format!("{path}/history")).await;
    let escalated = events_of(&history, "escalated");
    assert_eq!(escalated.len(), 1, "{history:#}");
    let at: jiff::Timestamp = escalated[0]["at"].as_str().unwrap().parse().unwrap();
    assert!(at >= due, "escalated at {at}, before its due time {due}");
    let missed: Vec<Value> = events_of(&history, "incident_opened")
        .into_iter()
        .filter(|e| e["reason"] == "deadline_missed" && e["step"] == "residence")
        .collect();
    assert_eq!(missed.len(), 1, "{history:#}");
    server.kill();
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn an_escalation_fires_once_at_its_time_across_kills_on_sled() {
    escalation_once_across_kills(support::Backend::Sled).await;
}

#[tokio::test]
async fn an_escalation_fires_once_at_its_time_across_kills_on_postgres() {
    escalation_once_across_kills(support::Backend::Postgres).await;
}
