//! Two civicflow nodes over one store, in one process, against the real mocks: the store
//! contract is what lets several nodes share the work. Every timer fires once, every agency
//! effect happens once per (case, step), a definition published through one node is used by
//! cases started on the other, and a webhook registered on one is fed by the other's cases.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use civicflow::auth::{Role, issue};
use civicflow::engine::Clock;
use civicflow::store::sled::{DEFAULT_CACHE_MIB, SledStore};
use serde_json::{Value, json};
use support::{
    Node, agency_urls, assert_each_poll_answered_once, birth_input, client_with, effects, fetch,
    mocks_in_test, set_callback_token,
};

const BOUND: Duration = Duration::from_secs(120);
/// Birth cases on the shipped version 1, started over both nodes, and cases on the version 2
/// that is published through the first node, started on the second.
const V1_CASES: usize = 40;
const V2_CASES: usize = 8;

/// Notifications received, by case: their types, in arrival order.
type Received = Arc<Mutex<HashMap<String, Vec<String>>>>;

async fn receive(State(r): State<Received>, body: String) -> StatusCode {
    let n: Value = serde_json::from_str(&body).unwrap();
    let kind = match n["step"].as_str() {
        Some(step) => format!("{} {step}", n["type"].as_str().unwrap()),
        None => n["type"].as_str().unwrap().to_owned(),
    };
    r.lock()
        .unwrap()
        .entry(n["case_id"].as_str().unwrap().to_owned())
        .or_default()
        .push(kind);
    StatusCode::NO_CONTENT
}

fn example(file: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/social-assistance")
            .join(file),
    )
    .unwrap()
}

async fn publish(http: &reqwest::Client, url: &str, path: &str, text: String) {
    let response = http
        .post(format!("{url}{path}"))
        .header("content-type", "application/yaml")
        .body(text)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(status, 201, "{}", response.text().await.unwrap());
}

async fn start(http: &reqwest::Client, url: &str, body: Value) -> String {
    let response = http
        .post(format!("{url}/v1/cases"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_over_one_store_share_the_work_and_do_each_thing_once() {
    let (mocks, _) = mocks_in_test(11).await;
    let agencies = agency_urls(&mocks);
    let data = std::env::temp_dir().join(format!("civicflow-nodes-{}", uuid::Uuid::new_v4()));
    let store = SledStore::open(&data, DEFAULT_CACHE_MIB << 20).unwrap();
    let a = Node::start(store.clone(), &agencies, Clock::system()).await;
    let b = Node::start(store.clone(), &agencies, Clock::system()).await;
    assert_ne!(a.app.engine.node(), b.app.engine.node());

    let token = |role: Role| issue(&store, role, "test", "test", jiff::Timestamp::now());
    let admin = client_with(&token(Role::Admin).await.unwrap().1);
    let portal = client_with(&token(Role::Portal).await.unwrap().1);
    let assistance = client_with(
        &token(Role::Agency("social-assistance".into()))
            .await
            .unwrap()
            .1,
    );
    let police = token(Role::Agency("police".into())).await.unwrap().1;
    set_callback_token(&admin, &agencies["police"], &police).await;

    // The portal's receiver, registered through node A.
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(received.clone());
    tokio::spawn(axum::serve(listener, app).into_future());
    let response = portal
        .post(format!("{}/v1/webhooks", a.url))
        .json(&json!({"url": receiver}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // Version 1 cases over both nodes, all at once.
    let mut started = tokio::task::JoinSet::new();
    for i in 0..V1_CASES {
        let (portal, url) = (portal.clone(), [&a.url, &b.url][i % 2].clone());
        started.spawn(async move {
            let input = birth_input(&format!("NODES-{i}"));
            let body = json!({"workflow": "birth-registration", "version": 1, "input": input});
            start(&portal, &url, body).await
        });
    }

    // Meanwhile version 2 is published through node A and started on node B at once.
    publish(
        &assistance,
        &a.url,
        "/v1/adapters",
        example("birth-allowance.yaml"),
    )
    .await;
    publish(
        &admin,
        &a.url,
        "/v1/workflows",
        example("birth-registration-v2.yaml"),
    )
    .await;
    // Its allowance is exchanged on the guardian's consent, recorded through node A (which
    // learns of the new agreement from the store) for cases on node B.
    let consent = json!({
        "subject": birth_input("NODES-V2")["requester_personal_id"],
        "agreement": "poor-household-birth-allowance",
        "given_as": "guardian",
        "opt_in": true,
    });
    let response = portal
        .post(format!("{}/v1/consents", a.url))
        .json(&consent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut v2 = Vec::new();
    for i in 0..V2_CASES {
        let mut input = birth_input(&format!("NODES-V2-{i}"));
        input["poor_household_certificate"] = json!("HN-00004-0012");
        let body = json!({"workflow": "birth-registration", "version": 2, "input": input});
        v2.push(start(&portal, &b.url, body).await);
    }
    let v1 = started.join_all().await;

    // Every case completes, read through either node.
    let until = tokio::time::Instant::now() + BOUND;
    let mut cases = HashMap::new();
    for (i, id) in v1.iter().chain(&v2).enumerate() {
        let url = [&a.url, &b.url][i % 2];
        loop {
            let case = fetch(&admin, &format!("{url}/v1/cases/{id}")).await;
            if case["status"] != "running" || tokio::time::Instant::now() > until {
                cases.insert(id.clone(), case);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (id, case) in &cases {
        assert_eq!(case["status"], "completed", "{id}: {case:#}");
    }
    for id in &v2 {
        assert_eq!(cases[id]["version"], 2);
        assert_eq!(cases[id]["steps"]["birth_allowance"]["status"], "succeeded");
    }

    // Each agency acted once per (case, step).
    for id in v1.iter().chain(&v2) {
        for (agency, url) in &agencies {
            let counted = effects(&admin, url, id).await;
            assert!(
                counted.iter().all(|n| *n == 1),
                "{agency} {id}: {counted:?}"
            );
        }
    }

    // Every poll timer fired once: each status request the social-security office saw for a
    // case is one poll the case's history answers (pending, or the card at last).
    let ids: Vec<String> = v1.iter().chain(&v2).cloned().collect();
    let social = &agencies["social-security"];
    assert_each_poll_answered_once(&admin, social, &a.url, &ids).await;

    // The webhook registered on node A got every step's result and every case's end, from both
    // nodes' changes, though the cases started at once after its registration (node B never
    // had to learn of it).
    let until = tokio::time::Instant::now() + BOUND;
    loop {
        let done = {
            let received = received.lock().unwrap();
            v1.iter().chain(&v2).all(|id| {
                received
                    .get(id)
                    .is_some_and(|n| n.iter().any(|t| t == "case.finished"))
            })
        };
        if done || tokio::time::Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received.lock().unwrap();
    for id in v1.iter().chain(&v2) {
        let got = received.get(id).cloned().unwrap_or_default();
        let ends = got.iter().filter(|t| *t == "case.finished").count();
        assert_eq!(ends, 1, "{id}: {got:?}");
        assert_eq!(
            got.last().map(String::as_str),
            Some("case.finished"),
            "{id}: {got:?}"
        );
        let mut steps: Vec<&str> = got
            .iter()
            .filter_map(|t| t.strip_prefix("step.finished "))
            .collect();
        steps.sort_unstable();
        let mut expected: Vec<&str> = cases[id]["steps"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        expected.sort_unstable();
        assert_eq!(steps, expected, "{id}: {got:?}");
    }
    drop(received);
    drop((a, b));
    let _ = std::fs::remove_dir_all(&data);
}
