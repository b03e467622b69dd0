//! Issue 38: every exchange signed and logged so that nobody can deny it or rewrite it. The
//! real server and its mock agencies, on sled and on PostgreSQL: a birth case leaves its
//! exchanges (with X-Road's ids and hashes), its callback and an operator's retry in the log,
//! each with an inclusion proof that verifies against a signed head; `civicflow audit verify`
//! passes the log as written and names the entry that was changed, deleted or swapped, and the
//! head signed with another key; a kill -9 while cases run leaves a log that verifies and has
//! the exchange of every answer a case acted on.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use civicflow::audit::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use civicflow::audit::{HeadSigner, TreeHead, TrustedKeys};
use serde_json::{Value, json};
use support::{Server, birth_input, with_mocks};

/// Where the test reaches the stored log behind the server's back, as an intruder would.
enum Raw {
    Sled(PathBuf),
    Postgres(String),
}

impl Raw {
    /// The `audit verify` arguments that read this store.
    fn source(&self) -> Vec<String> {
        match self {
            Raw::Sled(data) => vec!["--data".into(), data.display().to_string()],
            Raw::Postgres(url) => vec!["--store".into(), url.clone()],
        }
    }

    async fn pg(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    fn sled_data(dir: &Path) -> sled::Tree {
        sled::open(dir.join("db"))
            .unwrap()
            .open_tree("data")
            .unwrap()
    }

    fn sled_key(prefix: u8, n: u64) -> Vec<u8> {
        [vec![prefix], n.to_be_bytes().to_vec()].concat()
    }

    async fn entry(&self, index: u64) -> Option<Vec<u8>> {
        match self {
            Raw::Sled(dir) => Raw::sled_data(dir)
                .get(Raw::sled_key(b'y', index))
                .unwrap()
                .map(|v| v.to_vec()),
            Raw::Postgres(url) => Raw::pg(url)
                .await
                .query_opt(
                    "SELECT entry FROM audit_log WHERE idx = $1",
                    &[&(index as i64)],
                )
                .await
                .unwrap()
                .map(|r| r.get(0)),
        }
    }

    /// Writes entry `index` as `bytes`, or takes it out.
    async fn set_entry(&self, index: u64, bytes: Option<&[u8]>) {
        match self {
            Raw::Sled(dir) => {
                let data = Raw::sled_data(dir);
                let key = Raw::sled_key(b'y', index);
                match bytes {
                    Some(b) => data.insert(key, b).map(drop).unwrap(),
                    None => data.remove(key).map(drop).unwrap(),
                }
                data.flush().unwrap();
            }
            Raw::Postgres(url) => {
                let client = Raw::pg(url).await;
                let index = index as i64;
                client
                    .execute("DELETE FROM audit_log WHERE idx = $1", &[&index])
                    .await
                    .unwrap();
                if let Some(b) = bytes {
                    client
                        .execute(
                            "INSERT INTO audit_log (idx, entry) VALUES ($1, $2)",
                            &[&index, &b],
                        )
                        .await
                        .unwrap();
                }
            }
        }
    }

    async fn set_head(&self, head: &TreeHead) {
        let bytes = serde_json::to_vec(head).unwrap();
        match self {
            Raw::Sled(dir) => {
                let data = Raw::sled_data(dir);
                data.insert(Raw::sled_key(b'h', head.size), bytes).unwrap();
                data.flush().unwrap();
            }
            Raw::Postgres(url) => {
                Raw::pg(url)
                    .await
                    .execute(
                        "UPDATE audit_heads SET head = $2 WHERE size = $1",
                        &[&(head.size as i64), &bytes],
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

fn audit(args: &[String]) -> (bool, String) {
    support::audit_cli(args)
}

/// The server's public key in a file of trusted keys, and as trusted keys.
fn trusted_file(data: &Path) -> (PathBuf, TrustedKeys) {
    let (file, line) = support::trusted_keys_file(data);
    (file, TrustedKeys::parse(&line).unwrap())
}

fn verify_args(raw: &Raw, trusted: &Path) -> Vec<String> {
    let mut args = vec!["verify".to_owned()];
    args.extend(raw.source());
    args.extend(["--trusted".to_owned(), trusted.display().to_string()]);
    args
}

fn hash(text: &Value) -> Hash {
    hex::decode(text.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let reply = http.get(url).send().await.unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// The latest head once it covers the first `size` entries.
async fn head_covering(auditor: &reqwest::Client, server: &str, size: u64) -> TreeHead {
    for _ in 0..200 {
        let (status, head) = get(auditor, format!("{server}/v1/audit/heads/latest")).await;
        if status == 200 && head["size"].as_u64().unwrap() >= size {
            return serde_json::from_value(head).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no head signed the first {size} entries");
}

async fn a_birth_case_is_logged_proven_and_any_rewrite_is_named(postgres: bool) {
    let data = std::env::temp_dir().join(format!("civicflow-audit-{}", uuid::Uuid::new_v4()));
    let url = if postgres {
        Some(support::pg::fresh_url().await)
    } else {
        None
    };
    let mut more = vec!["--audit-head-every", "200ms"];
    if let Some(url) = &url {
        more.extend(["--store", url, "--migrate"]);
    }
    let mut server = Server::spawn(&data, "127.0.0.1:0", &with_mocks(&more));
    let raw = match &url {
        Some(url) => Raw::Postgres(url.clone()),
        None => Raw::Sled(data.clone()),
    };

    // The civil-status office's gateway answers with another request's hash: the step stops
    // on an incident of its own kind; an operator retries it once the gateway is fixed.
    server
        .set_faults(
            "civil-status",
            json!({"rates": {"wrong_request_hash": 1.0}}),
        )
        .await;
    let id = server
        .start_case("birth-registration", birth_input("GCS-AUDIT-1"))
        .await;
    let stuck = server.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(
        stuck["incidents"][0]["reason"], "request_hash_mismatch",
        "{stuck:#}"
    );
    server.set_faults("civil-status", json!({})).await;
    let (status, body) = server
        .post(
            &format!("/v1/cases/{id}/retry"),
            &json!({"step": "birth", "reason": "the civil-status gateway mixed up two replies"}),
            None,
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let done = server.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "completed", "{done:#}");

    // The agencies were told who calls, which service, which dossier, and the citizen only
    // by pseudonym.
    let calls = server
        .agency("police", &format!("/admin/requests?case_id={id}"))
        .await;
    assert!(!calls.as_array().unwrap().is_empty());
    for call in calls.as_array().unwrap() {
        assert_eq!(call["client"], "VN/GOV/CIVICFLOW/orchestrator");
        assert_eq!(call["service"], "VN/GOV/police/residence-registration/v1");
        let user = call["user_id"].as_str().unwrap();
        assert!(
            user.starts_with("ps_") && !user.contains("001190123456"),
            "{user}"
        );
    }

    // What the log holds of the case, as an auditor reads it.
    let auditor = support::client_with(&server.token("auditor").await);
    let (status, page) = get(
        &auditor,
        format!("{}/v1/audit/entries?case_id={id}", server.url),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap().clone();
    let records: Vec<&Value> = entries.iter().map(|e| &e["entry"]["record"]).collect();
    let of = |kind: &str, step: &str| -> Vec<&Value> {
        records
            .iter()
            .copied()
            .filter(|r| r["kind"] == kind && r["step"] == step)
            .collect()
    };
    let outcomes = |step: &str| -> Vec<&str> {
        of("exchange", step)
            .iter()
            .map(|r| r["outcome"].as_str().unwrap())
            .collect()
    };
    // Each call's request is logged as it is decided, its answer as it is recorded.
    let birth = of("exchange", "birth");
    assert_eq!(
        outcomes("birth"),
        ["request_hash_mismatch", "succeeded"],
        "{records:#?}"
    );
    assert_ne!(birth[0]["request_hash"], birth[0]["echoed_request_hash"]);
    assert_eq!(
        birth[1]["service"],
        "VN/GOV/civil-status/birth-registration/v1"
    );
    assert_eq!(birth[1]["request_hash"], birth[1]["echoed_request_hash"]);
    assert_eq!(birth[1]["reply_hash"].as_str().unwrap().len(), 64);
    let requests = of("request", "birth");
    assert_eq!(requests.len(), 2, "{records:#?}");
    assert_eq!(requests[1]["request_hash"], birth[1]["request_hash"]);
    assert_eq!(requests[1]["message_id"], birth[1]["message_id"]);
    // Why the data went to the agency, as the workflow declares (Law 91/2025/QH15).
    let basis = of("basis", "birth");
    assert_eq!(basis.len(), 1, "{records:#?}");
    assert_eq!(basis[0]["lawful_basis"], "legal_obligation");
    assert!(basis[0]["law"].as_str().unwrap().contains("Civil Status"));
    // The police answer later, by callback (sometimes before their first reply is recorded).
    assert_eq!(of("request", "residence").len(), 1, "{records:#?}");
    assert_eq!(of("callback", "residence").len(), 1, "{records:#?}");
    assert!(
        outcomes("residence")
            .iter()
            .all(|o| ["pending", "superseded"].contains(o)),
        "{records:#?}"
    );
    assert!(
        of("exchange", "health_insurance")
            .iter()
            .any(|r| r["poll"] == true && r["outcome"] == "succeeded"),
        "{records:#?}"
    );
    let retry = records.iter().find(|r| r["kind"] == "action").unwrap();
    assert_eq!(retry["action"], "retry");
    assert_eq!(retry["step"], "birth");
    let reason_hash =
        civicflow::audit::entry::text_hash("the civil-status gateway mixed up two replies");
    assert_eq!(retry["reason_hash"], reason_hash.as_str());
    let text = serde_json::to_string(&entries).unwrap();
    assert!(
        !text.contains("001190123456") && !text.contains("Trần Minh An"),
        "no personal data in clear"
    );

    // Each entry is in the log a trusted key signed.
    let (trusted_path, trusted) = trusted_file(&data);
    let last = entries.last().unwrap()["index"].as_u64().unwrap();
    let head = head_covering(&auditor, &server.url, last + 1).await;
    let root = trusted
        .verify(&head)
        .expect("the head is signed by the server's key");
    for e in &entries {
        let index = e["index"].as_u64().unwrap();
        let leaf = leaf_hash(e["raw"].as_str().unwrap().as_bytes());
        assert_eq!(hex::encode(leaf), e["leaf_hash"]);
        let (status, proof) = get(
            &auditor,
            format!(
                "{}/v1/audit/proofs/inclusion?index={index}&size={}",
                server.url, head.size
            ),
        )
        .await;
        assert_eq!(status, 200, "{proof}");
        let path: Vec<Hash> = proof["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(hash)
            .collect();
        assert!(
            verify_inclusion(&leaf, index, head.size, &path, &root),
            "entry {index}"
        );
    }
    // The log only grew since its first head.
    let (_, heads) = get(&auditor, format!("{}/v1/audit/heads?limit=1", server.url)).await;
    let first: TreeHead = serde_json::from_value(heads[0].clone()).unwrap();
    let (_, proof) = get(
        &auditor,
        format!(
            "{}/v1/audit/proofs/consistency?from={}&to={}",
            server.url, first.size, head.size
        ),
    )
    .await;
    let path: Vec<Hash> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(hash)
        .collect();
    let first_root = trusted.verify(&first).unwrap();
    assert!(verify_consistency(
        first.size,
        head.size,
        &first_root,
        &root,
        &path
    ));
    // An auditor reads the log and nothing else; the portal does not read the log.
    let (status, _) = get(&auditor, format!("{}/v1/cases/{id}", server.url)).await;
    assert_eq!(status, 403);
    let portal = support::client_with(&server.token("portal").await);
    let (status, _) = get(&portal, format!("{}/v1/audit/entries", server.url)).await;
    assert_eq!(status, 403);
    // The dispute procedure of operations.md: the case's entries, each proven.
    let (ok, shown) = audit(&[
        "case".into(),
        id.clone(),
        "--trusted".into(),
        trusted_path.display().to_string(),
        "--server".into(),
        server.url.clone(),
        "--token".into(),
        server.token("auditor").await,
    ]);
    assert!(ok && shown.contains("request_hash_mismatch"), "{shown}");
    assert!(!shown.contains("DOES NOT VERIFY"), "{shown}");

    // Through the API, as an auditor reads it.
    let (ok, said) = audit(&[
        "verify".into(),
        "--server".into(),
        server.url.clone(),
        "--token".into(),
        server.token("auditor").await,
        "--trusted".into(),
        trusted_path.display().to_string(),
    ]);
    assert!(ok && said.starts_with("ok: "), "{said}");

    // A backup holds the log too, and verifies on its own.
    if !postgres {
        let backup = data.with_extension("backup");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_civicflow"))
            .args(["store", "backup"])
            .arg(&backup)
            .args(["--server", &server.url, "--token", &server.admin])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let (ok, said) = audit(&[
            "verify".into(),
            "--backup".into(),
            backup.display().to_string(),
            "--trusted".into(),
            trusted_path.display().to_string(),
        ]);
        assert!(ok, "{said}");
    }

    // Offline, with the server stopped: the log as written verifies …
    assert!(server.terminate(Duration::from_secs(20)).is_some());
    let verify = verify_args(&raw, &trusted_path);
    let (ok, said) = audit(&verify);
    assert!(ok, "{said}");
    assert!(said.starts_with("ok: "), "{said}");

    // … one byte changed in one entry is named …
    let k = entries
        .iter()
        .find(|e| e["entry"]["record"]["outcome"] == "request_hash_mismatch")
        .unwrap()["index"]
        .as_u64()
        .unwrap();
    let original = raw.entry(k).await.unwrap();
    let changed = String::from_utf8(original.clone()).unwrap().replacen(
        "request_hash_mismatch",
        "request_hash_mismatcH",
        1,
    );
    raw.set_entry(k, Some(changed.as_bytes())).await;
    let (ok, said) = audit(&verify);
    assert!(!ok && said.contains(&format!("entry {k}:")), "{said}");
    raw.set_entry(k, Some(&original)).await;
    assert!(audit(&verify).0);
    // … so is one deleted …
    raw.set_entry(k, None).await;
    let (ok, said) = audit(&verify);
    assert!(!ok && said.contains(&format!("entry {k}:")), "{said}");
    raw.set_entry(k, Some(&original)).await;
    // … and two swapped.
    let next = raw.entry(k + 1).await.unwrap();
    raw.set_entry(k, Some(&next)).await;
    raw.set_entry(k + 1, Some(&original)).await;
    let (ok, said) = audit(&verify);
    assert!(!ok && said.contains(&format!("entry {k}:")), "{said}");
    raw.set_entry(k, Some(&original)).await;
    raw.set_entry(k + 1, Some(&next)).await;
    assert!(audit(&verify).0);

    // A head signed with another key is refused, though its root is right.
    let forger = HeadSigner::from_seed([42; 32]);
    let forged = forger.sign(head.size, &root, head.timestamp);
    raw.set_head(&forged).await;
    let (ok, said) = audit(&verify);
    assert!(
        !ok && said.contains(&format!("tree head of size {}", head.size))
            && said.contains("not trusted"),
        "{said}"
    );
    raw.set_head(&head).await;
    assert!(audit(&verify).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birth_case_is_logged_proven_and_any_rewrite_is_named_on_sled() {
    a_birth_case_is_logged_proven_and_any_rewrite_is_named(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birth_case_is_logged_proven_and_any_rewrite_is_named_on_postgres() {
    a_birth_case_is_logged_proven_and_any_rewrite_is_named(true).await;
}

/// On PostgreSQL (sled's is in `tests/crash.rs`): cases run, the node is killed with SIGKILL
/// mid-way and started again; every case ends, every answer a case acted on has its exchange
/// in the log, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_while_cases_run_leaves_a_log_that_verifies_on_postgres() {
    const CASES: usize = 24;
    let (mocks, args) = support::mocks_in_test(38).await;
    let http = reqwest::Client::new();
    for agency in &mocks.agencies {
        let faults = json!({"latency": {"distribution": "uniform", "min_ms": 2, "max_ms": 40}});
        support::put_faults(&http, &agency.base_url, faults).await;
    }
    let url = support::pg::fresh_url().await;
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--store", &url, "--migrate", "--audit-head-every", "100ms"]);
    let data = std::env::temp_dir().join(format!("civicflow-audit-kill-{}", uuid::Uuid::new_v4()));
    let listen = format!("127.0.0.1:{}", support::free_port());
    let server_url = format!("http://{listen}");
    let mut server = Server::spawn(&data, &listen, &args);
    server.connect_mocks(&mocks.agencies[0].base_url).await;
    let agencies = support::agency_urls(&mocks);
    let portal = support::client_with(&server.token("portal").await);
    let submitter = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..CASES {
            let input = birth_input(&format!("GCS-AUDIT-KILL-{i}"));
            let key = format!("audit-kill-{i}");
            ids.push(support::start_retrying(&portal, &server_url, &key, input).await);
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        ids
    });
    tokio::time::sleep(Duration::from_millis(250 + fastrand::u64(0..250))).await;
    server.kill();
    server = Server::spawn(&data, &listen, &args);
    let ids = submitter.await.unwrap();
    for id in &ids {
        let case = server.settled(id, Duration::from_secs(60)).await;
        assert_eq!(case["status"], "completed", "{case:#}");
        support::exchanges_logged(&server.http, &server.url, &agencies, id)
            .await
            .unwrap();
    }
    assert!(server.terminate(Duration::from_secs(20)).is_some());
    let (trusted, _) = support::trusted_keys_file(&data);
    let (ok, said) = audit(&verify_args(&Raw::Postgres(url), &trusted));
    assert!(ok, "{said}");
    assert!(said.contains("signed tree heads"), "{said}");
}
