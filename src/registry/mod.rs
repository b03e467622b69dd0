//! The registry of definitions published at run time: adapters an agency registers, workflows
//! that use them. A published definition is immutable (a change is a new version), kept in the
//! store as the text that was checked, and every change to the registry is recorded with who
//! made it and when.

mod publish;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use publish::{PublishError, Registry, Retire};

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

/// One change to the registry, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
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
