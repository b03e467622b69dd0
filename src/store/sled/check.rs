//! Reading every record of a store to find the damaged ones: `civicflow store check`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::SledStore;
use super::counters;
use super::journal::JOURNAL;
use super::keys::{
    API_TOKENS, AUDIT, AUDIT_CASES, CASES, CIRCUITS, CONFIG, CONSENTS, COUNTERS, DEFINITIONS,
    EVENTS, FEED, FEED_FLOOR, IDEMPOTENCY, INDEX, PENDING, REGISTRY_CHANGES, TIMERS, TOKENS,
    TREE_HEADS, WEBHOOKS, timer_from,
};
use super::reads::case_from;
use crate::case::{CallbackTarget, CaseId, Event, IdempotencyRecord};
use crate::personal_data::ConsentRecord;
use crate::store::{
    ApiToken, Circuit, Notification, Published, RegistryChange, StoreError, Webhook,
};

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub table: &'static str,
    /// The case it belongs to, when it belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<CaseId>,
    /// Which record of the table: the case's, its history from an event, a timer, or the key
    /// of a record of no case.
    pub record: String,
    pub detail: String,
}

/// What a check read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub records: u64,
    pub damaged: Vec<Damage>,
    /// Ended cases whose personal data is not erased, and whose time for it has come (or was
    /// never set: they ended before their workflow had a retention).
    pub unerased: Vec<Unerased>,
}

/// An ended case whose personal data is still there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unerased {
    pub case_id: CaseId,
    pub workflow: String,
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
    /// When it was due to be erased; `None` if never set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erase_at: Option<jiff::Timestamp>,
}

/// The case whose id is the 16 bytes of `key` from `at`.
fn case_in(key: &[u8], at: usize) -> Option<CaseId> {
    CaseId::from_slice(key.get(at..at + 16)?).ok()
}

fn json<T: DeserializeOwned>(value: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(value)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn eight_bytes(value: &[u8]) -> Result<(), String> {
    match value.len() {
        8 => Ok(()),
        n => Err(format!("{n} bytes where a number takes 8")),
    }
}

impl SledStore {
    /// Reads and decodes every record of the store; each one that cannot be read, with the
    /// table and the case it belongs to.
    pub fn check(&self, now: jiff::Timestamp) -> Result<Checked, StoreError> {
        let mut checked = Checked {
            records: 0,
            damaged: Vec::new(),
            unerased: Vec::new(),
        };
        for entry in self.data()?.iter() {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            checked.records += 1;
            let (table, case_id, read): (&'static str, Option<CaseId>, Result<(), String>) =
                match key.first().copied() {
                    Some(CASES) => {
                        let id = case_in(&key, 1);
                        let read = match id {
                            Some(id) => case_from(id, &value)
                                .map(|case| {
                                    let r = &case.retention;
                                    if case.status != crate::case::CaseStatus::Running
                                        && r.erased_at.is_none()
                                        && r.erase_at.is_none_or(|at| at <= now)
                                    {
                                        checked.unerased.push(Unerased {
                                            case_id: case.id,
                                            workflow: case.workflow,
                                            version: case.version,
                                            finished_at: case.finished_at,
                                            erase_at: r.erase_at,
                                        });
                                    }
                                })
                                .map_err(|e| match e {
                                    StoreError::Damaged { detail, .. } => detail,
                                    other => other.to_string(),
                                }),
                            None => Err("its key holds no case id".to_owned()),
                        };
                        ("cases", id, read)
                    }
                    Some(EVENTS) => ("events", case_in(&key, 1), json::<Vec<Event>>(&value)),
                    Some(TIMERS) => (
                        "timers",
                        case_in(&key, 9),
                        timer_from(&key, &value)
                            .map(drop)
                            .ok_or_else(|| "its kind or due time cannot be read".to_owned()),
                    ),
                    // Index entries are keys alone.
                    Some(INDEX) => continue,
                    Some(TOKENS) => ("callback tokens", None, json::<CallbackTarget>(&value)),
                    Some(IDEMPOTENCY) => {
                        ("idempotency keys", None, json::<IdempotencyRecord>(&value))
                    }
                    Some(API_TOKENS) => ("API tokens", None, json::<ApiToken>(&value)),
                    Some(FEED) => ("notifications", None, json::<Notification>(&value)),
                    Some(WEBHOOKS) => ("webhooks", None, json::<Webhook>(&value)),
                    Some(DEFINITIONS) => ("definitions", None, json::<Published>(&value)),
                    Some(REGISTRY_CHANGES) => {
                        ("registry changes", None, json::<RegistryChange>(&value))
                    }
                    Some(COUNTERS) => ("counters", None, eight_bytes(&value)),
                    Some(CIRCUITS) => ("circuits", None, json::<Circuit>(&value)),
                    Some(CONSENTS) => ("consents", None, json::<ConsentRecord>(&value)),
                    // What `audit verify` checks entry by entry against the signed heads.
                    Some(AUDIT) => ("audit log", None, json::<crate::audit::Entry>(&value)),
                    Some(AUDIT_CASES) => continue,
                    Some(TREE_HEADS) => {
                        ("tree heads", None, json::<crate::audit::TreeHead>(&value))
                    }
                    Some(JOURNAL) => (
                        "journal",
                        None,
                        Err("a group of writes left unfinished".to_owned()),
                    ),
                    _ if key.as_ref() == CONFIG => ("configuration", None, eight_bytes(&value)),
                    _ if key.as_ref() == FEED_FLOOR => ("notifications", None, eight_bytes(&value)),
                    _ if key.as_ref() == PENDING => (
                        "counters",
                        None,
                        counters::decode(&value)
                            .map(drop)
                            .ok_or_else(|| "their unfolded changes cannot be read".to_owned()),
                    ),
                    _ => ("unknown", None, Err("a key of no table".to_owned())),
                };
            if let Err(detail) = read {
                checked.damaged.push(Damage {
                    table,
                    case_id,
                    record: which(&key, case_id.is_some()),
                    detail,
                });
            }
        }
        Ok(checked)
    }
}

/// Which record `key` names, for a person: of a case (its record, its history from an event,
/// a timer), or the key itself.
fn which(key: &[u8], of_a_case: bool) -> String {
    match key.first().copied() {
        Some(CASES) if of_a_case => "the case".to_owned(),
        Some(EVENTS) if of_a_case => {
            let seq = key
                .get(17..25)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            format!("its history from event {}", seq.unwrap_or_default())
        }
        Some(TIMERS) if of_a_case => format!(
            "its timer {}",
            String::from_utf8_lossy(key.get(25..).unwrap_or_default())
        ),
        _ => printable(key),
    }
}

/// A key as text: its printable bytes as they are, the others as `\xNN`.
fn printable(key: &[u8]) -> String {
    key.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}
