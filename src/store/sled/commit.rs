//! A transaction encoded for the writer, and its checks against the stored state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sled::Tree;

use super::claim_table::{Claims, work_key};
use super::encoding::{CaseHead, corrupt, encode, event_runs, sled_error};
use super::journal;
use super::keys::{
    API_TOKENS, CASES, CIRCUITS, CONFIG, COUNTERS, FEED, IDEMPOTENCY, REGISTRY_CHANGES, TOKENS,
    TREE_HEADS, WEBHOOKS, audit_case_key, audit_key, consent_key, definition_key, event_key,
    index_key, keyed, timer_key, timer_value,
};
use crate::case::CaseId;
use crate::store::{Checked, StoreError, Transaction, Work};

/// A commit encoded and ready for the writer: everything but the checks, which need the
/// stored state at the moment of writing.
#[derive(Default)]
pub(super) struct Prepared {
    cases: Vec<PreparedCase>,
    /// Unconditional writes (events, tokens, timers) and removals (tokens, timers).
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    removes: Vec<Vec<u8>>,
    /// (key as given, stored key, record): inserted only if absent.
    idempotency: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// Notifications, encoded; their sequence numbers are given by the writer.
    feed: Vec<Vec<u8>>,
    /// Audit records; the writer numbers and chains them.
    audit: Vec<crate::audit::Record>,
    /// (key, record) of signed tree heads, written only if none of their size is kept.
    heads: Vec<(Vec<u8>, Vec<u8>)>,
    /// (key, record) of webhooks written only if still registered.
    webhook_updates: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys of the webhooks this commit registers, and of those it deletes.
    webhooks_put: Vec<Vec<u8>>,
    webhooks_deleted: Vec<Vec<u8>>,
    /// (agency, key, version replaced, record) of circuits written by version.
    circuits: Vec<(String, Vec<u8>, u64, Vec<u8>)>,
    /// (counter key, amount) to add.
    counts: Vec<(Vec<u8>, i64)>,
    /// (claim key, epoch, whether the work is a stored timer, the work as named in an error).
    fences: Vec<(Vec<u8>, u64, bool, String)>,
    expect_config: Option<u64>,
    changes_config: bool,
    /// What its checks read: what decides which commits share a group.
    pub(super) checked: Vec<Checked>,
}

/// What the writer numbers as it goes: the next feed position, the configuration version and
/// the audit log's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Numbers {
    pub(super) next_feed: u64,
    pub(super) config: u64,
    pub(super) audit: crate::audit::Tail,
}

/// What the writer keeps as it goes: its numbering, and the webhooks registered.
pub(super) struct Tally {
    pub(super) numbers: Numbers,
    /// The keys of the registered webhooks, read when the database is opened and kept in step
    /// by every commit the writer checks (only the writer writes webhooks). A commit is checked
    /// against the commits before it in its group, whose writes are not in the tree yet: a
    /// notification after a registration in the same group is written, and a cursor update
    /// after a delete in the same group writes nothing.
    pub(super) webhooks: BTreeSet<Vec<u8>>,
}

pub(super) struct PreparedCase {
    id: CaseId,
    expected_rev: Option<u64>,
    index_keys: Vec<Vec<u8>>,
    record: Vec<u8>,
}

impl Prepared {
    pub(super) fn new(tx: &Transaction) -> Prepared {
        let mut p = Prepared {
            fences: tx
                .fences
                .iter()
                .map(|f| {
                    let timer = matches!(f.work, Work::Timer(_));
                    (work_key(&f.work), f.epoch, timer, f.work.to_string())
                })
                .collect(),
            expect_config: tx.expect_config,
            changes_config: tx.changes_config(),
            checked: tx.checked(),
            ..Prepared::default()
        };
        for write in &tx.cases {
            let id = write.case.id;
            p.cases.push(PreparedCase {
                id,
                expected_rev: write.expected_rev,
                index_keys: write
                    .case
                    .index_entries()
                    .iter()
                    .map(|e| index_key(e, id))
                    .collect(),
                record: crate::store::encode_case(&write.case),
            });
        }
        for (case, run) in event_runs(&tx.events) {
            p.puts.push((event_key(case, run[0].seq), encode(&run)));
        }
        for (token, target) in &tx.put_tokens {
            p.puts
                .push((keyed(TOKENS, token.as_bytes()), encode(target)));
        }
        for hook in &tx.put_webhooks {
            let key = keyed(WEBHOOKS, hook.id.as_bytes());
            p.webhooks_put.push(key.clone());
            p.puts.push((key, encode(hook)));
        }
        for hook in &tx.update_webhooks {
            p.webhook_updates
                .push((keyed(WEBHOOKS, hook.id.as_bytes()), encode(hook)));
        }
        for id in &tx.delete_webhooks {
            let key = keyed(WEBHOOKS, id.as_bytes());
            p.webhooks_deleted.push(key.clone());
            p.removes.push(key);
        }
        for (case, event) in &tx.rewrite_events {
            p.puts.push((event_key(*case, event.seq), encode(&[event])));
        }
        for (pos, notification) in &tx.rewrite_notifications {
            p.puts
                .push((keyed(FEED, &pos.to_be_bytes()), encode(notification)));
        }
        for key in &tx.delete_idempotency {
            p.removes.push(keyed(IDEMPOTENCY, key.as_bytes()));
        }
        for consent in &tx.put_consents {
            p.puts.push((
                consent_key(&consent.subject, &consent.agreement),
                encode(consent),
            ));
        }
        for circuit in &tx.put_circuits {
            p.circuits.push((
                circuit.agency.clone(),
                keyed(CIRCUITS, circuit.agency.as_bytes()),
                circuit.version.saturating_sub(1),
                encode(circuit),
            ));
        }
        p.feed = tx.notify.iter().map(encode).collect();
        p.audit = tx.audit.clone();
        for head in &tx.put_tree_heads {
            p.heads
                .push((keyed(TREE_HEADS, &head.size.to_be_bytes()), encode(head)));
        }
        p.counts = tx
            .counts
            .iter()
            .map(|(name, n)| (keyed(COUNTERS, name.as_bytes()), *n))
            .collect();
        for def in &tx.put_definitions {
            p.puts.push((definition_key(def), encode(def)));
        }
        for change in &tx.registry_changes {
            let id = uuid::Uuid::now_v7();
            p.puts
                .push((keyed(REGISTRY_CHANGES, id.as_bytes()), encode(change)));
        }
        for token in &tx.put_api_tokens {
            p.puts
                .push((keyed(API_TOKENS, token.digest.as_bytes()), encode(token)));
        }
        for digest in &tx.delete_api_tokens {
            p.removes.push(keyed(API_TOKENS, digest.as_bytes()));
        }
        for token in &tx.delete_tokens {
            p.removes.push(keyed(TOKENS, token.as_bytes()));
        }
        for timer in &tx.clear_timers {
            p.removes.push(timer_key(timer));
        }
        for timer in &tx.set_timers {
            p.puts.push((timer_key(timer), timer_value(timer)));
        }
        for (key, record) in &tx.put_idempotency {
            p.idempotency.push((
                key.clone(),
                keyed(IDEMPOTENCY, key.as_bytes()),
                encode(record),
            ));
        }
        p
    }

    /// Checks this commit against the stored state and the claims and adds its writes to
    /// `writes`, its notifications under the feed positions `tally` gives, its counts to the
    /// group's `counts` (see [`super::counters`]); on a failed check, adds nothing and changes
    /// nothing. A case's record comes before anything that points to
    /// it (index entries aside, which are only hints to read the record), so no reader finds a
    /// token, timer or idempotency record whose case is not there yet.
    pub(super) fn check_into(
        self,
        data: &Tree,
        path: &Path,
        claims: &Claims,
        writes: &mut Vec<journal::Write>,
        counts: &mut BTreeMap<Vec<u8>, i64>,
        tally: &mut Tally,
    ) -> Result<(), StoreError> {
        let get = |key: &[u8]| data.get(key).map_err(|e| sled_error(path, e));
        for (key, epoch, timer, work) in &self.fences {
            if !claims.holds(key, *epoch) || (*timer && get(key)?.is_none()) {
                return Err(StoreError::Fenced {
                    work: work.clone(),
                    epoch: *epoch,
                });
            }
        }
        if let Some(expected) = self.expect_config
            && expected != tally.numbers.config
        {
            return Err(StoreError::ConfigChanged {
                expected,
                found: tally.numbers.config,
            });
        }
        let mut inserts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut removes: Vec<Vec<u8>> = self.removes;
        for case in self.cases {
            let key = keyed(CASES, case.id.as_bytes());
            let old = match get(&key)? {
                Some(bytes) => Some(CaseHead::read(&bytes).ok_or_else(|| {
                    corrupt(path, format!("the record of case {} is damaged", case.id))
                })?),
                None => None,
            };
            let rev = match (&old, case.expected_rev) {
                (None, None) => 1,
                (Some(_), None) => return Err(StoreError::Exists { case_id: case.id }),
                (Some(o), Some(expected)) if o.rev == expected => expected + 1,
                (_, Some(expected)) => {
                    return Err(StoreError::Conflict {
                        case_id: case.id,
                        expected,
                    });
                }
            };
            let before = old.map(|o| o.index_keys).unwrap_or_default();
            for gone in before.iter().filter(|k| !case.index_keys.contains(k)) {
                removes.push(gone.clone());
            }
            for new in case.index_keys.iter().filter(|k| !before.contains(k)) {
                inserts.push((new.clone(), Vec::new()));
            }
            inserts.push((key, CaseHead::write(rev, &case.index_keys, &case.record)));
        }
        for (given, key, record) in self.idempotency {
            if get(&key)?.is_some() {
                return Err(StoreError::KeyTaken { key: given });
            }
            inserts.push((key, record));
        }
        for (agency, key, expected, record) in self.circuits {
            let stored = match get(&key)? {
                None => 0,
                Some(bytes) => {
                    serde_json::from_slice::<Versioned>(&bytes)
                        .map_err(|e| {
                            corrupt(path, format!("the circuit of agency `{agency}`: {e}"))
                        })?
                        .version
                }
            };
            if stored != expected {
                return Err(StoreError::CircuitChanged { agency, expected });
            }
            inserts.push((key, record));
        }
        // Every check passed: from here on the commit is written, and the tally follows it.
        for (key, hook) in self.webhook_updates {
            if tally.webhooks.contains(&key) {
                inserts.push((key, hook));
            }
        }
        inserts.extend(self.puts);
        for (key, head) in self.heads {
            if get(&key)?.is_none() {
                inserts.push((key, head));
            }
        }
        for key in self.webhooks_deleted {
            tally.webhooks.remove(&key);
        }
        tally.webhooks.extend(self.webhooks_put);
        let notifying = !self.feed.is_empty() && !tally.webhooks.is_empty();
        let numbers = &mut tally.numbers;
        for notification in self.feed.into_iter().filter(|_| notifying) {
            inserts.push((keyed(FEED, &numbers.next_feed.to_be_bytes()), notification));
            numbers.next_feed += 1;
        }
        let now = jiff::Timestamp::now();
        for record in self.audit {
            let case = record.case_id();
            let (index, entry) = numbers.audit.append(record, now);
            inserts.push((audit_key(index), entry));
            if let Some(case) = case {
                inserts.push((audit_case_key(case, index), Vec::new()));
            }
        }
        if self.changes_config {
            numbers.config += 1;
            inserts.push((CONFIG.to_vec(), numbers.config.to_be_bytes().to_vec()));
        }
        for (key, n) in self.counts {
            *counts.entry(key).or_default() += n;
        }
        // Removals first: a timer replaced by one at the same key must stay.
        writes.extend(removes.into_iter().map(|key| (key, None)));
        writes.extend(inserts.into_iter().map(|(key, value)| (key, Some(value))));
        Ok(())
    }
}

/// The version of a stored circuit, read without the rest of it.
#[derive(serde::Deserialize)]
struct Versioned {
    version: u64,
}
