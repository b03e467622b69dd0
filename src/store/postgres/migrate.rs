//! The schema as versioned migrations, applied in order, each once. Two nodes migrating at the
//! same moment take turns on an advisory lock, and the second finds nothing left to do.

use deadpool_postgres::Client;

use super::open::Place;
use crate::store::StoreError;

/// Every migration, by the schema version it makes. Append only: a migration that shipped is
/// never edited, a change is a new one.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("schema/0001_tables.sql")),
    (2, include_str!("schema/0002_checks.sql")),
    (3, include_str!("schema/0003_counters.sql")),
    (4, include_str!("schema/0004_circuits.sql")),
    (5, include_str!("schema/0005_case_records.sql")),
    (6, include_str!("schema/0006_feed_sealed.sql")),
    (7, include_str!("schema/0007_consents.sql")),
    (8, include_str!("schema/0008_audit_log.sql")),
];

/// The schema version this civicflow reads and writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Taken for the length of a migration, so nodes migrating at once take turns.
const LOCK: i64 = 0x6369_7669_6366_6c6f; // "civicflo"

/// Creates the table of applied versions if there is none.
const LEDGER: &str = "CREATE TABLE IF NOT EXISTS civicflow_schema (
    version int PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The schema version of the database (0 for one civicflow never migrated).
pub(super) async fn schema_version(client: &Client, place: &Place) -> Result<u32, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('civicflow_schema') IS NOT NULL", &[])
        .await
        .map_err(|e| place.error(e))?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM civicflow_schema",
            &[],
        )
        .await
        .map_err(|e| place.error(e))?;
    Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}

/// Applies the migrations the database lacks, in one transaction: the versions applied.
pub(super) async fn migrate(client: &mut Client, place: &Place) -> Result<Vec<u32>, StoreError> {
    let tx = client.transaction().await.map_err(|e| place.error(e))?;
    // A migration may wait for another node's and rewrite many rows: no statement timeout.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(|e| place.error(e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(|e| place.error(e))?;
    tx.batch_execute(LEDGER).await.map_err(|e| place.error(e))?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM civicflow_schema",
            &[],
        )
        .await
        .map_err(|e| place.error(e))?;
    let found = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path: place.to_string(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tx.batch_execute(sql).await.map_err(|e| place.error(e))?;
        let v = i32::try_from(*version).expect("schema versions are small");
        tx.execute("INSERT INTO civicflow_schema (version) VALUES ($1)", &[&v])
            .await
            .map_err(|e| place.error(e))?;
        applied.push(*version);
    }
    tx.commit().await.map_err(|e| place.error(e))?;
    Ok(applied)
}
