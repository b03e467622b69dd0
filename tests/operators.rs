//! The operators' tools end to end, through the HTTP API of the real binary against the real
//! mocks: the incident list, each action and each refusal of an action that does not fit.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{MANUAL_HEAD, Server, birth_input, workflows_copy};

const BOUND: Duration = Duration::from_secs(60);

/// A household head who refuses to take the child in (the police refuse by callback).
const REFUSING_HEAD: &str = "001068777888";

struct Desk {
    server: Server,
    operator: String,
    supervisor: String,
}

impl Desk {
    async fn open(server: Server) -> Desk {
        let operator = server.token("operator").await;
        let supervisor = server.token("supervisor").await;
        Desk {
            server,
            operator,
            supervisor,
        }
    }

    async fn act(&self, token: &str, case: &str, action: &str, body: Value) -> (u16, Value) {
        let path = format!("/v1/cases/{case}/{action}");
        self.server
            .call(Some(token), Method::POST, &path, Some(&body))
            .await
    }

    async fn get(&self, token: &str, path: &str) -> Value {
        let (status, body) = self.server.call(Some(token), Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Waits until `done` holds for the case.
    async fn wait_for(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = tokio::time::Instant::now() + BOUND;
        loop {
            let case = self.server.get(&format!("/v1/cases/{id}")).await;
            if done(&case) {
                return case;
            }
            assert!(tokio::time::Instant::now() < until, "{case:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn history(&self, token: &str, id: &str) -> Vec<Value> {
        let history = self.get(token, &format!("/v1/cases/{id}/history")).await;
        history["events"].as_array().unwrap().clone()
    }
}

fn has_incident(case: &Value, reason: &str) -> bool {
    case["incidents"]
        .as_array()
        .is_some_and(|i| i.iter().any(|i| i["reason"] == reason))
}

/// A birth whose residence registration the household head refuses: held for an operator.
async fn held_case(desk: &Desk, certificate: &str) -> String {
    let mut input = birth_input(certificate);
    input["household_head_personal_id"] = json!(REFUSING_HEAD);
    let id = desk.server.start_case("birth-registration", input).await;
    desk.wait_for(&id, |c| {
        has_incident(c, "refusal_awaiting_action")
            && c["steps"]["health_insurance"]["status"] == "succeeded"
    })
    .await;
    id
}

#[tokio::test]
async fn a_held_refusal_can_stand_and_the_case_ends_partially_completed() {
    let desk = Desk::open(Server::start()).await;
    let id = held_case(&desk, "OPS-STAND").await;
    let (status, body) = desk
        .act(&desk.operator, &id, "skip", json!({"step": "residence"}))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (422, &json!("reason_required"))
    );
    let (status, case) = desk
        .act(
            &desk.operator,
            &id,
            "skip",
            json!({"step": "residence", "reason": "the family will register later, in person"}),
        )
        .await;
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["status"], "partially_completed", "{case:#}");
    assert_eq!(case["steps"]["residence"]["status"], "rejected");
    assert!(case["incidents"].as_array().unwrap().is_empty());
    let events = desk.history(&desk.operator, &id).await;
    let action = events
        .iter()
        .find(|e| e["type"] == "operator_action")
        .unwrap();
    assert_eq!(action["action"], "skip");
    assert_eq!(
        action["reason"],
        "the family will register later, in person"
    );
    assert!(
        action["by"].as_str().unwrap().contains("(operator, token "),
        "{action}"
    );
}

#[tokio::test]
async fn fixing_the_data_re_runs_the_step_under_a_new_revision_and_key() {
    let desk = Desk::open(Server::start()).await;
    let id = held_case(&desk, "OPS-FIX").await;
    let case = desk.server.get(&format!("/v1/cases/{id}")).await;
    let mut input = case["input"].clone();
    // Retrying sends the same request again: refused, with what to do instead.
    let (status, body) = desk
        .act(
            &desk.operator,
            &id,
            "retry",
            json!({"step": "residence", "reason": "try again"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "state_conflict");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("fix"),
        "{body}"
    );
    // A corrected input that breaks the schema is refused, naming the field.
    input["household_head_personal_id"] = json!("12");
    let (status, body) = desk
        .act(
            &desk.operator,
            &id,
            "fix",
            json!({"step": "residence", "reason": "typo", "input": input}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["fields"][0]["field"],
        "/household_head_personal_id"
    );
    input["household_head_personal_id"] = json!("001089654321");
    let (status, body) = desk
        .act(
            &desk.operator,
            &id,
            "fix",
            json!({"step": "residence", "reason": "the father is the household head", "input": input}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let case = desk.wait_for(&id, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["steps"]["residence"]["revision"], 2);
    let events = desk.history(&desk.supervisor, &id).await;
    let keys: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "attempt_started" && e["step"] == "residence")
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].ends_with(":residence:1") && keys[1].ends_with(":residence:2"));
    let fix = events
        .iter()
        .find(|e| e["type"] == "operator_action" && e["action"] == "fix")
        .unwrap();
    assert_eq!(
        fix["details"]["previous_input"]["household_head_personal_id"],
        REFUSING_HEAD
    );
}

#[tokio::test]
async fn retry_now_after_retries_ran_out_and_an_outage_ended_completes_the_case() {
    let workflows = workflows_copy(|path, text| {
        if path == "adapters/civil-status/birth-registration.yaml" {
            text.replace("max_attempts: 10", "max_attempts: 2")
                .replace("initial_interval: 1s", "initial_interval: 10ms")
        } else {
            text
        }
    });
    // Its circuit would hold these calls once five failed in a row: this is about steps whose
    // retries ran out (an agency failing intermittently), so the threshold is out of reach.
    let dir = workflows.to_str().unwrap();
    let desk = Desk::open(Server::start_with(&[
        "--workflows",
        dir,
        "--circuits",
        "1000",
    ]))
    .await;
    desk.server
        .set_faults("civil-status", json!({"rates": {"internal_error": 1.0}}))
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let input = birth_input(&format!("OPS-BULK-{i}"));
        ids.push(desk.server.start_case("birth-registration", input).await);
    }
    for id in &ids {
        desk.wait_for(id, |c| has_incident(c, "retries_exhausted"))
            .await;
    }
    // The incident list, filtered and paged by cursor, oldest first and newest first.
    let page = desk
        .get(
            &desk.operator,
            "/v1/incidents?agency=civil-status&reason=retries_exhausted&limit=2",
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page:#}");
    assert_eq!(page["items"][0]["step"], "birth");
    let next = page["next"].as_str().unwrap();
    let rest = desk
        .get(
            &desk.operator,
            &format!(
                "/v1/incidents?agency=civil-status&reason=retries_exhausted&limit=2&cursor={next}"
            ),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest:#}");
    assert!(rest["next"].is_null());
    let listed: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["items"].as_array().unwrap())
        .collect();
    let mut found: Vec<&str> = listed
        .iter()
        .map(|i| i["case_id"].as_str().unwrap())
        .collect();
    // In time order (to the millisecond, the index's resolution), not text order.
    let opened: Vec<i64> = listed
        .iter()
        .map(|i| {
            let at: jiff::Timestamp = i["opened_at"].as_str().unwrap().parse().unwrap();
            at.as_millisecond()
        })
        .collect();
    assert!(opened.is_sorted(), "oldest first: {opened:?}");
    found.sort();
    assert_eq!(found, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let newest = desk
        .get(
            &desk.operator,
            "/v1/incidents?workflow=birth-registration&step=birth&order=newest&limit=1",
        )
        .await;
    assert_eq!(newest["items"][0]["case_id"], listed[2]["case_id"]);
    let none = desk
        .get(&desk.operator, "/v1/incidents?agency=police")
        .await;
    assert!(none["items"].as_array().unwrap().is_empty());

    // One case by hand, while the outage lasts: it fails again, with a fresh budget.
    let (status, case) = desk
        .act(
            &desk.operator,
            &ids[0],
            "retry",
            json!({"step": "birth", "reason": "checking whether the outage is over"}),
        )
        .await;
    assert_eq!(status, 200, "{case}");
    let case = desk
        .wait_for(&ids[0], |c| has_incident(c, "retries_exhausted"))
        .await;
    assert_eq!(case["steps"]["birth"]["attempts"], 4, "{case:#}");

    // The outage ends: one bulk retry over the filter moves every case on.
    desk.server.set_faults("civil-status", json!({})).await;
    let body = json!({
        "filter": {"agency": "civil-status", "reason": "retries_exhausted"},
        "reason": "the civil-status outage is over"
    });
    let (status, refused) = desk
        .server
        .call(
            Some(&desk.operator),
            Method::POST,
            "/v1/bulk/retry",
            Some(&body),
        )
        .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (403, &json!("forbidden"))
    );
    // Issue 33: the supervisor confirmed two, and three match now: nothing is retried until
    // the new count is confirmed.
    let mut stale = body.clone();
    stale["confirmed"] = json!(2);
    let (status, changed) = desk
        .server
        .call(
            Some(&desk.supervisor),
            Method::POST,
            "/v1/bulk/retry",
            Some(&stale),
        )
        .await;
    assert_eq!(
        (status, &changed["error"]["code"]),
        (409, &json!("bulk_count_changed")),
        "{changed}"
    );
    assert!(
        changed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 incidents match"),
        "{changed}"
    );
    for id in &ids {
        let case = desk.server.get(&format!("/v1/cases/{id}")).await;
        assert!(has_incident(&case, "retries_exhausted"), "{case:#}");
    }
    let mut body = body;
    body["confirmed"] = json!(3);
    let (status, report) = desk
        .server
        .call(
            Some(&desk.supervisor),
            Method::POST,
            "/v1/bulk/retry",
            Some(&body),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["matched"], 3, "{report}");
    assert_eq!(report["retried"], 3, "{report}");
    for id in &ids {
        let case = desk.wait_for(id, |c| c["status"] != "running").await;
        assert_eq!(case["status"], "completed", "{case:#}");
    }
    // Nothing left to retry: a completed step is refused with the reason.
    let (status, body) = desk
        .act(
            &desk.operator,
            &ids[1],
            "retry",
            json!({"step": "birth", "reason": "again"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already finished"),
        "{body}"
    );
}

#[tokio::test]
async fn a_failed_step_is_skipped_with_the_output_later_steps_need() {
    let desk = Desk::open(Server::start()).await;
    desk.server
        .set_faults("social-security", json!({"rates": {"garbled": 1.0}}))
        .await;
    let id = desk
        .server
        .start_case("birth-registration", birth_input("OPS-SKIP"))
        .await;
    let case = desk
        .wait_for(&id, |c| has_incident(c, "unexpected_reply"))
        .await;
    assert_eq!(case["steps"]["health_insurance"]["status"], "failed");
    // A running step cannot be skipped; an output that breaks the schema is refused.
    let (status, body) = desk
        .act(
            &desk.operator,
            &id,
            "skip",
            json!({"step": "health_insurance", "reason": "card issued at the counter", "output": {"card_code": 7}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_output");
    let output = json!({
        "social_insurance_number": "0123456789",
        "card_code": "TE1010100000001",
        "valid_from": "2026-11-20",
        "valid_to": "2032-11-19"
    });
    let (status, case) = desk
        .act(
            &desk.operator,
            &id,
            "skip",
            json!({"step": "health_insurance", "reason": "card issued at the counter", "output": output}),
        )
        .await;
    assert_eq!(status, 200, "{case}");
    let case = desk.wait_for(&id, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["steps"]["health_insurance"]["status"], "skipped");
    assert_eq!(
        case["steps"]["health_insurance"]["output"]["card_code"],
        "TE1010100000001"
    );
}

#[tokio::test]
async fn a_step_at_the_agency_cannot_be_skipped_and_a_cancelled_case_takes_no_action() {
    let desk = Desk::open(Server::start()).await;
    // This household head answers only when told to: the residence step waits on its callback.
    let mut input = birth_input("OPS-CANCEL");
    input["household_head_personal_id"] = json!(MANUAL_HEAD);
    let id = desk.server.start_case("birth-registration", input).await;
    desk.wait_for(&id, |c| {
        c["steps"]["residence"]["status"] == "awaiting_callback"
    })
    .await;
    let (status, body) = desk
        .act(
            &desk.operator,
            &id,
            "skip",
            json!({"step": "residence", "reason": "impatient"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running at the agency"),
        "{body}"
    );
    let (status, body) = desk
        .act(
            &desk.operator,
            &id,
            "skip",
            json!({"step": "nope", "reason": "x"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("unknown_step"))
    );
    let (status, case) = desk
        .act(
            &desk.operator,
            &id,
            "cancel",
            json!({"reason": "the citizen withdrew the request"}),
        )
        .await;
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["status"], "cancelled");
    assert!(
        case["reason"]
            .as_str()
            .unwrap()
            .contains("the citizen withdrew the request")
    );
    assert_eq!(case["steps"]["residence"]["status"], "stopped");
    for (action, body) in [
        ("cancel", json!({"reason": "twice"})),
        ("retry", json!({"step": "residence", "reason": "x"})),
    ] {
        let (status, body) = desk.act(&desk.operator, &id, action, body).await;
        assert_eq!(status, 409, "{action}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already finished (cancelled)"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn operators_see_personal_data_masked_and_supervisors_do_not() {
    let desk = Desk::open(Server::start()).await;
    let id = desk
        .server
        .start_case("birth-registration", birth_input("OPS-MASK"))
        .await;
    desk.wait_for(&id, |c| c["status"] != "running").await;
    let masked = desk.get(&desk.operator, &format!("/v1/cases/{id}")).await;
    assert_eq!(masked["input"]["requester_personal_id"], "**********56");
    assert_eq!(masked["business_keys"]["requester"], "**********56");
    let child_id = masked["steps"]["birth"]["output"]["child_personal_id"]
        .as_str()
        .unwrap();
    assert!(child_id.starts_with("**********"), "{child_id}");
    let plain = desk.get(&desk.supervisor, &format!("/v1/cases/{id}")).await;
    assert_eq!(plain["input"]["requester_personal_id"], "001190123456");
    let events = desk.history(&desk.operator, &id).await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(
            plain["steps"]["birth"]["output"]["child_personal_id"]
                .as_str()
                .unwrap()
        )
    );
    let events = desk.history(&desk.supervisor, &id).await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        text.contains(
            plain["steps"]["birth"]["output"]["child_personal_id"]
                .as_str()
                .unwrap()
        )
    );

    // An incident's message quoting a citizen's number is masked in the incident list too.
    let unknown_head = "001099999999";
    let mut input = birth_input("OPS-MASK-2");
    input["household_head_personal_id"] = json!(unknown_head);
    let held = desk.server.start_case("birth-registration", input).await;
    desk.wait_for(&held, |c| !c["incidents"].as_array().unwrap().is_empty())
        .await;
    let path = "/v1/incidents?workflow=birth-registration&step=residence";
    let for_operator = desk.get(&desk.operator, path).await.to_string();
    assert!(for_operator.contains("**********99"), "{for_operator}");
    assert!(!for_operator.contains(unknown_head), "{for_operator}");
    assert!(!for_operator.contains("001190123456"), "{for_operator}");
    let for_supervisor = desk.get(&desk.supervisor, path).await.to_string();
    assert!(for_supervisor.contains(unknown_head), "{for_supervisor}");

    // The portal lists a citizen's cases by business key.
    let portal = desk.server.token("portal").await;
    let list = desk
        .get(&portal, "/v1/cases?key=requester=001190123456&order=newest")
        .await;
    let listed: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(listed, [&json!(held), &json!(id)], "newest first: {list:#}");
    let (status, body) = desk
        .server
        .call(Some(&portal), Method::GET, "/v1/cases", None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("filter_required"))
    );
}

#[tokio::test]
async fn what_the_definitions_mark_personal_is_masked_for_operators_and_nothing_else() {
    let desk = Desk::open(Server::start()).await;
    let birth = desk
        .server
        .start_case("birth-registration", birth_input("OPS-MARKS"))
        .await;
    let case = desk.wait_for(&birth, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let shown = desk
        .get(&desk.operator, &format!("/v1/cases/{birth}"))
        .await;
    let card = &shown["steps"]["health_insurance"]["output"];
    // Marked personal: the card code embeds the social-insurance number.
    for field in ["card_code", "social_insurance_number"] {
        let value = card[field].as_str().unwrap();
        assert!(value.contains("****"), "{field}: {card:#}");
    }
    // Not marked: the hospital a card names, a commune code, the dossier number.
    let plain = desk
        .get(&desk.supervisor, &format!("/v1/cases/{birth}"))
        .await;
    assert_eq!(
        card["initial_hospital"], plain["steps"]["health_insurance"]["output"]["initial_hospital"],
        "{card:#}"
    );
    assert_eq!(shown["input"]["permanent_address"]["commune_code"], "00004");
    assert_eq!(
        shown["input"]["dossier_number"],
        plain["input"]["dossier_number"]
    );
    assert_ne!(
        shown["input"]["permanent_address"]["detail"],
        plain["input"]["permanent_address"]["detail"]
    );

    // A death: the bank account the allowance is paid into, and whom it is paid to.
    let death = desk
        .server
        .start_case(
            "death-registration",
            support::death_input("001045333444", "Lê Văn Thọ"),
        )
        .await;
    let case = desk.wait_for(&death, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    let shown = desk
        .get(&desk.operator, &format!("/v1/cases/{death}"))
        .await;
    let payment = &shown["input"]["funeral_allowance"]["payment"];
    assert_eq!(payment["account_number"], "***********67", "{payment}");
    assert_eq!(payment["bank_code"], "VCB");
    assert_eq!(payment["method"], "bank_transfer");
    let allowance = &shown["steps"]["funeral_allowance"]["output"];
    assert_eq!(allowance["paid_to"], "**********56", "{allowance}");
    assert_eq!(allowance["amount_vnd"], 23_400_000);
    let text = serde_json::to_string(&desk.history(&desk.operator, &death).await).unwrap();
    assert!(!text.contains("0011001234567"), "{text}");
    assert!(!text.contains("001045333444"), "{text}");
}
