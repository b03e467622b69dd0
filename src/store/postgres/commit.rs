//! A transaction applied as one PostgreSQL transaction: encoded on the caller's task, then
//! every statement sent at once (pipelined: one round trip for all of them), the checks'
//! answers read, and the transaction committed or rolled back.
//!
//! The checks are statements whose answer says whether they passed: a fenced claim is still
//! the row's epoch (`SELECT … FOR UPDATE`, which also makes a concurrent claim wait for this
//! transaction), the configuration version is the one expected, a case is at the revision it
//! was read at (`UPDATE … WHERE rev = $n RETURNING`), an idempotency key is free
//! (`INSERT … ON CONFLICT DO NOTHING RETURNING`). If any did not, everything is rolled back.

use deadpool_postgres::Client;
use futures_util::future::join_all;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::open::Place;
use crate::case::CaseId;
use crate::store::{StoreError, Transaction, Work};

/// A statement parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

const FENCE_TIMER: &str = "SELECT 1 FROM timers \
    WHERE case_id = $1 AND kind = $2 AND due_ms = $3 AND epoch = $4 FOR UPDATE";
const FENCE_WEBHOOK: &str = "SELECT 1 FROM webhooks WHERE id = $1 AND epoch = $2 FOR UPDATE";
const BUMP_CONFIG: &str = "UPDATE config SET version = version + 1 \
    WHERE id = 1 AND ($1::int8 IS NULL OR version = $1) RETURNING version";
const CHECK_CONFIG: &str = "SELECT version FROM config WHERE id = 1 AND version = $1 FOR SHARE";
const CONFIG: &str = "SELECT version FROM config WHERE id = 1";
const INSERT_CASE: &str = "INSERT INTO cases (id, rev, record) VALUES ($1, 1, $2) \
    ON CONFLICT (id) DO NOTHING RETURNING rev";
const UPDATE_CASE: &str =
    "UPDATE cases SET rev = rev + 1, record = $2 WHERE id = $1 AND rev = $3 RETURNING rev";
const INDEX_DROP: &str = "DELETE FROM case_index WHERE case_id = $1 AND NOT EXISTS ( \
    SELECT 1 FROM unnest($2::text[], $3::text[]) AS k(name, value) \
    WHERE k.name = case_index.name AND k.value = case_index.value)";
const INDEX_ADD: &str = "INSERT INTO case_index (name, value, case_id) \
    SELECT name, value, $1 FROM unnest($2::text[], $3::text[]) AS k(name, value) \
    ON CONFLICT DO NOTHING";
const IDEMPOTENCY: &str = "INSERT INTO idempotency (key, record) VALUES ($1, $2) \
    ON CONFLICT (key) DO NOTHING RETURNING 1";
const CLEAR_TIMERS: &str = "DELETE FROM timers WHERE (case_id, kind, due_ms) IN ( \
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[]))";
const DELETE_TOKENS: &str = "DELETE FROM callback_tokens WHERE token = ANY($1)";
const DELETE_WEBHOOKS: &str = "DELETE FROM webhooks WHERE id = ANY($1)";
const EVENTS: &str = "INSERT INTO events (case_id, seq, record) \
    SELECT * FROM unnest($1::uuid[], $2::int8[], $3::bytea[]) \
    ON CONFLICT (case_id, seq) DO UPDATE SET record = EXCLUDED.record";
const SET_TIMERS: &str = "INSERT INTO timers (case_id, kind, due_ms, record) \
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::bytea[]) \
    ON CONFLICT (case_id, kind, due_ms) DO UPDATE \
    SET record = EXCLUDED.record, owner = NULL, epoch = 0, lease_until = NULL";
const PUT_TOKENS: &str = "INSERT INTO callback_tokens (token, record) \
    SELECT * FROM unnest($1::text[], $2::bytea[]) \
    ON CONFLICT (token) DO UPDATE SET record = EXCLUDED.record";
const PUT_API_TOKENS: &str = "INSERT INTO api_tokens (digest, record) \
    SELECT * FROM unnest($1::text[], $2::bytea[]) \
    ON CONFLICT (digest) DO UPDATE SET record = EXCLUDED.record";
const PUT_WEBHOOKS: &str = "INSERT INTO webhooks (id, record) \
    SELECT * FROM unnest($1::text[], $2::bytea[]) \
    ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record";
const UPDATE_WEBHOOKS: &str = "UPDATE webhooks AS w SET record = u.record \
    FROM unnest($1::text[], $2::bytea[]) AS u(id, record) WHERE w.id = u.id";
const PUT_DEFINITIONS: &str = "INSERT INTO definitions (kind, id, version, record) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::bytea[]) \
    ON CONFLICT (kind, id, version) DO UPDATE SET record = EXCLUDED.record";
const REGISTRY_CHANGES: &str = "INSERT INTO registry_changes (record) \
    SELECT r FROM unnest($1::bytea[]) WITH ORDINALITY AS t(r, n) ORDER BY n";
/// A notification's position: the writing transaction's id, then its place among the
/// transaction's notifications (at most [`MAX_NOTIFICATIONS`]).
const FEED: &str = "INSERT INTO feed (pos, txid, record) \
    SELECT ((pg_current_xact_id()::text::int8) << 16) + n, pg_current_xact_id(), r \
    FROM unnest($1::bytea[]) WITH ORDINALITY AS t(r, n)";

/// The most notifications one commit may carry: their places take 16 bits of a position.
const MAX_NOTIFICATIONS: usize = (1 << 16) - 1;

/// A transaction as statement parameters, owned, so that it can be applied on a task of its
/// own (a commit runs to its end even if its caller goes away).
#[derive(Default)]
pub(super) struct Encoded {
    fenced_timers: Vec<(Uuid, String, i64, i64, String)>,
    fenced_webhooks: Vec<(String, i64, String)>,
    expect_config: Option<i64>,
    changes_config: bool,
    cases: Vec<EncodedCase>,
    idempotency: Vec<(String, Vec<u8>)>,
    events: (Vec<Uuid>, Vec<i64>, Vec<Vec<u8>>),
    clear_timers: (Vec<Uuid>, Vec<String>, Vec<i64>),
    set_timers: (Vec<Uuid>, Vec<String>, Vec<i64>, Vec<Vec<u8>>),
    put_tokens: (Vec<String>, Vec<Vec<u8>>),
    delete_tokens: Vec<String>,
    put_api_tokens: (Vec<String>, Vec<Vec<u8>>),
    put_webhooks: (Vec<String>, Vec<Vec<u8>>),
    update_webhooks: (Vec<String>, Vec<Vec<u8>>),
    delete_webhooks: Vec<String>,
    put_definitions: (Vec<String>, Vec<String>, Vec<i32>, Vec<Vec<u8>>),
    registry_changes: Vec<Vec<u8>>,
    notify: Vec<Vec<u8>>,
}

struct EncodedCase {
    id: Uuid,
    expected_rev: Option<i64>,
    record: Vec<u8>,
    index_names: Vec<String>,
    index_values: Vec<String>,
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records are plain data and always serialize")
}

/// A timer's place in the table: case, kind, due time in milliseconds.
pub(super) fn timer_row(timer: &crate::case::Timer) -> (Uuid, String, i64) {
    (
        timer.case_id,
        timer.kind.id(),
        timer.due_at.as_millisecond(),
    )
}

impl Encoded {
    pub(super) fn new(tx: &Transaction) -> Result<Encoded, StoreError> {
        let mut e = Encoded {
            expect_config: tx.expect_config.map(|v| v as i64),
            changes_config: tx.changes_config(),
            ..Encoded::default()
        };
        for fence in &tx.fences {
            let epoch = fence.epoch as i64;
            match &fence.work {
                Work::Timer(t) => {
                    let (case, kind, due) = timer_row(t);
                    e.fenced_timers
                        .push((case, kind, due, epoch, fence.work.to_string()));
                }
                Work::Webhook(id) => {
                    e.fenced_webhooks
                        .push((id.clone(), epoch, fence.work.to_string()))
                }
            }
        }
        for write in &tx.cases {
            let (index_names, index_values) = write
                .case
                .index_entries()
                .into_iter()
                .map(|i| (i.name.to_owned(), i.value))
                .unzip();
            e.cases.push(EncodedCase {
                id: write.case.id,
                expected_rev: write.expected_rev.map(|r| r as i64),
                record: json(&write.case),
                index_names,
                index_values,
            });
        }
        for (key, record) in &tx.put_idempotency {
            e.idempotency.push((key.clone(), json(record)));
        }
        for (case, event) in &tx.events {
            e.events.0.push(*case);
            e.events.1.push(event.seq as i64);
            e.events.2.push(json(event));
        }
        for timer in &tx.clear_timers {
            let (case, kind, due) = timer_row(timer);
            e.clear_timers.0.push(case);
            e.clear_timers.1.push(kind);
            e.clear_timers.2.push(due);
        }
        for timer in &tx.set_timers {
            let (case, kind, due) = timer_row(timer);
            e.set_timers.0.push(case);
            e.set_timers.1.push(kind);
            e.set_timers.2.push(due);
            e.set_timers.3.push(json(timer));
        }
        for (token, target) in &tx.put_tokens {
            e.put_tokens.0.push(token.clone());
            e.put_tokens.1.push(json(target));
        }
        e.delete_tokens = tx.delete_tokens.clone();
        for token in &tx.put_api_tokens {
            e.put_api_tokens.0.push(token.digest.clone());
            e.put_api_tokens.1.push(json(token));
        }
        for hook in &tx.put_webhooks {
            e.put_webhooks.0.push(hook.id.clone());
            e.put_webhooks.1.push(json(hook));
        }
        for hook in &tx.update_webhooks {
            e.update_webhooks.0.push(hook.id.clone());
            e.update_webhooks.1.push(json(hook));
        }
        e.delete_webhooks = tx.delete_webhooks.clone();
        for def in &tx.put_definitions {
            e.put_definitions.0.push(def.kind.as_str().to_owned());
            e.put_definitions.1.push(def.id.clone());
            e.put_definitions.2.push(def.version as i32);
            e.put_definitions.3.push(json(def));
        }
        e.registry_changes = tx.registry_changes.iter().map(json).collect();
        e.notify = tx.notify.iter().map(json).collect();
        if e.notify.len() > MAX_NOTIFICATIONS {
            return Err(StoreError::Io {
                path: "the store".to_owned(),
                detail: format!(
                    "a commit of {} notifications; at most {MAX_NOTIFICATIONS} fit one commit",
                    e.notify.len()
                ),
            });
        }
        Ok(e)
    }
}

/// What a check statement must answer for the commit to go on.
enum Check {
    Fence(String, u64),
    Config(Option<i64>),
    NewCase(CaseId),
    Revision(CaseId, u64),
    Key(String),
}

/// Applies `e` in one PostgreSQL transaction on `client`.
pub(super) async fn apply(
    client: &mut Client,
    place: &Place,
    e: Encoded,
) -> Result<(), StoreError> {
    let err = |x| place.error(x);
    let tx = client.transaction().await.map_err(err)?;
    let mut statements: Vec<(&str, Vec<Param<'_>>, Option<Check>)> = Vec::new();
    for (case, kind, due, epoch, work) in &e.fenced_timers {
        let check = Check::Fence(work.clone(), *epoch as u64);
        statements.push((FENCE_TIMER, vec![case, kind, due, epoch], Some(check)));
    }
    for (id, epoch, work) in &e.fenced_webhooks {
        let check = Check::Fence(work.clone(), *epoch as u64);
        statements.push((FENCE_WEBHOOK, vec![id, epoch], Some(check)));
    }
    if e.changes_config {
        let check = Check::Config(e.expect_config);
        statements.push((BUMP_CONFIG, vec![&e.expect_config], Some(check)));
    } else if let Some(expected) = &e.expect_config {
        let check = Check::Config(Some(*expected));
        statements.push((CHECK_CONFIG, vec![expected], Some(check)));
    }
    for c in &e.cases {
        match &c.expected_rev {
            None => {
                let check = Check::NewCase(c.id);
                statements.push((INSERT_CASE, vec![&c.id, &c.record], Some(check)));
            }
            Some(rev) => {
                let check = Check::Revision(c.id, *rev as u64);
                statements.push((UPDATE_CASE, vec![&c.id, &c.record, rev], Some(check)));
                let keys: Vec<Param<'_>> = vec![&c.id, &c.index_names, &c.index_values];
                statements.push((INDEX_DROP, keys, None));
            }
        }
        statements.push((
            INDEX_ADD,
            vec![&c.id, &c.index_names, &c.index_values],
            None,
        ));
    }
    for (key, record) in &e.idempotency {
        let check = Check::Key(key.clone());
        statements.push((IDEMPOTENCY, vec![key, record], Some(check)));
    }
    // Removals before additions: a timer cleared and set again at the same place stays.
    if !e.clear_timers.0.is_empty() {
        let (a, b, c) = &e.clear_timers;
        statements.push((CLEAR_TIMERS, vec![a, b, c], None));
    }
    if !e.delete_tokens.is_empty() {
        statements.push((DELETE_TOKENS, vec![&e.delete_tokens], None));
    }
    if !e.delete_webhooks.is_empty() {
        statements.push((DELETE_WEBHOOKS, vec![&e.delete_webhooks], None));
    }
    if !e.events.0.is_empty() {
        let (a, b, c) = &e.events;
        statements.push((EVENTS, vec![a, b, c], None));
    }
    if !e.set_timers.0.is_empty() {
        let (a, b, c, d) = &e.set_timers;
        statements.push((SET_TIMERS, vec![a, b, c, d], None));
    }
    for (sql, (keys, records)) in [
        (PUT_TOKENS, &e.put_tokens),
        (PUT_API_TOKENS, &e.put_api_tokens),
        (PUT_WEBHOOKS, &e.put_webhooks),
        (UPDATE_WEBHOOKS, &e.update_webhooks),
    ] {
        if !keys.is_empty() {
            statements.push((sql, vec![keys, records], None));
        }
    }
    if !e.put_definitions.0.is_empty() {
        let (a, b, c, d) = &e.put_definitions;
        statements.push((PUT_DEFINITIONS, vec![a, b, c, d], None));
    }
    if !e.registry_changes.is_empty() {
        statements.push((REGISTRY_CHANGES, vec![&e.registry_changes], None));
    }
    if !e.notify.is_empty() {
        statements.push((FEED, vec![&e.notify], None));
    }

    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, ..) in &statements {
        prepared.push(tx.prepare_cached(sql).await.map_err(err)?);
    }
    let answers = join_all(
        statements
            .iter()
            .zip(&prepared)
            .map(|((_, params, _), statement)| tx.query(statement, params)),
    )
    .await;
    let mut failed = None;
    for ((_, _, check), answer) in statements.iter().zip(answers) {
        let rows = answer.map_err(err)?;
        if let Some(check) = check
            && failed.is_none()
            && rows.is_empty()
        {
            failed = Some(check);
        }
    }
    let Some(check) = failed else {
        return tx.commit().await.map_err(err);
    };
    tx.rollback().await.map_err(err)?;
    Err(match check {
        Check::Fence(work, epoch) => StoreError::Fenced {
            work: work.clone(),
            epoch: *epoch,
        },
        Check::Config(expected) => {
            let found: Row = client.query_one(CONFIG, &[]).await.map_err(err)?;
            StoreError::ConfigChanged {
                expected: expected.unwrap_or_default() as u64,
                found: found.get::<_, i64>(0) as u64,
            }
        }
        Check::NewCase(case_id) => StoreError::Exists { case_id: *case_id },
        Check::Revision(case_id, expected) => StoreError::Conflict {
            case_id: *case_id,
            expected: *expected,
        },
        Check::Key(key) => StoreError::KeyTaken { key: key.clone() },
    })
}
