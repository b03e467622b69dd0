//! The contract's operations on PostgreSQL: a commit on a task of its own, reads as one
//! prepared statement each, claims as one `UPDATE … FOR UPDATE SKIP LOCKED … RETURNING`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::PgStore;
use super::commit::Encoded;
use crate::case::{CallbackTarget, Case, CaseId, Event, IdempotencyRecord, Timer};
use crate::personal_data::ConsentRecord;
use crate::store::{
    ApiToken, Circuit, Claimed, Copied, Groups, IndexRange, NodeId, Notification, Order, Page,
    Position, Published, RegistryChange, Store, StoreError, Transaction, Webhook,
};

const CASE: &str = "SELECT rev, record, format FROM cases WHERE id = $1";
const HISTORY: &str =
    "SELECT record FROM events WHERE case_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3";
const DUE: &str = "SELECT record FROM timers WHERE due_ms <= $1 ORDER BY due_ms LIMIT $2";
/// The due timers no one holds under a live lease, earliest first, skipping rows another
/// node is claiming at this moment; each gets this node, a lease and a new epoch.
const CLAIM_TIMERS: &str = "UPDATE timers SET owner = $1, epoch = nextval('claim_epochs'), \
    lease_until = now() + $2::float8 * interval '1 millisecond' \
    WHERE (case_id, kind, due_ms) IN ( \
        SELECT case_id, kind, due_ms FROM timers \
        WHERE due_ms <= $3 AND (lease_until IS NULL OR lease_until < now()) \
        ORDER BY due_ms LIMIT $4 FOR UPDATE SKIP LOCKED) \
    RETURNING due_ms, record, epoch";
/// A webhook's delivery: renewed under the same epoch by its live holder, taken under a new
/// one when free or lapsed, refused while another node holds it.
const CLAIM_WEBHOOK: &str = "UPDATE webhooks SET \
    epoch = CASE WHEN owner = $1 AND lease_until > now() THEN epoch \
        ELSE nextval('claim_epochs') END, \
    owner = $1, lease_until = now() + $2::float8 * interval '1 millisecond' \
    WHERE id = $3 AND (owner IS NULL OR owner = $1 OR lease_until < now()) \
    RETURNING epoch";
const CASES_UP: &str = "SELECT case_id FROM case_index \
    WHERE name = $1 AND value = $2 AND case_id > $3 ORDER BY case_id LIMIT $4";
const CASES_DOWN: &str = "SELECT case_id FROM case_index \
    WHERE name = $1 AND value = $2 AND case_id < $3 ORDER BY case_id DESC LIMIT $4";
const RANGE_UP: &str = "SELECT value, case_id FROM case_index \
    WHERE name = $1 AND value >= $2 AND value < $3 AND (value, case_id) > ($4, $5) \
    ORDER BY value, case_id LIMIT $6";
const RANGE_DOWN: &str = "SELECT value, case_id FROM case_index \
    WHERE name = $1 AND value >= $2 AND value < $3 AND (value, case_id) < ($4, $5) \
    ORDER BY value DESC, case_id DESC LIMIT $6";
const TOKEN: &str = "SELECT record FROM callback_tokens WHERE token = $1";
const CIRCUITS: &str = "SELECT record FROM circuits ORDER BY agency";
const CONSENTS_OF: &str = "SELECT record FROM consents WHERE subject = $1 ORDER BY agreement";
const IDEMPOTENCY: &str = "SELECT record FROM idempotency WHERE key = $1";
const API_TOKEN: &str = "SELECT record FROM api_tokens WHERE digest = $1";
const API_TOKENS: &str = "SELECT record FROM api_tokens ORDER BY digest";
/// Sealed positions after `$1` ([`super::feed`]).
const FEED: &str = "SELECT pos, record FROM feed WHERE pos > $1 ORDER BY pos LIMIT $2";
const FEED_END: &str = "SELECT last FROM feed_sealed WHERE id = 1";
const FEED_COUNT: &str = "SELECT count(*) FROM feed WHERE pos > $1";
const TRIM_FEED: &str = "DELETE FROM feed WHERE pos <= $1";
const WEBHOOKS: &str = "SELECT record FROM webhooks ORDER BY id";
const DEFINITIONS: &str = "SELECT record FROM definitions ORDER BY kind, id, version";
const REGISTRY_CHANGES: &str = "SELECT record FROM registry_changes ORDER BY n";
const CONFIG_VERSION: &str = "SELECT version FROM config WHERE id = 1";
const IN_RECOVERY: &str = "SELECT pg_is_in_recovery()";
const COUNTS: &str = "SELECT name, sum(value)::int8 FROM counters \
    WHERE name >= $1 AND name < $2 GROUP BY name ORDER BY name";

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    pub(super) async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        self.exchanges.round_trips.fetch_add(1, Ordering::Relaxed);
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.place.error(e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| self.place.error(e))
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| self.place.corrupt(format!("{what} cannot be read: {e}")))
    }

    /// Every record column 0 of `rows` holds, decoded.
    fn records<T: DeserializeOwned>(&self, what: &str, rows: &[Row]) -> Result<Vec<T>, StoreError> {
        rows.iter()
            .map(|r| self.decode(what, r.get::<_, &[u8]>(0)))
            .collect()
    }

    /// The one record a keyed read found, if any.
    async fn record<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let rows = self.rows(sql, &[&key]).await?;
        Ok(self.records(what, &rows)?.into_iter().next())
    }
}

impl Store for PgStore {
    async fn commit(&self, tx: &Transaction) -> Result<(), StoreError> {
        if tx.is_empty() {
            return Ok(());
        }
        // The workers apply it: a commit runs to its end (committed or rolled back) even if
        // the request that asked for it goes away meanwhile.
        let (answer, outcome) = oneshot::channel();
        let stopped = || StoreError::Io {
            path: self.place.to_string(),
            detail: "the store's commit workers have stopped".to_owned(),
        };
        self.commits
            .send((Encoded::new(tx)?, answer))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn case(&self, id: CaseId) -> Result<Option<Case>, StoreError> {
        let rows = self.rows(CASE, &[&id]).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let damaged = |detail: String| StoreError::Damaged {
            case_id: id,
            table: "cases",
            detail,
        };
        let record = row.get::<_, &[u8]>(1);
        let mut case = match row.get::<_, i16>(2) {
            // Written before schema version 5: compressed JSON.
            1 => {
                let json = lz4_flex::block::decompress_size_prepended(record)
                    .map_err(|e| damaged(format!("it does not decompress: {e}")))?;
                serde_json::from_slice::<Case>(&json).map_err(|e| damaged(e.to_string()))?
            }
            2 => crate::store::decode_case(record).map_err(damaged)?,
            other => {
                return Err(damaged(format!(
                    "its record is of an unknown format {other}"
                )));
            }
        };
        case.rev = row.get::<_, i64>(0) as u64;
        Ok(Some(case))
    }

    async fn history(
        &self,
        id: CaseId,
        from: u64,
        limit_n: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let rows = self.rows(HISTORY, &[&id, &from, &limit(limit_n)]).await?;
        rows.iter()
            .map(|row| {
                serde_json::from_slice(row.get::<_, &[u8]>(0)).map_err(|e| StoreError::Damaged {
                    case_id: id,
                    table: "events",
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    async fn due_timers(&self, until: Timestamp, limit_n: usize) -> Result<Vec<Timer>, StoreError> {
        let rows = self
            .rows(DUE, &[&until.as_millisecond(), &limit(limit_n)])
            .await?;
        self.records("a timer", &rows)
    }

    async fn claim_timers(
        &self,
        node: &NodeId,
        until: Timestamp,
        lease: Duration,
        limit_n: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let lease_ms = lease.as_secs_f64() * 1000.0;
        let params: [&(dyn ToSql + Sync); 4] =
            [&node, &lease_ms, &until.as_millisecond(), &limit(limit_n)];
        let mut rows = self.rows(CLAIM_TIMERS, &params).await?;
        rows.sort_by_key(|r| r.get::<_, i64>(0));
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    timer: self.decode("a timer", r.get::<_, &[u8]>(1))?,
                    epoch: r.get::<_, i64>(2) as u64,
                })
            })
            .collect()
    }

    async fn claim_webhook(
        &self,
        node: &NodeId,
        id: &str,
        lease: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let lease_ms = lease.as_secs_f64() * 1000.0;
        let rows = self.rows(CLAIM_WEBHOOK, &[&node, &lease_ms, &id]).await?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0) as u64))
    }

    fn groups(&self) -> Groups {
        Groups {
            commits: self.exchanges.committed.load(Ordering::Relaxed),
            groups: self.exchanges.groups.load(Ordering::Relaxed),
        }
    }

    async fn counts(&self, from: &str, to: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self.rows(COUNTS, &[&from, &to]).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .filter(|(_, n)| *n != 0)
            .collect())
    }

    /// Readers see only committed transactions: nothing to wait for.
    async fn settle(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A database that answers and is not a standby takes writes; a full disk on the database
    /// server shows in the commits themselves (SQLSTATE class 53), which PostgreSQL takes again
    /// by itself once it has room.
    async fn writable(&self) -> Result<(), StoreError> {
        let rows = self.rows(IN_RECOVERY, &[]).await?;
        if rows.first().is_some_and(|row| row.get::<_, bool>(0)) {
            return Err(StoreError::Unavailable {
                path: self.place.to_string(),
                detail: "the database is a standby in recovery, which takes no writes".to_owned(),
            });
        }
        Ok(())
    }

    async fn config_version(&self) -> Result<u64, StoreError> {
        let rows = self.rows(CONFIG_VERSION, &[]).await?;
        let row = rows.first().ok_or_else(|| {
            self.place
                .corrupt("the configuration version is missing".into())
        })?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn cases_by(
        &self,
        name: &str,
        value: &str,
        cursor: Option<CaseId>,
        order: Order,
        limit_n: usize,
    ) -> Result<Page, StoreError> {
        let (sql, from) = match order {
            Order::Ascending => (CASES_UP, cursor.unwrap_or(Uuid::nil())),
            Order::Descending => (CASES_DOWN, cursor.unwrap_or(Uuid::max())),
        };
        let rows = self
            .rows(sql, &[&name, &value, &from, &limit(limit_n)])
            .await?;
        let ids: Vec<CaseId> = rows.iter().map(|r| r.get(0)).collect();
        let next = (ids.len() == limit_n)
            .then(|| ids.last().copied())
            .flatten();
        Ok(Page { ids, next })
    }

    async fn index_range(
        &self,
        name: &str,
        range: &IndexRange,
    ) -> Result<Vec<Position>, StoreError> {
        if range.from >= range.to {
            return Ok(Vec::new());
        }
        // Without a previous page, from the start of the range (no case id is nil).
        let (sql, (value, case)) = match range.order {
            Order::Ascending => (
                RANGE_UP,
                range
                    .after
                    .clone()
                    .unwrap_or((range.from.clone(), Uuid::nil())),
            ),
            Order::Descending => (
                RANGE_DOWN,
                range
                    .after
                    .clone()
                    .unwrap_or((range.to.clone(), Uuid::nil())),
            ),
        };
        let params: [&(dyn ToSql + Sync); 6] = [
            &name,
            &range.from,
            &range.to,
            &value,
            &case,
            &limit(range.limit),
        ];
        let rows = self.rows(sql, &params).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn token(&self, token: &str) -> Result<Option<CallbackTarget>, StoreError> {
        self.record("a callback token", TOKEN, token).await
    }

    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.record("an idempotency record", IDEMPOTENCY, key).await
    }

    async fn api_token(&self, digest: &str) -> Result<Option<ApiToken>, StoreError> {
        self.record("an API token", API_TOKEN, digest).await
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let rows = self.rows(API_TOKENS, &[]).await?;
        self.records("an API token", &rows)
    }

    async fn feed(
        &self,
        after: u64,
        limit_n: usize,
    ) -> Result<Vec<(u64, Notification)>, StoreError> {
        self.seal().await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self.rows(FEED, &[&after, &limit(limit_n)]).await?;
        rows.iter()
            .map(|r| {
                let n = self.decode("a notification", r.get::<_, &[u8]>(1))?;
                Ok((r.get::<_, i64>(0) as u64, n))
            })
            .collect()
    }

    async fn feed_end(&self) -> Result<u64, StoreError> {
        self.seal().await?;
        let rows = self.rows(FEED_END, &[]).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    async fn feed_count(&self, after: u64) -> Result<u64, StoreError> {
        self.seal().await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self.rows(FEED_COUNT, &[&after]).await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    async fn trim_feed(&self, upto: u64) -> Result<(), StoreError> {
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        self.rows(TRIM_FEED, &[&upto]).await.map(drop)
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let rows = self.rows(WEBHOOKS, &[]).await?;
        self.records("a webhook", &rows)
    }

    async fn definitions(&self) -> Result<Vec<Published>, StoreError> {
        let rows = self.rows(DEFINITIONS, &[]).await?;
        self.records("a published definition", &rows)
    }

    fn backup_to(&self, _out: &mut dyn std::io::Write) -> Option<Result<Copied, StoreError>> {
        None
    }

    async fn circuits(&self) -> Result<Vec<Circuit>, StoreError> {
        let rows = self.rows(CIRCUITS, &[]).await?;
        self.records("an agency's circuit", &rows)
    }

    async fn consents_of(&self, subject: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        let rows = self.rows(CONSENTS_OF, &[&subject]).await?;
        self.records("a consent record", &rows)
    }

    async fn audit_size(&self) -> Result<u64, StoreError> {
        PgStore::audit_size(self).await
    }

    async fn audit_entries(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        PgStore::audit_entries(self, from, limit).await
    }

    async fn audit_of_case(&self, id: CaseId) -> Result<Vec<u64>, StoreError> {
        PgStore::audit_of_case(self, id).await
    }

    async fn tree_heads(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<crate::audit::TreeHead>, StoreError> {
        PgStore::tree_heads(self, from, limit).await
    }

    async fn latest_tree_head(&self) -> Result<Option<crate::audit::TreeHead>, StoreError> {
        PgStore::latest_tree_head(self).await
    }

    async fn registry_changes(&self) -> Result<Vec<RegistryChange>, StoreError> {
        let rows = self.rows(REGISTRY_CHANGES, &[]).await?;
        self.records("a registry change", &rows)
    }
}
