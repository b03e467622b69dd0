//! A CloudEvents 1.0 event, as civicflow receives and keeps it: the context attributes the
//! specification requires (`id`, `source`, `specversion`, `type`), the optional ones it names
//! (`subject`, `time`, `datacontenttype`, `dataschema`), the data, and extension attributes
//! (`correlationid`, `causationid`, `traceparent`, …). `source` + `id` identify an event: the
//! same pair again is the same event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The specification version civicflow speaks.
pub const SPEC_VERSION: &str = "1.0";

/// The longest attribute value kept: an id or a source is an index key.
pub const MAX_ATTRIBUTE_BYTES: usize = 512;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Extension attributes: lowercase letters and digits, at most 20 characters, each.
    #[serde(flatten)]
    pub extensions: BTreeMap<String, Value>,
}

/// Why a JSON value is not a CloudEvent civicflow takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("attribute `{0}` is required")]
    Missing(&'static str),
    #[error("attribute `{name}` must be {what}")]
    Wrong { name: String, what: &'static str },
    #[error("specversion `{0}` is not supported; this server speaks CloudEvents 1.0")]
    Version(String),
    #[error(
        "`{0}` is not a valid extension attribute name (lowercase letters and digits, at most 20)"
    )]
    ExtensionName(String),
    #[error("data_base64 is not taken: civicflow reads JSON data only")]
    Binary,
}

impl Invalid {
    /// The attribute the problem is in, for the error's `field`.
    pub fn attribute(&self) -> &str {
        match self {
            Invalid::Missing(n) => n,
            Invalid::Wrong { name, .. } | Invalid::ExtensionName(name) => name,
            Invalid::Version(_) => "specversion",
            Invalid::Binary => "data_base64",
        }
    }
}

const KNOWN: [&str; 9] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
];

impl CloudEvent {
    /// Reads an event in the structured JSON form, checking every attribute.
    pub fn from_json(value: Value) -> Result<CloudEvent, Invalid> {
        let Value::Object(mut map) = value else {
            return Err(Invalid::Wrong {
                name: "event".into(),
                what: "a JSON object",
            });
        };
        if map.contains_key("data_base64") {
            return Err(Invalid::Binary);
        }
        let mut text = |name: &'static str, required: bool| -> Result<Option<String>, Invalid> {
            match map.remove(name) {
                None | Some(Value::Null) if required => Err(Invalid::Missing(name)),
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if required && s.is_empty() => Err(Invalid::Wrong {
                    name: name.into(),
                    what: "a non-empty string",
                }),
                Some(Value::String(s)) if s.len() > MAX_ATTRIBUTE_BYTES => Err(Invalid::Wrong {
                    name: name.into(),
                    what: "at most 512 bytes",
                }),
                Some(Value::String(s)) if s.chars().any(char::is_control) => Err(Invalid::Wrong {
                    name: name.into(),
                    what: "printable text",
                }),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(Invalid::Wrong {
                    name: name.into(),
                    what: "a string",
                }),
            }
        };
        let specversion = text("specversion", true)?.expect("required");
        let id = text("id", true)?.expect("required");
        let source = text("source", true)?.expect("required");
        let event_type = text("type", true)?.expect("required");
        let subject = text("subject", false)?;
        let time = text("time", false)?;
        let datacontenttype = text("datacontenttype", false)?;
        let dataschema = text("dataschema", false)?;
        if specversion != SPEC_VERSION {
            return Err(Invalid::Version(specversion));
        }
        if let Some(t) = &time
            && t.parse::<jiff::Timestamp>().is_err()
        {
            return Err(Invalid::Wrong {
                name: "time".into(),
                what: "an RFC 3339 timestamp",
            });
        }
        if let Some(c) = &datacontenttype
            && !is_json(c)
        {
            return Err(Invalid::Wrong {
                name: "datacontenttype".into(),
                what: "JSON (`application/json` or `…+json`): civicflow reads JSON data only",
            });
        }
        let data = map.remove("data").filter(|d| !d.is_null());
        for name in map.keys() {
            let ok = !name.is_empty()
                && name.len() <= 20
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !ok || KNOWN.contains(&name.as_str()) {
                return Err(Invalid::ExtensionName(name.clone()));
            }
        }
        Ok(CloudEvent {
            specversion,
            id,
            source,
            event_type,
            subject,
            time,
            datacontenttype,
            dataschema,
            data,
            extensions: map.into_iter().collect(),
        })
    }

    /// What identifies the event: its `source` and `id`.
    pub fn key(&self) -> String {
        format!("{}\u{1f}{}", self.source, self.id)
    }

    /// A text extension attribute.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions.get(name).and_then(Value::as_str)
    }

    /// The event as expressions read it: its attributes, `data` among them.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an event serializes")
    }
}

/// What an event did to one case: the answer to its source, kept with the event's record so
/// that the same event again is answered the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Routed {
    pub workflow: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    pub action: Action,
    /// Why, when the event did not start or reach a case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// It started the case.
    Started,
    /// A step of the case waited for it and took it.
    Taken,
    /// The case keeps it for a step that does not wait yet.
    Kept,
    /// The running case with its key has it in its history; no step of it waits for it.
    Noted,
    /// A case with its key runs, and the workflow ignores events for running cases (or the
    /// case has ended).
    Ignored,
    /// It could not start a case (its input does not fit the workflow, a `when` failed).
    Refused,
}

/// Whether a media type is JSON.
pub fn is_json(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn death() -> Value {
        json!({
            "specversion": "1.0",
            "id": "c-1",
            "source": "urn:vn:moh:hospital:bach-mai",
            "type": "vn.gov.moh.death.certified.v1",
            "time": "2026-12-07T08:00:00Z",
            "datacontenttype": "application/json",
            "correlationid": "k-9",
            "data": {"deceased": {"personal_id": "001080001234"}}
        })
    }

    #[test]
    fn a_structured_event_reads_with_its_extensions() {
        let e = CloudEvent::from_json(death()).unwrap();
        assert_eq!(e.event_type, "vn.gov.moh.death.certified.v1");
        assert_eq!(e.extension("correlationid"), Some("k-9"));
        assert_eq!(e.to_value()["correlationid"], "k-9");
        assert_eq!(e.key(), "urn:vn:moh:hospital:bach-mai\u{1f}c-1");
    }

    #[test]
    fn each_required_attribute_is_named_when_missing() {
        for name in ["specversion", "id", "source", "type"] {
            let mut v = death();
            v.as_object_mut().unwrap().remove(name);
            assert_eq!(
                CloudEvent::from_json(v).unwrap_err(),
                Invalid::Missing(match name {
                    "specversion" => "specversion",
                    "id" => "id",
                    "source" => "source",
                    _ => "type",
                })
            );
        }
    }

    #[test]
    fn wrong_attributes_are_refused() {
        let with = |k: &str, v: Value| {
            let mut e = death();
            e[k] = v;
            CloudEvent::from_json(e).unwrap_err()
        };
        assert_eq!(
            with("specversion", json!("0.3")),
            Invalid::Version("0.3".into())
        );
        assert_eq!(with("time", json!("yesterday")).attribute(), "time");
        assert_eq!(with("id", json!(7)).attribute(), "id");
        assert_eq!(with("id", json!("")).attribute(), "id");
        assert_eq!(
            with("datacontenttype", json!("text/xml")).attribute(),
            "datacontenttype"
        );
        assert_eq!(with("Bad-Name", json!("x")).attribute(), "Bad-Name");
        assert_eq!(with("data_base64", json!("AA==")), Invalid::Binary);
    }

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("application/xml"));
    }
}
