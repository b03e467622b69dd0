//! Issue 37: consent before an exchange. The birth allowance of a poor household (the
//! social-assistance office's adapter, `examples/social-assistance`) is exchanged on the
//! guardian's consent: without one its agency receives no call and the step waits; a consent
//! recorded later resumes it; a withdrawal stops the next exchange; a consent that never reached
//! its waiting case (its node stopped) is found by the case within the hour. Each on sled and on
//! PostgreSQL, in this process against the real mocks.

mod support;

use std::time::Duration;

use civicflow::auth::Role;
use civicflow::store::Store;
use serde_json::{Value, json};
use support::{InProcess, birth_input, client_with, fetch, put_faults, workflows_copy};

const AGREEMENT: &str = "poor-household-birth-allowance";
const GUARDIAN: &str = "001190123456";

/// The shipped definitions and the social-assistance office's birth registration version 2,
/// whose birth allowance is exchanged on consent.
fn consent_workflows() -> std::path::PathBuf {
    let dir = workflows_copy(|_, text| text);
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/social-assistance");
    for file in ["birth-registration-v2.yaml", "birth-allowance.yaml"] {
        std::fs::copy(example.join(file), dir.join(file)).unwrap();
    }
    dir
}

/// A birth in a poor household of commune 00004; `serial` names the dossier and certificate.
fn poor_household_birth(serial: u32) -> Value {
    let mut input = birth_input(&format!("CS-{serial}"));
    input["poor_household_certificate"] = json!(format!("HN-00004-{serial}"));
    input
}

/// The requests the social-assistance office received for case `id`.
async fn calls<S: Store + Clone>(h: &InProcess<S>, id: &str) -> usize {
    let url = format!(
        "{}/admin/requests?case_id={id}",
        h.agencies["social-assistance"]
    );
    fetch(&h.http, &url).await.as_array().unwrap().len()
}

fn allowance(case: &Value) -> &str {
    case["steps"]["birth_allowance"]["status"]
        .as_str()
        .unwrap_or("")
}

async fn history<S: Store + Clone>(h: &InProcess<S>, id: &str) -> Vec<Value> {
    let url = format!("{}/v1/cases/{id}/history", h.url);
    fetch(&h.http, &url).await["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn consent(portal: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let reply = portal
        .post(format!("{url}/v1/consents"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

fn guardians_consent() -> Value {
    json!({
        "subject": GUARDIAN,
        "agreement": AGREEMENT,
        "given_as": "guardian",
        "opt_in": true,
        "evidence": "VNeID-TX-20261207-0001",
    })
}

async fn without_consent_the_agency_gets_nothing_and_a_consent_resumes_the_step<
    S: Store + Clone,
>(
    h: InProcess<S>,
) {
    let portal = client_with(&h.token(Role::Portal, "portal").await);
    let id = h
        .start_case_of("birth-registration", poor_household_birth(1))
        .await;
    let case = h
        .wait_for(&id, |c| allowance(c) == "awaiting_consent")
        .await;
    assert_eq!(allowance(&case), "awaiting_consent", "{case:#}");
    assert_eq!(calls(&h, &id).await, 0, "no call without consent");
    // Still nothing a while later: the wait is not a retry loop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(calls(&h, &id).await, 0);
    let events = history(&h, &id).await;
    let awaited = events
        .iter()
        .find(|e| e["type"] == "consent_awaited")
        .expect("the wait is in the history");
    assert_eq!(awaited["agreement"], AGREEMENT);
    assert!(awaited["due_at"].is_string(), "{awaited}");
    // Every other exchange's basis is there, with its law.
    let birth = events
        .iter()
        .find(|e| e["type"] == "exchange" && e["step"] == "birth")
        .expect("the birth step's exchange is recorded");
    assert_eq!(birth["lawful_basis"], "legal_obligation");
    assert!(birth["law"].as_str().unwrap().contains("Civil Status"));

    let (status, record) = consent(&portal, &h.url, guardians_consent()).await;
    assert_eq!(status, 201, "{record}");
    assert!(record["subject"].as_str().unwrap().starts_with("ps_"));
    assert!(
        !record.to_string().contains(GUARDIAN),
        "kept as a pseudonym"
    );
    let case = h.wait_for(&id, |c| allowance(c) == "succeeded").await;
    assert_eq!(allowance(&case), "succeeded", "{case:#}");
    assert_eq!(calls(&h, &id).await, 1);
    let events = history(&h, &id).await;
    let exchange = events
        .iter()
        .find(|e| e["type"] == "exchange" && e["step"] == "birth_allowance")
        .expect("the allowance's basis is recorded");
    assert_eq!(exchange["lawful_basis"], "consent");
    assert_eq!(exchange["consent_id"], record["id"]);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "consent_given" && e["consent_id"] == record["id"])
    );

    // The same consent again is the record kept; a list shows it.
    let (status, again) = consent(&portal, &h.url, guardians_consent()).await;
    assert_eq!((status, &again["id"]), (200, &record["id"]));
    let listed = fetch(
        &portal,
        &format!("{}/v1/consents?subject={GUARDIAN}", h.url),
    )
    .await;
    assert_eq!(listed["items"][0]["id"], record["id"], "{listed}");

    // A case started once the consent is kept runs its exchange at once.
    let next = h
        .start_case_of("birth-registration", poor_household_birth(2))
        .await;
    let case = h.wait_for(&next, |c| allowance(c) == "succeeded").await;
    assert_eq!(allowance(&case), "succeeded", "{case:#}");
}

#[tokio::test]
async fn without_consent_the_agency_gets_nothing_and_a_consent_resumes_the_step_on_sled() {
    without_consent_the_agency_gets_nothing_and_a_consent_resumes_the_step(
        InProcess::with_workflows(consent_workflows()).await,
    )
    .await;
}

#[tokio::test]
async fn without_consent_the_agency_gets_nothing_and_a_consent_resumes_the_step_on_postgres() {
    without_consent_the_agency_gets_nothing_and_a_consent_resumes_the_step(
        InProcess::postgres_with_workflows(consent_workflows()).await,
    )
    .await;
}

async fn a_withdrawal_stops_the_next_exchange<S: Store + Clone>(h: InProcess<S>) {
    let portal = client_with(&h.token(Role::Portal, "portal").await);
    let (status, record) = consent(&portal, &h.url, guardians_consent()).await;
    assert_eq!(status, 201, "{record}");
    // The office is down: the first call fails and the step backs off to try again.
    let agency = h.agencies["social-assistance"].clone();
    put_faults(
        &h.http,
        &agency,
        json!({"rates": {"unavailable": 1.0}, "retry_after_secs": 0}),
    )
    .await;
    let id = h
        .start_case_of("birth-registration", poor_household_birth(3))
        .await;
    let case = h.wait_for(&id, |c| allowance(c) == "backoff").await;
    assert_eq!(allowance(&case), "backoff", "{case:#}");
    let reply = portal
        .post(format!("{}/v1/consents/withdrawals", h.url))
        .json(&json!({"subject": GUARDIAN, "agreement": AGREEMENT, "reason": "changed my mind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let withdrawn: Value = reply.json().await.unwrap();
    assert!(withdrawn["withdrawn_at"].is_string(), "{withdrawn}");
    // The office is back: a retry sent now would succeed, so none may be sent.
    put_faults(&h.http, &agency, json!({})).await;
    let case = h
        .wait_for(&id, |c| allowance(c) == "awaiting_consent")
        .await;
    assert_eq!(allowance(&case), "awaiting_consent", "{case:#}");
    let sent = calls(&h, &id).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        calls(&h, &id).await,
        sent,
        "no exchange after the withdrawal"
    );
    assert_eq!(allowance(&h.case(&id).await), "awaiting_consent");
    assert!(
        history(&h, &id)
            .await
            .iter()
            .any(|e| e["type"] == "consent_withdrawn" && e["consent_id"] == record["id"])
    );
    // Consent given again: the step goes on under the new record.
    let (status, again) = consent(&portal, &h.url, guardians_consent()).await;
    assert_eq!(status, 201);
    assert_ne!(again["id"], record["id"]);
    let case = h.wait_for(&id, |c| allowance(c) == "succeeded").await;
    assert_eq!(allowance(&case), "succeeded", "{case:#}");
}

#[tokio::test]
async fn a_withdrawal_stops_the_next_exchange_on_sled() {
    a_withdrawal_stops_the_next_exchange(InProcess::with_workflows(consent_workflows()).await)
        .await;
}

#[tokio::test]
async fn a_withdrawal_stops_the_next_exchange_on_postgres() {
    a_withdrawal_stops_the_next_exchange(
        InProcess::postgres_with_workflows(consent_workflows()).await,
    )
    .await;
}

#[tokio::test]
async fn a_consent_is_the_citizens_act_for_an_agreement_a_workflow_asks() {
    let h = InProcess::with_workflows(consent_workflows()).await;
    let portal = client_with(&h.token(Role::Portal, "portal").await);
    let mut pre_ticked = guardians_consent();
    pre_ticked["opt_in"] = json!(false);
    let (status, body) = consent(&portal, &h.url, pre_ticked).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("opt_in_required"))
    );
    let mut unticked = guardians_consent();
    unticked.as_object_mut().unwrap().remove("opt_in");
    assert_eq!(consent(&portal, &h.url, unticked).await.0, 422);
    let mut unknown = guardians_consent();
    unknown["agreement"] = json!("poor-household-birth-alowance");
    let (status, body) = consent(&portal, &h.url, unknown).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unknown_agreement"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(AGREEMENT)
    );
    let mut nobody = guardians_consent();
    nobody["subject"] = json!("  ");
    assert_eq!(consent(&portal, &h.url, nobody).await.0, 422);
    let reply = portal
        .post(format!("{}/v1/consents/withdrawals", h.url))
        .json(&json!({"subject": "001190999999", "agreement": AGREEMENT}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    // Operators settle cases; they do not give citizens' consents.
    let operator = client_with(&h.token(Role::Operator, "operator").await);
    let (status, _) = consent(&operator, &h.url, guardians_consent()).await;
    assert_eq!(status, 403);
}

async fn a_consent_that_never_reached_its_case_is_found_by_the_case<S: Store + Clone>(
    h: InProcess<S>,
) {
    let id = h
        .start_case_of("birth-registration", poor_household_birth(4))
        .await;
    h.wait_for(&id, |c| allowance(c) == "awaiting_consent")
        .await;
    // Recorded as a node would that stopped before bringing it to the waiting cases.
    let record = civicflow::personal_data::ConsentRecord {
        id: "cns_recorded_before_a_crash".into(),
        agreement: AGREEMENT.into(),
        subject: h.engine.pseudonym(GUARDIAN),
        given_as: civicflow::workflow::spec::GivenAs::Guardian,
        given_at: jiff::Timestamp::now(),
        recorded_at: jiff::Timestamp::now(),
        recorded_by: "portal".into(),
        evidence: None,
        withdrawn_at: None,
        withdrawal_reason: None,
    };
    let tx = civicflow::store::Transaction {
        put_consents: vec![record],
        ..Default::default()
    };
    h.engine.store().commit(&tx).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(allowance(&h.case(&id).await), "awaiting_consent");
    assert_eq!(calls(&h, &id).await, 0);
    // The case looks again by itself within the hour.
    let later =
        h.clock.now() + civicflow::engine::CONSENT_RECHECK + jiff::SignedDuration::from_secs(1);
    h.skip_to(&later.to_string());
    let case = h.wait_for(&id, |c| allowance(c) == "succeeded").await;
    assert_eq!(allowance(&case), "succeeded", "{case:#}");
    assert_eq!(calls(&h, &id).await, 1);
}

#[tokio::test]
async fn a_consent_that_never_reached_its_case_is_found_by_the_case_on_sled() {
    a_consent_that_never_reached_its_case_is_found_by_the_case(
        InProcess::with_workflows(consent_workflows()).await,
    )
    .await;
}

#[tokio::test]
async fn a_consent_that_never_reached_its_case_is_found_by_the_case_on_postgres() {
    a_consent_that_never_reached_its_case_is_found_by_the_case(
        InProcess::postgres_with_workflows(consent_workflows()).await,
    )
    .await;
}
