//! The records the store keeps besides cases (whose types are in `crate::case`): API tokens,
//! webhooks and their notifications, published definitions and the registry's audit trail,
//! agencies' circuits.
//! They are plain data. The modules that give them meaning (`auth`, `webhooks`, `registry`)
//! re-export them and add behaviour; the store itself depends on none of those modules.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::case::CaseId;

/// An issued API token, as stored: its digest, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// The public part of the token (`cf_<id>_…`): how it is named in lists and revoked.
    pub id: String,
    /// Hex SHA-256 of the whole token.
    pub digest: String,
    /// The role, as `Role` prints it (`operator`, `agency:police`): the store keeps it as text
    /// and `auth` gives it meaning.
    pub role: String,
    /// Who or what holds it ("alice", "portal production").
    pub name: String,
    pub created_at: Timestamp,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    /// A token that stops working by itself: the operators' page's sign-in sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// For a session: the id of the token it was signed in with. Revoking that token revokes
    /// its sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_of: Option<String>,
    /// For a session: the digest of the token it was signed in with, read at every request,
    /// so that a session never outlives that token (a revocation racing a sign-in included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_digest: Option<String>,
}

/// A portal's endpoint for notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// The HMAC key of the signatures; shown once, when the webhook is registered.
    pub secret: String,
    pub created_at: Timestamp,
    pub created_by: String,
    /// The last feed entry the receiver acknowledged.
    pub cursor: u64,
    /// Failed deliveries of the entry after the cursor, since the last success.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<Timestamp>,
    /// What its notifications look like: civicflow's own shape, or CloudEvents.
    #[serde(default)]
    pub format: WebhookFormat,
}

/// The shape of a webhook's notifications.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// civicflow's notification, as JSON.
    #[default]
    Civicflow,
    /// A CloudEvents 1.0 event in the structured mode, the notification as its data, with the
    /// lifecycle types of the Serverless Workflow specification where one fits.
    Cloudevents,
}

/// What a webhook receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `step.finished` or `case.finished`.
    #[serde(rename = "type")]
    pub kind: String,
    pub case_id: CaseId,
    pub workflow: String,
    pub version: u32,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The step's or the case's outcome.
    pub status: String,
    /// The step's output, the refusal, or the reason the case ended as it did.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// The case history event it reports: with the case id, the id of its CloudEvent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_seq: Option<u64>,
    /// The chain the case belongs to, when an event or another case started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// What caused the case (on its `case.started`): an event's id, or the end of another case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

/// What a published definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Adapter,
    Workflow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Adapter => "adapter",
            Kind::Workflow => "workflow",
        }
    }
}

/// A definition as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub kind: Kind,
    /// `agency/name` of an adapter, the name of a workflow.
    pub id: String,
    pub version: u32,
    /// The YAML text, exactly as checked.
    pub text: String,
    pub published_at: Timestamp,
    pub published_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<Deprecation>,
}

impl Published {
    /// The name diagnostics give it: `registry:adapter/police/residence-registration@2`.
    pub fn source_name(&self) -> String {
        format!(
            "registry:{}/{}@{}",
            self.kind.as_str(),
            self.id,
            self.version
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprecation {
    pub at: Timestamp,
    pub by: String,
    /// The version to use instead, named in the refusal of new workflows that pin this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<u32>,
    pub reason: String,
}

/// Whether calls to an agency go out. `Open`: they are held (not sent, not counted against
/// the steps' retry budgets) while one probe at a time tests the agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
        }
    }
}

/// An agency's circuit as every node follows it: written by version, so that two nodes (or a
/// node and an operator) cannot both open it, both probe it, or close it under each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Circuit {
    pub agency: String,
    /// 1 for the first write, one more at each: a write names the version it replaces.
    pub version: u64,
    pub state: CircuitState,
    /// When it took its present state.
    pub since: Timestamp,
    /// Who opened it by hand (an operator, for a planned maintenance); `None` when the calls'
    /// failures opened it. A circuit opened by hand is not probed: it stays open until closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The failure last seen from the agency: what opened it, or the last failed probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Probes that failed since it opened: the probe backoff grows with them.
    #[serde(default)]
    pub failed_probes: u32,
    /// While open: when a probe may next be sent, and until when the probe sent holds the
    /// turn (a node that dies mid-probe gives it up when this passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_at: Option<Timestamp>,
    /// Its openings and closings, newest last (at most [`Circuit::CHANGES_KEPT`]).
    #[serde(default)]
    pub changes: Vec<CircuitChange>,
}

impl Circuit {
    pub const CHANGES_KEPT: usize = 100;
}

/// One opening or closing of a circuit, for its audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitChange {
    pub at: Timestamp,
    pub state: CircuitState,
    /// `civicflow` when the calls decided it, else the operator.
    pub by: String,
    pub reason: String,
}

/// One change to the registry, for the audit trail (`registry::Change` to its users).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryChange {
    pub at: Timestamp,
    pub by: String,
    /// `published` or `deprecated`.
    pub action: String,
    pub kind: Kind,
    pub id: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}
