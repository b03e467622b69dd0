//! The records the store keeps besides cases (whose types are in `crate::case`): API tokens,
//! webhooks and their notifications, published definitions and the registry's audit trail.
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
