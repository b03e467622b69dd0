//! The README's walkthrough, as a new user follows it: the dossier script, a start from the CLI,
//! a start over HTTP as the portal does it, the cases completing, `cases show` and `cases
//! history`. It must pass on any day: the script dates the child a week back and numbers each
//! dossier, so the examples are never refused as too old or already registered.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::Server;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `examples/birth-input.sh n [more]`, as the README runs it.
fn dossier_with(n: u32, more: &[&str]) -> Value {
    let out = Command::new(format!("{ROOT}/examples/birth-input.sh"))
        .arg(n.to_string())
        .args(more)
        .output()
        .expect("the example script runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

fn dossier(n: u32) -> Value {
    dossier_with(n, &[])
}

fn civicflow(server: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_civicflow"))
        .args(args)
        .env("CIVICFLOW_URL", &server.url)
        .env("CIVICFLOW_TOKEN", &server.admin)
        .current_dir(ROOT)
        .output()
        .expect("the civicflow binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "civicflow {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_readme_walkthrough_works_as_written() {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    for step in [
        "examples/birth-input.sh 1 > birth-1.json",
        "--input birth-1.json --idempotency-key demo-1",
        "examples/birth-input.sh 2 > birth-2.json",
        "-H 'idempotency-key: demo-2'",
        "cases show <id>",
        "cases history <id>",
        "examples/birth-input.sh 3 incomplete > birth-3.json",
        "/v1/cases/<id>/supplements",
        r#"-d '{"request_id": "birth-1", "input": {"mother": {"personal_id": "001190123456"}}}'"#,
        "$HOSPITAL/v1/death-certificates",
        r#"-d '{"deceased_personal_id": "001045333444", "date_of_death": "'$(date +%F)'","#,
        "$HOSPITAL/admin/events",
    ] {
        assert!(readme.contains(step), "the README no longer says `{step}`");
    }
    let server = Server::start();
    let dir = std::env::temp_dir().join(format!("civicflow-readme-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    // The CLI's start.
    let first = dir.join("birth-1.json");
    std::fs::write(&first, dossier(1).to_string()).unwrap();
    let started = civicflow(
        &server,
        &[
            "cases",
            "start",
            "--workflow",
            "birth-registration",
            "--input",
            first.to_str().unwrap(),
            "--idempotency-key",
            "demo-1",
        ],
    );
    assert!(started.contains("running"), "{started}");
    let cli_case = started
        .lines()
        .find_map(|l| l.strip_prefix("case"))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no case id in {started}"));

    // The portal's start, over HTTP with the admin token.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/cases", server.url))
        .header("authorization", format!("Bearer {}", server.admin))
        .header("idempotency-key", "demo-2")
        .json(&json!({"workflow": "birth-registration", "input": dossier(2)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let http_case = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for id in [&cli_case, &http_case] {
        let case = server.settled(id, Duration::from_secs(60)).await;
        assert_eq!(case["status"], "completed", "{case:#}");
        let shown = civicflow(&server, &["cases", "show", id]);
        assert!(shown.contains("completed"), "{shown}");
        let history = civicflow(&server, &["cases", "history", id]);
        assert!(
            history.contains("case_finished") || history.contains("finished"),
            "{history}"
        );
    }

    // The incomplete dossier: asked for, supplemented, completed.
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", server.admin);
    let response = http
        .post(format!("{}/v1/cases", server.url))
        .header("authorization", &bearer)
        .header("idempotency-key", "demo-3")
        .json(&json!({"workflow": "birth-registration", "input": dossier_with(3, &["incomplete"])}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut case = server.get(&format!("/v1/cases/{id}")).await;
    for _ in 0..200 {
        if case["steps"]["birth"]["status"] == "awaiting_supplement" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        case = server.get(&format!("/v1/cases/{id}")).await;
    }
    assert_eq!(case["supplements"][0]["id"], "birth-1", "{case:#}");
    assert_eq!(
        case["supplements"][0]["missing"][0]["name"],
        "mother.personal_id"
    );
    let response = http
        .post(format!("{}/v1/cases/{id}/supplements", server.url))
        .header("authorization", &bearer)
        .header("idempotency-key", "demo-3-supplement")
        .json(
            &json!({"request_id": "birth-1", "input": {"mother": {"personal_id": "001190123456"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let case = server.settled(&id, Duration::from_secs(60)).await;
    assert_eq!(case["status"], "completed", "{case:#}");

    // A death certified at the hospital starts the death chain, without the portal.
    let hospital = &server.agencies["hospital"];
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(7)))
        .date();
    let response = http
        .post(format!("{hospital}/v1/death-certificates"))
        .json(&json!({"deceased_personal_id": "001045333444", "date_of_death": today.to_string(),
            "declarant": {"personal_id": "001190123456", "full_name": "Nguyễn Thị Lan", "relationship": "con dâu"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let mut sent = Value::Null;
    for _ in 0..400 {
        sent = server.agency("hospital", "/admin/events").await[0].clone();
        if sent["state"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent["state"], "delivered", "{sent:#}");
    assert_eq!(sent["answer"]["routed"][0]["action"], "started", "{sent:#}");
    let id = sent["answer"]["routed"][0]["case_id"].as_str().unwrap();
    let case = server.settled(id, Duration::from_secs(60)).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    assert_eq!(case["workflow"], "death-registration");
    std::fs::remove_dir_all(&dir).unwrap();
}
