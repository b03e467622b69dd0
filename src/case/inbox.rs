//! The CloudEvents a case received, and where it came from. An event may reach a case before
//! the step that waits for it has started (a hospital's certificate while the civil-status
//! office still checks the dossier): it is kept, until a time to live, and the step takes it
//! when it waits. Each waiting step's expected value is computed from the input when the case
//! starts, so that an event finds its case through the `awaits` index from the first moment.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::cloud_event::CloudEvent;

/// How many events a case keeps for steps that do not wait yet: the oldest goes first.
pub const MAX_KEPT: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Inbox {
    /// Events delivered before a step waited for them, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    /// The event each step took, by step id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub taken: BTreeMap<String, Taken>,
    /// What each step with `wait_for` expects, by step id, until it took its event.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expects: BTreeMap<String, Expect>,
    /// Events delivered to the case that no step waits for (`<source> <id>`), newest last, at
    /// most [`MAX_NOTED`]: in its history, and not noted twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noted: Vec<String>,
}

/// How many events no step waits for a case remembers, so as not to note one twice.
pub const MAX_NOTED: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Kept {
    pub event: CloudEvent,
    pub received_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Taken {
    pub event: CloudEvent,
    pub at: Timestamp,
}

/// An event type and the value its `match.from` must give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Expect {
    #[serde(rename = "type")]
    pub event_type: String,
    pub value: String,
}

impl Expect {
    /// The `awaits` index value: type and value.
    pub fn index_value(&self) -> String {
        index_value(&self.event_type, &self.value)
    }
}

/// The `awaits` index value of an event type and a match value.
pub fn index_value(event_type: &str, value: &str) -> String {
    format!("{event_type} {value}")
}

impl Inbox {
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
            && self.taken.is_empty()
            && self.expects.is_empty()
            && self.noted.is_empty()
    }

    /// The earliest time a kept event expires.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.kept.iter().map(|k| k.expires_at).min()
    }

    /// Forgets the events kept past their time; how many.
    pub fn drop_expired(&mut self, now: Timestamp) -> usize {
        let before = self.kept.len();
        self.kept.retain(|k| k.expires_at > now);
        before - self.kept.len()
    }
}

/// What started a case other than the portal: a CloudEvent, or another case's end (a chain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Origin {
    #[serde(flatten)]
    pub cause: Cause,
    /// The `correlationid` every case and lifecycle event of one chain carries.
    pub correlation_id: String,
    /// The id of the event that caused the case.
    pub causation_id: String,
    /// How many cases came before it in its chain (0: started by an event).
    pub depth: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "started_by", rename_all = "snake_case")]
pub enum Cause {
    Event {
        source: String,
        id: String,
        #[serde(rename = "type")]
        event_type: String,
    },
    Case {
        case_id: String,
        workflow: String,
        outcome: String,
    },
}
