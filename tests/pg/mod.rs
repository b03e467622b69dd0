//! A PostgreSQL for the tests: the database `./scripts/test` made for this run
//! (`CIVICFLOW_TEST_DATABASE`), or the machine's own on 127.0.0.1:5432. Each store gets a fresh
//! schema of its own in it. A test that cannot reach PostgreSQL fails; it never skips.
#![allow(dead_code)]

/// The database this run's PostgreSQL tests use.
pub fn database() -> String {
    std::env::var("CIVICFLOW_TEST_DATABASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty schema in the test database: the URL of a store in it.
pub async fn fresh_url() -> String {
    let base = database();
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {base}: {e}; ./scripts/test starts one")
        });
    tokio::spawn(connection);
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    format!("{base}?options=-csearch_path%3D{schema}")
}

/// Drops the schema of a store `fresh_url` made, with everything in it.
pub async fn drop_schema(url: &str) {
    let (client, connection) = tokio_postgres::connect(&database(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let schema = url.rsplit("search_path%3D").next().unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// A store in a fresh schema, migrated.
pub async fn fresh_store() -> civicflow::store::postgres::PgStore {
    store_at(&fresh_url().await).await
}

/// The store at `url` (a schema [`fresh_url`] made), migrated.
pub async fn store_at(url: &str) -> civicflow::store::postgres::PgStore {
    let options = civicflow::store::postgres::Options {
        migrate: true,
        ..Default::default()
    };
    civicflow::store::postgres::PgStore::connect(url, options)
        .await
        .unwrap()
}
