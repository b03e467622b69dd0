//! A full disk, for real: civicflow's data directory on a 4 MB tmpfs this test mounts. Cases
//! are started until the disk is full; from then on a start is answered `503
//! storage_unavailable` with `Retry-After`, `/v1/ready` says not ready while `/v1/health` stays
//! up, reads go on, and the log says so in a few lines however many requests are refused. When
//! the file system is grown, civicflow writes again by itself, without a restart; every start
//! refused meanwhile is taken when retried with its key, and every case completes.
//!
//! Mounting needs root (CAP_SYS_ADMIN), as CI and the project's machines run the tests.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, birth_input, free_port, mocks_in_test};

const BOUND: Duration = Duration::from_secs(90);
/// Requests keep coming this long after the disk filled: long enough that a log line per
/// refused request, or per timer, would show.
const KEPT_FULL: Duration = Duration::from_secs(5);

/// A tmpfs of a given size, mounted for the test and unmounted however it ends.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!("civicflow-full-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("`mount` runs");
        assert!(
            mounted.success(),
            "this test mounts a tmpfs at {} and needs root (CAP_SYS_ADMIN) to: run the tests as CI does, as root",
            dir.display()
        );
        Tmpfs { dir }
    }

    fn resize(&self, size: &str) {
        let resized = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(
            resized.success(),
            "remount {} to {size}",
            self.dir.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Starts a birth case under idempotency key `key`: the status, the body and `Retry-After`.
async fn start(server: &Server, key: &str) -> (u16, Value, Option<String>) {
    let response = server
        .http
        .post(format!("{}/v1/cases", server.url))
        .header("idempotency-key", key)
        .json(&json!({"workflow": "birth-registration", "input": birth_input(key)}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), retry_after)
}

async fn ready(server: &Server) -> (u16, Value) {
    server
        .call(None, reqwest::Method::GET, "/v1/ready", None)
        .await
}

fn lines_since(log: &Mutex<Vec<String>>, from: usize) -> Vec<String> {
    log.lock().unwrap()[from..].to_vec()
}

fn data_dir(tmpfs: &Path) -> PathBuf {
    tmpfs.join("data")
}

#[tokio::test]
async fn a_full_disk_is_refused_briefly_logged_and_left_by_itself_when_space_returns() {
    let tmpfs = Tmpfs::mount("4m");
    let (mocks, args) = mocks_in_test(22).await;
    let police = mocks
        .agencies
        .iter()
        .find(|a| a.id == "police")
        .unwrap()
        .base_url
        .clone();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Refused starts are answered in a millisecond: the token's rate limit is not the subject.
    args.extend(["--rate-limit", "100000", "--rate-burst", "100000"]);
    // The audit log's signer tries to sign all the while the disk is full: its failures are
    // logged as briefly as the rest.
    args.extend(["--audit-head-every", "1s"]);
    let log = Arc::new(Mutex::new(Vec::new()));
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::spawn_logged(&data_dir(&tmpfs.dir), &listen, &args, log.clone());
    server.connect_mocks(&police).await;
    assert_eq!(ready(&server).await.0, 200);

    // Fill the disk. Nothing is logged until it is full.
    let log_at_full = log.lock().unwrap().len();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut n = 0;
    loop {
        assert!(n < 20_000, "4 MB never filled");
        let key = format!("FULL{n:06}");
        n += 1;
        let (status, body, retry_after) = start(&server, &key).await;
        match status {
            201 => accepted.push(body["id"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
                assert!(retry_after.is_some(), "a 503 says when to retry");
                refused.push(key);
                break;
            }
            other => panic!("a start answered {other} while the disk filled: {body}"),
        }
    }
    assert!(accepted.len() > 50, "only {} cases fit", accepted.len());

    // Full: every start is refused the same way, readiness says so, liveness and reads go on.
    let until = tokio::time::Instant::now() + KEPT_FULL;
    while tokio::time::Instant::now() < until {
        let key = format!("FULL{n:06}");
        n += 1;
        let (status, body, retry_after) = start(&server, &key).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
        assert_eq!(retry_after.as_deref(), Some("5"));
        refused.push(key);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first refused start may have been written before its sync failed, and civicflow's
    // memory may still hold it: a retry is not answered "done" from a write not on disk.
    let (status, body, _) = start(&server, &refused[0]).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = ready(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "storage_unavailable", "{body}");
    let (status, _) = server
        .call(None, reqwest::Method::GET, "/v1/health", None)
        .await;
    assert_eq!(status, 200);
    let case = server.get(&format!("/v1/cases/{}", accepted[0])).await;
    assert_eq!(case["id"], accepted[0].as_str(), "{case}");
    let logged = lines_since(&log, log_at_full);
    assert!(
        logged.len() <= 6,
        "{} requests refused over {KEPT_FULL:?}, and the log grew by {} lines:\n{}",
        refused.len(),
        logged.len(),
        logged.join("\n")
    );
    assert!(
        logged.iter().any(|l| l.contains("the store cannot write")),
        "{logged:#?}"
    );

    // Space returns: civicflow writes again by itself.
    tmpfs.resize("512m");
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = ready(&server).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "still not ready: {body}; the log since the disk filled:\n{}",
            lines_since(&log, log_at_full).join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        lines_since(&log, log_at_full)
            .iter()
            .any(|l| l.contains("the store writes again")),
        "the end of the condition is logged"
    );
    for key in &refused {
        let (status, body, _) = start(&server, key).await;
        assert!(
            status == 201 || status == 200,
            "retrying {key}: {status} {body}; the log since the disk filled:\n{}",
            lines_since(&log, log_at_full).join("\n")
        );
        accepted.push(body["id"].as_str().unwrap().to_owned());
    }
    accepted.sort();
    accepted.dedup();
    for id in &accepted {
        let case = server.settled(id, BOUND).await;
        assert_eq!(
            case["status"],
            "completed",
            "{case:#}\nthe log since the disk filled:\n{}",
            lines_since(&log, log_at_full).join("\n")
        );
    }
    let df = Command::new("df")
        .arg("-h")
        .arg(&tmpfs.dir)
        .output()
        .unwrap();
    eprintln!(
        "{} cases\n{}",
        accepted.len(),
        String::from_utf8_lossy(&df.stdout)
    );
}
