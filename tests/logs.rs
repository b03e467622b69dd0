//! The server's log as JSON lines (`--log-format json`): every line is one JSON object, and a
//! line about a case names the case, its step and its trace, and holds no personal data.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, birth_input, free_port, with_mocks};

#[tokio::test]
async fn json_lines_name_the_case_step_and_trace_and_nothing_personal() {
    let data = std::env::temp_dir().join(format!("civicflow-logs-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let log = Arc::new(Mutex::new(Vec::new()));
    let server = Server::spawn_logged(
        &data,
        &listen,
        &with_mocks(&["--log-format", "json"]),
        log.clone(),
    );
    // Civil status answers with junk: the reply is unexpected and an incident opens.
    server
        .set_faults("civil-status", json!({"rates": {"garbled": 1.0}}))
        .await;
    let id = server
        .start_case("birth-registration", birth_input("LOG-1"))
        .await;
    let bound = tokio::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let found = log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("an incident was opened") && l.contains(&id))
            .cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(
            tokio::time::Instant::now() < bound,
            "no incident line: {:#?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let line: Value = serde_json::from_str(&line).unwrap();
    let trace = id.replace('-', "");
    assert_eq!(
        (
            &line["level"],
            &line["case_id"],
            &line["trace_id"],
            &line["step"],
            &line["reason"]
        ),
        (
            &json!("WARN"),
            &json!(id),
            &json!(trace),
            &json!("birth"),
            &json!("unexpected_reply")
        ),
        "{line:#}"
    );
    for line in log.lock().unwrap().iter() {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            parsed["timestamp"].is_string() && parsed["message"].is_string(),
            "{line}"
        );
        for personal in ["001190123456", "001089654321", "Trần", "LOG-1"] {
            assert!(!line.contains(personal), "{personal} in the log: {line}");
        }
    }
}
