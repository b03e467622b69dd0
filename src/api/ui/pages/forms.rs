//! What every page shares: the API's typed inputs built from the page's forms, the incident
//! filter as the form sends it, and the names the forms offer.

use std::collections::BTreeSet;

use axum::Json;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::auth::Caller;
use crate::api::ui::UiError;
use crate::api::ui::session::Session;
use crate::api::{ApiError, AppState};
use crate::store::Store;

/// How many incidents a page lists.
pub(super) const PAGE: usize = 50;
/// The most incidents a bulk retry is counted over before it is confirmed (the API's own bound).
pub(super) const MAX_BULK: usize = 10_000;

impl Session {
    pub(super) fn caller(&self) -> Caller {
        Caller(self.caller.0.clone())
    }
}

/// The API's typed input built from JSON, as a request body or query would be: an error here
/// is a bug of the page, not the operator's.
pub(super) fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, UiError> {
    serde_json::from_value(v).map_err(|e| UiError::Api(ApiError::internal(e)))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(Json(v): Json<Value>) -> Result<T, UiError> {
    typed(v)
}

/// The incident list's filter, as the page's form sends it: empty fields mean "any".
#[derive(Debug, Default, Clone, Deserialize)]
pub struct IncidentFilterForm {
    #[serde(default)]
    pub workflow: String,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub agency: String,
    #[serde(default)]
    pub reason: String,
    /// Waiting at least this long: `1h`, `1d`, `3d`, `7d`.
    #[serde(default)]
    pub age: String,
    /// `oldest` (default) or `newest`.
    #[serde(default)]
    pub order: String,
}

impl IncidentFilterForm {
    /// The API's filter fields (`workflow`, `step`, `agency`, `reason`, `opened_before`).
    pub(super) fn api_fields(&self, now: Timestamp) -> Map<String, Value> {
        let mut fields = Map::new();
        for (name, value) in [
            ("workflow", &self.workflow),
            ("step", &self.step),
            ("agency", &self.agency),
            ("reason", &self.reason),
        ] {
            if !value.trim().is_empty() {
                fields.insert(name.to_owned(), json!(value.trim()));
            }
        }
        if let Some(age) = age(&self.age) {
            fields.insert("opened_before".to_owned(), json!(now - age));
        }
        fields
    }

    /// This filter as a query string, for the links of the next page.
    pub(super) fn query(&self) -> String {
        let pairs = [
            ("workflow", &self.workflow),
            ("step", &self.step),
            ("agency", &self.agency),
            ("reason", &self.reason),
            ("age", &self.age),
            ("order", &self.order),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

pub(super) fn age(text: &str) -> Option<SignedDuration> {
    match text {
        "1h" => Some(SignedDuration::from_hours(1)),
        "1d" => Some(SignedDuration::from_hours(24)),
        "3d" => Some(SignedDuration::from_hours(72)),
        "7d" => Some(SignedDuration::from_hours(168)),
        _ => None,
    }
}

/// `text` as a URL's query value.
pub(super) fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The loaded workflows' names, once each, for a filter's choices.
pub(super) fn workflow_names<S: Store + Clone>(state: &AppState<S>) -> Vec<String> {
    let names: BTreeSet<String> = state
        .engine
        .definitions()
        .workflow_names()
        .map(str::to_owned)
        .collect();
    names.into_iter().collect()
}
