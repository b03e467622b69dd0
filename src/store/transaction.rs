//! What a commit writes: a backend-neutral set of changes to the tables, applied together or
//! not at all.

#[cfg(doc)]
use super::StoreError;
use super::claimed_work::Fence;
use super::shared_records::{ApiToken, Circuit, Notification, Published, RegistryChange, Webhook};
use crate::case::{CallbackTarget, Case, CaseId, Event, IdempotencyRecord, Timer};
use crate::personal_data::ConsentRecord;

/// A write to the case record. `expected_rev` is the revision read before the change (`None`
/// for a new case); the commit fails with [`StoreError::Conflict`] if another writer got there
/// first.
#[derive(Debug, Clone)]
pub struct CaseWrite {
    pub case: Case,
    pub expected_rev: Option<u64>,
}

/// A set of writes committed together, or not at all.
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub cases: Vec<CaseWrite>,
    pub events: Vec<(CaseId, Event)>,
    /// Timers to add. A case has at most one timer of a kind: to move one, the same
    /// transaction clears the old one (the engine's `Change` does both).
    pub set_timers: Vec<Timer>,
    /// Timers to remove, as they were set (their due time included).
    pub clear_timers: Vec<Timer>,
    pub put_tokens: Vec<(String, CallbackTarget)>,
    pub delete_tokens: Vec<String>,
    /// Inserted only if absent; otherwise the commit fails with [`StoreError::KeyTaken`].
    pub put_idempotency: Vec<(String, IdempotencyRecord)>,
    /// API tokens, keyed by digest: a new one, or a revoked one written over the old.
    pub put_api_tokens: Vec<ApiToken>,
    /// API tokens to forget, by digest: sessions of the operators' page long ended.
    pub delete_api_tokens: Vec<String>,
    /// Appended to the notification feed, each under the next sequence number, in commit order,
    /// if a webhook is registered when the commit is written (else dropped: nobody would take
    /// them). Decided by the store at the commit, so a change committed after a webhook's
    /// registration was acknowledged is in the feed, whichever node commits it.
    pub notify: Vec<Notification>,
    /// Registered (or replaced) unconditionally.
    pub put_webhooks: Vec<Webhook>,
    /// Written only if a webhook with the same id is still registered: a delivery's progress
    /// never brings back a webhook deleted meanwhile.
    pub update_webhooks: Vec<Webhook>,
    pub delete_webhooks: Vec<String>,
    /// Published definitions, by (kind, id, version): a new one, or a deprecated one written
    /// over the old. Publishing never replaces a definition: the registry checks that first.
    pub put_definitions: Vec<Published>,
    /// Appended to the registry's audit trail.
    pub registry_changes: Vec<RegistryChange>,
    /// Agencies' circuits, each written only if the stored one is at `version - 1` (none
    /// stored: 0), else the commit fails with [`StoreError::CircuitChanged`].
    pub put_circuits: Vec<Circuit>,
    /// History events written over the stored ones of the same case and number, each a record
    /// of its own: a case's history erased.
    pub rewrite_events: Vec<(CaseId, Event)>,
    /// Notifications written over those at the same feed positions: an erased case's.
    pub rewrite_notifications: Vec<(u64, Notification)>,
    /// Idempotency records forgotten: an erased case's that name a person in their key.
    pub delete_idempotency: Vec<String>,
    /// Consent records, each written over the one of the same person and agreement.
    pub put_consents: Vec<ConsentRecord>,
    /// Appended to the audit log in this order, each under the next index and chained to the
    /// entry before; numbered and chained by the store (a sealer on PostgreSQL), so that the
    /// log has one order whichever node commits.
    pub audit: Vec<crate::audit::Record>,
    /// Signed tree heads, kept by size; one of a size already kept is not written again.
    pub put_tree_heads: Vec<crate::audit::TreeHead>,
    /// Added to the named counters (a counter never written is 0): figures kept up to date
    /// with the changes they count, so that reading them is not a scan (the on-time counts).
    pub counts: Vec<(String, i64)>,
    /// Claims this commit is made under: it applies only if each is still held under its
    /// epoch, else it fails with [`StoreError::Fenced`] and writes nothing.
    pub fences: Vec<Fence>,
    /// For a configuration change checked against what it read: it applies only if the
    /// configuration version is still this one, else it fails with
    /// [`StoreError::ConfigChanged`] and writes nothing.
    pub expect_config: Option<u64>,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
            && self.events.is_empty()
            && self.set_timers.is_empty()
            && self.clear_timers.is_empty()
            && self.put_tokens.is_empty()
            && self.delete_tokens.is_empty()
            && self.put_idempotency.is_empty()
            && self.put_api_tokens.is_empty()
            && self.delete_api_tokens.is_empty()
            && self.notify.is_empty()
            && self.put_webhooks.is_empty()
            && self.update_webhooks.is_empty()
            && self.delete_webhooks.is_empty()
            && self.put_definitions.is_empty()
            && self.registry_changes.is_empty()
            && self.put_circuits.is_empty()
            && self.put_consents.is_empty()
            && self.audit.is_empty()
            && self.put_tree_heads.is_empty()
            && self.rewrite_events.is_empty()
            && self.rewrite_notifications.is_empty()
            && self.delete_idempotency.is_empty()
            && self.counts.is_empty()
            && self.fences.is_empty()
            && self.expect_config.is_none()
    }

    /// Whether this commit changes the configuration every node follows (definitions,
    /// webhooks), and so moves its version on. API tokens do not: every request reads its
    /// token from the store, so no node keeps one to reload (a sign-in made every node
    /// recompile its definitions).
    pub fn changes_config(&self) -> bool {
        !self.put_definitions.is_empty()
            || !self.put_webhooks.is_empty()
            || !self.delete_webhooks.is_empty()
    }
}

/// What a commit's checks read: a case's revision, an idempotency key, a claim, a circuit's
/// version, the configuration version. Both backends group the commits waiting into one write
/// (sled: one group of the writer; PostgreSQL: one transaction), checking each against the
/// state before the group; two commits may share a group only if they read nothing in common,
/// or the second would be checked against a state the first is changing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Checked {
    Case(CaseId),
    Key(String),
    /// Claimed work, as named in a `Fenced` error.
    Claim(String),
    Circuit(String),
    Config,
}

impl Transaction {
    /// What this commit's checks read ([`Checked`]).
    pub fn checked(&self) -> Vec<Checked> {
        let config =
            (self.changes_config() || self.expect_config.is_some()).then_some(Checked::Config);
        self.cases
            .iter()
            .map(|c| Checked::Case(c.case.id))
            .chain(
                self.put_idempotency
                    .iter()
                    .map(|(k, _)| Checked::Key(k.clone())),
            )
            .chain(
                self.fences
                    .iter()
                    .map(|f| Checked::Claim(f.work.to_string())),
            )
            .chain(
                self.put_circuits
                    .iter()
                    .map(|c| Checked::Circuit(c.agency.clone())),
            )
            .chain(config)
            .collect()
    }
}

/// Commits grouped into one write as they wait, in order: each joins the group unless it reads
/// what a commit already in it reads ([`Transaction::checked`]); the first that does ends the
/// group and starts the next. What sled's writer and PostgreSQL's batches both follow.
#[derive(Debug, Default)]
pub struct Grouping {
    taken: std::collections::HashSet<Checked>,
}

impl Grouping {
    /// Whether a commit that reads `checked` may join the group; if so, it has joined.
    pub fn join(&mut self, checked: &[Checked]) -> bool {
        if checked.iter().any(|c| self.taken.contains(c)) {
            return false;
        }
        self.taken.extend(checked.iter().cloned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{CaseStatus, Timer, TimerKind};

    fn case(id: CaseId) -> CaseWrite {
        CaseWrite {
            case: Case {
                id,
                workflow: "w".into(),
                version: 1,
                status: CaseStatus::Running,
                input: serde_json::Value::Null,
                business_keys: Default::default(),
                started_at: jiff::Timestamp::UNIX_EPOCH,
                started_on: "2026-12-01".parse().unwrap(),
                due_at: None,
                finished_at: None,
                reason: None,
                steps: Default::default(),
                incidents: Vec::new(),
                timers: Default::default(),
                next_seq: 0,
                tallies: Vec::new(),
                deadlines: Default::default(),
                origin: None,
                inbox: Default::default(),
                consents: Default::default(),
                retention: Default::default(),
                traceparent: None,
                rev: 0,
            },
            expected_rev: Some(1),
        }
    }

    /// The rule both backends' group commit follows, stated once.
    #[test]
    fn commits_that_read_the_same_case_key_claim_circuit_or_configuration_go_apart() {
        let (a, b) = (CaseId::now_v7(), CaseId::now_v7());
        let timer = Timer {
            case_id: a,
            due_at: jiff::Timestamp::UNIX_EPOCH,
            kind: TimerKind::Retry { step: "s".into() },
        };
        let fenced = Transaction {
            fences: vec![Fence {
                work: crate::store::Work::Timer(timer),
                epoch: 3,
            }],
            ..Transaction::default()
        };
        let of_case = |id| Transaction {
            cases: vec![case(id)],
            ..Transaction::default()
        };
        let keyed = Transaction {
            put_idempotency: vec![(
                "k".into(),
                IdempotencyRecord {
                    fingerprint: "f".into(),
                    made: crate::case::Made::Case { case_id: b },
                },
            )],
            ..Transaction::default()
        };
        let registers = Transaction {
            delete_webhooks: vec!["h".into()],
            ..Transaction::default()
        };
        let checks_config = Transaction {
            expect_config: Some(4),
            ..Transaction::default()
        };
        let counts_only = Transaction {
            counts: vec![("n".into(), 1)],
            ..Transaction::default()
        };
        let mut group = Grouping::default();
        for (tx, joins) in [
            (&of_case(a), true),
            (&of_case(b), true),
            (&fenced, true),
            (&keyed, true),
            (&registers, true),
            (&counts_only, true),
            (&counts_only, true),
            (&of_case(a), false),
            (&fenced, false),
            (&keyed, false),
            (&checks_config, false),
        ] {
            assert_eq!(group.join(&tx.checked()), joins, "{:?}", tx.checked());
        }
    }
}
