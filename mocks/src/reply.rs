//! Replies every mock agency gives: results, business refusals with a machine-readable reason code,
//! and protocol errors. The shape is the same across agencies so that one adapter manifest style
//! fits them all, as the interlinking standard requires of real agencies.

use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A reply decided by a procedure, before any fault is applied to it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// Whether the procedure changed the agency's records (what the effect counters count).
    pub effect: bool,
}

impl Reply {
    /// A record was created.
    pub fn created(body: Value) -> Reply {
        Reply {
            status: StatusCode::CREATED,
            body,
            effect: true,
        }
    }

    /// A request was taken in; the result comes later.
    pub fn accepted(body: Value) -> Reply {
        Reply {
            status: StatusCode::ACCEPTED,
            body,
            effect: true,
        }
    }

    pub fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            effect: false,
        }
    }

    /// The dossier is incomplete (Decree 61/2018, Art. 15(3)): every missing part at once,
    /// each with the dossier's field and why, as form 02 lists them. Nothing is recorded.
    pub fn incomplete(missing: Vec<(String, String)>) -> Reply {
        let list: Vec<Value> = missing
            .iter()
            .map(|(name, reason)| json!({"name": name, "reason": reason}))
            .collect();
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        Reply {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({
                "reason_code": "DOSSIER_INCOMPLETE",
                "message": format!("the dossier is incomplete: {}", names.join(", ")),
                "missing": list,
            }),
            effect: false,
        }
    }

    pub fn not_found(what: &str) -> Reply {
        Refusal::new("NOT_FOUND", format!("{what} does not exist"))
            .with_status(StatusCode::NOT_FOUND)
            .into()
    }
}

/// A business refusal (422) or a protocol error (400, 404, 409), with a stable reason code.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn on_field(mut self, field: impl Into<String>) -> Refusal {
        self.field = Some(field.into());
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> Refusal {
        self.status = status;
        self
    }
}

impl From<Refusal> for Reply {
    fn from(r: Refusal) -> Reply {
        let mut body = json!({ "reason_code": r.code, "message": r.message });
        if let Some(field) = r.field {
            body["field"] = Value::String(field);
        }
        Reply {
            status: r.status,
            body,
            effect: false,
        }
    }
}

/// Parses a request body the way a strict government system does: not JSON is a 400, a missing
/// or malformed field a 422 naming the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if !inner.is_data() {
            return Refusal::new(
                "MALFORMED_REQUEST",
                format!("the request body is not valid JSON: {inner}"),
            )
            .with_status(StatusCode::BAD_REQUEST);
        }
        let text = inner.to_string();
        let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
        if let Some(rest) = message.strip_prefix("missing field `") {
            let field = rest.trim_end_matches('`');
            let full = if path == "." {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            Refusal::new("MISSING_FIELD", format!("the field {full} is required")).on_field(full)
        } else {
            Refusal::new(
                "INVALID_FIELD",
                format!("the field {path} is invalid: {message}"),
            )
            .on_field(path)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Req {
        child: Child,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Child {
        full_name: String,
        date_of_birth: jiff::civil::Date,
    }

    #[test]
    fn names_the_missing_and_the_malformed_field() {
        let missing = parse::<Req>(br#"{"child": {"full_name": "A"}}"#).unwrap_err();
        assert_eq!(
            (missing.code, missing.field.as_deref()),
            ("MISSING_FIELD", Some("child.date_of_birth"))
        );
        let bad = parse::<Req>(br#"{"child": {"full_name": "A", "date_of_birth": "31/12/2026"}}"#)
            .unwrap_err();
        assert_eq!(
            (bad.code, bad.field.as_deref()),
            ("INVALID_FIELD", Some("child.date_of_birth"))
        );
        let garbage = parse::<Req>(b"{nope").unwrap_err();
        assert_eq!(
            (garbage.code, garbage.status),
            ("MALFORMED_REQUEST", StatusCode::BAD_REQUEST)
        );
    }
}
