//! An incomplete dossier (Decree 61/2018, Art. 15(3), 17, 19(4)): the agency says what is
//! missing, once and completely; the citizen supplements it by a deadline; the step runs again
//! with its statutory clock started again. Each request is kept, answered or not.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One thing the agency finds missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Missing {
    /// Where in the dossier (the case's input), as a dotted path: `mother.personal_id`.
    pub name: String,
    /// Why, as the citizen reads it.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for the citizen.
    Open,
    /// Supplemented; the step ran again.
    Answered,
    /// Its deadline passed unanswered: the step was refused, `not_supplemented`.
    Expired,
    /// The step ended otherwise meanwhile: the agency answered after all, or the case was
    /// cancelled.
    Closed,
}

/// An agency's request for a supplement (form 02).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SupplementRequest {
    /// `<step>-<number>`: what a supplement names to answer it.
    pub id: String,
    pub step: String,
    /// The step's first request is 1.
    pub number: u32,
    pub missing: Vec<Missing>,
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: Timestamp,
    /// The citizen's deadline: the close of its last working day.
    #[schema(value_type = String, format = DateTime)]
    pub due_at: Timestamp,
    pub state: RequestState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub answered_at: Option<Timestamp>,
    /// Working days the step, and the case, had left when it asked: what a `resume` clock
    /// gives back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_left: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_left: Option<u32>,
}

impl SupplementRequest {
    /// Whether the dotted path `field` is under one of the names asked for.
    pub fn asks_for(&self, field: &str) -> bool {
        self.missing.iter().any(|m| {
            field == m.name
                || field
                    .strip_prefix(m.name.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }
}

/// What an adapter's `missing` expression gave, read as the list it must be: `[{name,
/// reason}]` or `[name]`, not empty (the agency asks once, completely), each name a dotted path.
pub fn missing_of(value: &Value) -> Result<Vec<Missing>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "the list of what is missing is not a list: {value}"
        ));
    };
    if items.is_empty() {
        return Err("the agency asks for a supplement but names nothing missing".to_owned());
    }
    items
        .iter()
        .map(|item| {
            let missing = match item {
                Value::String(name) => Missing {
                    name: name.clone(),
                    reason: String::new(),
                },
                Value::Object(fields) => Missing {
                    name: fields
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    reason: fields
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                },
                other => return Err(format!("{other} is neither a name nor `{{name, reason}}`")),
            };
            let path = missing.name.split('.').all(|part| !part.is_empty());
            if missing.name.is_empty() || !path || missing.name.len() > 200 {
                return Err(format!(
                    "`{}` is not a dotted path into the dossier",
                    missing.name
                ));
            }
            Ok(missing)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_asks_for_its_names_and_what_is_under_them() {
        let r = SupplementRequest {
            id: "birth-1".into(),
            step: "birth".into(),
            number: 1,
            missing: vec![Missing {
                name: "mother.personal_id".into(),
                reason: String::new(),
            }],
            requested_at: Timestamp::UNIX_EPOCH,
            due_at: Timestamp::UNIX_EPOCH,
            state: RequestState::Open,
            answered_at: None,
            step_left: None,
            case_left: None,
        };
        assert!(r.asks_for("mother.personal_id"));
        assert!(r.asks_for("mother.personal_id.x"));
        assert!(!r.asks_for("mother.personal_id_2"));
        assert!(!r.asks_for("mother"));
        assert!(!r.asks_for("father.personal_id"));
    }

    #[test]
    fn the_missing_list_is_names_or_name_and_reason_and_never_empty() {
        let read = |v: serde_json::Value| missing_of(&v);
        assert_eq!(
            read(serde_json::json!(["a.b", {"name": "c", "reason": "why"}])).unwrap(),
            [
                Missing {
                    name: "a.b".into(),
                    reason: String::new()
                },
                Missing {
                    name: "c".into(),
                    reason: "why".into()
                }
            ]
        );
        for bad in [
            serde_json::json!([]),
            serde_json::json!("a"),
            serde_json::json!([1]),
            serde_json::json!([{"reason": "no name"}]),
            serde_json::json!(["a..b"]),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }
}
