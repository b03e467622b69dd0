//! The audit log on PostgreSQL: records written unnumbered by every commit, numbered and
//! chained as they are sealed, as the webhook feed is (`feed.rs`, for why a position cannot
//! come from the writing transaction). Sealing is done by readers (the signer, the API,
//! `audit verify`), in batches, under the lock of the one row of `audit_sealed`, which keeps
//! where the log ends: its size, the last leaf hash, the last time.

use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::PgStore;
use crate::audit::{Record, Tail, TreeHead};
use crate::case::CaseId;
use crate::store::StoreError;

const UNSEALED: &str = "SELECT EXISTS (SELECT 1 FROM audit_unsealed)";
const LOCK_TAIL: &str =
    "SELECT size, last_leaf, last_at_ns FROM audit_sealed WHERE id = 1 FOR UPDATE";
const TAKE: &str = "SELECT id, record FROM audit_unsealed ORDER BY id LIMIT $1";
const SEALED: &str = "INSERT INTO audit_log (idx, case_id, entry) \
    SELECT * FROM unnest($1::int8[], $2::uuid[], $3::bytea[])";
const TAKEN: &str = "DELETE FROM audit_unsealed WHERE id = ANY($1)";
const MOVE_TAIL: &str =
    "UPDATE audit_sealed SET size = $1, last_leaf = $2, last_at_ns = $3 WHERE id = 1";
const SIZE: &str = "SELECT size FROM audit_sealed WHERE id = 1";
const ENTRIES: &str = "SELECT idx, entry FROM audit_log WHERE idx >= $1 ORDER BY idx LIMIT $2";
const OF_CASE: &str = "SELECT idx FROM audit_log WHERE case_id = $1 ORDER BY idx";
const HEADS: &str = "SELECT head FROM audit_heads WHERE size >= $1 ORDER BY size LIMIT $2";
const LATEST_HEAD: &str = "SELECT head FROM audit_heads ORDER BY size DESC LIMIT 1";

/// How many records one seal numbers.
const BATCH: i64 = 5_000;

impl PgStore {
    /// Numbers and chains every record committed so far, in batches.
    async fn seal_audit(&self) -> Result<(), StoreError> {
        loop {
            let waiting = self.rows(UNSEALED, &[]).await?;
            if !waiting.first().is_some_and(|r| r.get::<_, bool>(0)) {
                return Ok(());
            }
            if self.seal_audit_batch().await? < BATCH as usize {
                return Ok(());
            }
        }
    }

    /// One batch: how many records it sealed.
    async fn seal_audit_batch(&self) -> Result<usize, StoreError> {
        let err = |e| self.place.error(e);
        let mut client = self.client().await?;
        self.exchanges.round_trips.fetch_add(1, Ordering::Relaxed);
        let tx = client.transaction().await.map_err(err)?;
        let row = tx.query_one(LOCK_TAIL, &[]).await.map_err(err)?;
        let last_leaf: &[u8] = row.get(1);
        let mut tail = Tail {
            size: row.get::<_, i64>(0) as u64,
            last_leaf: last_leaf.try_into().map_err(|_| {
                self.place
                    .corrupt("the audit log's last leaf hash is not 32 bytes".into())
            })?,
            last_at: jiff::Timestamp::from_nanosecond(i128::from(row.get::<_, i64>(2)))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        };
        let rows = tx.query(TAKE, &[&BATCH]).await.map_err(err)?;
        let now = jiff::Timestamp::now();
        let (mut ids, mut indexes, mut cases, mut entries) = (
            Vec::new(),
            Vec::new(),
            Vec::<Option<Uuid>>::new(),
            Vec::new(),
        );
        for row in &rows {
            let record: Record = serde_json::from_slice(row.get::<_, &[u8]>(1)).map_err(|e| {
                self.place.corrupt(format!(
                    "an audit record waiting to be logged cannot be read: {e}"
                ))
            })?;
            ids.push(row.get::<_, i64>(0));
            cases.push(record.case_id());
            let (index, entry) = tail.append(record, now);
            indexes.push(index as i64);
            entries.push(entry);
        }
        tx.execute(SEALED, &[&indexes, &cases, &entries])
            .await
            .map_err(err)?;
        tx.execute(TAKEN, &[&ids]).await.map_err(err)?;
        let (size, leaf, at) = (
            tail.size as i64,
            tail.last_leaf.to_vec(),
            i64::try_from(tail.last_at.as_nanosecond()).unwrap_or(i64::MAX),
        );
        tx.execute(MOVE_TAIL, &[&size, &leaf, &at])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(rows.len())
    }

    pub(super) async fn audit_size(&self) -> Result<u64, StoreError> {
        self.seal_audit().await?;
        let rows = self.rows(SIZE, &[]).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    pub(super) async fn audit_entries(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.rows(ENTRIES, &[&from, &limit]).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
            .collect())
    }

    pub(super) async fn audit_of_case(&self, id: CaseId) -> Result<Vec<u64>, StoreError> {
        let rows = self.rows(OF_CASE, &[&id]).await?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    pub(super) async fn tree_heads(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<TreeHead>, StoreError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.rows(HEADS, &[&from, &limit]).await?;
        rows.iter()
            .map(|r| self.head(r.get::<_, &[u8]>(0)))
            .collect()
    }

    pub(super) async fn latest_tree_head(&self) -> Result<Option<TreeHead>, StoreError> {
        let rows = self.rows(LATEST_HEAD, &[]).await?;
        rows.first()
            .map(|r| self.head(r.get::<_, &[u8]>(0)))
            .transpose()
    }

    fn head(&self, bytes: &[u8]) -> Result<TreeHead, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| {
            self.place
                .corrupt(format!("a tree head cannot be read: {e}"))
        })
    }
}
