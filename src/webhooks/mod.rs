//! Notifications to the portal: each step result and each case's end, posted to every
//! registered webhook, signed, in order, and retried until acknowledged.
//!
//! Durability comes from the store, not from memory: the engine appends a [`Notification`] to
//! the store's feed in the same transaction as the change it reports, and each [`Webhook`] keeps
//! a durable cursor into the feed. The deliverer posts what lies after a webhook's cursor and
//! moves the cursor only on a 2xx, so a portal that is down for a while, or a civicflow that
//! crashes mid-delivery, loses nothing: delivery is at least once, and the event id
//! (`Civicflow-Event-Id`, the feed's sequence number) lets the receiver drop a repeat.

mod deliver;

use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::case::{CaseId, Event, EventKind};

pub use deliver::Deliverer;

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

impl Notification {
    /// The notification an event of a case gives rise to, if any: a step's result, or the
    /// case's end.
    pub fn of(
        case_id: CaseId,
        workflow: &str,
        version: u32,
        event: &Event,
    ) -> Option<Notification> {
        let step = |step: &str, status: &str, data: Value| Notification {
            kind: "step.finished".to_owned(),
            case_id,
            workflow: workflow.to_owned(),
            version,
            at: event.at,
            step: Some(step.to_owned()),
            status: status.to_owned(),
            data,
        };
        match &event.kind {
            EventKind::StepSucceeded { step: s, output } => {
                Some(step(s, "succeeded", output.clone()))
            }
            EventKind::StepRejected {
                step: s,
                reason_code,
                message,
            } => Some(step(
                s,
                "rejected",
                serde_json::json!({"reason_code": reason_code, "message": message}),
            )),
            EventKind::StepSkipped { step: s, reason } => {
                Some(step(s, "skipped", serde_json::json!({"reason": reason})))
            }
            EventKind::StepStopped { step: s, reason } => {
                Some(step(s, "stopped", serde_json::json!({"reason": reason})))
            }
            EventKind::CaseFinished { status, reason } => Some(Notification {
                kind: "case.finished".to_owned(),
                case_id,
                workflow: workflow.to_owned(),
                version,
                at: event.at,
                step: None,
                status: status.as_str().to_owned(),
                data: reason
                    .as_ref()
                    .map_or(Value::Null, |r| serde_json::json!({"reason": r})),
            }),
            _ => None,
        }
    }
}

/// The `Civicflow-Signature` header of a body sent at `t` (seconds since the epoch):
/// `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the webhook's secret>`. The time is signed
/// too, so a receiver can refuse an old message replayed.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_the_time_and_the_body() {
        let a = signature("k", 1_790_000_000, b"{}");
        assert!(a.starts_with("t=1790000000,v1="));
        assert_eq!(a.len(), "t=1790000000,v1=".len() + 64);
        assert_ne!(a, signature("k", 1_790_000_001, b"{}"));
        assert_ne!(a, signature("k", 1_790_000_000, b"{ }"));
        assert_ne!(a, signature("other", 1_790_000_000, b"{}"));
    }
}
