//! What the audit log holds: one [`Record`] per thing civicflow did that someone may later
//! dispute, and the [`Entry`] that numbers it, times it and chains it to the entry before.
//!
//! Personal data never enters a record in clear: a citizen is a keyed pseudonym, a request, a
//! reply or an operator's reason is a hash. Erasure then never has to touch the log, and the
//! log never keeps what erasure removed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::merkle::{Hash, leaf_hash};
use crate::case::CaseId;

/// One thing that happened, as the log tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A call to an agency, logged in the commit that decides it, before it is sent: every
    /// request an agency received is in the log, whatever happened to its answer.
    Request(Call),
    /// A call to an agency and what came back: the hash of the reply, and of the request the
    /// agency said it answered.
    Exchange {
        #[serde(flatten)]
        call: Call,
        /// The request hash the agency sent back; `None` if it sent none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        echoed_request_hash: Option<String>,
        /// SHA-256 of the reply's body; `None` when nothing came back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_hash: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// What the reply meant: `succeeded`, `rejected`, `pending`, `needs_supplement`,
        /// `retryable`, `unexpected`, `request_hash_mismatch`, or `superseded` when the step
        /// had moved on and the reply was not used.
        outcome: String,
        sent_at: Timestamp,
        answered_at: Timestamp,
    },
    /// The lawful basis of a step's exchange of personal data, before its first call (Law
    /// 91/2025/QH15): why the data went to the agency, under which law or whose consent.
    Basis {
        #[schema(value_type = String, format = Uuid)]
        case_id: CaseId,
        step: String,
        purpose: String,
        lawful_basis: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        law: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        consent_id: Option<String>,
        /// The personal input fields sent, by name.
        personal_data: Vec<String>,
    },
    /// An agency's callback to a waiting step.
    Callback {
        #[schema(value_type = String, format = Uuid)]
        case_id: CaseId,
        step: String,
        /// What the agency said: `succeeded`, `rejected`, `not understood`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// A CloudEvent that reached a case.
    Event {
        #[schema(value_type = String, format = Uuid)]
        case_id: CaseId,
        source: String,
        id: String,
        event_type: String,
        /// The step that took it, `kept` for a step that does not wait yet, `start` when it
        /// started the case; none when it was only noted.
        taken_by: Option<String>,
    },
    /// A person acted on a case: an operator's retry, skip, fix or cancel, a supervisor's
    /// extension, the portal's supplement.
    Action {
        #[schema(value_type = String, format = Uuid)]
        case_id: CaseId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        action: String,
        by: String,
        /// SHA-256 of the reason given, which the case's history holds in clear.
        reason_hash: String,
    },
    /// An API token issued or revoked.
    Token {
        /// `issued` or `revoked`.
        action: String,
        /// The token's public id (`cf_<id>`), never the token.
        token: String,
        role: String,
        by: String,
    },
    /// A consent recorded or withdrawn.
    Consent {
        /// `given` or `withdrawn`.
        action: String,
        /// The data subject's pseudonym.
        subject: String,
        agreement: String,
        consent_id: String,
        by: String,
    },
    /// A case's personal data erased, or a data subject's erasure request.
    Erasure {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>, format = Uuid)]
        case_id: Option<CaseId>,
        /// The data subject's pseudonym, for a request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// `retention` or `request`.
        why: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason_hash: Option<String>,
    },
}

/// One call to an agency, as X-Road's headers named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Call {
    #[schema(value_type = String, format = Uuid)]
    pub case_id: CaseId,
    pub step: String,
    pub attempt: u32,
    /// A status query, not the step's request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub poll: bool,
    /// `X-Road-Client`: this node's member and subsystem.
    pub client: String,
    /// `X-Road-Service`: the agency, the operation, its version.
    pub service: String,
    /// `X-Road-Id`: the message's own id.
    pub message_id: String,
    /// `X-Road-UserId`: the citizen's pseudonym, where the workflow names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The request's hash, as `X-Road-Request-Hash` carries it.
    pub request_hash: String,
}

impl Record {
    /// The case the record is about, if any: what the log is searched by.
    pub fn case_id(&self) -> Option<CaseId> {
        match self {
            Record::Request(call) | Record::Exchange { call, .. } => Some(call.case_id),
            Record::Basis { case_id, .. }
            | Record::Callback { case_id, .. }
            | Record::Event { case_id, .. }
            | Record::Action { case_id, .. } => Some(*case_id),
            Record::Erasure { case_id, .. } => *case_id,
            Record::Token { .. } | Record::Consent { .. } => None,
        }
    }
}

/// A record as the log holds it: its place, the hash of the entry before (so an entry taken
/// out, put back elsewhere or changed is named by the one after it), and when it was logged.
/// The leaf of the Merkle tree is the hash of its stored bytes, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub index: u64,
    /// The leaf hash of entry `index - 1`, hex; 64 zeros for the first.
    pub prev: String,
    /// When the store logged it: never earlier than the entry before.
    pub logged_at: Timestamp,
    pub record: Record,
}

impl Entry {
    /// The entry after the one whose leaf hash is `prev`, logged at `now` or, if the clock went
    /// back, at the previous entry's time.
    pub fn next(
        index: u64,
        prev: &Hash,
        last_at: Timestamp,
        now: Timestamp,
        record: Record,
    ) -> Entry {
        Entry {
            index,
            prev: hex::encode(prev),
            logged_at: now.max(last_at),
            record,
        }
    }

    /// The bytes the log stores, and hashes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit entry serializes")
    }

    /// An entry from its stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Entry, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Where the log ends: the next index, the last entry's leaf hash and time. What an appender
/// keeps to number and chain the next entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub size: u64,
    pub last_leaf: Hash,
    pub last_at: Timestamp,
}

impl Default for Tail {
    fn default() -> Tail {
        Tail {
            size: 0,
            last_leaf: [0; 32],
            last_at: Timestamp::UNIX_EPOCH,
        }
    }
}

impl Tail {
    /// The tail after `bytes`, stored as entry `index`. An entry that cannot be read (damaged,
    /// or altered) still ends the log: the next entry chains to its bytes as they are, and
    /// `audit verify` names it.
    pub fn after(index: u64, bytes: &[u8]) -> Tail {
        Tail {
            size: index + 1,
            last_leaf: leaf_hash(bytes),
            last_at: Entry::decode(bytes).map_or(Timestamp::UNIX_EPOCH, |e| e.logged_at),
        }
    }

    /// Appends `record`, logged at `now`: its index and stored bytes.
    pub fn append(&mut self, record: Record, now: Timestamp) -> (u64, Vec<u8>) {
        let entry = Entry::next(self.size, &self.last_leaf, self.last_at, now, record);
        let bytes = entry.encode();
        let index = self.size;
        *self = Tail {
            size: index + 1,
            last_leaf: leaf_hash(&bytes),
            last_at: entry.logged_at,
        };
        (index, bytes)
    }
}

/// Hex SHA-256 of a text: how a reason enters the log.
pub fn text_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(n: u32) -> Record {
        Record::Action {
            case_id: CaseId::nil(),
            step: Some(format!("s{n}")),
            action: "retry".into(),
            by: "alice".into(),
            reason_hash: text_hash("the agency was down"),
        }
    }

    #[test]
    fn entries_chain_to_the_leaf_before_and_never_go_back_in_time() {
        let mut tail = Tail::default();
        let t0 = Timestamp::from_second(1_000).unwrap();
        let (i0, first) = tail.append(action(0), t0);
        let (i1, second) = tail.append(action(1), Timestamp::from_second(999).unwrap());
        assert_eq!((i0, i1), (0, 1));
        let (a, b) = (
            Entry::decode(&first).unwrap(),
            Entry::decode(&second).unwrap(),
        );
        assert_eq!(a.prev, "0".repeat(64));
        assert_eq!(b.prev, hex::encode(leaf_hash(&first)));
        assert_eq!(b.logged_at, t0, "a clock gone back does not log earlier");
        assert_eq!(Tail::after(1, &second), tail);
    }

    #[test]
    fn a_record_names_its_case_and_reads_back_as_written() {
        let id = CaseId::now_v7();
        let record = Record::Callback {
            case_id: id,
            step: "birth".into(),
            result: Some("succeeded".into()),
        };
        assert_eq!(record.case_id(), Some(id));
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["kind"], "callback");
        assert_eq!(serde_json::from_value::<Record>(json).unwrap(), record);
    }
}
