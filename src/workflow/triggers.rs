//! What starts a case besides the portal, and what a step waits for, compiled: a CloudEvent of
//! a type from a trusted source (`on: - event`), another workflow's case ending (`on: - case`,
//! a chain), and a step's `wait_for`.

use crate::workflow::deadline::Deadline;
use crate::workflow::definition::Template;
use crate::workflow::expr::Expr;
use crate::workflow::spec::{ChainOutcome, IfRunning};

/// The longest chain of cases started by cases: a loop the validator could not see (a
/// workflow published later, a chain through events) stops here.
pub const MAX_CHAIN_DEPTH: u32 = 8;

#[derive(Debug)]
pub struct Trigger {
    pub on: On,
    pub when: Option<Expr>,
    pub with: Template,
}

#[derive(Debug)]
pub enum On {
    Event(EventOn),
    Case {
        workflow: String,
        outcome: ChainOutcome,
    },
}

#[derive(Debug)]
pub struct EventOn {
    pub event_type: String,
    pub sources: Vec<String>,
    /// A business key of the workflow: the case it names, running, gets the event instead.
    pub key: Option<String>,
    pub if_running: IfRunning,
}

/// An event a step waits for before it calls its agency.
#[derive(Debug)]
pub struct WaitFor {
    pub event_type: String,
    pub sources: Vec<String>,
    /// Over the event: the value that names the case.
    pub from: Expr,
    /// Over `.input`: the case's value, computed when the case starts.
    pub expect: Expr,
    pub within: Deadline,
    /// Working days an early event is kept for the step.
    pub keep_early: u32,
}

/// How long an early event is kept when the step does not say.
pub const KEEP_EARLY_DAYS: u32 = 10;

/// Whether an event's `source` is among `prefixes`: equal to one, or under it.
pub fn source_taken(prefixes: &[String], source: &str) -> bool {
    prefixes.iter().any(|p| source.starts_with(p.as_str()))
}

/// The value an expression found, as the text an index holds: a string as it is, anything
/// else as JSON; `None` for null (nothing to match).
pub fn match_value(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_source_is_taken_under_a_prefix() {
        let prefixes = vec!["urn:vn:moh:hospital:".to_owned()];
        assert!(source_taken(&prefixes, "urn:vn:moh:hospital:bach-mai"));
        assert!(!source_taken(&prefixes, "urn:vn:moh:clinic:x"));
    }

    #[test]
    fn a_match_value_is_text() {
        assert_eq!(match_value(&json!("079")), Some("079".into()));
        assert_eq!(match_value(&json!(12)), Some("12".into()));
        assert_eq!(match_value(&json!(null)), None);
    }
}
