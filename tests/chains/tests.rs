//! Both chains end to end: the real binary, its HTTP API and the real mock agencies, on the
//! store the including test crate names (`crate::BACKEND`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::BACKEND;
use crate::support::{self, Server, birth_input, death_input, workflows_copy};

const BOUND: Duration = Duration::from_secs(60);

fn step<'a>(case: &'a Value, id: &str) -> &'a Value {
    &case["steps"][id]
}

/// Each (case, procedure) the agency saw: effects must be exactly one.
async fn effects(server: &Server, agency: &str, case: &str) -> Vec<u64> {
    support::effects(&server.http, &server.agencies[agency], case).await
}

#[tokio::test]
async fn a_birth_runs_through_three_agencies() {
    let server = Server::start_on(BACKEND);
    let id = server
        .start_case("birth-registration", birth_input("GCS-1"))
        .await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let child = step(&case, "birth")["output"]["child_personal_id"]
        .as_str()
        .unwrap();
    assert_eq!(child.len(), 12);
    assert!(
        step(&case, "residence")["output"]["household_number"]
            .as_str()
            .unwrap()
            .starts_with("HK-00004-")
    );
    let card = step(&case, "health_insurance")["output"]["card_code"]
        .as_str()
        .unwrap();
    assert!(card.starts_with("TE101"), "{card}");
    for agency in ["civil-status", "police", "social-security"] {
        assert_eq!(effects(&server, agency, &id).await, vec![1], "{agency}");
    }
    // Every call carried the case id, a message id and a W3C traceparent of the case's trace.
    let requests = server
        .agency("civil-status", &format!("/admin/requests?case_id={id}"))
        .await;
    let first = &requests.as_array().unwrap()[0];
    let trace = id.replace('-', "");
    assert!(
        first.to_string().contains(&format!("00-{trace}-")),
        "{first}"
    );
    let history = server.get(&format!("/v1/cases/{id}/history")).await;
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"case_started"));
    assert_eq!(types.last(), Some(&"case_finished"));
    assert!(types.contains(&"callback_received"), "{types:?}");
}

#[tokio::test]
async fn a_death_runs_deregistration_and_the_funeral_allowance_in_parallel() {
    let server = Server::start_on(BACKEND);
    let input = death_input("001045333444", "Lê Văn Thọ");
    let id = server.start_case("death-registration", input).await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["version"], 3, "new cases take the newest version");
    let allowance = &step(&case, "funeral_allowance")["output"];
    assert_eq!(allowance["amount_vnd"], 23_400_000, "{allowance}");
    // Whom it is paid to, and how, as the agency decided.
    assert!(
        allowance["paid_to"].as_str().is_some_and(|p| p.len() == 12),
        "{allowance}"
    );
    assert!(allowance["payment_method"].is_string(), "{allowance}");
    assert_eq!(step(&case, "deregistration")["status"], "succeeded");
}

/// Issue 34: a birth registered 70 days after it is `late` from its first step (the civil
/// status office takes it as a late registration), for the portal, the operators and the
/// on-time table; a death within its 15 days is on time.
#[tokio::test]
async fn a_birth_registered_seventy_days_late_is_late_from_its_first_step() {
    let server = Server::start_on(BACKEND);
    let mut input = birth_input("GCS-LATE-70");
    input["child"]["date_of_birth"] = json!(support::days_ago(70));
    let (status, started) = server
        .post(
            "/v1/cases",
            &json!({"workflow": "birth-registration", "input": input}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["life_event"]["tier"], "late", "{started:#}");
    assert_eq!(
        started["life_event"]["limit"].as_str(),
        Some(support::days_ago(10).as_str())
    );
    let id = started["id"].as_str().unwrap();
    let case = server.settled(id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["life_event"]["tier"], "late");
    let listed = server
        .get("/v1/cases?key=dossier%3DG01.123-GCS-LATE-70")
        .await;
    assert_eq!(listed["items"][0]["tier"], "late", "{listed:#}");

    let death = server
        .start_case(
            "death-registration",
            death_input("001045333444", "Lê Văn Thọ"),
        )
        .await;
    let death = server.settled(&death, BOUND).await;
    assert_eq!(death["life_event"]["tier"], "on_time", "{death:#}");
    let kpis = server.get("/v1/kpis").await;
    let tiers = |name: &str| {
        kpis["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["workflow"] == name)
            .map(|w| w["tiers"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(tiers("birth-registration"), json!({"late": 1}), "{kpis:#}");
    assert_eq!(
        tiers("death-registration"),
        json!({"on_time": 1}),
        "{kpis:#}"
    );
}

#[tokio::test]
async fn a_refused_birth_stops_the_case_and_nothing_else_is_called() {
    let server = Server::start_on(BACKEND);
    let mut input = birth_input("GCS-2");
    input["mother"]["personal_id"] = json!("001190999999");
    let id = server.start_case("birth-registration", input).await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "rejected", "{case:#}");
    assert_eq!(step(&case, "birth")["status"], "rejected");
    assert!(step(&case, "birth")["rejection"]["reason_code"].is_string());
    assert_eq!(step(&case, "residence")["status"], "stopped");
    assert_eq!(step(&case, "health_insurance")["status"], "stopped");
    assert!(
        case["reason"].as_str().unwrap().contains("birth"),
        "{case:#}"
    );
    assert!(effects(&server, "police", &id).await.is_empty());
}

#[tokio::test]
async fn a_refusal_by_callback_holds_its_step_for_an_operator_and_the_other_branch_finishes() {
    let server = Server::start_on(BACKEND);
    let mut input = birth_input("GCS-3");
    input["household_head_personal_id"] = json!("001068777888");
    let id = server.start_case("birth-registration", input).await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "running", "{case:#}");
    assert_eq!(
        step(&case, "residence")["rejection"]["reason_code"],
        "HOUSEHOLD_HEAD_REFUSED"
    );
    let incident = &case["incidents"][0];
    assert_eq!(incident["reason"], "refusal_awaiting_action", "{case:#}");
    assert_eq!(incident["step"], "residence");
    let until = tokio::time::Instant::now() + BOUND;
    let case = loop {
        let case = server.get(&format!("/v1/cases/{id}")).await;
        if step(&case, "health_insurance")["status"] == "succeeded" {
            break case;
        }
        assert!(tokio::time::Instant::now() < until, "{case:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The independent branch finished; the case waits for the operator.
    assert_eq!(case["status"], "running", "{case:#}");
}

#[tokio::test]
async fn retries_ride_out_503s_and_the_agency_acts_once() {
    let server = Server::start_on(BACKEND);
    server
        .set_faults(
            "civil-status",
            json!({"rates": {"unavailable": 0.5, "internal_error": 0.2}, "retry_after_secs": 0}),
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            server
                .start_case("birth-registration", birth_input(&format!("GCS-R{i}")))
                .await,
        );
    }
    let mut failed_attempts = 0;
    for id in &ids {
        let case = server.settled(id, BOUND).await;
        assert_eq!(case["status"], "completed", "{case:#}");
        assert_eq!(effects(&server, "civil-status", id).await, vec![1]);
        let history = server.get(&format!("/v1/cases/{id}/history")).await;
        failed_attempts += history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "attempt_failed")
            .count();
    }
    assert!(failed_attempts > 0, "the faults were injected");
}

#[tokio::test]
async fn starting_is_idempotent_and_bad_input_is_refused_with_every_field() {
    let server = Server::start_on(BACKEND);
    let body = json!({"workflow": "birth-registration", "input": birth_input("GCS-4")});
    let (s1, first) = server.post("/v1/cases", &body, Some("portal-1")).await;
    let (s2, again) = server.post("/v1/cases", &body, Some("portal-1")).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first["id"], again["id"]);
    let other = json!({"workflow": "birth-registration", "input": birth_input("GCS-5")});
    let (s3, conflict) = server.post("/v1/cases", &other, Some("portal-1")).await;
    assert_eq!(s3, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "idempotency_key_reused");

    let (s4, invalid) = server
        .post(
            "/v1/cases",
            &json!({"workflow": "birth-registration", "input": {"child": {"sex": "x"}}}),
            None,
        )
        .await;
    assert_eq!(s4, 422);
    let fields: Vec<&str> = invalid["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"/dossier_number"), "{fields:?}");
    assert!(fields.contains(&"/child/sex"), "{fields:?}");
    let (s5, unknown) = server
        .post(
            "/v1/cases",
            &json!({"workflow": "no-such", "input": {}}),
            None,
        )
        .await;
    assert_eq!(
        (s5, unknown["error"]["code"].as_str()),
        (404, Some("unknown_workflow"))
    );
}

#[tokio::test]
async fn a_forged_callback_token_is_refused() {
    let server = Server::start_on(BACKEND);
    let police = server.token("agency:police").await;
    let (status, body) = server
        .call(
            Some(&police),
            reqwest::Method::POST,
            "/v1/callbacks/not-a-token",
            Some(&json!({"outcome": "registered"})),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_token");
}

#[tokio::test]
async fn a_garbled_reply_opens_an_incident_and_is_not_retried() {
    let server = Server::start_on(BACKEND);
    server
        .set_faults("civil-status", json!({"rates": {"garbled": 1.0}}))
        .await;
    let id = server
        .start_case("birth-registration", birth_input("GCS-G"))
        .await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "running", "{case:#}");
    assert_eq!(step(&case, "birth")["status"], "failed");
    let incident = &case["incidents"][0];
    assert_eq!(incident["reason"], "unexpected_reply", "{case:#}");
    assert_eq!(incident["step"], "birth");
    assert_eq!(step(&case, "birth")["attempts"], 1);
    // The garbling happened after the agency acted: the effect is there, once.
    assert_eq!(effects(&server, "civil-status", &id).await, vec![1]);
}

#[tokio::test]
async fn concurrent_starts_with_one_key_make_one_case() {
    let server = std::sync::Arc::new(Server::start_on(BACKEND));
    let body = json!({"workflow": "birth-registration", "input": birth_input("GCS-RACE")});
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (server, body) = (server.clone(), body.clone());
        tasks.spawn(async move { server.post("/v1/cases", &body, Some("race")).await });
    }
    let replies = tasks.join_all().await;
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .map(|(status, case)| {
            assert!(matches!(status, 200 | 201), "{status} {case}");
            case["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(replies.iter().filter(|(s, _)| *s == 201).count(), 1);
}

#[tokio::test]
async fn an_ineligible_deceased_is_refused_the_allowance_and_deregistration_still_finishes() {
    let server = Server::start_on(BACKEND);
    // No insurance of any of the six categories: the funeral allowance is a business refusal.
    let input = death_input("001068777888", "Đỗ Văn Khải");
    let id = server.start_case("death-registration", input).await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "partially_completed", "{case:#}");
    let allowance = step(&case, "funeral_allowance");
    assert_eq!(allowance["status"], "rejected");
    assert_eq!(
        allowance["rejection"]["reason_code"],
        "DECEASED_NOT_ELIGIBLE"
    );
    assert_eq!(step(&case, "deregistration")["status"], "succeeded");
    assert_eq!(effects(&server, "police", &id).await, vec![1]);
}

/// The event types of a case's history, in order.
async fn event_types(server: &Server, id: &str) -> Vec<String> {
    let history = server.get(&format!("/v1/cases/{id}/history")).await;
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_agency_that_times_out_is_called_again_with_the_same_key_and_acts_once() {
    // A 1 s step timeout instead of 10 s, so the test does not wait long.
    let workflows = workflows_copy(|path, text| {
        if path == "adapters/civil-status/birth-registration.yaml" {
            text.replace("timeout: 10s", "timeout: 1s")
        } else {
            text
        }
    });
    let server = Server::with_workflows_on(&workflows, BACKEND);
    // The agency acts, then holds its reply for 3 s: longer than civicflow waits.
    server
        .set_faults(
            "civil-status",
            json!({"rates": {"timeout": 1.0}, "timeout_hold_ms": 3000}),
        )
        .await;
    let id = server
        .start_case("birth-registration", birth_input("GCS-T"))
        .await;
    let until = tokio::time::Instant::now() + BOUND;
    while !event_types(&server, &id)
        .await
        .contains(&"attempt_failed".to_owned())
    {
        assert!(tokio::time::Instant::now() < until, "no attempt timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.set_faults("civil-status", json!({})).await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let history = server.get(&format!("/v1/cases/{id}/history")).await;
    let failure = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "attempt_failed")
        .unwrap();
    assert!(
        failure["error"].as_str().unwrap().contains("timed out"),
        "{failure}"
    );
    // Both attempts carried one idempotency key: the agency replayed its first result.
    assert_eq!(effects(&server, "civil-status", &id).await, vec![1]);
}

#[tokio::test]
async fn retries_exhausted_open_an_incident_and_stop_calling() {
    let workflows = workflows_copy(|path, text| {
        if path == "adapters/civil-status/birth-registration.yaml" {
            text.replace("max_attempts: 10", "max_attempts: 3")
        } else {
            text
        }
    });
    let server = Server::with_workflows_on(&workflows, BACKEND);
    server
        .set_faults("civil-status", json!({"rates": {"internal_error": 1.0}}))
        .await;
    let id = server
        .start_case("birth-registration", birth_input("GCS-X"))
        .await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "running", "{case:#}");
    assert_eq!(step(&case, "birth")["status"], "failed");
    assert_eq!(step(&case, "birth")["attempts"], 3);
    let incident = &case["incidents"][0];
    assert_eq!(incident["reason"], "retries_exhausted", "{case:#}");
    let requests = server
        .agency("civil-status", &format!("/admin/requests?case_id={id}"))
        .await;
    assert_eq!(requests.as_array().unwrap().len(), 3, "{requests:#}");
    assert_eq!(
        effects(&server, "civil-status", &id).await,
        Vec::<u64>::new()
    );
}

#[tokio::test]
async fn a_repeated_callback_is_acknowledged_once_and_changes_nothing() {
    let server = Server::start_on(BACKEND);
    let id = server
        .start_case("birth-registration", birth_input("GCS-D"))
        .await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let before = event_types(&server, &id).await;
    // The police deliver the same outcome again, as an outbox does after a lost acknowledgement.
    let records = server.agency("police", "/admin/records").await;
    let registration = records["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["personal_id"] == step(&case, "birth")["output"]["child_personal_id"])
        .unwrap()
        .clone();
    let id_at_police = registration["registration_id"].as_str().unwrap();
    let outcome = server
        .agency(
            "police",
            &format!("/v1/residence-registrations/{id_at_police}"),
        )
        .await;
    let police = support::client_with(&server.token("agency:police").await);
    let again = police
        .post(registration["callback_url"].as_str().unwrap())
        .header("idempotency-key", format!("police-callback-{id_at_police}"))
        .json(&outcome)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["status"], "duplicate");
    // Another message on a finished step is refused and says why.
    let other = police
        .post(registration["callback_url"].as_str().unwrap())
        .header("idempotency-key", "another-message")
        .json(&outcome)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"]["code"], "step_finished", "{body}");
    // Another agency may not answer the police's step, even with its token.
    let social = support::client_with(&server.token("agency:social-security").await);
    let foreign = social
        .post(registration["callback_url"].as_str().unwrap())
        .header("idempotency-key", "foreign")
        .json(&outcome)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let body: Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["code"], "other_agency", "{body}");
    assert_eq!(event_types(&server, &id).await, before);
}

/// Starts a birth case of certificate `certificate` with dossier number `dossier`, which must
/// be refused as invalid input: the refusal's message.
async fn refused_dossier(server: &Server, certificate: &str, dossier: &str) -> String {
    let mut input = birth_input(certificate);
    input["dossier_number"] = json!(dossier);
    let (status, body) = server
        .post(
            "/v1/cases",
            &json!({"workflow": "birth-registration", "input": input}),
            None,
        )
        .await;
    assert_eq!(status, 422, "{dossier:?}: {body}");
    assert_eq!(body["error"]["code"], "invalid_input");
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_overlong_business_key_is_refused_naming_the_key() {
    let server = Server::start_on(BACKEND);
    let message = refused_dossier(&server, "GCS-LONG", &"G".repeat(300)).await;
    assert!(message.contains("`dossier` is 300 bytes"), "{message}");
}

/// Issue 33: a control character (NUL above all, which PostgreSQL's text cannot hold) in a
/// business key is the client's mistake, named, not a failure of the store.
#[tokio::test]
async fn a_business_key_with_a_control_character_is_refused_naming_the_key() {
    let server = Server::start_on(BACKEND);
    for (n, dossier) in ["D-\u{0}-1", "D-\n-2", "D-\u{7f}-3"]
        .into_iter()
        .enumerate()
    {
        let message = refused_dossier(&server, &format!("GCS-NUL-{n}"), dossier).await;
        assert!(
            message.contains("`dossier`") && message.contains("control character"),
            "{message}"
        );
    }
    // Nor may a list ask for one.
    let (status, body) = server
        .call(
            Some(&server.admin),
            reqwest::Method::GET,
            "/v1/cases?key=dossier%3DD-%00-1",
            None,
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_query")),
        "{body}"
    );
}

#[tokio::test]
async fn a_read_with_wait_answers_when_the_case_ends() {
    let server = Server::start_on(BACKEND);
    let mut input = birth_input("GCS-WAIT");
    input["household_head_personal_id"] = json!(support::MANUAL_HEAD);
    let id = server.start_case("birth-registration", input).await;
    // While the household head has not consented, a short wait ends with the case running.
    let case = server.get(&format!("/v1/cases/{id}?wait=1s")).await;
    assert_eq!(case["status"], "running", "{case:#}");
    // A long wait is answered by the end, not by the clock.
    let waiting = {
        let (http, url) = (server.http.clone(), server.url.clone());
        let id = id.clone();
        tokio::spawn(async move {
            support::fetch(&http, &format!("{url}/v1/cases/{id}?wait=60s")).await
        })
    };
    loop {
        let case = server.get(&format!("/v1/cases/{id}")).await;
        if case["steps"]["residence"]["status"] == "awaiting_callback" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    support::grant_consent(&server.http, &server.agencies["police"]).await;
    let ended = tokio::time::timeout(BOUND, waiting).await.unwrap().unwrap();
    assert_eq!(ended["status"], "completed", "{ended:#}");
    // A wait that is not a duration, or too long, is the client's mistake.
    for wait in ["soon", "10m"] {
        let (status, body) = server
            .call(
                Some(&server.admin),
                reqwest::Method::GET,
                &format!("/v1/cases/{id}?wait={wait}"),
                None,
            )
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("invalid_query")),
            "{wait}"
        );
    }
}
