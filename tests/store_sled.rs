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
    let store = SledStore::open(&dir, 16 << 20).unwrap();
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
    let err = SledStore::open(&dir, 16 << 20).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Incompatible { .. }), "{text}");
    assert!(
        text.contains(&dir.display().to_string()) && text.contains("99"),
        "{text}"
    );
}

#[tokio::test]
async fn a_damaged_record_is_an_error_not_a_panic() {
    let dir = temp_dir();
    let c = commit_one_case(&dir).await;
    {
        let db = sled::open(dir.join("db")).unwrap();
        // The case table's key: its prefix byte and the case id.
        let key = [b"c".as_slice(), c.id.as_bytes()].concat();
        db.open_tree("data")
            .unwrap()
            .insert(key, "{not json")
            .unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(&dir, 16 << 20).unwrap();
    let err = store.case(c.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains("a case record cannot be read"),
        "{err}"
    );
}
