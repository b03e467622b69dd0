//! The registry through the API of the real binary: agencies publish and deprecate their own
//! adapters, an admin publishes workflows, each in effect at once and after a restart, with the
//! same located messages as `civicflow validate` for a bad definition.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    MANUAL_HEAD, Server, birth_input, free_port, grant_consent, with_mocks, workflows_dir,
};

const BOUND: Duration = Duration::from_secs(60);

fn shipped(path: &str) -> String {
    std::fs::read_to_string(workflows_dir().join(path)).unwrap()
}

/// Posts YAML text with `token`.
async fn publish(server: &Server, token: &str, path: &str, text: &str) -> (u16, Value) {
    let response = support::client_with(token)
        .post(format!("{}{path}", server.url))
        .header("content-type", "application/yaml")
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn agencies_publish_their_adapters_and_new_workflow_versions_use_them_without_a_restart() {
    let data = std::env::temp_dir().join(format!("civicflow-registry-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mocks = with_mocks(&[]);
    let mut server = Server::spawn(&data, &listen, &mocks);
    let police = server.token("agency:police").await;
    let social = server.token("agency:social-security").await;

    let v2 =
        shipped("adapters/police/residence-registration.yaml").replace("version: 1", "version: 2");
    let (status, body) = publish(&server, &social, "/v1/adapters", &v2).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("not_your_namespace")),
        "{body}"
    );
    let broken = v2.replace("method: POST", "method: SEND");
    let (status, body) = publish(&server, &police, "/v1/adapters", &broken).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("registry:adapter/police/residence-registration@2:")
            && message.contains("error[CF0"),
        "{message}"
    );
    let (status, body) = publish(&server, &police, "/v1/adapters", &v2).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["published_by"].as_str().unwrap().split(' ').next(),
        Some("test")
    );
    let (status, body) = publish(&server, &police, "/v1/adapters", &v2).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("immutable")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("publish version 3")
    );
    let (status, body) = publish(
        &server,
        &police,
        "/v1/adapters",
        &shipped("birth-registration.yaml"),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("wrong_kind")),
        "{body}"
    );

    // A new version of the birth workflow pins the new adapter version.
    let workflow = shipped("birth-registration.yaml")
        .replace("version: 1", "version: 2")
        .replace(
            "police/residence-registration@1",
            "police/residence-registration@2",
        );
    let (status, body) = publish(&server, &police, "/v1/workflows", &workflow).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("not_your_namespace")),
        "{body}"
    );
    let (status, body) = publish(&server, &server.admin, "/v1/workflows", &workflow).await;
    assert_eq!(status, 201, "{body}");

    let new = server
        .start_case("birth-registration", birth_input("REG-NEW"))
        .await;
    let (_, old) = server
        .post(
            "/v1/cases",
            &json!({"workflow": "birth-registration", "version": 1, "input": birth_input("REG-OLD")}),
            None,
        )
        .await;
    let old = old["id"].as_str().unwrap().to_owned();
    for (id, adapter) in [
        (&new, "police/residence-registration@2"),
        (&old, "police/residence-registration@1"),
    ] {
        let case = server.settled(id, BOUND).await;
        assert_eq!(case["status"], "completed", "{case:#}");
        assert_eq!(case["steps"]["residence"]["adapter"], adapter);
        let history = server.get(&format!("/v1/cases/{id}/history")).await;
        let used: Vec<&Value> = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "attempt_started" && e["step"] == "residence")
            .map(|e| &e["adapter"])
            .collect();
        assert_eq!(
            used,
            [&json!(adapter)],
            "the history names the version each case used"
        );
    }

    // Deprecated: new workflows may not pin it, and are told what to pin instead.
    let path = "/v1/adapters/police/residence-registration/2/deprecate";
    let body = json!({"reason": "the address format changed", "replacement": 1});
    let (status, refused) = server
        .call(Some(&social), Method::POST, path, Some(&body))
        .await;
    assert_eq!(status, 403, "{refused}");
    let (status, done) = server
        .call(Some(&police), Method::POST, path, Some(&body))
        .await;
    assert_eq!(status, 200, "{done}");
    let v3 = workflow.replace("version: 2", "version: 3");
    let (status, body) = publish(&server, &server.admin, "/v1/workflows", &v3).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("error[CF062]: adapter `police/residence-registration@2` is deprecated: the address format changed"), "{message}");
    assert!(
        message.contains("help: pin `police/residence-registration@1` instead"),
        "{message}"
    );

    let (_, changes) = server
        .call(Some(&police), Method::GET, "/v1/registry/changes", None)
        .await;
    let actions: Vec<(&str, &str)> = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["action"].as_str().unwrap(), c["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("published", "police/residence-registration"),
            ("published", "birth-registration"),
            ("deprecated", "police/residence-registration"),
        ]
    );

    // After a restart the published definitions are loaded again.
    server.kill();
    let server = Server::spawn(&data, &listen, &mocks);
    let (_, list) = server
        .call(Some(&police), Method::GET, "/v1/adapters", None)
        .await;
    let v2 = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["adapter"] == "police/residence-registration@2")
        .unwrap()
        .clone();
    assert_eq!(v2["source"], "published");
    assert_eq!(v2["deprecated"]["replacement"], 1);
    let again = server
        .start_case("birth-registration", birth_input("REG-AFTER"))
        .await;
    let case = server.settled(&again, BOUND).await;
    assert_eq!(case["version"], 2, "{case:#}");
}

/// `POST /v1/adapters/test` with `token`: a manifest tried against its agency.
async fn try_manifest(server: &Server, token: &str, body: &Value) -> (u16, Value) {
    server
        .call(Some(token), Method::POST, "/v1/adapters/test", Some(body))
        .await
}

#[tokio::test]
async fn an_agency_tests_a_manifest_against_its_endpoint_without_touching_a_case() {
    let server = Server::start();
    let civil = server.token("agency:civil-status").await;
    let manifest = shipped("adapters/civil-status/birth-registration.yaml");
    let dossier = birth_input("TRIAL-1");
    let mut input = json!({
        "office_commune_code": "00004",
        "requester_personal_id": dossier["requester_personal_id"],
        "child": dossier["child"],
        "birth_certificate_number": dossier["birth_certificate_number"],
        "mother": dossier["mother"],
        "father": dossier["father"],
        "permanent_address": dossier["permanent_address"],
    });
    let trial = |input: &Value| json!({"manifest": manifest, "input": input});
    let (status, outcome) = try_manifest(&server, &civil, &trial(&input)).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["outcome"], "success", "{outcome:#}");
    assert_eq!(
        outcome["output"]["child_personal_id"]
            .as_str()
            .unwrap()
            .len(),
        12
    );
    assert_eq!(outcome["request"]["method"], "POST");

    // A refusal, classified as a case would see it.
    input["birth_certificate_number"] = json!("TRIAL-2");
    input["mother"]["personal_id"] = json!("001190999999");
    let (_, outcome) = try_manifest(&server, &civil, &trial(&input)).await;
    assert_eq!(outcome["outcome"], "rejected", "{outcome:#}");
    assert!(outcome["reason_code"].is_string());

    // A retryable failure.
    server
        .set_faults("civil-status", json!({"rates": {"unavailable": 1.0}}))
        .await;
    input["birth_certificate_number"] = json!("TRIAL-3");
    let (_, outcome) = try_manifest(&server, &civil, &trial(&input)).await;
    assert_eq!(outcome["outcome"], "retryable", "{outcome:#}");
    server.set_faults("civil-status", json!({})).await;

    // A sample that breaks the input schema, another agency's manifest, a broken manifest.
    let (status, body) = try_manifest(&server, &civil, &trial(&json!({}))).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid_input")),
        "{body}"
    );
    let police = server.token("agency:police").await;
    let (status, body) = try_manifest(&server, &police, &trial(&input)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("not_your_namespace")),
        "{body}"
    );
    let broken =
        json!({"manifest": manifest.replace("method: POST", "method: SEND"), "input": input});
    let (status, body) = try_manifest(&server, &civil, &broken).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("invalid_definition")),
        "{body}"
    );

    // No case was started by any of it.
    let (_, cases) = server
        .call(
            Some(&server.admin),
            Method::GET,
            "/v1/cases?workflow=birth-registration",
            None,
        )
        .await;
    assert!(cases["items"].as_array().unwrap().is_empty(), "{cases}");
}

/// The examples an agency publishes in docs/adapters.md.
fn example(path: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/social-assistance")
            .join(path),
    )
    .unwrap()
}

#[tokio::test]
async fn a_fourth_agency_joins_the_birth_chain_and_cases_started_before_keep_their_version() {
    let server = Server::start();
    // A case on version 1, waiting for the household head's consent while the chain changes.
    let mut waiting = birth_input("FOURTH-OLD");
    waiting["household_head_personal_id"] = json!(MANUAL_HEAD);
    waiting["poor_household_certificate"] = json!("HN-00004-0012");
    let old = server.start_case("birth-registration", waiting).await;
    awaiting_consent(&server, &old).await;

    // The social-assistance office publishes its adapter; an admin adds it to the chain.
    let assistance = server.token("agency:social-assistance").await;
    let (status, body) = publish(
        &server,
        &assistance,
        "/v1/adapters",
        &example("birth-allowance.yaml"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = publish(
        &server,
        &server.admin,
        "/v1/workflows",
        &example("birth-registration-v2.yaml"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Both versions are listed, the new one for new cases, each with its deadline and steps.
    let list = server.get("/v1/workflows").await;
    let birth: Vec<&serde_json::Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["workflow"] == "birth-registration")
        .collect();
    let versions: Vec<(&serde_json::Value, &serde_json::Value, &serde_json::Value)> = birth
        .iter()
        .map(|w| (&w["version"], &w["source"], &w["newest"]))
        .collect();
    assert_eq!(
        versions,
        [
            (&json!(1), &json!("bundled"), &json!(false)),
            (&json!(2), &json!("published"), &json!(true))
        ],
        "{list:#}"
    );
    assert_eq!(birth[0]["deadline"], "3 working days");
    assert_eq!(birth[0]["steps"][0]["id"], "birth");
    assert_eq!(birth[0]["steps"][0]["deadline"], "1 working day");
    assert!(
        birth[1]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["adapter"] == "social-assistance/birth-allowance@1"),
        "{list:#}"
    );

    // The allowance is exchanged on the guardian's consent, given at the portal.
    let mut input = birth_input("FOURTH-NEW");
    input["poor_household_certificate"] = json!("HN-00004-0012");
    let guardian = json!({
        "subject": input["requester_personal_id"],
        "agreement": "poor-household-birth-allowance",
        "given_as": "guardian",
        "opt_in": true,
    });
    let (status, body) = server.post("/v1/consents", &guardian, None).await;
    assert_eq!(status, 201, "{body}");
    let new = server.start_case("birth-registration", input).await;
    let case = server.settled(&new, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["version"], 2);
    let allowance = &case["steps"]["birth_allowance"];
    assert_eq!(allowance["adapter"], "social-assistance/birth-allowance@1");
    assert_eq!(allowance["output"]["amount_vnd"], 4_680_000, "{case:#}");
    let effects = support::effects(&server.http, &server.agencies["social-assistance"], &new).await;
    assert_eq!(effects, vec![1]);

    // The old case finishes on version 1: no allowance step, nothing asked of the new agency.
    consent(&server).await;
    let case = server.settled(&old, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["version"], 1);
    assert!(case["steps"].get("birth_allowance").is_none(), "{case:#}");
    let effects = support::effects(&server.http, &server.agencies["social-assistance"], &old).await;
    assert!(effects.is_empty());
}

#[tokio::test]
async fn a_workflow_following_the_latest_adapter_gets_compatible_versions_and_running_cases_keep_theirs()
 {
    let server = Server::start();
    let police = server.token("agency:police").await;
    let workflow = shipped("birth-registration.yaml")
        .replace("version: 1", "version: 2")
        .replace(
            "police/residence-registration@1",
            "police/residence-registration@latest",
        );
    let (status, body) = publish(&server, &server.admin, "/v1/workflows", &workflow).await;
    assert_eq!(status, 201, "{body}");

    // A case on @latest = @1, waiting for consent while the police publish @2.
    let mut waiting = birth_input("LATEST-OLD");
    waiting["household_head_personal_id"] = json!(MANUAL_HEAD);
    let old = server.start_case("birth-registration", waiting).await;
    awaiting_consent(&server, &old).await;

    // A version that needs a field the workflow does not give breaks it: refused, naming it.
    let manifest = shipped("adapters/police/residence-registration.yaml");
    let breaking = manifest.replace("version: 1", "version: 2").replace(
        "required: [personal_id, full_name,",
        "required: [ethnicity, personal_id, full_name,",
    );
    assert_ne!(breaking, manifest.replace("version: 1", "version: 2"));
    let (status, body) = publish(&server, &police, "/v1/adapters", &breaking).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("registry:workflow/birth-registration@2:")
            && message.contains("ethnicity"),
        "{message}"
    );

    // A compatible version is taken by new cases at once.
    let (status, body) = publish(
        &server,
        &police,
        "/v1/adapters",
        &manifest.replace("version: 1", "version: 2"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let new = server
        .start_case("birth-registration", birth_input("LATEST-NEW"))
        .await;
    let case = server.settled(&new, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(
        case["steps"]["residence"]["adapter"],
        "police/residence-registration@2"
    );

    // The waiting case answers on the version it started with.
    consent(&server).await;
    let case = server.settled(&old, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(
        case["steps"]["residence"]["adapter"],
        "police/residence-registration@1"
    );
}

/// Waits until the case's residence step waits for the household head's consent.
async fn awaiting_consent(server: &Server, id: &str) {
    let until = tokio::time::Instant::now() + BOUND;
    while server.get(&format!("/v1/cases/{id}")).await["steps"]["residence"]["status"]
        != "awaiting_callback"
    {
        assert!(tokio::time::Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The household head who answers only when told to consents.
async fn consent(server: &Server) {
    grant_consent(&server.http, &server.agencies["police"]).await;
}
