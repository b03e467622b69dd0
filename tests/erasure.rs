//! Issue 37: personal data erased when its time is up. A death case started by the hospital's
//! event and a birth case started at the portal, their notifications left on the feed of a
//! webhook that never takes them: once the workflows' retention has passed after they ended, a
//! dump of the store (every record of the sled store, as its backup holds them; `pg_dump` of the
//! PostgreSQL schema) holds none of the citizens' IDs or names, while the on-time table is as it
//! was. A data subject's erasure request erases an ended case early, keeps a running one, and is
//! in the erased case's history. A case that ended before its workflow had a retention is found
//! when a node starts, and erased in its turn. On sled and on PostgreSQL, in this process
//! against the real mocks.

mod support;

use civicflow::auth::Role;
use civicflow::store::Store;
use serde_json::{Value, json};
use support::{InProcess, birth_input, client_with, fetch, pg, workflows_dir};

const DECEASED: &str = "001045333444";
/// The birth's requester, who also declared the death at the hospital.
const REQUESTER: &str = "001190123456";
const CHILD: &str = "Lê Thị Bảo Ngọc";

/// A dump of every record of the sled store: the backup the server streams (what
/// `civicflow store backup` writes). The files below it may keep superseded bytes until sled
/// reclaims their segment; operations.md says so, and how to be rid of them.
async fn backup(http: reqwest::Client, url: String) -> Vec<u8> {
    let reply = http.get(url).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    reply.bytes().await.unwrap().to_vec()
}

/// Whether `dump` holds `value`, as text or as the hexadecimal a `bytea` is dumped in.
fn holds(dump: &[u8], value: &str) -> bool {
    let hex = hex_of(value.as_bytes());
    let found = |needle: &[u8]| dump.windows(needle.len()).any(|w| w == needle);
    found(value.as_bytes()) || found(hex.as_bytes())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `pg_dump` of the schema of the store at `url`.
async fn pg_dump(url: String) -> Vec<u8> {
    tokio::task::spawn_blocking(move || pg_dump_now(&url))
        .await
        .unwrap()
}

fn pg_dump_now(url: &str) -> Vec<u8> {
    let schema = url.rsplit("search_path%3D").next().unwrap();
    let base = url.split('?').next().unwrap();
    let out = std::process::Command::new("pg_dump")
        .args(["--data-only", "--schema", schema, base])
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

async fn erased<S: Store + Clone>(h: &InProcess<S>, id: &str) -> bool {
    let history = fetch(&h.http, &format!("{}/v1/cases/{id}/history", h.url)).await;
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "personal_data_erased")
}

/// Two ended cases, the ids of the death and the birth.
async fn two_ended_cases<S: Store + Clone>(h: &InProcess<S>) -> (String, String) {
    // A webhook that never takes its notifications: they stay on the feed.
    let (status, _) = h.register_webhook("http://127.0.0.1:9/never").await;
    assert_eq!(status, 201);
    h.connect_hospital().await;
    let answer = h.certify(DECEASED).await;
    let death = h.delivered(answer["event"]["id"].as_str().unwrap()).await["answer"]["routed"]
        [0]["case_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut input = birth_input("ERASE-1");
    input["requester_personal_id"] = json!(REQUESTER);
    input["child"]["full_name"] = json!(CHILD);
    let birth = h.start_birth(input).await;
    for id in [&death, &birth] {
        let case = h.wait_for(id, |c| c["status"] != "running").await;
        assert_eq!(case["status"], "completed", "{case:#}");
    }
    (death, birth)
}

async fn after_retention_no_personal_value_is_left<S: Store + Clone, F>(
    h: InProcess<S>,
    dump: impl Fn() -> F,
) where
    F: std::future::Future<Output = Vec<u8>>,
{
    let (death, birth) = two_ended_cases(&h).await;
    let kpis = |h: &InProcess<S>| {
        let url = format!(
            "{}/v1/kpis?from={}&to={}",
            h.url,
            support::days_ago(1),
            support::days_ago(-1)
        );
        let http = h.http.clone();
        async move { fetch(&http, &url).await["workflows"].clone() }
    };
    let table = kpis(&h).await;
    assert!(table.as_array().is_some_and(|r| !r.is_empty()), "{table:#}");
    let before = dump().await;
    for value in [DECEASED, REQUESTER, CHILD] {
        assert!(holds(&before, value), "{value} is in the store before");
    }

    // 90 days of retention after the cases ended, and a day.
    h.skip_to(&(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 91)).to_string());
    for id in [&death, &birth] {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !erased(&h, id).await {
            assert!(std::time::Instant::now() < until, "{id} was never erased");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let after = dump().await;
    for value in [DECEASED, REQUESTER, CHILD] {
        assert!(!holds(&after, value), "{value} is still in the store");
    }
    let case = h.case(&birth).await;
    let requester = case["business_keys"]["requester"].as_str().unwrap();
    assert!(requester.starts_with("ps_"), "{case:#}");
    assert_eq!(case["status"], "completed");
    assert!(case["retention"]["erased_at"].is_string(), "{case:#}");
    // Counted as before: the statuses and times stay, and a person is still one person.
    assert_eq!(kpis(&h).await, table);
    let listed = fetch(
        &h.http,
        &format!("{}/v1/cases?key=requester={requester}", h.url),
    )
    .await;
    // The birth's requester declared the death: both cases are found under the one pseudonym.
    let found: Vec<&Value> = listed["items"].as_array().unwrap().iter().collect();
    assert_eq!(found.len(), 2, "{listed:#}");
    assert!(found.iter().any(|c| c["id"] == death.as_str()));
}

#[tokio::test]
async fn after_retention_no_personal_value_is_left_on_sled() {
    let h = InProcess::with_workflows(workflows_dir()).await;
    let (http, url) = (h.http.clone(), format!("{}/v1/store/backup", h.url));
    after_retention_no_personal_value_is_left(h, move || backup(http.clone(), url.clone())).await;
}

#[tokio::test]
async fn after_retention_no_personal_value_is_left_on_postgres() {
    let url = pg::fresh_url().await;
    let h = InProcess::postgres_at(&url, workflows_dir()).await;
    after_retention_no_personal_value_is_left(h, move || pg_dump(url.clone())).await;
}

async fn an_erasure_request_erases_ended_cases_keeps_running_ones_and_is_audited<
    S: Store + Clone,
>(
    h: InProcess<S>,
) {
    let (death, birth) = two_ended_cases(&h).await;
    // A second birth of the same requester, waiting for the household head's consent.
    let mut input = birth_input("ERASE-2");
    input["requester_personal_id"] = json!(REQUESTER);
    input["household_head_personal_id"] = json!(support::MANUAL_HEAD);
    let running = h.start_birth(input).await;
    h.wait_for(&running, |c| {
        c["steps"]["residence"]["status"] == "awaiting_callback"
    })
    .await;

    let operator = client_with(&h.token(Role::Operator, "operator").await);
    let url = format!(
        "{}/v1/subjects/{REQUESTER}?reason=asked+at+the+commune",
        h.url
    );
    assert_eq!(operator.delete(&url).send().await.unwrap().status(), 403);
    let reply = h.http.delete(&url).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let report: Value = reply.json().await.unwrap();
    assert!(!report.to_string().contains(REQUESTER), "{report:#}");
    let outcome = |id: &str| {
        report["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case_id"] == id)
            .map(|c| c["outcome"].as_str().unwrap().to_owned())
    };
    assert_eq!(outcome(&birth).as_deref(), Some("erased"), "{report:#}");
    assert_eq!(outcome(&running).as_deref(), Some("kept"), "{report:#}");
    // The requester declared the death too: that case is theirs as well.
    assert_eq!(outcome(&death).as_deref(), Some("erased"), "{report:#}");
    let kept = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case_id"] == running.as_str())
        .unwrap();
    assert!(kept["why"].as_str().unwrap().contains("running"), "{kept}");

    let history = fetch(&h.http, &format!("{}/v1/cases/{birth}/history", h.url)).await;
    let audit = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "personal_data_erased")
        .cloned()
        .expect("the erasure is in the case's history");
    assert_eq!(audit["why"], "request");
    assert_eq!(audit["reason"], "asked at the commune");
    assert!(audit["by"].as_str().unwrap().contains("admin"), "{audit}");
    assert!(!history.to_string().contains(REQUESTER));
    assert!(!h.case(&birth).await.to_string().contains(CHILD));
    assert!(h.case(&running).await.to_string().contains(REQUESTER));

    // Asked again: the case is erased already.
    let again: Value = h
        .http
        .delete(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["case_id"] == birth.as_str())
            .unwrap()["outcome"],
        "already_erased"
    );
}

#[tokio::test]
async fn an_erasure_request_erases_ended_cases_keeps_running_ones_and_is_audited_on_sled() {
    an_erasure_request_erases_ended_cases_keeps_running_ones_and_is_audited(
        InProcess::with_workflows(workflows_dir()).await,
    )
    .await;
}

#[tokio::test]
async fn an_erasure_request_erases_ended_cases_keeps_running_ones_and_is_audited_on_postgres() {
    an_erasure_request_erases_ended_cases_keeps_running_ones_and_is_audited(
        InProcess::postgres_with_workflows(workflows_dir()).await,
    )
    .await;
}

async fn a_case_that_ended_before_its_retention_existed_is_erased_too<S: Store + Clone>(
    h: InProcess<S>,
) {
    use civicflow::case::{CaseId, Timer, TimerKind};
    use civicflow::store::{CaseWrite, Transaction};
    let mut input = birth_input("ERASE-OLD");
    input["child"]["full_name"] = json!(CHILD);
    let id = h.start_birth(input).await;
    let case = h.wait_for(&id, |c| c["status"] != "running").await;
    assert_eq!(case["status"], "completed", "{case:#}");
    // As a case stored by a civicflow before the retention: no erasure time, no timer.
    let store = h.engine.store();
    let id: CaseId = id.parse().unwrap();
    let mut case = store.case(id).await.unwrap().unwrap();
    let timer = Timer {
        case_id: id,
        due_at: case
            .retention
            .erase_at
            .expect("an ended case has its erasure time"),
        kind: TimerKind::Erasure,
    };
    case.retention = Default::default();
    case.timers.remove("erasure");
    let rev = case.rev;
    let tx = Transaction {
        cases: vec![CaseWrite {
            case,
            expected_rev: Some(rev),
        }],
        clear_timers: vec![timer],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();

    // What a node does when it starts: once.
    assert_eq!(h.engine.schedule_old_erasures().await.unwrap(), 1);
    assert_eq!(h.engine.schedule_old_erasures().await.unwrap(), 0);
    h.skip_to(&(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 91)).to_string());
    let id = id.to_string();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !erased(&h, &id).await {
        assert!(std::time::Instant::now() < until, "{id} was never erased");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!h.case(&id).await.to_string().contains(CHILD));
}

#[tokio::test]
async fn a_case_that_ended_before_its_retention_existed_is_erased_too_on_sled() {
    a_case_that_ended_before_its_retention_existed_is_erased_too(
        InProcess::with_workflows(workflows_dir()).await,
    )
    .await;
}

#[tokio::test]
async fn a_case_that_ended_before_its_retention_existed_is_erased_too_on_postgres() {
    a_case_that_ended_before_its_retention_existed_is_erased_too(
        InProcess::postgres_with_workflows(workflows_dir()).await,
    )
    .await;
}
