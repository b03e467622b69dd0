//! A damaged store: `civicflow store check` names every damaged record with its table and
//! case; civicflow started on the store answers a read of a damaged case with an error naming
//! it, lists every other case (saying which it stepped over), names a damaged case whose timer
//! came due among the incidents, and runs every other case as before.

mod support;

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Server, birth_input, free_port, mocks_in_test, put_faults};

const BOUND: Duration = Duration::from_secs(60);

/// Writes `value` over the record under `key` of the stopped store in `data`.
fn overwrite(data: &std::path::Path, key: &[u8], value: &[u8]) {
    let db = sled::open(data.join("db")).unwrap();
    let tree = db.open_tree("data").unwrap();
    assert!(tree.get(key).unwrap().is_some(), "no record under {key:?}");
    tree.insert(key, value).unwrap();
    db.flush().unwrap();
}

fn case_key(id: &str) -> Vec<u8> {
    let id = uuid::Uuid::parse_str(id).unwrap();
    [b"c".as_slice(), id.as_bytes()].concat()
}

/// The key of the first run of a case's history (events from seq 0).
fn history_key(id: &str) -> Vec<u8> {
    let id = uuid::Uuid::parse_str(id).unwrap();
    [b"e".as_slice(), id.as_bytes(), &0u64.to_be_bytes()].concat()
}

#[tokio::test]
async fn damaged_records_are_named_stepped_over_and_the_other_cases_go_on() {
    let (mocks, args) = mocks_in_test(9).await;
    let agency = |id: &str| {
        let found = mocks.agencies.iter().find(|a| a.id == id).unwrap();
        found.base_url.clone()
    };
    let (civil, police) = (agency("civil-status"), agency("police"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = std::env::temp_dir().join(format!("civicflow-damage-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Server::spawn(&data, &listen, &args);
    server.connect_mocks(&police).await;
    let mut done = Vec::new();
    for name in ["GCS-DMG-A", "GCS-DMG-B", "GCS-DMG-C"] {
        let id = server
            .start_case("birth-registration", birth_input(name))
            .await;
        let case = server.settled(&id, BOUND).await;
        assert_eq!(case["status"], "completed", "{case:#}");
        done.push(id);
    }
    // A case waiting on a retry when civicflow stops: its timer comes due after the restart.
    put_faults(
        &server.http,
        &civil,
        json!({"rates": {"unavailable": 1.0}, "retry_after_secs": 2}),
    )
    .await;
    let waiting = server
        .start_case("birth-registration", birth_input("GCS-DMG-D"))
        .await;
    let until = tokio::time::Instant::now() + BOUND;
    loop {
        let case = server.get(&format!("/v1/cases/{waiting}")).await;
        if case["steps"]["birth"]["status"] == "backoff" {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{case:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    put_faults(&server.http, &civil, json!({})).await;

    let (a, b) = (&done[0], &done[1]);
    overwrite(&data, &case_key(a), b"\x00\x00garbage");
    overwrite(&data, &history_key(b), b"[{\"not\": \"an event\"");
    overwrite(&data, &case_key(&waiting), b"");

    let check = Command::new(env!("CARGO_BIN_EXE_civicflow"))
        .args(["store", "check", "--json", "--data", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let report: Value = serde_json::from_slice(&check.stdout).unwrap();
    let mut named: Vec<(String, String)> = report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["table"].as_str().unwrap().to_owned(),
                d["case_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    named.sort();
    let mut expected = vec![
        ("cases".to_owned(), a.clone()),
        ("cases".to_owned(), waiting.clone()),
        ("events".to_owned(), b.clone()),
    ];
    expected.sort();
    assert_eq!(named, expected, "{report:#}");
    assert!(report["records"].as_u64().unwrap() > 20, "{report:#}");

    let server = Server::spawn(&data, &listen, &args);
    // The damaged case, by name; its history, by name.
    for path in [format!("/v1/cases/{a}"), format!("/v1/cases/{b}/history")] {
        let (status, body) = server
            .call(Some(&server.admin), Method::GET, &path, None)
            .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (500, &json!("damaged_record")),
            "{body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(a) || message.contains(b.as_str()),
            "{message}"
        );
    }
    // The citizen's cases: every readable one, and which were stepped over.
    let listed = server
        .get("/v1/cases?key=requester%3D001190123456&limit=50")
        .await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&b.as_str()) && ids.contains(&done[2].as_str()),
        "{listed:#}"
    );
    let mut stepped_over: Vec<&str> = listed["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    stepped_over.sort();
    let mut damaged_cases = vec![a.as_str(), waiting.as_str()];
    damaged_cases.sort();
    assert_eq!(stepped_over, damaged_cases, "{listed:#}");
    // The waiting case's timer came due: the incidents name it.
    let until = tokio::time::Instant::now() + BOUND;
    loop {
        let incidents = server.get("/v1/incidents").await;
        if incidents["damaged"]
            .as_array()
            .is_some_and(|d| d.contains(&json!(waiting)))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{incidents:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Everything else goes on.
    let id = server
        .start_case("birth-registration", birth_input("GCS-DMG-E"))
        .await;
    let case = server.settled(&id, BOUND).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
