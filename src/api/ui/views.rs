//! What the pages show, read from the JSON the API answered (so masked as the API masks it),
//! with times in Vietnam's time zone and waits in words.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use crate::calendar::vietnam_time;

/// `at` as a Vietnamese reader writes it: `30/11/2026 14:05`.
pub fn local(at: &Timestamp) -> String {
    at.to_zoned(vietnam_time())
        .strftime("%d/%m/%Y %H:%M")
        .to_string()
}

/// A statutory due date: the last day still in time, in Vietnam (a due time is the close of
/// that day, which is the next day's midnight).
pub fn local_date(at: &Timestamp) -> String {
    crate::calendar::due_day(*at)
        .strftime("%d/%m/%Y")
        .to_string()
}

/// How long from `since` to `now`, in the largest two units: `3 days 4 h`, `25 min`.
pub fn waited(since: &Timestamp, now: &Timestamp) -> String {
    let d = now.duration_since(*since).max(SignedDuration::ZERO);
    let secs = d.as_secs();
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, mins) {
        (0, 0, 0) => "under a minute".to_owned(),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (1, h, _) => format!("1 day {h} h"),
        (d, h, _) => format!("{d} days {h} h"),
    }
}

/// The most characters of a sentence a list shows; the case page shows it whole.
const LISTED: usize = 160;

/// `text` cut at [`LISTED`] characters, with an ellipsis if it was longer.
pub fn shortened(text: &str) -> String {
    match text.char_indices().nth(LISTED) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// What an incident means, in a sentence an operator reads at a glance.
pub fn incident_sentence(reason: &str, agency: Option<&str>, message: &str) -> String {
    let agency = agency.unwrap_or("the agency");
    match reason {
        "retries_exhausted" => format!("{agency} did not answer after every retry: {message}"),
        "unexpected_reply" => {
            format!("{agency} answered something its adapter does not understand: {message}")
        }
        "deadline_missed" => {
            format!("The statutory deadline passed while waiting for {agency}: {message}")
        }
        "invalid_data" => {
            format!("The request to {agency} could not be built from the case's data: {message}")
        }
        "workflow_not_loaded" => {
            format!("The case's workflow is not loaded on this server: {message}")
        }
        "refusal_awaiting_action" => format!(
            "{agency} refused, and the case waits for a correction or for the refusal to stand: {message}"
        ),
        other => format!("{other}: {message}"),
    }
}

/// One row of the incident list (`GET /v1/incidents`).
#[derive(Debug, Deserialize)]
pub struct IncidentRow {
    pub case_id: String,
    pub workflow: String,
    pub version: u32,
    pub step: Option<String>,
    pub agency: Option<String>,
    pub reason: String,
    pub message: String,
    pub opened_at: Timestamp,
}

/// An agency that is down now, from the incident list's `outages`.
#[derive(Debug, Deserialize)]
pub struct Outage {
    pub agency: String,
    #[serde(default)]
    pub held_steps: u64,
}

#[derive(Debug, Deserialize)]
pub struct IncidentPage {
    pub items: Vec<IncidentRow>,
    pub next: Option<String>,
    #[serde(default)]
    pub outages: Vec<Outage>,
    #[serde(default)]
    pub damaged: Vec<String>,
}

/// A case (`GET /v1/cases/{id}`).
#[derive(Debug, Deserialize)]
pub struct Case {
    pub id: String,
    pub workflow: String,
    pub version: u32,
    pub status: String,
    pub reason: Option<String>,
    pub input: Value,
    #[serde(default)]
    pub business_keys: BTreeMap<String, String>,
    pub started_at: Timestamp,
    pub due_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub steps: BTreeMap<String, Step>,
    #[serde(default)]
    pub incidents: Vec<CaseIncident>,
    pub life_event: Option<crate::case::LifeEvent>,
    pub extension: Option<crate::case::Extension>,
    #[serde(default)]
    pub escalated: BTreeMap<String, String>,
    #[serde(default)]
    pub supplements: Vec<crate::case::SupplementRequest>,
    pub origin: Option<crate::case::Origin>,
    #[serde(default)]
    pub retention: crate::case::Retention,
}

#[derive(Debug, Deserialize)]
pub struct Step {
    pub status: String,
    pub adapter: Option<String>,
    pub agency: Option<String>,
    #[serde(default)]
    pub revision: u32,
    #[serde(default)]
    pub attempts: u32,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub due_at: Option<Timestamp>,
    pub output: Option<Value>,
    pub rejection: Option<Rejection>,
    pub error: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Rejection {
    pub reason_code: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub struct CaseIncident {
    pub reason: String,
    pub step: Option<String>,
    pub message: String,
    pub opened_at: Timestamp,
}

/// An event of a case's history (`GET /v1/cases/{id}/history`), with what the timeline shows.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub at: Timestamp,
    #[serde(rename = "type")]
    pub kind: String,
    pub step: Option<String>,
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

impl Event {
    /// The event's details other than what the timeline shows anyway, as `key: value` lines.
    pub fn details(&self) -> Vec<(String, String)> {
        self.rest
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "case_id" | "seq"))
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.replace('_', " "), text)
            })
            .collect()
    }
}

/// A case in a list of a citizen's cases (`GET /v1/cases?key=`).
#[derive(Debug, Deserialize)]
pub struct CaseSummary {
    pub id: String,
    pub workflow: String,
    pub status: String,
    pub started_at: Timestamp,
    pub due_at: Option<Timestamp>,
    #[serde(default)]
    pub business_keys: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_vietnam_and_waits_in_words() {
        let at: Timestamp = "2026-11-30T17:30:00Z".parse().unwrap();
        assert_eq!(local(&at), "01/12/2026 00:30");
        assert_eq!(local_date(&at), "01/12/2026");
        let later = |s: i64| at + SignedDuration::from_secs(s);
        assert_eq!(waited(&at, &later(20)), "under a minute");
        assert_eq!(waited(&at, &later(25 * 60)), "25 min");
        assert_eq!(waited(&at, &later(3 * 3600 + 60)), "3 h 1 min");
        assert_eq!(waited(&at, &later(2 * 86_400 + 4 * 3600)), "2 days 4 h");
        assert_eq!(waited(&later(60), &at), "under a minute");
    }

    #[test]
    fn a_long_sentence_is_cut_on_a_character_boundary() {
        let long = "Hồ sơ ".repeat(40);
        let cut = shortened(&long);
        assert_eq!(cut.chars().count(), LISTED + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(shortened("ngắn"), "ngắn");
    }
}
