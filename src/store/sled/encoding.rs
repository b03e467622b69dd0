//! How records are laid out as bytes: JSON for most, case records binary
//! ([`crate::store::encode_case`]) behind a head, a commit's events for a case as one run; and
//! the store's errors for bytes that do not read.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::case::{CaseId, Event};
use crate::store::StoreError;

pub(super) fn sled_error(path: &Path, e: sled::Error) -> StoreError {
    let path = path.display().to_string();
    match e {
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path,
            detail: match at {
                Some(at) => format!("a damaged record at offset {at:?}"),
                None => "a damaged record".to_owned(),
            },
        },
        sled::Error::Unsupported(detail) | sled::Error::ReportableBug(detail) => {
            StoreError::Corrupt { path, detail }
        }
        other => StoreError::Io {
            path,
            detail: other.to_string(),
        },
    }
}

pub(super) fn corrupt(path: &Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail,
    }
}

pub(super) fn decode<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(path, format!("{what} cannot be read: {e}")))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records are plain data and always serialize")
}

/// A transaction's events as runs of one case with consecutive sequence numbers, in order: each
/// run is stored as one record under its first event's key, so a transition that records three
/// events costs the store one write, not three.
pub(super) fn event_runs(events: &[(CaseId, Event)]) -> Vec<(CaseId, Vec<&Event>)> {
    let mut runs: Vec<(CaseId, Vec<&Event>)> = Vec::new();
    for (case, event) in events {
        match runs.last_mut() {
            Some((c, run)) if c == case && run.last().is_some_and(|e| e.seq + 1 == event.seq) => {
                run.push(event);
            }
            _ => runs.push((*case, vec![event])),
        }
    }
    runs
}

/// A length as the head stores it. A case record is far below 4 GiB: the request body limit and
/// the business-key limit bound it.
pub(super) fn u32_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The head of a case record: revision (8 bytes), number of index keys (4 bytes), each index key
/// as length (4 bytes) and bytes; the case's record follows.
pub(super) struct CaseHead {
    pub(super) rev: u64,
    pub(super) index_keys: Vec<Vec<u8>>,
}

impl CaseHead {
    pub(super) fn write(rev: u64, index_keys: &[Vec<u8>], record: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(record.len() + 512);
        out.extend_from_slice(&rev.to_be_bytes());
        out.extend_from_slice(&u32_len(index_keys.len()).to_be_bytes());
        for k in index_keys {
            out.extend_from_slice(&u32_len(k.len()).to_be_bytes());
            out.extend_from_slice(k);
        }
        out.extend_from_slice(record);
        out
    }

    /// The head, or `None` if the bytes are not a case record.
    pub(super) fn read(bytes: &[u8]) -> Option<CaseHead> {
        CaseHead::split(bytes).map(|(head, _)| head)
    }

    pub(super) fn split(bytes: &[u8]) -> Option<(CaseHead, &[u8])> {
        let rev = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let count = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        let mut at = 12;
        let mut index_keys = Vec::new();
        for _ in 0..count {
            let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
            let len = usize::try_from(len).ok()?;
            index_keys.push(bytes.get(at + 4..at.checked_add(4 + len)?)?.to_vec());
            at += 4 + len;
        }
        Some((CaseHead { rev, index_keys }, bytes.get(at..)?))
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::case::EventKind;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            at: Timestamp::UNIX_EPOCH,
            kind: EventKind::CallbackReceived {
                step: format!("s{seq}"),
                result: None,
            },
        }
    }

    #[test]
    fn a_transactions_events_are_stored_as_one_run_per_case_and_unbroken_sequence() {
        let (a, b) = (CaseId::now_v7(), CaseId::now_v7());
        let events = vec![
            (a, event(3)),
            (a, event(4)),
            (b, event(0)),
            (a, event(5)),
            (a, event(7)),
        ];
        let runs: Vec<(CaseId, Vec<u64>)> = event_runs(&events)
            .into_iter()
            .map(|(case, run)| (case, run.iter().map(|e| e.seq).collect()))
            .collect();
        assert_eq!(
            runs,
            vec![(a, vec![3, 4]), (b, vec![0]), (a, vec![5]), (a, vec![7])]
        );
        assert!(event_runs(&[]).is_empty());
    }
}
