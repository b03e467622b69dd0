//! Backups: `civicflow store backup` copies a store while it serves under load, `civicflow store
//! restore` builds a new one from the copy, and civicflow started on it finds every case and
//! history the copy held, each as of one moment, and runs.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civicflow::case::{EventKind, StepStatus};
use civicflow::store::Store;
use civicflow::store::sled::SledStore;
use support::{Server, birth_input, free_port, mocks_in_test};

fn civicflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_civicflow"))
        .args(args)
        .output()
        .expect("the civicflow binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_into_a_store_that_has_every_case_it_held() {
    let (_mocks, args) = mocks_in_test(8).await;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = std::env::temp_dir().join(format!("civicflow-backup-{}", uuid::Uuid::new_v4()));
    let data = dir.join("data");
    let mut server = Server::spawn(&data, &format!("127.0.0.1:{}", free_port()), &args);
    let police = server.agencies.get("police").cloned();
    if let Some(police) = police {
        server.connect_mocks(&police).await;
    }
    server
        .connect_mocks(
            &_mocks
                .agencies
                .iter()
                .find(|a| a.id == "police")
                .unwrap()
                .base_url,
        )
        .await;

    // Cases started all along, eight at a time; each id once civicflow acknowledged it.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (http, url) = (server.http.clone(), server.url.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        load.spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let input = birth_input(&format!("GCS-BK-{worker}-{n}"));
                let id = support::start_birth(&http, &url, input).await;
                acknowledged.lock().unwrap().push(id);
                n += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held_before: Vec<String> = acknowledged.lock().unwrap().clone();
    let file = dir.join("store.backup");
    let backup = {
        let (url, token, file) = (server.url.clone(), server.admin.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            let file = file.to_str().unwrap().to_owned();
            civicflow(&[
                "store", "backup", &file, "--server", &url, "--token", &token,
            ])
        })
        .await
        .unwrap()
    };
    let after_backup = acknowledged.lock().unwrap().len();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    while load.join_next().await.is_some() {}
    let said = String::from_utf8_lossy(&backup.stdout);
    assert!(
        backup.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert!(said.contains("checked"), "{said}");
    assert!(
        after_backup > held_before.len(),
        "no case was started while the backup ran"
    );
    server.kill();

    // Into a new directory, once: never over a store.
    let restored = dir.join("restored");
    let restore = |to: &std::path::Path| {
        civicflow(&[
            "store",
            "restore",
            file.to_str().unwrap(),
            "--data",
            to.to_str().unwrap(),
        ])
    };
    let done = restore(&restored);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let again = restore(&restored);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The store keeps tokens as digests: the admin token of the original works on the copy.
    std::fs::copy(data.join("admin.token"), restored.join("admin.token")).unwrap();

    // Each case whole, as of one moment: its record and its history agree (read from the
    // restored store itself, before any engine moves a case on).
    let store = SledStore::open(&restored, 16 << 20).unwrap();
    for id in &held_before {
        let case_id = uuid::Uuid::parse_str(id).unwrap();
        let case = store
            .case(case_id)
            .await
            .unwrap()
            .expect("every case is in the copy");
        let events = store.history(case_id, 0, 10_000).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..case.next_seq).collect::<Vec<_>>(), "{case:#?}");
        let succeeded = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::StepSucceeded { .. }))
            .count();
        let in_record = case
            .steps
            .values()
            .filter(|s| s.status == StepStatus::Succeeded)
            .count();
        assert_eq!(succeeded, in_record, "{case:#?}");
    }
    drop(store);

    // civicflow runs on it: every case is there, and a new one goes through.
    let server = Server::spawn(&restored, &format!("127.0.0.1:{}", free_port()), &args);
    for id in &held_before {
        assert_eq!(
            server.get(&format!("/v1/cases/{id}")).await["id"],
            id.as_str()
        );
    }
    let id = server
        .start_case("birth-registration", birth_input("GCS-BK-AFTER"))
        .await;
    let case = server.settled(&id, Duration::from_secs(60)).await;
    assert_eq!(case["status"], "completed", "{case:#}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
