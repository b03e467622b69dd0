//! Notifications to the portal: each step result, each case's end, and what its deadlines
//! bring (a reminder, an escalation, an apology with a new date), and an agency's request for
//! a supplement of an incomplete dossier, posted to every
//! registered webhook, signed, in order, and retried until acknowledged.
//!
//! Durability comes from the store, not from memory: the engine appends a [`Notification`] to
//! the store's feed in the same transaction as the change it reports, and each [`Webhook`] keeps
//! a durable cursor into the feed. The deliverer posts what lies after a webhook's cursor and
//! moves the cursor only on a 2xx, so a portal that is down for a while, or a civicflow that
//! crashes mid-delivery, loses nothing: delivery is at least once, and the event id
//! (`Civicflow-Event-Id`, the feed's sequence number) lets the receiver drop a repeat.

mod deliver;
mod feed;
mod lifecycle;
mod target;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::case::{CaseId, Event, EventKind};

pub use crate::store::WebhookFormat;
pub use crate::store::{Notification, Webhook};
pub use deliver::Deliverer;
pub use feed::Feed;
pub use lifecycle::{STARTED, cloud_event, event_id};
pub use target::{PublicOnly, TargetError, Targets, is_internal};

impl Notification {
    /// The notification an event of a case gives rise to, if any: a step's result, the
    /// case's end, or what a deadline brought (a reminder, an escalation, a new date).
    pub fn of(
        case_id: CaseId,
        workflow: &str,
        version: u32,
        event: &Event,
    ) -> Option<Notification> {
        let notice = |kind: &str, step: Option<&str>, status: &str, data: Value| Notification {
            kind: kind.to_owned(),
            case_id,
            workflow: workflow.to_owned(),
            version,
            at: event.at,
            step: step.map(str::to_owned),
            status: status.to_owned(),
            data,
            event_seq: Some(event.seq),
            correlation_id: None,
            causation_id: None,
        };
        let step = |step: &str, status: &str, data: Value| {
            notice("step.finished", Some(step), status, data)
        };
        // `step.<what>` for a step, `case.<what>` for the case as a whole.
        let whose = |step: &Option<String>, what: &str| {
            let of = if step.is_some() { "step" } else { "case" };
            format!("{of}.{what}")
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
            EventKind::CaseFinished { status, reason } => Some(notice(
                "case.finished",
                None,
                status.as_str(),
                reason
                    .as_ref()
                    .map_or(Value::Null, |r| serde_json::json!({"reason": r})),
            )),
            EventKind::CaseStarted { .. } => Some(notice(STARTED, None, "running", Value::Null)),
            EventKind::Reminded { step: s, due_at } => Some(notice(
                &whose(s, "reminder"),
                s.as_deref(),
                "due_soon",
                serde_json::json!({"due_at": due_at}),
            )),
            EventKind::Escalated {
                step: s,
                to,
                due_at,
            } => Some(notice(
                &whose(s, "escalated"),
                s.as_deref(),
                "overdue",
                serde_json::json!({"escalated_to": to, "due_at": due_at}),
            )),
            EventKind::SupplementRequested {
                step: s,
                request_id,
                number,
                missing,
                due_at,
            } => Some(notice(
                "step.supplement_requested",
                Some(s),
                "awaiting_supplement",
                serde_json::json!({
                    "request_id": request_id,
                    "number": number,
                    "missing": missing,
                    "due_at": due_at,
                }),
            )),
            EventKind::Extended {
                step: s,
                reason_code,
                reason,
                previous_due,
                due_at,
                ..
            } => Some(notice(
                "case.extended",
                s.as_deref(),
                "extended",
                serde_json::json!({
                    "previous_due": previous_due,
                    "due_at": due_at,
                    "reason_code": reason_code,
                    "reason": reason,
                }),
            )),
            EventKind::EventAwaited {
                step: s,
                event_type,
                due_at,
                ..
            } => Some(notice(
                "step.awaiting_event",
                Some(s),
                "awaiting_event",
                serde_json::json!({"event_type": event_type, "due_at": due_at}),
            )),
            EventKind::ConsentAwaited {
                step: s,
                agreement,
                due_at,
            } => Some(notice(
                "step.awaiting_consent",
                Some(s),
                "awaiting_consent",
                serde_json::json!({"agreement": agreement, "due_at": due_at}),
            )),
            EventKind::ChainStarted {
                workflow: next,
                case_id: started,
            } => Some(notice(
                "case.chained",
                None,
                "chained",
                serde_json::json!({"workflow": next, "case_id": started}),
            )),
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
