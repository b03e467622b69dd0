//! Durability under `kill -9`: the real server is killed at random moments while cases run, and
//! restarted each time. At the end every accepted case has finished, each agency acted exactly
//! once per (case, procedure), no history has a duplicated or missing event, and the audit log
//! verifies and has the exchange of every answer a case acted on.
//!
//! The mock agencies run in this test's process, so their records and effect counters outlive
//! every kill of the server.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, birth_input, fetch, free_port, mocks_in_test, put_faults};

const CASES: usize = 300;
const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_repeats_nothing() {
    let (mocks, args) = mocks_in_test(11).await;
    let http = reqwest::Client::new();
    // Some latency and some 503s, so that kills land mid-call and during backoff.
    for agency in &mocks.agencies {
        let faults = json!({
            "latency": {"distribution": "uniform", "min_ms": 2, "max_ms": 60},
            "rates": {"unavailable": 0.05},
            "retry_after_secs": 0
        });
        put_faults(&http, &agency.base_url, faults).await;
    }
    // The checks at the end read every case and history as fast as the server answers: no
    // rate limit, which is not what this test is about.
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--rate-limit", "1000000", "--rate-burst", "1000000"]);
    let data = std::env::temp_dir().join(format!("civicflow-crash-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");

    let mut server = Server::spawn(&data, &listen, &args);
    server.connect_mocks(&mocks.agencies[0].base_url).await;
    let agencies = support::agency_urls(&mocks);
    let portal = support::client_with(&server.token("portal").await);

    // The portal: submits every case, retrying (same Idempotency-Key) while the server is down.
    let submitter = {
        let http = portal;
        let url = url.clone();
        tokio::spawn(async move {
            let mut accepted = BTreeMap::new();
            for i in 0..CASES {
                let input = birth_input(&format!("GCS-CRASH-{i}"));
                let key = format!("crash-{i}");
                let id = support::start_retrying(&http, &url, &key, input).await;
                accepted.insert(i, id);
                if i % 4 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            accepted
        })
    };

    for _ in 0..KILLS {
        let pause = 300 + fastrand::u64(0..1200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        server = Server::spawn(&data, &listen, &args);
    }
    let accepted = submitter.await.unwrap();
    assert_eq!(accepted.len(), CASES);
    let distinct: BTreeSet<&String> = accepted.values().collect();
    assert_eq!(
        distinct.len(),
        CASES,
        "a retried submission made a second case"
    );

    for id in accepted.values() {
        let case = server.settled(id, Duration::from_secs(120)).await;
        assert_eq!(case["status"], "completed", "{case:#}");
        let history = server.get(&format!("/v1/cases/{id}/history")).await;
        let events = history["events"]
            .as_array()
            .unwrap_or_else(|| panic!("the history of {id}: {history}"));
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>(), "{id}");
        let count = |t: &str| events.iter().filter(|e| e["type"] == t).count();
        assert_eq!(count("case_started"), 1, "{id}");
        assert_eq!(count("case_finished"), 1, "{id}");
        assert_eq!(count("step_succeeded"), 3, "{id}");
        // Issue 38: every answer the case acted on has its exchange in the audit log.
        support::exchanges_logged(&server.http, &server.url, &agencies, id)
            .await
            .unwrap();
    }

    // The birth chain calls three of the mock agencies (social assistance joins only in a
    // published version 2, which this test does not publish).
    let called = ["civil-status", "police", "social-security"];
    for agency in mocks.agencies.iter().filter(|a| called.contains(&a.id)) {
        let effects: Value = fetch(&http, &format!("{}/admin/effects", agency.base_url)).await;
        let per_case: BTreeMap<String, u64> = effects["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["case_id"].as_str().unwrap().to_owned(),
                    c["effects"].as_u64().unwrap(),
                )
            })
            .collect();
        for id in accepted.values() {
            assert_eq!(per_case.get(id), Some(&1), "{} for case {id}", agency.id);
        }
    }

    // Issue 38: the audit log the kills left verifies, entry by entry and head by head.
    assert!(server.terminate(Duration::from_secs(20)).is_some());
    let (trusted, _) = support::trusted_keys_file(&data);
    let (ok, said) = support::audit_cli(&[
        "verify".into(),
        "--data".into(),
        data.display().to_string(),
        "--trusted".into(),
        trusted.display().to_string(),
    ]);
    assert!(ok, "{said}");
}
