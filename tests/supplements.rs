//! Issue 35: an incomplete dossier. The agency says once what is missing, the case waits for
//! the citizen (the agency's clock stopped), the portal's supplement sends the step again with
//! its clock started from zero; a late or repeated supplement is refused; silence past the
//! citizen's deadline is a refusal. In this process with the test clock on both stores, and
//! through the real binary across a `kill -9`.

mod support;

use civicflow::store::Store;
use jiff::SignedDuration;
use serde_json::{Value, json};
use support::{InProcess, birth_input, fetch};

/// A birth dossier whose mother has neither a personal ID nor a passport: the civil-status
/// office asks for it.
fn without_mothers_id(certificate: &str) -> Value {
    let mut input = birth_input(certificate);
    input["mother"] = json!({"full_name": "Nguyễn Thị Lan"});
    input
}

async fn post<S: Store + Clone>(
    h: &InProcess<S>,
    path: &str,
    body: &Value,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = h.http.post(format!("{}{path}", h.url)).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let reply = request.send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

async fn asked<S: Store + Clone>(h: &InProcess<S>, id: &str, step: &str) -> Value {
    let case = h
        .wait_for(id, |c| {
            c["steps"][step]["status"] == "awaiting_supplement" || c["status"] != "running"
        })
        .await;
    assert_eq!(
        case["steps"][step]["status"], "awaiting_supplement",
        "{case:#}"
    );
    case
}

async fn asked_once_then_completed<S: Store + Clone>(h: InProcess<S>) {
    let (status, _) = post(
        &h,
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/hook"}),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let id = h.start_birth(without_mothers_id("SUPP-ONCE")).await;
    let case = asked(&h, &id, "birth").await;
    let request = &case["supplements"][0];
    assert_eq!(request["id"], "birth-1", "{case:#}");
    assert_eq!(request["state"], "open");
    assert_eq!(request["missing"][0]["name"], "mother.personal_id");
    // The agency's clock is stopped: no due time for the step or the case meanwhile.
    assert!(case["steps"]["birth"]["due_at"].is_null(), "{case:#}");
    assert!(case["due_at"].is_null(), "{case:#}");
    let first_attempt = {
        let history = fetch(&h.http, &format!("{}/v1/cases/{id}/history", h.url)).await;
        let started = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "attempt_started")
            .cloned()
            .unwrap();
        started["at"].as_str().unwrap().to_owned()
    };

    // Three days later the portal sends the mother's ID.
    h.clock.skip(SignedDuration::from_hours(72));
    let path = format!("/v1/cases/{id}/supplements");
    let wrong =
        json!({"request_id": "birth-1", "input": {"father": {"personal_id": "001089654321"}}});
    let (status, body) = post(&h, &path, &wrong, None).await;
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(body["error"]["code"], "not_requested", "{body:#}");
    let unknown =
        json!({"request_id": "birth-9", "input": {"mother": {"personal_id": "001190123456"}}});
    let (status, body) = post(&h, &path, &unknown, None).await;
    assert_eq!(status, 404, "{body:#}");
    let good =
        json!({"request_id": "birth-1", "input": {"mother": {"personal_id": "001190123456"}}});
    let (status, body) = post(&h, &path, &good, Some("supp-1")).await;
    assert_eq!(status, 200, "{body:#}");
    let case = h.wait_for(&id, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["input"]["mother"]["personal_id"], "001190123456");
    assert_eq!(case["input"]["mother"]["full_name"], "Nguyễn Thị Lan");
    assert_eq!(case["supplements"][0]["state"], "answered");
    assert_eq!(case["steps"]["birth"]["revision"], 2);
    // The step's clock started again from the supplement, three days on.
    let restarted: jiff::Timestamp = case["steps"]["birth"]["started_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let first: jiff::Timestamp = first_attempt.parse().unwrap();
    assert!(
        restarted.duration_since(first) >= SignedDuration::from_hours(72),
        "{first} → {restarted}"
    );
    // Its due time is one working day from the supplement, counted from zero again.
    let due = civicflow::calendar::Calendar::vietnam()
        .due(
            restarted,
            civicflow::workflow::deadline::Deadline::WorkingDays(1),
        )
        .unwrap();
    assert_eq!(case["steps"]["birth"]["due_at"], json!(due), "{case:#}");

    // The same supplement again under its key answers the case; without it, or another, no.
    let (status, _) = post(&h, &path, &good, Some("supp-1")).await;
    assert_eq!(status, 200);
    let (status, body) = post(&h, &path, &good, None).await;
    assert_eq!(status, 409, "{body:#}");
    assert_eq!(body["error"]["code"], "request_answered", "{body:#}");
    let other =
        json!({"request_id": "birth-1", "input": {"mother": {"personal_id": "001190999999"}}});
    let (status, body) = post(&h, &path, &other, Some("supp-1")).await;
    assert_eq!(status, 409, "{body:#}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused", "{body:#}");

    // The portal was told once, with the list.
    let asked: Vec<Value> = h
        .engine
        .store()
        .feed(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, n)| n.case_id.to_string() == id && n.kind == "step.supplement_requested")
        .map(|(_, n)| n.data)
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["missing"][0]["name"], "mother.personal_id");
    assert_eq!(asked[0]["request_id"], "birth-1");
}

#[tokio::test]
async fn a_missing_paper_is_asked_once_and_the_supplement_completes_the_case_on_sled() {
    asked_once_then_completed(InProcess::start().await).await;
}

#[tokio::test]
async fn a_missing_paper_is_asked_once_and_the_supplement_completes_the_case_on_postgres() {
    asked_once_then_completed(InProcess::postgres_with_workflows(support::workflows_dir()).await)
        .await;
}

async fn silence_is_a_refusal<S: Store + Clone>(h: InProcess<S>) {
    let id = h.start_birth(without_mothers_id("SUPP-SILENT")).await;
    let case = asked(&h, &id, "birth").await;
    let due = case["supplements"][0]["due_at"]
        .as_str()
        .unwrap()
        .to_owned();
    // Ten working days are two weeks and more: three weeks on, the deadline has passed.
    h.clock.skip(SignedDuration::from_hours(24 * 21));
    let case = h.wait_for(&id, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "rejected", "{case:#}");
    assert_eq!(
        case["steps"]["birth"]["rejection"]["reason_code"],
        "not_supplemented"
    );
    assert!(
        case["steps"]["birth"]["rejection"]["message"]
            .as_str()
            .unwrap()
            .contains("mother.personal_id"),
        "{case:#}"
    );
    assert_eq!(case["supplements"][0]["state"], "expired");
    let late =
        json!({"request_id": "birth-1", "input": {"mother": {"personal_id": "001190123456"}}});
    let (status, body) = post(&h, &format!("/v1/cases/{id}/supplements"), &late, None).await;
    assert_eq!(status, 409, "{body:#}");
    assert_eq!(body["error"]["code"], "request_expired", "{body:#}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&due),
        "{body:#} should name the deadline {due}"
    );
}

#[tokio::test]
async fn silence_past_the_citizens_deadline_is_a_refusal_on_sled() {
    silence_is_a_refusal(InProcess::start().await).await;
}

#[tokio::test]
async fn silence_past_the_citizens_deadline_is_a_refusal_on_postgres() {
    silence_is_a_refusal(InProcess::postgres_with_workflows(support::workflows_dir()).await).await;
}

/// The police ask for the child's relationship to the household head; the node is killed while
/// the case waits; after the restart the supplement completes the case.
async fn a_kill_while_waiting_loses_nothing(backend: support::Backend) {
    let data = std::env::temp_dir().join(format!("civicflow-supp-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", support::free_port());
    // The agencies outlive the node's kill, as real ones do.
    let (mocks, mut args) = support::mocks_in_test(35).await;
    args.extend(backend.serve_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = support::Server::spawn(&data, &listen, &args);
    server.connect_mocks(&mocks.agencies[0].base_url).await;
    let mut input = birth_input("SUPP-KILL");
    input["relationship_to_head"] = json!("");
    let id = server.start_case("birth-registration", input).await;
    let path = format!("/v1/cases/{id}");
    let mut case = server.get(&path).await;
    for _ in 0..200 {
        if case["steps"]["residence"]["status"] == "awaiting_supplement" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        case = server.get(&path).await;
    }
    assert_eq!(
        case["steps"]["residence"]["status"], "awaiting_supplement",
        "{case:#}"
    );
    assert_eq!(
        case["supplements"][0]["missing"][0]["name"],
        "relationship_to_head"
    );
    server.kill();
    let server = support::Server::spawn(&data, &listen, &args);
    let supplement = json!({"request_id": "residence-1", "input": {"relationship_to_head": "con"}});
    let (status, body) = server
        .post(&format!("{path}/supplements"), &supplement, Some("kill-1"))
        .await;
    assert_eq!(status, 200, "{body:#}");
    let case = server
        .settled(&id, std::time::Duration::from_secs(60))
        .await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["steps"]["residence"]["revision"], 2);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn a_node_killed_while_the_case_waits_for_the_citizen_loses_nothing_on_sled() {
    a_kill_while_waiting_loses_nothing(support::Backend::Sled).await;
}

#[tokio::test]
async fn a_node_killed_while_the_case_waits_for_the_citizen_loses_nothing_on_postgres() {
    a_kill_while_waiting_loses_nothing(support::Backend::Postgres).await;
}
