//! The sled backend: the conformance suite, plus what only an embedded store has to do (a data
//! directory that outlives the process, and refuses a second server or a foreign format).

mod conformance;

use civicflow::store::sled::SledStore;
use civicflow::store::{Store, StoreError};

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("civicflow-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn fresh() -> SledStore {
    SledStore::open(&temp_dir(), 16 << 20).unwrap()
}

conformance_suite!(fresh());

/// A fresh store, and how to restart it on its data.
async fn restartable() -> (SledStore, impl AsyncFn(SledStore) -> SledStore) {
    let dir = temp_dir();
    let store = SledStore::open(&dir, 16 << 20).unwrap();
    let reopen = async move |store: SledStore| {
        drop(store);
        reopen(&dir)
    };
    (store, reopen)
}

restart_suite!(restartable());

/// What `open` opens once the store closed before has let its files go (`held` says an error
/// is that): a dropped store's background threads (and sled's own) end a moment after the
/// handle.
fn once_released<T, E: std::fmt::Debug>(
    mut open: impl FnMut() -> Result<T, E>,
    held: impl Fn(&E) -> bool,
) -> T {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(e) if held(&e) && std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened.unwrap(),
        }
    }
}

/// The store in `dir`, opened again.
fn reopen(dir: &std::path::Path) -> SledStore {
    once_released(
        || SledStore::open(dir, 16 << 20),
        // Ours, or sled's own on its files, which its threads let go a moment after ours.
        |e| {
            matches!(e, StoreError::Locked { .. })
                || matches!(e, StoreError::Io { detail, .. } if detail.contains("could not acquire lock"))
        },
    )
}

/// The raw sled database of the store in `dir`.
fn raw_sled(dir: &std::path::Path) -> sled::Db {
    once_released(|| sled::open(dir.join("db")), |_| true)
}

/// Opens the store in `dir`, commits one case, and closes the store.
async fn commit_one_case(dir: &std::path::Path) -> civicflow::case::Case {
    let c = conformance::case("birth-registration", "001190123456");
    let store = SledStore::open(dir, 16 << 20).unwrap();
    store.commit(&conformance::create(&c)).await.unwrap();
    c
}

#[tokio::test]
async fn what_is_committed_is_there_after_reopening() {
    let dir = temp_dir();
    let c = commit_one_case(&dir).await;
    let store = reopen(&dir);
    assert_eq!(store.case(c.id).await.unwrap().unwrap().id, c.id);
}

#[tokio::test]
async fn a_second_server_on_the_same_directory_is_refused() {
    let dir = temp_dir();
    let _first = SledStore::open(&dir, 16 << 20).unwrap();
    let err = SledStore::open(&dir, 16 << 20).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("in use by another civicflow process"),
        "{err}"
    );
}

#[tokio::test]
async fn a_store_of_another_format_version_is_refused_by_name() {
    let dir = temp_dir();
    {
        let db = sled::open(dir.join("db")).unwrap();
        db.insert("format", "99").unwrap();
        db.flush().unwrap();
    }
    // sled's own threads let its lock go a moment after the database is dropped.
    let err = once_released(
        || match SledStore::open(&dir, 16 << 20) {
            Ok(_) => Ok(StoreError::Locked {
                path: "opened a store of another format".into(),
            }),
            Err(StoreError::Io { detail, .. }) if detail.contains("could not acquire lock") => {
                Err(())
            }
            Err(e) => Ok(e),
        },
        |()| true,
    );
    let text = err.to_string();
    assert!(matches!(err, StoreError::Incompatible { .. }), "{text}");
    assert!(
        text.contains(&dir.display().to_string()) && text.contains("99"),
        "{text}"
    );
}

#[tokio::test]
async fn a_store_of_the_format_before_is_opened_and_moved_on() {
    use civicflow::case::{Timer, TimerKind};

    let dir = temp_dir();
    let c = commit_one_case(&dir).await;
    // Version 5 wrote a timer's record as JSON, under the key of its due time, case and kind.
    let timer = |kind: TimerKind| Timer {
        case_id: c.id,
        due_at: "2026-11-02T03:04:05.123456789Z".parse().unwrap(),
        kind,
    };
    let key = |t: &Timer| {
        let due = t.due_at.as_millisecond() as u64;
        [
            b"t".as_slice(),
            &due.to_be_bytes(),
            c.id.as_bytes(),
            t.kind.id().as_bytes(),
        ]
        .concat()
    };
    let stored = timer(TimerKind::Retry {
        step: "birth".into(),
    });
    // And one in a group a crash interrupted: its journal entry (`[key length: u32 LE][key]
    // [1][value length: u32 LE][value]` per write) is completed before the store moves on.
    let journaled = timer(TimerKind::CaseDeadline);
    {
        let db = raw_sled(&dir);
        let data = db.open_tree("data").unwrap();
        data.insert(key(&stored), serde_json::to_vec(&stored).unwrap())
            .unwrap();
        let (k, v) = (key(&journaled), serde_json::to_vec(&journaled).unwrap());
        let mut entry = Vec::new();
        entry.extend_from_slice(&(k.len() as u32).to_le_bytes());
        entry.extend_from_slice(&k);
        entry.push(1);
        entry.extend_from_slice(&(v.len() as u32).to_le_bytes());
        entry.extend_from_slice(&v);
        data.insert([b"j".as_slice(), &7u64.to_be_bytes()].concat(), entry)
            .unwrap();
        db.insert("format", "5").unwrap();
        db.flush().unwrap();
    }
    let store = reopen(&dir);
    assert_eq!(store.case(c.id).await.unwrap().unwrap().id, c.id);
    let mut due = store
        .due_timers("2026-11-03T00:00:00Z".parse().unwrap(), 10)
        .await
        .unwrap();
    due.sort_by_key(|t| t.kind.id());
    assert_eq!(due, vec![journaled, stored]);
    drop(store);
    let db = raw_sled(&dir);
    let format = db.get("format").unwrap().unwrap();
    assert_eq!(
        format.as_ref(),
        civicflow::store::FORMAT_VERSION.to_string().as_bytes()
    );
}

#[tokio::test]
async fn a_backup_of_the_format_before_restores_with_its_timers_readable() {
    use civicflow::case::{Timer, TimerKind};
    use sha2::Digest;

    // A version-5 backup holding one timer, its record JSON as version 5 wrote it.
    let timer = Timer {
        case_id: uuid::Uuid::now_v7(),
        due_at: "2026-11-02T03:04:05.5Z".parse().unwrap(),
        kind: TimerKind::CaseDeadline,
    };
    let key = [
        b"t".as_slice(),
        &(timer.due_at.as_millisecond() as u64).to_be_bytes(),
        timer.case_id.as_bytes(),
        b"deadline",
    ]
    .concat();
    let value = serde_json::to_vec(&timer).unwrap();
    let mut file = b"CIVICFLOW-BACKUP\n".to_vec();
    file.extend_from_slice(&5u32.to_le_bytes());
    file.push(1);
    for part in [&key, &value] {
        file.extend_from_slice(&(part.len() as u32).to_le_bytes());
        file.extend_from_slice(part);
    }
    file.push(0);
    file.extend_from_slice(&1u64.to_le_bytes());
    let hash = sha2::Sha256::digest(&file);
    file.extend_from_slice(&hash);

    let dir = temp_dir().join("restored");
    SledStore::restore_from(file.as_slice(), &dir).unwrap();
    let store = SledStore::open(&dir, 16 << 20).unwrap();
    let due = store
        .due_timers("2026-11-03T00:00:00Z".parse().unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(due, vec![timer]);
}

#[tokio::test]
async fn counter_changes_not_yet_folded_are_counted_and_outlive_a_restart() {
    use civicflow::store::Transaction;

    let dir = temp_dir();
    let store = SledStore::open(&dir, 16 << 20).unwrap();
    for n in [3, -1, 5] {
        let tx = Transaction {
            counts: vec![("kpi/a".to_owned(), n), ("kpi/b".to_owned(), 1)],
            ..Transaction::default()
        };
        store.commit(&tx).await.unwrap();
    }
    let expected = vec![("kpi/a".to_owned(), 7), ("kpi/b".to_owned(), 3)];
    assert_eq!(store.counts("kpi/", "kpi0").await.unwrap(), expected);
    drop(store);
    {
        // Three groups are too few to fold: the changes are in their record, not the counters.
        let data = raw_sled(&dir).open_tree("data").unwrap();
        assert!(data.get("m").unwrap().is_some());
        assert!(data.get("nkpi/a").unwrap().is_none());
    }
    let store = reopen(&dir);
    assert_eq!(store.counts("kpi/", "kpi0").await.unwrap(), expected);
    let tx = Transaction {
        counts: vec![("kpi/a".to_owned(), -7)],
        ..Transaction::default()
    };
    store.commit(&tx).await.unwrap();
    assert_eq!(
        store.counts("kpi/", "kpi0").await.unwrap(),
        vec![("kpi/b".to_owned(), 3)]
    );
}

#[tokio::test]
async fn a_damaged_record_is_an_error_not_a_panic() {
    let dir = temp_dir();
    let c = commit_one_case(&dir).await;
    {
        let db = raw_sled(&dir);
        // The case table's key: its prefix byte and the case id.
        let key = [b"c".as_slice(), c.id.as_bytes()].concat();
        db.open_tree("data")
            .unwrap()
            .insert(key, "{not json")
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(&dir);
    let err = store.case(c.id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Damaged { case_id, table: "cases", .. } if case_id == c.id),
        "{err}"
    );
    assert!(err.to_string().contains(&c.id.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_commits_is_the_store_as_it_stood_and_restores_whole() {
    use civicflow::store::{CaseWrite, Transaction};

    let dir = temp_dir();
    let store = SledStore::open(&dir, 16 << 20).unwrap();
    // Enough cases for many chunks of keys (each case is a record and its index entries).
    let mut cases: Vec<civicflow::case::Case> = (0..1500)
        .map(|_| conformance::case("birth-registration", "001190123456"))
        .collect();
    for batch in cases.chunks(100) {
        let tx = Transaction {
            cases: batch
                .iter()
                .map(|c| CaseWrite {
                    case: c.clone(),
                    expected_rev: None,
                })
                .collect(),
            ..Transaction::default()
        };
        store.commit(&tx).await.unwrap();
    }
    for c in &mut cases {
        c.rev = 1;
    }
    // Every commit moves every case on together: a copy made of several moments would show
    // cases at different revisions.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (store, stop, commits) = (store.clone(), stop.clone(), commits.clone());
        let mut cases = cases.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let tx = Transaction {
                    cases: cases
                        .iter()
                        .map(|c| CaseWrite {
                            case: c.clone(),
                            expected_rev: Some(c.rev),
                        })
                        .collect(),
                    ..Transaction::default()
                };
                store.commit(&tx).await.unwrap();
                for c in &mut cases {
                    c.rev += 1;
                }
                commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let count = || commits.load(std::sync::atomic::Ordering::SeqCst);
    while count() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = count();
    let (bytes, copied) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let mut sink = Slow::default();
            let copied = store.copy_to(&mut sink).unwrap();
            (sink.bytes, copied)
        })
        .await
        .unwrap()
    };
    let during = count() - before;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    assert!(
        during >= 2,
        "only {during} commits landed while the backup ran"
    );
    assert_eq!(copied.bytes, bytes.len() as u64);

    let restored_dir = temp_dir().join("restored");
    let copied_back = SledStore::restore_from(bytes.as_slice(), &restored_dir).unwrap();
    assert_eq!(copied_back.records, copied.records);
    let restored = SledStore::open(&restored_dir, 16 << 20).unwrap();
    let mut revs = std::collections::BTreeSet::new();
    for c in &cases {
        let found = restored
            .case(c.id)
            .await
            .unwrap()
            .expect("every case is in the copy");
        revs.insert(found.rev);
    }
    assert_eq!(revs.len(), 1, "the copy holds cases at revisions {revs:?}");
    drop(restored);

    // Never over a store, and never from a damaged file.
    let err = SledStore::restore_from(bytes.as_slice(), &restored_dir).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    let elsewhere = temp_dir().join("damaged");
    let err = SledStore::restore_from(damaged.as_slice(), &elsewhere).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    assert!(
        !elsewhere.exists(),
        "a failed restore leaves nothing behind"
    );
    let cut = &bytes[..bytes.len() - 10];
    let err = SledStore::restore_from(cut, &elsewhere).unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
}

/// A destination slow enough that a backup spans many commits.
#[derive(Default)]
struct Slow {
    bytes: Vec<u8>,
    calls: usize,
}

impl std::io::Write for Slow {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(500) {
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Issue 33: a backup of a trimmed feed restores to a store that numbers on past what its
/// webhook took; so does a store the version before this one left, which kept no trimmed
/// position (its webhooks' cursors tell).
#[tokio::test]
async fn a_restored_store_and_a_store_without_a_trimmed_position_number_past_every_cursor() {
    let dir = temp_dir();
    let store = SledStore::open(&dir, 16 << 20).unwrap();
    conformance::subscribe(&store).await;
    conformance::notify_each(&store, &["a", "b"]).await;
    let last = store.feed_end().await.unwrap();
    conformance::delivered_up_to(&store, "subscriber", last).await;
    let mut bytes = Vec::new();
    store.copy_to(&mut bytes).unwrap();
    drop(store);
    let fed_past_last = async |store: SledStore| {
        conformance::notify_each(&store, &["c"]).await;
        let feed = store.feed(last, 10).await.unwrap();
        assert_eq!(conformance::steps_of(&feed), ["c"]);
        assert!(feed[0].0 > last, "{} after {last}", feed[0].0);
    };
    let restored_dir = temp_dir().join("restored");
    SledStore::restore_from(bytes.as_slice(), &restored_dir).unwrap();
    fed_past_last(reopen(&restored_dir)).await;
    {
        let db = raw_sled(&dir);
        db.open_tree("data").unwrap().remove("vfeed").unwrap();
        db.flush().unwrap();
    }
    fed_past_last(reopen(&dir)).await;
}

/// Issue 37: `civicflow store check` names each ended case whose personal data outlived its
/// retention (its erasure never ran), and no other.
#[tokio::test]
async fn the_check_names_ended_cases_past_their_retention() {
    use conformance::{at, case, create};
    let store = fresh().await;
    let mut running = case("birth-registration", "001190000001");
    running.retention.erase_at = Some(at(0));
    let mut overdue = case("birth-registration", "001190000002");
    overdue.status = civicflow::case::CaseStatus::Completed;
    overdue.finished_at = Some(at(0));
    overdue.retention.erase_at = Some(at(10));
    let mut erased = overdue.clone();
    erased.id = civicflow::case::CaseId::now_v7();
    erased.retention.erased_at = Some(at(20));
    let mut later = overdue.clone();
    later.id = civicflow::case::CaseId::now_v7();
    later.retention.erase_at = Some(at(1_000_000));
    let mut unscheduled = overdue.clone();
    unscheduled.id = civicflow::case::CaseId::now_v7();
    unscheduled.retention.erase_at = None;
    for c in [&running, &overdue, &erased, &later, &unscheduled] {
        store.commit(&create(c)).await.unwrap();
    }
    let checked = store.check(at(100)).unwrap();
    let mut named: Vec<_> = checked.unerased.iter().map(|u| u.case_id).collect();
    named.sort();
    let mut expected = vec![overdue.id, unscheduled.id];
    expected.sort();
    assert_eq!(named, expected, "{checked:?}");
    assert!(checked.damaged.is_empty());
}
