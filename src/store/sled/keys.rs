//! The key of every record: one prefix byte per table, then what orders the table.

use jiff::Timestamp;

use crate::case::{CaseId, IndexEntry, Timer, TimerKind};
use crate::store::{Kind, Published};

/// Key prefixes, one per table.
pub(super) const CASES: u8 = b'c';
pub(super) const EVENTS: u8 = b'e';
pub(super) const TIMERS: u8 = b't';
pub(super) const INDEX: u8 = b'x';
pub(super) const TOKENS: u8 = b'k';
pub(super) const IDEMPOTENCY: u8 = b'i';
pub(super) const API_TOKENS: u8 = b'a';
pub(super) const FEED: u8 = b'f';
pub(super) const WEBHOOKS: u8 = b'w';
pub(super) const DEFINITIONS: u8 = b'd';
pub(super) const REGISTRY_CHANGES: u8 = b'r';
pub(super) const COUNTERS: u8 = b'n';
pub(super) const CIRCUITS: u8 = b'g';
/// Consent records, by the subject's pseudonym, a space, and the agreement.
pub(super) const CONSENTS: u8 = b'o';
/// The audit log's entries, by index (big-endian): the bytes its Merkle leaves hash.
pub(super) const AUDIT: u8 = b'y';
/// The audit log's entries about a case: the case, then the index; the value is empty.
pub(super) const AUDIT_CASES: u8 = b'z';
/// Signed tree heads, by the size they sign (big-endian).
pub(super) const TREE_HEADS: u8 = b'h';
/// One key, not a table: the configuration version (`Store::config_version`).
pub(super) const CONFIG: &[u8] = b"vconfig";
/// One key, not a table: the feed is trimmed up to this position (`Store::trim_feed`). The
/// writer numbers on from the largest of it, the last notification kept and every webhook's
/// cursor, so that a position is never handed out twice.
pub(super) const FEED_FLOOR: &[u8] = b"vfeed";
/// One key, not a table: the counters' changes not yet folded into them ([`super::counters`]).
pub(super) const PENDING: &[u8] = b"m";

/// `prefix` followed by `rest`: a key of one table.
pub(super) fn keyed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// The key of a consent record: the subject's pseudonym first, so that a person's records
/// are one range.
pub(super) fn consent_key(subject: &str, agreement: &str) -> Vec<u8> {
    keyed(CONSENTS, format!("{subject} {agreement}").as_bytes())
}

/// The key of audit entry `index`.
pub(super) fn audit_key(index: u64) -> Vec<u8> {
    keyed(AUDIT, &index.to_be_bytes())
}

/// The index of the audit entry at `key`.
pub(super) fn audit_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// The key that finds audit entry `index` from its case.
pub(super) fn audit_case_key(case: CaseId, index: u64) -> Vec<u8> {
    let mut k = keyed(AUDIT_CASES, case.as_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The key of the run of events starting at `seq`.
pub(super) fn event_key(case: CaseId, seq: u64) -> Vec<u8> {
    let mut k = keyed(EVENTS, case.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Due time, case, kind: the timer loop reads them in due order.
pub(super) fn timer_key(timer: &Timer) -> Vec<u8> {
    let due = timer.due_at.as_millisecond().max(0) as u64;
    let mut k = keyed(TIMERS, &due.to_be_bytes());
    k.extend_from_slice(timer.case_id.as_bytes());
    k.extend_from_slice(timer.kind.id().as_bytes());
    k
}

/// A timer's record: its due time to the nanosecond (seconds `i64` LE, nanoseconds `i32` LE);
/// the case and the kind are in its key. Twelve bytes, nothing formatted: about nine timers are
/// set per case, and each fired one is read back.
pub(super) fn timer_value(timer: &Timer) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&timer.due_at.as_second().to_le_bytes());
    v.extend_from_slice(&timer.due_at.subsec_nanosecond().to_le_bytes());
    v
}

/// A timer's record as format version 5 wrote it (JSON), as a [`timer_value`]; `None` for a
/// record that is not one (one already rewritten).
pub(super) fn timer_value_of_json(value: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<Timer>(value)
        .ok()
        .map(|timer| timer_value(&timer))
}

/// The timer stored under `key` with record `value`, or `None` if either is damaged.
pub(super) fn timer_from(key: &[u8], value: &[u8]) -> Option<Timer> {
    let case_id = CaseId::from_slice(key.get(9..25)?).ok()?;
    let kind = TimerKind::from_id(std::str::from_utf8(key.get(25..)?).ok()?)?;
    let second = i64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let nanos = i32::from_le_bytes(value.get(8..)?.try_into().ok()?);
    Some(Timer {
        case_id,
        due_at: Timestamp::new(second, nanos).ok()?,
        kind,
    })
}

pub(super) fn index_prefix(name: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + value.len() + 19);
    k.push(INDEX);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

pub(super) fn index_key(entry: &IndexEntry, case: CaseId) -> Vec<u8> {
    let mut k = index_prefix(entry.name, &entry.value);
    k.extend_from_slice(case.as_bytes());
    k
}

/// Definitions sort by kind, id, then version (big-endian, so numerically).
pub(super) fn definition_key(def: &Published) -> Vec<u8> {
    let kind = match def.kind {
        Kind::Adapter => b'a',
        Kind::Workflow => b'w',
    };
    let mut k = keyed(DEFINITIONS, &[kind]);
    k.extend_from_slice(def.id.as_bytes());
    k.push(0);
    k.extend_from_slice(&def.version.to_be_bytes());
    k
}

pub(super) fn feed_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

pub(super) fn case_id_at_end(key: &[u8]) -> Option<CaseId> {
    let start = key.len().checked_sub(16)?;
    CaseId::from_slice(&key[start..]).ok()
}
