//! The `civicflow` CLI over the real API: tables for people, `--json` for scripts, and an API
//! refusal as a message and exit status 1.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, birth_input};

/// Runs `civicflow <args>` against `server` with `token`.
fn cli(server: &Server, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_civicflow"))
        .args(args)
        .env("CIVICFLOW_URL", &server.url)
        .env("CIVICFLOW_TOKEN", token)
        .env("CIVICFLOW_DATA", "/nonexistent")
        .output()
        .expect("the civicflow binary runs")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("--json prints JSON")
}

#[tokio::test]
async fn an_operator_settles_a_held_case_from_the_command_line() {
    let server = Server::start();
    let admin = server.admin.clone();
    let issued = json_of(&cli(
        &server,
        &admin,
        &[
            "tokens", "issue", "--role", "operator", "--name", "alice", "--json",
        ],
    ));
    let operator = issued["token"].as_str().unwrap().to_owned();
    let listed = ok(&cli(&server, &admin, &["tokens", "list"]));
    assert!(
        listed.contains("alice") && listed.contains("operator"),
        "{listed}"
    );
    assert!(
        !listed.contains(&operator),
        "a listed token shows its secret"
    );

    let mut input = birth_input("CLI-1");
    input["household_head_personal_id"] = json!("001068777888");
    let file = std::env::temp_dir().join(format!("civicflow-cli-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, input.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let start = [
        "cases",
        "start",
        "--workflow",
        "birth-registration",
        "--input",
        file,
        "--idempotency-key",
        "cli-1",
    ];
    let shown = ok(&cli(&server, &admin, &start));
    assert!(shown.contains("birth-registration v1"), "{shown}");
    let mut again = start.to_vec();
    again.push("--json");
    let case = json_of(&cli(&server, &admin, &again));
    let id = case["id"].as_str().unwrap().to_owned();
    assert!(shown.contains(&id), "a retried start answers the same case");

    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = ok(&cli(
            &server,
            &operator,
            &["incidents", "--kind", "refusal_awaiting_action"],
        ));
        if out.contains(&id) {
            break out;
        }
        assert!(tokio::time::Instant::now() < until, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        listed.contains("residence") && listed.contains("police"),
        "{listed}"
    );

    let refused = cli(
        &server,
        &operator,
        &[
            "case",
            "retry",
            &id,
            "--step",
            "residence",
            "--reason",
            "again",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("error: state_conflict: the agency refused step `residence`"),
        "{stderr}"
    );

    let skipped = ok(&cli(
        &server,
        &operator,
        &[
            "case",
            "skip",
            &id,
            "--step",
            "residence",
            "--reason",
            "the family registers in person",
        ],
    ));
    assert!(!skipped.contains("refusal_awaiting_action"), "{skipped}");
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown = ok(&cli(&server, &operator, &["cases", "show", &id]));
        if shown.contains("status    partially_completed") {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{shown}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let history = ok(&cli(&server, &operator, &["cases", "history", &id]));
    assert!(history.contains("operator action"), "{history}");
    // Times to the millisecond, with their zone: parallel branches can be told apart.
    assert!(
        history.contains(".") && history.contains("+07:00"),
        "{history}"
    );
    assert!(
        history.contains("the family registers in person"),
        "{history}"
    );
    // The operator sees the citizen's ID masked in the history.
    assert!(!history.contains("001190123456"), "{history}");

    let report = ok(&cli(
        &server,
        &admin,
        &[
            "bulk", "retry", "--agency", "nowhere", "--since", "2h", "--reason", "nothing",
        ],
    ));
    assert!(report.starts_with("matched 0 incident(s)"), "{report}");
    let listed = json_of(&cli(
        &server,
        &admin,
        &["cases", "list", "--key", "requester=001190123456", "--json"],
    ));
    assert_eq!(listed["items"][0]["id"], id.as_str());
}

#[tokio::test]
async fn without_a_token_the_cli_says_how_to_get_one() {
    let server = Server::start();
    let out = Command::new(env!("CARGO_BIN_EXE_civicflow"))
        .args(["incidents"])
        .env("CIVICFLOW_URL", &server.url)
        .env_remove("CIVICFLOW_TOKEN")
        .env("CIVICFLOW_DATA", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no API token: give --token or set CIVICFLOW_TOKEN"),
        "{stderr}"
    );
    let out = cli(&server, "cf_wrong_token", &["incidents"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unauthenticated: the token is unknown or has been revoked"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_agency_engineer_tests_publishes_and_deprecates_an_adapter_from_the_command_line() {
    let server = Server::start();
    let police = server.token("agency:police").await;
    let dir = std::env::temp_dir().join(format!("civicflow-cli-reg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = |p: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("workflows")
                .join(p),
        )
        .unwrap()
    };
    let manifest = dir.join("residence-registration-v2.yaml");
    let v2 =
        shipped("adapters/police/residence-registration.yaml").replace("version: 1", "version: 2");
    std::fs::write(&manifest, &v2).unwrap();
    let manifest = manifest.to_str().unwrap();

    // A sample against the real (mock) police: accepted, the result comes by callback.
    let sample = dir.join("sample.json");
    let input = json!({
        "personal_id": "001026000777",
        "full_name": "Trần Minh An",
        "date_of_birth": support::days_ago(3),
        "address": {"commune_code": "00004", "detail": "12 Phố Đội Cấn"},
        "household_head_personal_id": "001089654321",
        "relationship_to_head": "con",
        "birth_extract_number": "TLKS-00004-2026-999999"
    });
    std::fs::write(&sample, input.to_string()).unwrap();
    let tested = cli(
        &server,
        &police,
        &[
            "adapters",
            "test",
            manifest,
            "--input",
            sample.to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&tested.stdout).into_owned();
    assert!(
        tested.status.success(),
        "{}{out}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(
        out.starts_with("pending\n") || out.starts_with("rejected\n"),
        "{out}"
    );
    assert!(out.contains("request: POST http://127.0.0.1:"), "{out}");

    let published = ok(&cli(&server, &police, &["adapters", "publish", manifest]));
    assert!(
        published.starts_with("published adapter police/residence-registration@2"),
        "{published}"
    );
    let again = cli(&server, &police, &["adapters", "publish", manifest]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("error: immutable:"));
    let listed = ok(&cli(&server, &police, &["adapters", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.contains("police/residence-registration@2") && l.contains(" published ")),
        "{listed}"
    );
    let shown = ok(&cli(
        &server,
        &police,
        &["adapters", "show", "police/residence-registration@2"],
    ));
    assert!(
        shown.contains("version: 2") && shown.contains("(published)"),
        "{shown}"
    );

    let workflow = dir.join("birth-v2.yaml");
    std::fs::write(
        &workflow,
        shipped("birth-registration.yaml")
            .replace("version: 1", "version: 2")
            .replace(
                "police/residence-registration@1",
                "police/residence-registration@2",
            ),
    )
    .unwrap();
    let done = ok(&cli(
        &server,
        &server.admin,
        &["workflows", "publish", workflow.to_str().unwrap()],
    ));
    assert!(
        done.starts_with("published workflow birth-registration@2"),
        "{done}"
    );
    let deprecated = ok(&cli(
        &server,
        &police,
        &[
            "adapters",
            "deprecate",
            "police/residence-registration@2",
            "--reason",
            "address format",
            "--replacement",
            "1",
        ],
    ));
    assert!(
        deprecated.starts_with("deprecated police/residence-registration@2"),
        "{deprecated}"
    );
    let history = ok(&cli(&server, &police, &["adapters", "history"]));
    assert_eq!(history.lines().count(), 4, "{history}");
    assert!(
        history.contains("deprecated") && history.contains("address format (use version 1)"),
        "{history}"
    );
}

#[test]
fn serve_without_agency_urls_names_each_missing_agency_once() {
    let data = std::env::temp_dir().join(format!("civicflow-no-agencies-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_civicflow"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workflows"])
        .arg(support::workflows_dir())
        .arg("--data")
        .arg(&data)
        .output()
        .expect("the civicflow binary runs");
    let _ = std::fs::remove_dir_all(&data);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("no base URL for agency"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("civil-status, police, social-security: give --agency NAME=URL"),
        "{line}"
    );
}

#[tokio::test]
async fn a_closed_pipe_ends_a_command_quietly_not_with_a_panic() {
    let server = Server::start();
    for args in [vec!["adapters", "list"], vec!["validate"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_civicflow"))
            .args(&args)
            .env("CIVICFLOW_URL", &server.url)
            .env("CIVICFLOW_TOKEN", &server.admin)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn workflows_list_shows_each_version_with_its_deadline_and_steps() {
    let server = Server::start();
    let out = ok(&cli(&server, &server.admin, &["workflows", "list"]));
    assert!(out.contains("birth-registration@1"), "{out}");
    assert!(out.contains("death-registration@1"), "{out}");
    assert!(out.contains("3 working days"), "{out}");
    assert!(
        out.contains("birth (civil-status/birth-registration@1)"),
        "{out}"
    );
    let listed = json_of(&cli(
        &server,
        &server.admin,
        &["workflows", "list", "--json"],
    ));
    assert_eq!(listed["items"].as_array().unwrap().len(), 4, "{listed:#}");
}

#[tokio::test]
async fn cases_start_wait_prints_the_case_once_it_has_ended() {
    let server = Server::start();
    let dir = std::env::temp_dir().join(format!("civicflow-wait-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("birth.json");
    std::fs::write(&input, birth_input("CLI-WAIT").to_string()).unwrap();
    let out = ok(&cli(
        &server,
        &server.admin,
        &[
            "cases",
            "start",
            "--workflow",
            "birth-registration",
            "--input",
            input.to_str().unwrap(),
            "--wait",
            "--json",
        ],
    ));
    let case: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(case["status"], "completed", "{case:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}
