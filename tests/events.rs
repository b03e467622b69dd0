//! Issue 36: flows started by events and chained to each other, in CloudEvents. A death
//! certified at the hospital (the mock sends it as a CloudEvent) starts exactly one death case,
//! and the same event again starts nothing; an event for a running case reaches it, early or
//! while its step waits; a chain carries the correlation and causation ids; a webhook may ask
//! for CloudEvents. Each on sled and on PostgreSQL, in this process against the real mocks.

mod support;

use std::sync::{Arc, Mutex};

use civicflow::auth::Role;
use civicflow::store::Store;
use serde_json::{Value, json};
use support::{HOSPITAL, InProcess, client_with, days_ago, fetch, workflows_copy, workflows_dir};

const DEATH_CERTIFIED: &str = "vn.gov.moh.death.certified.v1";

async fn post_event(http: &reqwest::Client, url: &str, event: &Value) -> (u16, Value, bool) {
    let reply = http
        .post(format!("{url}/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    let replayed = reply.headers().contains_key("idempotent-replayed");
    (
        reply.status().as_u16(),
        reply.json().await.unwrap(),
        replayed,
    )
}

/// A death dossier from the portal, without the funeral allowance (the mocks' deceased are not
/// all eligible for it).
fn death_input(personal_id: &str, full_name: &str) -> Value {
    let mut input = support::death_input(personal_id, full_name);
    input["funeral_allowance"] = json!({"requested": false});
    input
}

async fn cases_of<S: Store + Clone>(h: &InProcess<S>, deceased: &str) -> Vec<Value> {
    let list = fetch(
        &h.http,
        &format!("{}/v1/cases?key=deceased={deceased}", h.url),
    )
    .await;
    list["items"].as_array().unwrap().clone()
}

async fn a_certified_death_starts_exactly_one_case<S: Store + Clone>(h: InProcess<S>) {
    let hospital = h.connect_hospital().await;
    let answer = h.certify("001045333444").await;
    let event = answer["event"].clone();
    let sent = h.delivered(event["id"].as_str().unwrap()).await;
    assert_eq!(sent["last_status"], 202, "{sent:#}");
    let routed = &sent["answer"]["routed"];
    assert_eq!(routed.as_array().unwrap().len(), 1, "{sent:#}");
    assert_eq!(routed[0]["action"], "started");
    assert_eq!(routed[0]["workflow"], "death-registration");
    let id = routed[0]["case_id"].as_str().unwrap().to_owned();
    let case = h.wait_for(&id, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["version"], 3);
    assert_eq!(case["origin"]["started_by"], "event");
    assert_eq!(case["origin"]["source"], HOSPITAL);
    assert_eq!(case["origin"]["correlation_id"], event["id"]);
    assert_eq!(
        case["input"]["death_notice_number"],
        answer["certificate"]["certificate_number"]
    );
    assert_eq!(case["steps"]["funeral_allowance"]["status"], "skipped");
    // Issue 38: the audit log has the event that started the case.
    let log = support::fetch(&h.http, &format!("{}/v1/audit/entries?case_id={id}", h.url)).await;
    let received: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["entry"]["record"])
        .filter(|r| r["kind"] == "event")
        .collect();
    assert_eq!(received.len(), 1, "{log:#}");
    assert_eq!(received[0]["id"], event["id"]);
    assert_eq!(received[0]["taken_by"], "start");

    // The same event again, as a source that never heard back would send it: the same answer,
    // and nothing new.
    let (status, again, replayed) = post_event(&hospital, &h.url, &event).await;
    assert_eq!(status, 200, "{again:#}");
    assert!(replayed);
    assert_eq!(again, sent["answer"]);
    // In the binary mode too.
    let mut binary = hospital
        .post(format!("{}/v1/events", h.url))
        .header("content-type", "application/json")
        .body(event["data"].to_string());
    for name in ["specversion", "id", "source", "type", "subject", "time"] {
        let value = event[name].as_str().unwrap();
        let encoded = percent_encoding::utf8_percent_encode(value, percent_encoding::CONTROLS);
        binary = binary.header(format!("ce-{name}"), encoded.to_string());
    }
    let reply = binary.send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let again: Value = reply.json().await.unwrap();
    assert_eq!(again, sent["answer"]);
    assert_eq!(cases_of(&h, "001045333444").await.len(), 1);

    // The same id with other content is a conflict, not a second event.
    let mut changed = event.clone();
    changed["data"]["deceased"]["date_of_death"] = json!(days_ago(3));
    let (status, body, _) = post_event(&hospital, &h.url, &changed).await;
    assert_eq!(status, 409, "{body:#}");
    assert_eq!(body["error"]["code"], "event_id_reused");

    // A batch answers each event on its own: the redelivery, and one that is not an event.
    let batch = json!([event, {"specversion": "1.0", "id": "x", "type": DEATH_CERTIFIED}]);
    let reply = hospital
        .post(format!("{}/v1/events", h.url))
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 207);
    let items: Value = reply.json().await.unwrap();
    assert_eq!(items[0]["status"], 200, "{items:#}");
    assert_eq!(items[0]["routed"], sent["answer"]["routed"]);
    assert_eq!(items[1]["status"], 422, "{items:#}");
    assert!(items[1]["message"].as_str().unwrap().contains("source"));

    // A source posts only its own source, of the types a workflow takes from it.
    let mut other = event.clone();
    other["source"] = json!("urn:vn:moh:hospital:cho-ray");
    let (status, body, _) = post_event(&hospital, &h.url, &other).await;
    assert_eq!(status, 403, "{body:#}");
    assert_eq!(body["error"]["code"], "source_not_allowed");
    let mut untaken = event.clone();
    untaken["type"] = json!("vn.gov.moh.birth.reported.v1");
    untaken["id"] = json!("other-type");
    let (status, body, _) = post_event(&hospital, &h.url, &untaken).await;
    assert_eq!(status, 403, "{body:#}");
    assert_eq!(body["error"]["code"], "type_not_allowed");
    let portal = client_with(&h.token(Role::Portal, "portal").await);
    let (status, _, _) = post_event(&portal, &h.url, &event).await;
    assert_eq!(status, 403);
    // The family filed at the portal first (the civil-status office is closed meanwhile): the
    // hospital's certificate goes to that case, in its history, and starts no second one.
    set_circuit(&h, "open").await;
    let filed = h
        .start_case_of(
            "death-registration",
            death_input("001068777888", "Đỗ Văn Khải"),
        )
        .await;
    let answer = h.certify("001068777888").await;
    let sent = h.delivered(answer["event"]["id"].as_str().unwrap()).await;
    assert_eq!(sent["answer"]["routed"][0]["case_id"], filed, "{sent:#}");
    assert_eq!(sent["answer"]["routed"][0]["action"], "noted", "{sent:#}");
    set_circuit(&h, "closed").await;
    let case = h.wait_for(&filed, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let history = fetch(&h.http, &format!("{}/v1/cases/{filed}/history", h.url)).await;
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "event_noted" && e["id"] == answer["event"]["id"]),
        "{history:#}"
    );
    assert_eq!(cases_of(&h, "001068777888").await.len(), 1);

    // Not a CloudEvent: the attribute is named.
    let mut old = event.clone();
    old["specversion"] = json!("0.3");
    let (status, body, _) = post_event(&hospital, &h.url, &old).await;
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(
        body["error"]["fields"][0]["field"], "/specversion",
        "{body:#}"
    );
}

#[tokio::test]
async fn a_certified_death_starts_exactly_one_case_on_sled() {
    a_certified_death_starts_exactly_one_case(InProcess::start().await).await;
}

#[tokio::test]
async fn a_certified_death_starts_exactly_one_case_on_postgres() {
    a_certified_death_starts_exactly_one_case(
        InProcess::postgres_with_workflows(workflows_dir()).await,
    )
    .await;
}

/// The shipped definitions and a death registration version 4 whose residence deregistration
/// waits for the hospital's certificate, as the police would.
fn waiting_workflows() -> std::path::PathBuf {
    let dir = workflows_copy(|_, text| text);
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/death-registration-waiting.yaml");
    std::fs::copy(fixture, dir.join("death-registration-v4.yaml")).unwrap();
    dir
}

async fn set_circuit<S: Store + Clone>(h: &InProcess<S>, state: &str) {
    let reply = h
        .http
        .post(format!("{}/v1/agencies/civil-status/circuit", h.url))
        .json(&json!({"state": state, "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert!(
        reply.status().is_success(),
        "{}",
        reply.text().await.unwrap()
    );
}

async fn an_event_reaches_the_running_case_early_or_waiting<S: Store + Clone>(h: InProcess<S>) {
    h.connect_hospital().await;
    // Early: the civil-status office is closed, so the death is not registered and the
    // deregistration does not wait yet when the certificate comes.
    set_circuit(&h, "open").await;
    let early = h
        .start_case_of(
            "death-registration",
            death_input("001068777888", "Đỗ Văn Khải"),
        )
        .await;
    let answer = h.certify("001068777888").await;
    let sent = h.delivered(answer["event"]["id"].as_str().unwrap()).await;
    let routed = &sent["answer"]["routed"];
    assert_eq!(routed.as_array().unwrap().len(), 1, "{sent:#}");
    assert_eq!(routed[0]["case_id"], early, "{sent:#}");
    assert_eq!(routed[0]["action"], "kept", "{sent:#}");
    let case = h.case(&early).await;
    assert_eq!(
        case["inbox"]["kept"].as_array().unwrap().len(),
        1,
        "{case:#}"
    );
    assert_eq!(case["steps"]["deregistration"]["status"], "pending");
    set_circuit(&h, "closed").await;
    let case = h.wait_for(&early, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert!(case["inbox"].get("kept").is_none(), "{case:#}");
    assert_eq!(
        case["inbox"]["taken"]["deregistration"]["event"]["id"],
        answer["event"]["id"]
    );

    // Waiting: the deregistration waits for the certificate, under its own due time.
    let waiting = h
        .start_case_of(
            "death-registration",
            death_input("001075111222", "Trần Văn Hùng"),
        )
        .await;
    let case = h
        .wait_for(&waiting, |c| {
            c["steps"]["deregistration"]["status"] == "awaiting_event"
        })
        .await;
    assert_eq!(
        case["steps"]["deregistration"]["status"], "awaiting_event",
        "{case:#}"
    );
    assert!(
        case["steps"]["deregistration"]["due_at"].is_string(),
        "{case:#}"
    );
    let answer = h.certify("001075111222").await;
    let sent = h.delivered(answer["event"]["id"].as_str().unwrap()).await;
    assert_eq!(sent["answer"]["routed"][0]["case_id"], waiting, "{sent:#}");
    assert_eq!(sent["answer"]["routed"][0]["action"], "taken", "{sent:#}");
    let case = h.wait_for(&waiting, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let history = fetch(&h.http, &format!("{}/v1/cases/{waiting}/history", h.url)).await;
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"event_awaited"), "{types:?}");
    assert!(types.contains(&"event_received"), "{types:?}");
    // One case per death: the certificates went to the running cases.
    assert_eq!(cases_of(&h, "001068777888").await.len(), 1);
    assert_eq!(cases_of(&h, "001075111222").await.len(), 1);
}

#[tokio::test]
async fn an_event_reaches_the_running_case_early_or_waiting_on_sled() {
    an_event_reaches_the_running_case_early_or_waiting(
        InProcess::with_workflows(waiting_workflows()).await,
    )
    .await;
}

#[tokio::test]
async fn an_event_reaches_the_running_case_early_or_waiting_on_postgres() {
    an_event_reaches_the_running_case_early_or_waiting(
        InProcess::postgres_with_workflows(waiting_workflows()).await,
    )
    .await;
}

/// The shipped definitions and a funeral-allowance claim that follows every completed death
/// registration where no allowance was asked.
fn chained_workflows() -> std::path::PathBuf {
    let dir = workflows_copy(|_, text| text);
    std::fs::write(
        dir.join("funeral-claim.yaml"),
        r#"kind: workflow
name: funeral-claim
version: 1
title: Funeral allowance claimed after the death is registered
legal_basis: Law on Social Insurance 2024, funeral allowance.
on:
  - case: { workflow: death-registration, outcome: completed }
    when: ${ .input.funeral_allowance.requested | not }
    with:
      deceased_personal_id: ${ .input.deceased.personal_id }
      death_extract_number: ${ .steps.death.output.death_extract_number }
      date_of_death: ${ .input.deceased.date_of_death }
      organizer: ${ .input.funeral_allowance.organizer }
business_keys:
  deceased: ${ .input.deceased_personal_id }
input_schema:
  type: object
  required: [deceased_personal_id, death_extract_number, date_of_death, organizer]
steps:
  - id: allowance
    adapter: social-security/funeral-allowance@2
    with:
      deceased_personal_id: ${ .input.deceased_personal_id }
      death_extract_number: ${ .input.death_extract_number }
      date_of_death: ${ .input.date_of_death }
      organizer: ${ .input.organizer }
      payment: { method: cash }
"#,
    )
    .unwrap();
    dir
}

/// Collects what a webhook receives.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                let media = headers["content-type"].to_str().unwrap().to_owned();
                assert_eq!(media, "application/cloudevents+json");
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_str::<Value>(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// The first event of case `id`'s history about its chain, once there is one (the chain timer
/// fires after the case's end).
async fn chain_event<S: Store + Clone>(h: &InProcess<S>, id: &str) -> Value {
    for _ in 0..1200 {
        let history = fetch(&h.http, &format!("{}/v1/cases/{id}/history", h.url)).await;
        let found = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "chain_not_started" || e["type"] == "chain_started")
            .cloned();
        if let Some(found) = found {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("case {id} started no chain");
}

async fn a_chain_carries_its_ids<S: Store + Clone>(h: InProcess<S>) {
    let (hook, got) = receiver().await;
    let reply = h
        .http
        .post(format!("{}/v1/webhooks", h.url))
        .json(&json!({"url": hook, "format": "cloudevents"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);
    h.connect_hospital().await;
    let answer = h.certify("001045333444").await;
    let event_id = answer["event"]["id"].as_str().unwrap().to_owned();
    let sent = h.delivered(&event_id).await;
    let first = sent["answer"]["routed"][0]["case_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = h.wait_for(&first, |c| c["status"] != "running").await;
    assert_eq!(a["status"], "completed", "{a:#}");
    let found = chain_event(&h, &first).await;
    assert_eq!(found["type"], "chain_started", "{found:#}");
    assert_eq!(found["workflow"], "funeral-claim");
    let chained = found["case_id"].as_str().unwrap().to_owned();
    let b = h.wait_for(&chained, |c| c["status"] != "running").await;
    assert_eq!(b["status"], "completed", "{b:#}");
    assert_eq!(b["origin"]["started_by"], "case");
    assert_eq!(b["origin"]["case_id"], first);
    assert_eq!(b["origin"]["outcome"], "completed");
    assert_eq!(b["origin"]["correlation_id"], event_id);
    assert_eq!(b["origin"]["depth"], 1);
    let causation = b["origin"]["causation_id"].as_str().unwrap().to_owned();
    assert!(causation.starts_with(&format!("{first}.")), "{causation}");

    // The webhook's CloudEvents: A's end is the cause of B's start, one correlation throughout.
    let mut events = Vec::new();
    for _ in 0..1200 {
        events = got.lock().unwrap().clone();
        let b_done = events.iter().any(|e| {
            e["subject"] == chained && e["type"] == "io.serverlessworkflow.workflow.completed.v1"
        });
        if b_done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let a_end = events
        .iter()
        .find(|e| {
            e["subject"] == first && e["type"] == "io.serverlessworkflow.workflow.completed.v1"
        })
        .unwrap();
    assert_eq!(a_end["id"], causation.as_str());
    let b_start = events
        .iter()
        .find(|e| {
            e["subject"] == chained && e["type"] == "io.serverlessworkflow.workflow.started.v1"
        })
        .unwrap();
    assert_eq!(b_start["causationid"], causation.as_str());
    assert_eq!(b_start["specversion"], "1.0");
    for e in events
        .iter()
        .filter(|e| e["subject"] == first || e["subject"] == chained)
    {
        assert_eq!(e["correlationid"], event_id.as_str(), "{e:#}");
        assert!(
            e["traceparent"].as_str().unwrap().starts_with("00-"),
            "{e:#}"
        );
    }

    let metrics = h
        .http
        .get(format!("{}/metrics", h.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"civicflow_events_total{workflow="death-registration",action="started"} 1"#,
        r#"civicflow_chains_total{workflow="funeral-claim",action="started"} 1"#,
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }

    // A chain as deep as the limit starts nothing more.
    let deep = civicflow::engine::Caused {
        origin: civicflow::case::Origin {
            cause: civicflow::case::inbox::Cause::Case {
                case_id: "earlier".into(),
                workflow: "funeral-claim".into(),
                outcome: "completed".into(),
            },
            correlation_id: "loop".into(),
            causation_id: "earlier.9".into(),
            depth: civicflow::workflow::triggers::MAX_CHAIN_DEPTH,
        },
        event: None,
    };
    let mut input = support::death_input("001075111222", "Trần Văn Hùng");
    input["funeral_allowance"] = json!({"requested": false, "organizer": {"personal_id": "001190123456", "full_name": "Nguyễn Thị Lan", "relationship": "con dâu"}});
    let (deep_case, _) = h
        .engine
        .start_caused("death-registration", None, input, None, None, Some(deep))
        .await
        .unwrap();
    let id = deep_case.id.to_string();
    h.wait_for(&id, |c| c["status"] != "running").await;
    let stopped = chain_event(&h, &id).await;
    assert_eq!(stopped["type"], "chain_not_started", "{stopped:#}");
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap()
            .contains("a chain stops at 8")
    );
}

#[tokio::test]
async fn a_chain_carries_its_ids_on_sled() {
    a_chain_carries_its_ids(InProcess::with_workflows(chained_workflows()).await).await;
}

#[tokio::test]
async fn a_chain_carries_its_ids_on_postgres() {
    a_chain_carries_its_ids(InProcess::postgres_with_workflows(chained_workflows()).await).await;
}

/// The hospital's death certificates for `n` living citizens of the mocks' population, as the
/// hospital would send them.
async fn certificates(http: &reqwest::Client, civil_status: &str, n: usize) -> Vec<Value> {
    let citizens = fetch(
        http,
        &format!("{civil_status}/admin/citizens?living=true&limit=400"),
    )
    .await;
    citizens
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["commune"].is_string() && c["personal_id"] != "001190123456")
        .take(n)
        .enumerate()
        .map(|(i, c)| {
            let number = format!("GBT-KILL-{i:04}");
            json!({
                "specversion": "1.0",
                "id": format!("{number}/certified"),
                "source": HOSPITAL,
                "type": DEATH_CERTIFIED,
                "subject": number,
                "datacontenttype": "application/json",
                "data": {
                    "certificate_number": number,
                    "deceased": {
                        "personal_id": c["personal_id"],
                        "full_name": c["full_name"],
                        "date_of_death": days_ago(1),
                        "place_of_death": "Bach Mai Hospital, Hà Nội",
                    },
                    "last_address": {"commune_code": c["commune"], "detail": "on record"},
                    "declarant": {"personal_id": "001190123456", "full_name": "Nguyễn Thị Lan", "relationship": "con dâu"},
                },
            })
        })
        .collect()
}

/// Sends `event` until the server answers it, as a source that delivers at least once: through
/// a kill and a restart on the same address.
async fn send_until_answered(http: reqwest::Client, url: String, event: Value) -> Value {
    loop {
        let sent = http
            .post(format!("{url}/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string())
            .timeout(std::time::Duration::from_secs(20))
            .send()
            .await;
        if let Ok(reply) = sent
            && reply.status().is_success()
        {
            return reply.json().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Deaths certified as events while the node is killed (`kill -9`) mid-stream and restarted:
/// every event, sent again until answered and once more after, started exactly one case, and
/// each death was registered once.
async fn a_kill_while_events_arrive_changes_nothing(backend: support::Backend) {
    const DEATHS: usize = 24;
    let data = std::env::temp_dir().join(format!("civicflow-events-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", support::free_port());
    let (mocks, mut args) = support::mocks_in_test(36).await;
    args.extend(backend.serve_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = support::Server::spawn(&data, &listen, &args);
    let civil_status = mocks.base_url("civil-status").unwrap().to_owned();
    let events = certificates(&server.http, &civil_status, DEATHS).await;
    assert_eq!(events.len(), DEATHS);
    let hospital = client_with(&server.token(&format!("source:{HOSPITAL}")).await);
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for event in events.clone() {
        let (http, url, answered) = (hospital.clone(), server.url.clone(), answered.clone());
        senders.spawn(async move {
            let answer = send_until_answered(http, url, event).await;
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer
        });
    }
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill();
    let server = support::Server::spawn(&data, &listen, &args);
    let mut first = Vec::new();
    while let Some(answer) = senders.join_next().await {
        first.push(answer.unwrap());
    }
    assert_eq!(first.len(), DEATHS);
    for event in &events {
        let (status, again, replayed) = post_event(&hospital, &server.url, event).await;
        assert_eq!(status, 200, "{again:#}");
        assert!(replayed);
        let routed = again["routed"].as_array().unwrap();
        assert_eq!(routed.len(), 1, "{again:#}");
        let deceased = event["data"]["deceased"]["personal_id"].as_str().unwrap();
        let list = server
            .get(&format!("/v1/cases?key=deceased={deceased}"))
            .await;
        let cases = list["items"].as_array().unwrap();
        assert_eq!(cases.len(), 1, "{deceased}: {list:#}");
        assert_eq!(routed[0]["case_id"], cases[0]["id"], "{again:#}");
        let id = cases[0]["id"].as_str().unwrap();
        let case = server.settled(id, std::time::Duration::from_secs(60)).await;
        assert_eq!(case["status"], "completed", "{case:#}");
        assert_eq!(
            support::effects(&server.http, &civil_status, id).await,
            [1],
            "the death of {deceased} was registered once"
        );
    }
    drop(server);
    mocks.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn a_kill_while_events_arrive_changes_nothing_on_sled() {
    a_kill_while_events_arrive_changes_nothing(support::Backend::Sled).await;
}

#[tokio::test]
async fn a_kill_while_events_arrive_changes_nothing_on_postgres() {
    a_kill_while_events_arrive_changes_nothing(support::Backend::Postgres).await;
}
