//! A transaction applied as one PostgreSQL transaction in one round trip: encoded on the
//! caller's task, then `BEGIN`, every statement and `COMMIT` sent at once (pipelined).
//!
//! The checks run inside the statements that write, and raise (`civicflow_check`, SQLSTATE
//! `CF001`) when they fail: a fenced claim is still the row's epoch (`SELECT … FOR UPDATE`,
//! which also makes a concurrent claim wait for this transaction), the configuration version
//! is the one expected, a case is at the revision it was read at (`UPDATE … WHERE rev = $n`,
//! its index entries rewritten in the same statement), an idempotency key is free (`INSERT …
//! ON CONFLICT DO NOTHING`). A raised check aborts the transaction, the statements after it
//! fail, and the pipelined `COMMIT` rolls everything back; which check raised says which error
//! to answer.

use deadpool_postgres::Client;
use futures_util::future::join_all;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::open::Place;
use crate::case::CaseId;
use crate::store::{Checked, StoreError, Transaction, Work};

/// A statement parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

/// A statement of a batch, its parameters, and the check it makes for which commit.
type Statement<'a> = (&'a str, Vec<Param<'a>>, Option<(usize, Check)>);

/// Rows of a table keyed by text, with their records, as statement parameters.
type Keyed<'a> = (Vec<&'a str>, Vec<&'a [u8]>);

/// Timers (case, kind, due) with their records, as statement parameters.
type TimerRows<'a> = (Vec<Uuid>, Vec<&'a str>, Vec<i64>, Vec<&'a [u8]>);

/// Definitions (kind, id, version) with their records, as statement parameters.
type DefinitionRows<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<i32>, Vec<&'a [u8]>);

const BEGIN: &str = "BEGIN";
const COMMIT: &str = "COMMIT";
/// The SQLSTATE `civicflow_check` raises.
const CHECK_FAILED: &str = "CF001";
const FENCE_TIMER: &str = "SELECT civicflow_check(EXISTS ( \
    SELECT 1 FROM timers WHERE case_id = $1 AND kind = $2 AND due_ms = $3 AND epoch = $4 \
    FOR UPDATE), 'fence')";
const FENCE_WEBHOOK: &str = "SELECT civicflow_check(EXISTS ( \
    SELECT 1 FROM webhooks WHERE id = $1 AND epoch = $2 FOR UPDATE), 'fence')";
const BUMP_CONFIG: &str = "WITH u AS ( \
    UPDATE config SET version = version + 1 \
    WHERE id = 1 AND ($1::int8 IS NULL OR version = $1) RETURNING 1) \
    SELECT civicflow_check(EXISTS (SELECT 1 FROM u), 'config')";
const CHECK_CONFIG: &str = "SELECT civicflow_check(EXISTS ( \
    SELECT 1 FROM config WHERE id = 1 AND version = $1 FOR SHARE), 'config')";
const CONFIG: &str = "SELECT version FROM config WHERE id = 1";
/// A new case and its index entries, unless the id is taken.
const INSERT_CASE: &str = "WITH i AS ( \
        INSERT INTO cases (id, rev, record, format) VALUES ($1, 1, $2, 2) \
        ON CONFLICT (id) DO NOTHING RETURNING 1), \
    x AS ( \
        INSERT INTO case_index (name, value, case_id) \
        SELECT name, value, $1 FROM unnest($3::text[], $4::text[]) AS k(name, value) \
        WHERE EXISTS (SELECT 1 FROM i) ON CONFLICT DO NOTHING) \
    SELECT civicflow_check(EXISTS (SELECT 1 FROM i), 'exists')";
/// A case at the revision it was read at, rewritten, and its index entries by difference.
const UPDATE_CASE: &str = "WITH u AS ( \
        UPDATE cases SET rev = rev + 1, record = $2, format = 2 \
        WHERE id = $1 AND rev = $3 RETURNING 1), \
    k AS (SELECT * FROM unnest($4::text[], $5::text[]) AS k(name, value)), \
    gone AS ( \
        DELETE FROM case_index c WHERE c.case_id = $1 AND EXISTS (SELECT 1 FROM u) \
        AND NOT EXISTS (SELECT 1 FROM k WHERE k.name = c.name AND k.value = c.value)), \
    added AS ( \
        INSERT INTO case_index (name, value, case_id) SELECT name, value, $1 FROM k \
        WHERE EXISTS (SELECT 1 FROM u) ON CONFLICT DO NOTHING) \
    SELECT civicflow_check(EXISTS (SELECT 1 FROM u), 'revision')";
const IDEMPOTENCY: &str = "WITH i AS ( \
        INSERT INTO idempotency (key, record) VALUES ($1, $2) \
        ON CONFLICT (key) DO NOTHING RETURNING 1) \
    SELECT civicflow_check(EXISTS (SELECT 1 FROM i), 'key')";
/// An agency's first circuit, unless one is stored.
const INSERT_CIRCUIT: &str = "WITH i AS ( \
        INSERT INTO circuits (agency, version, record) VALUES ($1, 1, $2) \
        ON CONFLICT (agency) DO NOTHING RETURNING 1) \
    SELECT civicflow_check(EXISTS (SELECT 1 FROM i), 'circuit')";
/// An agency's circuit, written over the version it replaces.
const UPDATE_CIRCUIT: &str = "WITH u AS ( \
        UPDATE circuits SET version = $3::int8, record = $2 \
        WHERE agency = $1 AND version = $3::int8 - 1 RETURNING 1) \
    SELECT civicflow_check(EXISTS (SELECT 1 FROM u), 'circuit')";
const CLEAR_TIMERS: &str = "DELETE FROM timers WHERE (case_id, kind, due_ms) IN ( \
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[]))";
const DELETE_TOKENS: &str = "DELETE FROM callback_tokens WHERE token = ANY($1)";
const DELETE_IDEMPOTENCY: &str = "DELETE FROM idempotency WHERE key = ANY($1)";
/// Notifications erased in place; one trimmed meanwhile stays gone.
const REWRITE_FEED: &str = "UPDATE feed SET record = u.record \
    FROM unnest($1::int8[], $2::bytea[]) AS u(pos, record) WHERE feed.pos = u.pos";
const DELETE_API_TOKENS: &str = "DELETE FROM api_tokens WHERE digest = ANY($1)";
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
const PUT_CONSENTS: &str = "INSERT INTO consents (subject, agreement, record) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
    ON CONFLICT (subject, agreement) DO UPDATE SET record = EXCLUDED.record";
const PUT_DEFINITIONS: &str = "INSERT INTO definitions (kind, id, version, record) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::bytea[]) \
    ON CONFLICT (kind, id, version) DO UPDATE SET record = EXCLUDED.record";
/// Amounts added to counters, each name once, into this connection's row.
const COUNTS: &str = "INSERT INTO counters (name, shard, value) \
    SELECT name, pg_backend_pid() % 1024, n FROM unnest($1::text[], $2::int8[]) AS c(name, n) \
    ON CONFLICT (name, shard) DO UPDATE SET value = counters.value + EXCLUDED.value";
const REGISTRY_CHANGES: &str = "INSERT INTO registry_changes (record) \
    SELECT r FROM unnest($1::bytea[]) WITH ORDINALITY AS t(r, n) ORDER BY n";
/// Notifications, unnumbered: a reader numbers them as it seals them (`feed.rs`). Written only
/// while a webhook is registered: the statement sees every registration committed before it
/// began, and a registration waits for every transaction that ran it before
/// ([`REGISTERING`]).
const FEED: &str = "INSERT INTO feed_unsealed (record) \
    SELECT r FROM unnest($1::bytea[]) WITH ORDINALITY AS t(r, n) \
    WHERE EXISTS (SELECT 1 FROM webhooks) ORDER BY n";
/// Audit records, unnumbered: a sealer numbers and chains them (`audit.rs`).
const AUDIT: &str = "INSERT INTO audit_unsealed (record) \
    SELECT r FROM unnest($1::bytea[]) WITH ORDINALITY AS t(r, n) ORDER BY n";
const TREE_HEADS: &str = "INSERT INTO audit_heads (size, head) \
    SELECT * FROM unnest($1::int8[], $2::bytea[]) ON CONFLICT (size) DO NOTHING";
/// First in a transaction that registers a webhook: it waits for every transaction that
/// weighed whether to write notifications before the registration was visible, and holds
/// back those that would weigh it now until it commits. So every commit that ends after the
/// registration was answered wrote its notifications.
const REGISTERING: &str = "LOCK TABLE feed_unsealed IN SHARE ROW EXCLUSIVE MODE";

/// A transaction as statement parameters, owned, so that it can be applied on a task of its
/// own (a commit runs to its end even if its caller goes away).
#[derive(Default)]
pub(super) struct Encoded {
    /// What its checks read: what decides which commits share a transaction.
    pub(super) checked: Vec<Checked>,
    fenced_timers: Vec<(Uuid, String, i64, i64, String)>,
    fenced_webhooks: Vec<(String, i64, String)>,
    expect_config: Option<i64>,
    changes_config: bool,
    cases: Vec<EncodedCase>,
    idempotency: Vec<(String, Vec<u8>)>,
    /// (agency, version, record).
    circuits: Vec<(String, i64, Vec<u8>)>,
    events: (Vec<Uuid>, Vec<i64>, Vec<Vec<u8>>),
    clear_timers: (Vec<Uuid>, Vec<String>, Vec<i64>),
    set_timers: (Vec<Uuid>, Vec<String>, Vec<i64>, Vec<Vec<u8>>),
    put_tokens: (Vec<String>, Vec<Vec<u8>>),
    delete_tokens: Vec<String>,
    delete_idempotency: Vec<String>,
    rewrite_feed: (Vec<i64>, Vec<Vec<u8>>),
    delete_api_tokens: Vec<String>,
    put_api_tokens: (Vec<String>, Vec<Vec<u8>>),
    put_webhooks: (Vec<String>, Vec<Vec<u8>>),
    update_webhooks: (Vec<String>, Vec<Vec<u8>>),
    delete_webhooks: Vec<String>,
    put_definitions: (Vec<String>, Vec<String>, Vec<i32>, Vec<Vec<u8>>),
    put_consents: (Vec<String>, Vec<String>, Vec<Vec<u8>>),
    registry_changes: Vec<Vec<u8>>,
    notify: Vec<Vec<u8>>,
    audit: Vec<Vec<u8>>,
    put_tree_heads: (Vec<i64>, Vec<Vec<u8>>),
    counts: Vec<(String, i64)>,
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
            checked: tx.checked(),
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
                record: crate::store::encode_case(&write.case),
                index_names,
                index_values,
            });
        }
        for (key, record) in &tx.put_idempotency {
            e.idempotency.push((key.clone(), json(record)));
        }
        for consent in &tx.put_consents {
            e.put_consents.0.push(consent.subject.clone());
            e.put_consents.1.push(consent.agreement.clone());
            e.put_consents.2.push(json(consent));
        }
        for circuit in &tx.put_circuits {
            e.circuits.push((
                circuit.agency.clone(),
                circuit.version as i64,
                json(circuit),
            ));
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
        e.delete_idempotency = tx.delete_idempotency.clone();
        for (pos, notification) in &tx.rewrite_notifications {
            e.rewrite_feed.0.push(*pos as i64);
            e.rewrite_feed.1.push(json(notification));
        }
        // Written over the stored ones: the statement replaces a row of the same number.
        for (case, event) in &tx.rewrite_events {
            e.events.0.push(*case);
            e.events.1.push(event.seq as i64);
            e.events.2.push(json(event));
        }
        e.delete_api_tokens = tx.delete_api_tokens.clone();
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
        e.audit = tx.audit.iter().map(json).collect();
        for head in &tx.put_tree_heads {
            e.put_tree_heads.0.push(head.size as i64);
            e.put_tree_heads.1.push(json(head));
        }
        e.counts = tx.counts.clone();
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
    Circuit(String, u64),
}

impl Encoded {
    /// Whether this commit must be a transaction of its own: a configuration change is checked
    /// against the one version, so two cannot share a transaction.
    pub(super) fn alone(&self) -> bool {
        self.changes_config || self.expect_config.is_some()
    }
}

/// Why a batch was not committed.
pub(super) enum Failed {
    /// The commit at this position failed its check; the others may be tried again without it.
    Check(usize, StoreError),
    /// The database refused the batch, or it was never sent: it was not applied, and which
    /// commit caused it, if any, is not known.
    Other(StoreError),
    /// The connection broke once the batch was sent, COMMIT included: it may or may not have
    /// been applied, so it must not be applied again.
    Unknown(StoreError),
}

/// The unconditional writes of every commit of a batch, as one statement per table.
#[derive(Default)]
struct Merged<'a> {
    clear_timers: (Vec<Uuid>, Vec<&'a str>, Vec<i64>),
    delete_tokens: Vec<&'a str>,
    delete_idempotency: Vec<&'a str>,
    rewrite_feed: (Vec<i64>, Vec<&'a [u8]>),
    delete_api_tokens: Vec<&'a str>,
    delete_webhooks: Vec<&'a str>,
    events: (Vec<Uuid>, Vec<i64>, Vec<&'a [u8]>),
    set_timers: TimerRows<'a>,
    put_tokens: Keyed<'a>,
    put_api_tokens: Keyed<'a>,
    put_webhooks: Keyed<'a>,
    update_webhooks: Keyed<'a>,
    put_definitions: DefinitionRows<'a>,
    put_consents: (Vec<&'a str>, Vec<&'a str>, Vec<&'a [u8]>),
    registry_changes: Vec<&'a [u8]>,
    notify: Vec<&'a [u8]>,
    audit: Vec<&'a [u8]>,
    put_tree_heads: (Vec<i64>, Vec<&'a [u8]>),
    /// Summed by name: one statement may add to a row only once.
    counts: std::collections::BTreeMap<&'a str, i64>,
}

/// `to` gets the borrowed form of each of `from`'s items.
fn borrow_into<'a, T: ?Sized + 'a, U: std::ops::Deref<Target = T> + 'a>(
    to: &mut Vec<&'a T>,
    from: &'a [U],
) {
    to.extend(from.iter().map(|u| &**u));
}

impl<'a> Merged<'a> {
    fn add(&mut self, e: &'a Encoded) {
        self.clear_timers.0.extend(&e.clear_timers.0);
        borrow_into(&mut self.clear_timers.1, &e.clear_timers.1);
        self.clear_timers.2.extend(&e.clear_timers.2);
        borrow_into(&mut self.delete_tokens, &e.delete_tokens);
        borrow_into(&mut self.delete_idempotency, &e.delete_idempotency);
        self.rewrite_feed.0.extend(&e.rewrite_feed.0);
        borrow_into(&mut self.rewrite_feed.1, &e.rewrite_feed.1);
        borrow_into(&mut self.delete_api_tokens, &e.delete_api_tokens);
        borrow_into(&mut self.delete_webhooks, &e.delete_webhooks);
        self.events.0.extend(&e.events.0);
        self.events.1.extend(&e.events.1);
        borrow_into(&mut self.events.2, &e.events.2);
        self.set_timers.0.extend(&e.set_timers.0);
        borrow_into(&mut self.set_timers.1, &e.set_timers.1);
        self.set_timers.2.extend(&e.set_timers.2);
        borrow_into(&mut self.set_timers.3, &e.set_timers.3);
        for (to, from) in [
            (&mut self.put_tokens, &e.put_tokens),
            (&mut self.put_api_tokens, &e.put_api_tokens),
            (&mut self.put_webhooks, &e.put_webhooks),
            (&mut self.update_webhooks, &e.update_webhooks),
        ] {
            borrow_into(&mut to.0, &from.0);
            borrow_into(&mut to.1, &from.1);
        }
        borrow_into(&mut self.put_definitions.0, &e.put_definitions.0);
        borrow_into(&mut self.put_definitions.1, &e.put_definitions.1);
        self.put_definitions.2.extend(&e.put_definitions.2);
        borrow_into(&mut self.put_definitions.3, &e.put_definitions.3);
        borrow_into(&mut self.put_consents.0, &e.put_consents.0);
        borrow_into(&mut self.put_consents.1, &e.put_consents.1);
        borrow_into(&mut self.put_consents.2, &e.put_consents.2);
        borrow_into(&mut self.registry_changes, &e.registry_changes);
        borrow_into(&mut self.notify, &e.notify);
        borrow_into(&mut self.audit, &e.audit);
        self.put_tree_heads.0.extend(&e.put_tree_heads.0);
        borrow_into(&mut self.put_tree_heads.1, &e.put_tree_heads.1);
        for (name, n) in &e.counts {
            *self.counts.entry(name).or_default() += n;
        }
    }
}

/// Applies the commits of `batch` in one PostgreSQL transaction on `client`, in one round
/// trip: each commit's checks, then every commit's writes merged into one statement per table.
pub(super) async fn apply(
    client: &mut Client,
    place: &Place,
    batch: &[&Encoded],
) -> Result<(), Failed> {
    let err = |x| place.error(x);
    let mut statements: Vec<Statement<'_>> = vec![(BEGIN, vec![], None)];
    if batch.iter().any(|e| !e.put_webhooks.0.is_empty()) {
        statements.push((REGISTERING, vec![], None));
    }
    for (at, e) in batch.iter().enumerate() {
        for (case, kind, due, epoch, work) in &e.fenced_timers {
            let check = Check::Fence(work.clone(), *epoch as u64);
            statements.push((FENCE_TIMER, vec![case, kind, due, epoch], Some((at, check))));
        }
        for (id, epoch, work) in &e.fenced_webhooks {
            let check = Check::Fence(work.clone(), *epoch as u64);
            statements.push((FENCE_WEBHOOK, vec![id, epoch], Some((at, check))));
        }
        if e.changes_config {
            let check = Check::Config(e.expect_config);
            statements.push((BUMP_CONFIG, vec![&e.expect_config], Some((at, check))));
        } else if let Some(expected) = &e.expect_config {
            let check = Check::Config(Some(*expected));
            statements.push((CHECK_CONFIG, vec![expected], Some((at, check))));
        }
        for c in &e.cases {
            let keys: [Param<'_>; 2] = [&c.index_names, &c.index_values];
            match &c.expected_rev {
                None => {
                    let check = Check::NewCase(c.id);
                    let params = vec![&c.id as Param<'_>, &c.record, keys[0], keys[1]];
                    statements.push((INSERT_CASE, params, Some((at, check))));
                }
                Some(rev) => {
                    let check = Check::Revision(c.id, *rev as u64);
                    let params = vec![&c.id as Param<'_>, &c.record, rev, keys[0], keys[1]];
                    statements.push((UPDATE_CASE, params, Some((at, check))));
                }
            }
        }
        for (key, record) in &e.idempotency {
            let check = Check::Key(key.clone());
            statements.push((IDEMPOTENCY, vec![key, record], Some((at, check))));
        }
        for (agency, version, record) in &e.circuits {
            let check = Check::Circuit(agency.clone(), (*version as u64).saturating_sub(1));
            if *version <= 1 {
                statements.push((INSERT_CIRCUIT, vec![agency, record], Some((at, check))));
            } else {
                let params = vec![agency as Param<'_>, record, version];
                statements.push((UPDATE_CIRCUIT, params, Some((at, check))));
            }
        }
    }
    let mut m = Merged::default();
    for e in batch {
        m.add(e);
    }
    // Removals before additions: a timer cleared and set again at the same place stays.
    if !m.clear_timers.0.is_empty() {
        let (a, b, c) = &m.clear_timers;
        statements.push((CLEAR_TIMERS, vec![a, b, c], None));
    }
    if !m.delete_tokens.is_empty() {
        statements.push((DELETE_TOKENS, vec![&m.delete_tokens], None));
    }
    if !m.delete_idempotency.is_empty() {
        statements.push((DELETE_IDEMPOTENCY, vec![&m.delete_idempotency], None));
    }
    if !m.rewrite_feed.0.is_empty() {
        let (a, b) = &m.rewrite_feed;
        statements.push((REWRITE_FEED, vec![a, b], None));
    }
    if !m.delete_api_tokens.is_empty() {
        statements.push((DELETE_API_TOKENS, vec![&m.delete_api_tokens], None));
    }
    if !m.delete_webhooks.is_empty() {
        statements.push((DELETE_WEBHOOKS, vec![&m.delete_webhooks], None));
    }
    if !m.events.0.is_empty() {
        let (a, b, c) = &m.events;
        statements.push((EVENTS, vec![a, b, c], None));
    }
    if !m.set_timers.0.is_empty() {
        let (a, b, c, d) = &m.set_timers;
        statements.push((SET_TIMERS, vec![a, b, c, d], None));
    }
    for (sql, (keys, records)) in [
        (PUT_TOKENS, &m.put_tokens),
        (PUT_API_TOKENS, &m.put_api_tokens),
        (PUT_WEBHOOKS, &m.put_webhooks),
        (UPDATE_WEBHOOKS, &m.update_webhooks),
    ] {
        if !keys.is_empty() {
            statements.push((sql, vec![keys, records], None));
        }
    }
    if !m.put_consents.0.is_empty() {
        let (a, b, c) = &m.put_consents;
        statements.push((PUT_CONSENTS, vec![a, b, c], None));
    }
    if !m.put_definitions.0.is_empty() {
        let (a, b, c, d) = &m.put_definitions;
        statements.push((PUT_DEFINITIONS, vec![a, b, c, d], None));
    }
    if !m.registry_changes.is_empty() {
        statements.push((REGISTRY_CHANGES, vec![&m.registry_changes], None));
    }
    if !m.notify.is_empty() {
        statements.push((FEED, vec![&m.notify], None));
    }
    if !m.audit.is_empty() {
        statements.push((AUDIT, vec![&m.audit], None));
    }
    if !m.put_tree_heads.0.is_empty() {
        let (a, b) = &m.put_tree_heads;
        statements.push((TREE_HEADS, vec![a, b], None));
    }
    let (count_names, count_values): (Vec<&str>, Vec<i64>) = m
        .counts
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(k, n)| (*k, *n))
        .unzip();
    if !count_names.is_empty() {
        statements.push((COUNTS, vec![&count_names, &count_values], None));
    }
    statements.push((COMMIT, vec![], None));

    let mut prepared = Vec::with_capacity(statements.len());
    for (sql, ..) in &statements {
        let statement = client.prepare_cached(sql).await;
        prepared.push(statement.map_err(|e| Failed::Other(err(e)))?);
    }
    // Every request is queued before any answer is awaited: BEGIN, the statements and COMMIT
    // reach the server together, and it runs them whatever becomes of this task.
    let answers = join_all(
        statements
            .iter()
            .zip(&prepared)
            .map(|((_, params, _), statement)| client.query(statement, params)),
    )
    .await;
    let mut failed = None;
    for ((_, _, check), answer) in statements.iter().zip(answers) {
        let Err(e) = answer else { continue };
        let raised = e.code().is_some_and(|c| c.code() == CHECK_FAILED);
        match (check, raised) {
            (Some(check), true) => {
                failed = Some(check);
                break;
            }
            // The server's own error aborts the transaction (any later one only says so).
            _ if e.as_db_error().is_some() => return Err(Failed::Other(err(e))),
            // No word from the server: the connection broke with everything sent.
            _ => {
                return Err(Failed::Unknown(StoreError::Io {
                    path: place.to_string(),
                    detail: format!(
                        "the connection was lost once the commit was sent ({e}): it may or may not have been applied"
                    ),
                }));
            }
        }
    }
    let Some((at, check)) = failed else {
        return Ok(());
    };
    let error = match check {
        Check::Fence(work, epoch) => StoreError::Fenced {
            work: work.clone(),
            epoch: *epoch,
        },
        Check::Config(expected) => match client.query_one(CONFIG, &[]).await {
            Ok(found) => StoreError::ConfigChanged {
                expected: expected.unwrap_or_default() as u64,
                found: found.get::<_, i64>(0) as u64,
            },
            Err(e) => err(e),
        },
        Check::NewCase(case_id) => StoreError::Exists { case_id: *case_id },
        Check::Revision(case_id, expected) => StoreError::Conflict {
            case_id: *case_id,
            expected: *expected,
        },
        Check::Key(key) => StoreError::KeyTaken { key: key.clone() },
        Check::Circuit(agency, expected) => StoreError::CircuitChanged {
            agency: agency.clone(),
            expected: *expected,
        },
    };
    Err(Failed::Check(*at, error))
}
