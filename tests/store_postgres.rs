//! The PostgreSQL backend: the conformance suite, plus what only a shared database has to do
//! (versioned migrations, refusing a schema it does not know).

mod conformance;
mod pg;

use civicflow::store::postgres::{Options, PgStore, SCHEMA_VERSION};
use civicflow::store::{Store, StoreError};

conformance_suite!(pg::fresh_store());

/// A fresh store, and how to restart it: a new pool on the same database.
async fn restartable() -> (PgStore, impl AsyncFn(PgStore) -> PgStore) {
    let url = pg::fresh_url().await;
    let options = || Options {
        migrate: true,
        ..Options::default()
    };
    let store = PgStore::connect(&url, options()).await.unwrap();
    let reopen = async move |store: PgStore| {
        drop(store);
        PgStore::connect(&url, options()).await.unwrap()
    };
    (store, reopen)
}

restart_suite!(restartable());

#[tokio::test]
async fn a_database_is_refused_until_migrated_and_migrating_again_changes_nothing() {
    let url = pg::fresh_url().await;
    let err = PgStore::connect(&url, Options::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unmigrated { found: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("civicflow migrate"), "{err}");
    assert!(!err.to_string().contains("password"), "{err}");
    let applied = PgStore::migrate(&url).await.unwrap();
    assert_eq!(applied, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    assert!(PgStore::migrate(&url).await.unwrap().is_empty());
    let store = PgStore::connect(&url, Options::default()).await.unwrap();
    assert_eq!(store.config_version().await.unwrap(), 0);
}

#[tokio::test]
async fn nodes_migrating_at_once_take_turns() {
    let url = pg::fresh_url().await;
    let runs: Vec<_> = (0..4).map(|_| PgStore::migrate(&url)).collect();
    let mut applied: Vec<u32> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    applied.sort();
    assert_eq!(applied, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_civicflow_is_refused_by_name() {
    let url = pg::fresh_url().await;
    PgStore::migrate(&url).await.unwrap();
    let client = raw_client(&url).await;
    let newer = i32::try_from(SCHEMA_VERSION + 1).unwrap();
    client
        .execute(
            "INSERT INTO civicflow_schema (version) VALUES ($1)",
            &[&newer],
        )
        .await
        .unwrap();
    let err = PgStore::connect(&url, Options::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Newer { .. }), "{err}");
    assert!(
        err.to_string().contains("newer than this civicflow"),
        "{err}"
    );
    let err = PgStore::migrate(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Newer { .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_naming_it_without_its_password() {
    let err = PgStore::connect(
        "postgres://civicflow:s3cret@127.0.0.1:1/nowhere",
        Options::default(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Io { .. }), "{text}");
    assert!(
        text.contains("postgres://civicflow@127.0.0.1:1/nowhere"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn history_lands_in_the_partition_of_the_month_its_case_started() {
    let url = pg::fresh_url().await;
    let options = Options {
        migrate: true,
        ..Options::default()
    };
    let store = PgStore::connect(&url, options).await.unwrap();
    let c = conformance::case("birth-registration", "001190123456");
    let mut tx = conformance::create(&c);
    tx.events.push((
        c.id,
        civicflow::case::Event {
            seq: 0,
            at: jiff::Timestamp::now(),
            kind: civicflow::case::EventKind::CaseStarted {
                workflow: "birth-registration".into(),
                version: 1,
            },
        },
    ));
    store.commit(&tx).await.unwrap();
    let client = raw_client(&url).await;
    let month = jiff::Timestamp::now().strftime("events_%Y_%m").to_string();
    let count = |table: String| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap();
            row.get::<_, i64>(0)
        }
    };
    assert_eq!(count(month).await, 1);
    assert_eq!(count("events_default".to_owned()).await, 0);
    assert_eq!(store.history(c.id, 0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_case_written_before_the_binary_record_reads_and_is_rewritten_binary() {
    let url = pg::fresh_url().await;
    let options = Options {
        migrate: true,
        ..Options::default()
    };
    let store = PgStore::connect(&url, options).await.unwrap();
    let mut c = conformance::case("birth-registration", "001190123456");
    store.commit(&conformance::create(&c)).await.unwrap();
    let client = raw_client(&url).await;
    // The row as a civicflow of schema version 4 wrote it: compressed JSON, format 1.
    let old = lz4_flex::block::compress_prepend_size(&serde_json::to_vec(&c).unwrap());
    client
        .execute(
            "UPDATE cases SET record = $2, format = 1 WHERE id = $1",
            &[&c.id, &old],
        )
        .await
        .unwrap();
    c.rev = 1;
    assert_eq!(store.case(c.id).await.unwrap(), Some(c.clone()));
    let format = || async {
        let row = client
            .query_one("SELECT format FROM cases WHERE id = $1", &[&c.id])
            .await
            .unwrap();
        row.get::<_, i16>(0)
    };
    assert_eq!(format().await, 1);
    c.next_seq = 1;
    let mut tx = conformance::create(&c);
    tx.cases[0].expected_rev = Some(1);
    store.commit(&tx).await.unwrap();
    assert_eq!(format().await, 2);
    c.rev = 2;
    assert_eq!(store.case(c.id).await.unwrap(), Some(c.clone()));
    client
        .execute("UPDATE cases SET format = 7 WHERE id = $1", &[&c.id])
        .await
        .unwrap();
    let err = store.case(c.id).await.unwrap_err();
    assert!(err.to_string().contains("unknown format 7"), "{err}");
}

/// A client of its own on the store's database, beside the store's pool.
async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Issue 33: a commit whose notifications were weighed before a registration committed, and
/// which itself commits after the registration was answered, would be missing from the new
/// webhook's feed. Here the commit is held between its feed statement and its end (its counter
/// waits on a row another transaction holds) while the webhook registers: every commit that ends
/// after the registration was answered must be in the feed.
#[tokio::test]
async fn a_registration_is_answered_only_once_no_commit_weighed_before_it_can_end_after_it() {
    let url = pg::fresh_url().await;
    let options = Options {
        migrate: true,
        ..Options::default()
    };
    let store = PgStore::connect(&url, options).await.unwrap();
    let holder = raw_client(&url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .batch_execute(
            "INSERT INTO counters (name, shard, value) \
             SELECT 'held', s, 0 FROM generate_series(0, 1023) AS s",
        )
        .await
        .unwrap();
    let start = store.feed_end().await.unwrap();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let held = {
        let (store, order) = (store.clone(), order.clone());
        tokio::spawn(async move {
            let tx = civicflow::store::Transaction {
                notify: vec![conformance::notification("held")],
                counts: vec![("held".to_owned(), 1)],
                ..Default::default()
            };
            store.commit(&tx).await.unwrap();
            order.lock().unwrap().push("held");
        })
    };
    // Until the commit waits on the held counter rows, past its feed statement.
    let waiting = raw_client(&url).await;
    loop {
        let row = waiting
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE '%INTO counters%'",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let registered = {
        let (store, order) = (store.clone(), order.clone());
        tokio::spawn(async move {
            let tx = civicflow::store::Transaction {
                put_webhooks: vec![conformance::webhook("late")],
                ..Default::default()
            };
            store.commit(&tx).await.unwrap();
            order.lock().unwrap().push("registered");
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    holder.batch_execute("ROLLBACK").await.unwrap();
    held.await.unwrap();
    registered.await.unwrap();
    conformance::notify_each(&store, &["after"]).await;
    let feed = store.feed(start, 10).await.unwrap();
    let steps = conformance::steps_of(&feed);
    let order = order.lock().unwrap().clone();
    if order == ["registered", "held"] {
        assert_eq!(
            steps,
            ["held", "after"],
            "a commit that ended after the registration was answered is missing"
        );
    } else {
        assert_eq!(steps, ["after"]);
    }
}

/// Issue 33: a transaction that runs long anywhere on the database server (a report, a
/// `pg_dump`, a forgotten session) must not hold back the feed.
#[tokio::test]
async fn a_long_transaction_elsewhere_does_not_hold_back_the_feed() {
    let url = pg::fresh_url().await;
    let options = Options {
        migrate: true,
        ..Options::default()
    };
    let store = PgStore::connect(&url, options).await.unwrap();
    conformance::subscribe(&store).await;
    let start = store.feed_end().await.unwrap();
    let elsewhere = raw_client(&pg::database()).await;
    elsewhere.batch_execute("BEGIN").await.unwrap();
    elsewhere
        .batch_execute("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    conformance::notify_each(&store, &["a", "b"]).await;
    let feed = store.feed(start, 10).await.unwrap();
    assert_eq!(conformance::steps_of(&feed), ["a", "b"]);
    assert_eq!(store.feed_count(start).await.unwrap(), 2);
    assert!(store.feed_end().await.unwrap() > start);
    elsewhere.batch_execute("ROLLBACK").await.unwrap();
}

/// The test database's URL with its host and port replaced by `addr`, and the schema of `url`.
fn through(url: &str, addr: std::net::SocketAddr) -> String {
    url.replacen("127.0.0.1:5432", &addr.to_string(), 1)
}

/// Issue 33: a database that accepts connections and never answers (a hung server, a black
/// hole on the way) is an error after the store's timeout, not a wait for ever.
#[tokio::test]
async fn a_database_that_never_answers_is_an_error_in_bounded_time() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let url = through(&pg::fresh_url().await, addr);
    let options = Options {
        timeout: std::time::Duration::from_secs(1),
        ..Options::default()
    };
    let connected = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        PgStore::connect(&url, options),
    )
    .await
    .expect("connecting waited for ever");
    let err = connected.expect_err("a silent server cannot be connected to");
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}

/// Issue 33: a statement that waits on another transaction's lock (a session left open on the
/// database) is cut off after the store's timeout, and the commit answered with an error.
#[tokio::test]
async fn a_commit_waiting_on_a_lock_is_cut_off_after_the_timeout() {
    let url = pg::fresh_url().await;
    let options = Options {
        migrate: true,
        timeout: std::time::Duration::from_secs(1),
        ..Options::default()
    };
    let store = PgStore::connect(&url, options).await.unwrap();
    let mut c = conformance::case("birth-registration", "001190123456");
    store.commit(&conformance::create(&c)).await.unwrap();
    let holder = raw_client(&url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute("SELECT 1 FROM cases WHERE id = $1 FOR UPDATE", &[&c.id])
        .await
        .unwrap();
    c.rev = 1;
    let mut tx = conformance::create(&c);
    tx.cases[0].expected_rev = Some(1);
    let committed = tokio::time::timeout(std::time::Duration::from_secs(30), store.commit(&tx))
        .await
        .expect("the commit waited on the lock for ever");
    assert!(committed.is_err(), "the commit went through a held lock");
    holder.batch_execute("ROLLBACK").await.unwrap();
}

/// A TCP proxy to the test database that, once `cut` is set, swallows what the database
/// answers on the next request and closes that connection half a second later: the database
/// ran and committed what it was sent, and the client never hears of it.
async fn cutting_proxy(cut: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::net::SocketAddr {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect("127.0.0.1:5432")
                .await
                .unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let cut = cut.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let Ok(n) = client_read.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let Ok(n) = server_read.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    if cut.swap(false, Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        return;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Issue 33: when the connection is lost after a batch's COMMIT was sent, whether it was
/// applied is unknown: its commits are answered with an error, never applied again one by one
/// (a counter would count twice, a notification be written twice).
#[tokio::test]
async fn a_batch_whose_commit_answer_is_lost_is_not_applied_again() {
    let url = pg::fresh_url().await;
    PgStore::migrate(&url).await.unwrap();
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let proxy = cutting_proxy(cut.clone()).await;
    let options = Options {
        pool_size: 1,
        ..Options::default()
    };
    let store = PgStore::connect(&through(&url, proxy), options)
        .await
        .unwrap();
    let counted = |name: &str| civicflow::store::Transaction {
        counts: vec![(format!("lost/{name}"), 1)],
        ..Default::default()
    };
    let (a, b) = (counted("a"), counted("b"));
    // The store makes the history's partitions as it connects, on its one connection; and a
    // first commit prepares the statements, so that the next answer the database sends is
    // the batch's.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    store.commit(&counted("warm")).await.unwrap();
    cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let (a, b) = tokio::join!(store.commit(&a), store.commit(&b));
    assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
    let direct = PgStore::connect(&url, Options::default()).await.unwrap();
    let counts = direct.counts("lost/", "lost0").await.unwrap();
    assert_eq!(
        counts,
        vec![
            ("lost/a".to_owned(), 1),
            ("lost/b".to_owned(), 1),
            ("lost/warm".to_owned(), 1)
        ],
        "the batch was applied, and applied again"
    );
}
