//! The server's life: SIGTERM parks what is in flight and exits cleanly; a restart resumes it;
//! a case whose workflow is no longer loaded is reported, not silently stuck.
//!
//! The mock agencies run in this test's process, so their effect counters outlive the server.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Server, birth_input, effects, free_port, mocks_in_test, put_faults, workflows_copy};

const BOUND: Duration = Duration::from_secs(60);

async fn history_has(server: &Server, id: &str, event: &str) -> bool {
    let history = server.get(&format!("/v1/cases/{id}/history")).await;
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == event)
}

async fn wait_for_event(server: &Server, id: &str, event: &str) {
    let until = tokio::time::Instant::now() + BOUND;
    while !history_has(server, id, event).await {
        assert!(tokio::time::Instant::now() < until, "no {event} in {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_parks_a_call_in_flight_exits_0_and_the_restart_finishes_it_once() {
    let (mocks, args) = mocks_in_test(5).await;
    let civil_status = mocks.agencies[0].base_url.clone();
    let http = reqwest::Client::new();
    // The agency answers after 4 s; the server's drain timeout is 2 s: the call gets parked.
    put_faults(
        &http,
        &civil_status,
        json!({"latency": {"distribution": "fixed", "ms": 4000}}),
    )
    .await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = std::env::temp_dir().join(format!("civicflow-term-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server::spawn(&data, &listen, &args);
    server.connect_mocks(&civil_status).await;
    let id = server
        .start_case("birth-registration", birth_input("GCS-TERM"))
        .await;
    wait_for_event(&server, &id, "attempt_started").await;

    let status = server
        .terminate(Duration::from_secs(20))
        .expect("civicflow exits after SIGTERM within its drain timeout and a margin");
    assert!(status.success(), "{status}");

    put_faults(&http, &civil_status, json!({})).await;
    let server = Server::spawn(&data, &listen, &args);
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(effects(&http, &civil_status, &id).await, vec![1]);
}

/// A birth case whose first attempt civil status refused (503), its server then killed: the
/// retry timer comes due at the next start.
struct Stopped {
    /// The agencies, in this process: they outlive the server.
    _mocks: civicflow_mocks::RunningMocks,
    args: Vec<String>,
    data: std::path::PathBuf,
    listen: String,
    id: String,
}

impl Stopped {
    async fn in_backoff(certificate: &str) -> Stopped {
        let (mocks, args) = mocks_in_test(6).await;
        let civil_status = mocks.agencies[0].base_url.clone();
        put_faults(
            &reqwest::Client::new(),
            &civil_status,
            json!({"rates": {"unavailable": 1.0}, "retry_after_secs": 1}),
        )
        .await;
        let data = std::env::temp_dir().join(format!("civicflow-backoff-{}", uuid::Uuid::new_v4()));
        let listen = format!("127.0.0.1:{}", free_port());
        let spawn_args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = Server::spawn(&data, &listen, &spawn_args);
        server.connect_mocks(&civil_status).await;
        let id = server
            .start_case("birth-registration", birth_input(certificate))
            .await;
        wait_for_event(&server, &id, "attempt_failed").await;
        server.kill();
        Stopped {
            _mocks: mocks,
            args,
            data,
            listen,
            id,
        }
    }

    /// The server started again on the same store, with the definitions in `workflows`.
    fn restart_with(&self, workflows: &std::path::Path) -> Server {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(["--workflows", workflows.to_str().unwrap()]);
        Server::spawn(&self.data, &self.listen, &args)
    }
}

#[tokio::test]
async fn a_case_whose_workflow_is_no_longer_loaded_gets_an_incident() {
    let stopped = Stopped::in_backoff("GCS-ORPHAN").await;

    // The birth workflow's file is gone; its retry timer comes due on the next start.
    let workflows = workflows_copy(|_, text| text);
    std::fs::remove_file(workflows.join("birth-registration.yaml")).unwrap();
    let server = stopped.restart_with(&workflows);
    let id = &stopped.id;
    let case = server.settled(id, BOUND).await;
    let incident = &case["incidents"][0];
    assert_eq!(incident["reason"], "workflow_not_loaded", "{case:#}");
    assert!(
        incident["message"]
            .as_str()
            .unwrap()
            .contains("`birth-registration` version 1"),
        "{incident}"
    );
}

#[tokio::test]
async fn a_workflow_file_changed_under_the_same_version_makes_an_incident_not_a_panic() {
    let stopped = Stopped::in_backoff("GCS-EDITED").await;
    let id = &stopped.id;

    // Someone edits the shipped file in place: version 1, but a step renamed.
    let workflows = workflows_copy(|name, text| {
        if name == "birth-registration.yaml" {
            text.replace("- id: health_insurance", "- id: card")
        } else {
            text
        }
    });
    let server = stopped.restart_with(&workflows);
    let bound = tokio::time::Instant::now() + BOUND;
    let case = loop {
        let case = server.get(&format!("/v1/cases/{id}")).await;
        if !case["incidents"].as_array().unwrap().is_empty() {
            break case;
        }
        assert!(tokio::time::Instant::now() < bound, "{case:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let incident = &case["incidents"][0];
    assert_eq!(incident["reason"], "workflow_not_loaded", "{case:#}");
    assert!(
        incident["message"]
            .as_str()
            .unwrap()
            .contains("changed under the same version"),
        "{incident}"
    );
    // The server stayed up and answers; an operator's retry says why it cannot run.
    let (status, body) = server
        .call(
            Some(&server.admin),
            reqwest::Method::POST,
            &format!("/v1/cases/{id}/retry"),
            Some(&json!({"step": "birth", "reason": "try again"})),
        )
        .await;
    assert!((400..=503).contains(&status), "{status} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("changed under the same version"),
        "{body}"
    );
}
