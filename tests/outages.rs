//! Agency outages: a run of failures opens the agency's circuit, its calls are held instead of
//! burning the steps' retry budgets, one probe at a time tests it, and its first answer closes
//! it and releases the held steps. Refusals and garbled replies never open one; an operator may
//! open one by hand for a planned maintenance. The engine runs in this process; the HTTP API and
//! the mock agencies are the real ones.

mod support;

use std::time::Duration;

use civicflow::circuits::{Policy, Settings};
use serde_json::{Value, json};
use support::outage::{self, Load};
use support::{InProcess, birth_input, fetch, put_faults};

const BOUND: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_holds_the_calls_and_every_case_finishes_once_the_agency_is_back() {
    let app = InProcess::start().await;
    // From 2 s before the outage to 2 s after it.
    let load = Load {
        cases: 120,
        rate: 10,
        before: Duration::from_secs(2),
        outage: Duration::from_secs(8),
    };
    let run = outage::run(&app, load, "GCS-OUT", BOUND).await;
    println!(
        "{} cases; police calls answered by the outage: {} of {}; most attempts of a step: {}; last case ended {} after the agency came back",
        run.cases.len(),
        run.calls_in_outage,
        run.police_calls,
        run.max_attempts,
        run.recovery
    );
    for case in &run.cases {
        assert_eq!(case["status"], "completed", "{case:#}");
    }
    assert!(
        run.effects_not_once.is_empty(),
        "{:?}",
        run.effects_not_once
    );
    // A run of failures (the threshold, and calls already in flight when it opened) and the
    // probes; without the circuit every case's every retry reaches the agency.
    assert!(run.calls_in_outage <= 20, "{} calls", run.calls_in_outage);
    assert!(run.max_attempts <= 10, "{} attempts", run.max_attempts);
    // During the outage: one outage for the agency, with the steps that wait for it.
    let police = |list: &Value| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agency"] == "police")
            .cloned()
            .unwrap()
    };
    let during = police(&run.agencies_during);
    assert_eq!(during["state"], "open", "{during:#}");
    assert!(during["held_steps"].as_u64().unwrap() > 0, "{during:#}");
    let outages = run.incidents_during["outages"].as_array().unwrap();
    assert_eq!(outages.len(), 1, "{:#}", run.incidents_during);
    assert_eq!(outages[0]["agency"], "police");
    // No case got an incident of its own for it.
    let incidents = fetch(&app.http, &format!("{}/v1/incidents", app.url)).await;
    assert_eq!(incidents["items"], json!([]), "{incidents:#}");
    assert_eq!(incidents["outages"], json!([]), "{incidents:#}");
    // Afterwards: closed, by civicflow itself, with the opening and the closing on record.
    let after = fetch(&app.http, &format!("{}/v1/agencies/police", app.url)).await;
    assert_eq!(after["state"], "closed", "{after:#}");
    assert_eq!(after["held_steps"], 0, "{after:#}");
    let trail: Vec<(&str, &str)> = after["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["state"].as_str().unwrap(), c["by"].as_str().unwrap()))
        .collect();
    assert_eq!(trail, [("open", "civicflow"), ("closed", "civicflow")]);
    // A held step's history says why it waited.
    let mut held = 0;
    for case in &run.cases {
        let id = case["id"].as_str().unwrap();
        let history = fetch(&app.http, &format!("{}/v1/cases/{id}/history", app.url)).await;
        let kinds: Vec<&str> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect();
        if kinds.contains(&"step_held") {
            held += 1;
        }
    }
    assert!(held > 0, "no case's history shows a held step");
}

/// The police's circuit as the API shows it.
async fn police(app: &InProcess) -> Value {
    fetch(&app.http, &format!("{}/v1/agencies/police", app.url)).await
}

async fn start(app: &InProcess, input: Value) -> String {
    app.start_birth(input).await
}

#[tokio::test]
async fn refusals_and_garbled_replies_never_open_a_circuit() {
    // Two failures in a row would open either: these answers must not count as failures at all.
    let mut settings = Settings::default();
    let strict = Policy::default().with("2").unwrap();
    settings.agencies.insert("police".into(), strict);
    settings.agencies.insert("civil-status".into(), strict);
    let app = InProcess::start_with(settings).await;
    let mut refused = birth_input("GCS-REF-1");
    refused["household_head_personal_id"] = json!("079999999999");
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut input = refused.clone();
        input["birth_certificate_number"] = json!(format!("GCS-REF-{i}"));
        input["dossier_number"] = json!(format!("G01.123-REF-{i}"));
        ids.push(start(&app, input).await);
    }
    for id in &ids {
        let case = app
            .wait_for(id, |c| c["steps"]["residence"]["status"] == "rejected")
            .await;
        assert_eq!(case["steps"]["residence"]["status"], "rejected", "{case:#}");
    }
    // The civil status office's registration replies with the record: cut in half, it cannot
    // be read, and the step fails with an incident (the agency did answer).
    let civil = &app.agencies["civil-status"];
    put_faults(&app.http, civil, json!({"rates": {"garbled": 1.0}})).await;
    for i in 0..3 {
        let id = start(&app, birth_input(&format!("GCS-GARBLED-{i}"))).await;
        let case = app
            .wait_for(&id, |c| c["steps"]["birth"]["status"] == "failed")
            .await;
        assert_eq!(case["steps"]["birth"]["status"], "failed", "{case:#}");
    }
    for agency in ["police", "civil-status"] {
        let circuit = fetch(&app.http, &format!("{}/v1/agencies/{agency}", app.url)).await;
        assert_eq!(circuit["state"], "closed", "{circuit:#}");
        assert_eq!(circuit["changes"], json!([]), "{circuit:#}");
    }
}

#[tokio::test]
async fn a_circuit_opened_by_hand_holds_calls_without_probes_until_it_is_closed() {
    let app = InProcess::start().await;
    let set = |body: Value, token: Option<String>| {
        let http = match token {
            Some(t) => support::client_with(&t),
            None => app.http.clone(),
        };
        let url = format!("{}/v1/agencies/police/circuit", app.url);
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let operator = app.token(civicflow::auth::Role::Operator, "thu").await;
    let portal = app.token(civicflow::auth::Role::Portal, "portal").await;
    // Refused: no reason, a state that is none, the portal's role, an agency civicflow does not
    // call.
    let (status, body) = set(json!({"state": "open", "reason": " "}), None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("reason_required"))
    );
    let (status, body) = set(json!({"state": "half", "reason": "x"}), None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid_state"))
    );
    let (status, _) = set(json!({"state": "open", "reason": "x"}), Some(portal)).await;
    assert_eq!(status, 403);
    let unknown = app
        .http
        .post(format!("{}/v1/agencies/tax/circuit", app.url))
        .json(&json!({"state": "open", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);

    let (status, opened) = set(
        json!({"state": "open", "reason": "planned upgrade, Saturday 22:00-02:00"}),
        Some(operator.clone()),
    )
    .await;
    assert_eq!(status, 200, "{opened:#}");
    assert_eq!(opened["state"], "open");
    assert!(
        opened["opened_by"]
            .as_str()
            .unwrap()
            .starts_with("thu (operator")
    );
    let id = start(&app, birth_input("GCS-MAINT")).await;
    let case = app
        .wait_for(&id, |c| {
            c["steps"]["residence"]["status"] == "waiting_for_agency"
        })
        .await;
    assert_eq!(
        case["steps"]["residence"]["status"], "waiting_for_agency",
        "{case:#}"
    );
    assert_eq!(case["steps"]["residence"]["attempts"], 0, "{case:#}");
    // Longer than the first probe would wait: a maintenance window is not probed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let police_url = &app.agencies["police"];
    let sent = fetch(
        &app.http,
        &format!("{police_url}/admin/requests?case_id={id}"),
    )
    .await;
    assert_eq!(sent, json!([]), "{sent:#}");
    assert_eq!(police(&app).await["held_steps"], 1);

    let (status, closed) = set(
        json!({"state": "closed", "reason": "upgrade done"}),
        Some(operator),
    )
    .await;
    assert_eq!(status, 200, "{closed:#}");
    let case = app.wait_for(&id, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["steps"]["residence"]["attempts"], 1, "{case:#}");
    let trail: Vec<(&str, &str)> = closed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["state"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        trail,
        [
            ("open", "planned upgrade, Saturday 22:00-02:00"),
            ("closed", "upgrade done")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_follows_an_agencys_circuit_through_the_store() {
    use civicflow::auth::Role;
    use civicflow::engine::Clock;
    use civicflow::store::sled::{DEFAULT_CACHE_MIB, SledStore};
    use support::{Node, agency_urls, client_with, issue_token, mocks_in_test, set_callback_token};

    let (_mocks, _) = mocks_in_test(5).await;
    let agencies = agency_urls(&_mocks);
    let data = std::env::temp_dir().join(format!("civicflow-circuits-{}", uuid::Uuid::new_v4()));
    let store = SledStore::open(&data, DEFAULT_CACHE_MIB << 20).unwrap();
    let a = Node::start(store.clone(), &agencies, Clock::system()).await;
    let b = Node::start(store.clone(), &agencies, Clock::system()).await;
    let admin = client_with(&issue_token(&store, Role::Admin, "test").await);
    let police = issue_token(&store, Role::Agency("police".into()), "test").await;
    set_callback_token(&admin, &agencies["police"], &police).await;
    let circuit = |url: &str, state: &str| {
        let request = admin
            .post(format!("{url}/v1/agencies/police/circuit"))
            .json(&json!({"state": state, "reason": "maintenance"}));
        async move { assert_eq!(request.send().await.unwrap().status(), 200) }
    };
    let seen_on = |url: String| {
        let admin = admin.clone();
        async move {
            let until = tokio::time::Instant::now() + BOUND;
            loop {
                let police = fetch(&admin, &format!("{url}/v1/agencies/police")).await;
                if police["state"] == "open" || tokio::time::Instant::now() > until {
                    return police;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Opened through node A, node B holds its own cases' calls.
    circuit(&a.url, "open").await;
    assert_eq!(seen_on(b.url.clone()).await["state"], "open");
    let id = support::start_birth(&admin, &b.url, birth_input("GCS-NODES")).await;
    let case_url = format!("{}/v1/cases/{id}", b.url);
    let case_on_b = || fetch(&admin, &case_url);
    let until = tokio::time::Instant::now() + BOUND;
    let mut case = case_on_b().await;
    while case["steps"]["residence"]["status"] != "waiting_for_agency"
        && tokio::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        case = case_on_b().await;
    }
    assert_eq!(
        case["steps"]["residence"]["status"], "waiting_for_agency",
        "{case:#}"
    );

    // Closed through node B, the case goes on.
    circuit(&b.url, "closed").await;
    while case["status"] == "running" && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        case = case_on_b().await;
    }
    assert_eq!(case["status"], "completed", "{case:#}");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn a_held_step_and_its_open_circuit_outlive_a_kill_and_go_on_after_the_restart() {
    use support::{Server, effects, free_port, mocks_in_test};

    let (mocks, args) = mocks_in_test(7).await;
    let police = agency_url(&mocks, "police");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = std::env::temp_dir().join(format!("civicflow-held-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server::spawn(&data, &listen, &args);
    server.connect_mocks(&police).await;
    let circuit = |state: &str| json!({"state": state, "reason": "maintenance"});
    let path = "/v1/agencies/police/circuit";
    assert_eq!(server.post(path, &circuit("open"), None).await.0, 200);
    let id = server
        .start_case("birth-registration", birth_input("GCS-KILLED"))
        .await;
    let held = |case: &Value| case["steps"]["residence"]["status"] == "waiting_for_agency";
    let until = tokio::time::Instant::now() + BOUND;
    while !held(&server.get(&format!("/v1/cases/{id}")).await) {
        assert!(
            tokio::time::Instant::now() < until,
            "the step was never held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill();

    let server = Server::spawn(&data, &listen, &args);
    let agency = server.get("/v1/agencies/police").await;
    assert_eq!(
        (&agency["state"], &agency["held_steps"]),
        (&json!("open"), &json!(1))
    );
    // Still held a while later: nothing was sent to the police.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(held(&server.get(&format!("/v1/cases/{id}")).await));
    let sent = fetch(
        &server.http,
        &format!("{police}/admin/requests?case_id={id}"),
    )
    .await;
    assert_eq!(sent, json!([]), "{sent:#}");

    assert_eq!(server.post(path, &circuit("closed"), None).await.0, 200);
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(effects(&server.http, &police, &id).await, vec![1]);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// The base URL of agency `id` among mocks running in this process.
fn agency_url(mocks: &civicflow_mocks::RunningMocks, id: &str) -> String {
    let agency = mocks.agencies.iter().find(|a| a.id == id).unwrap();
    agency.base_url.clone()
}
