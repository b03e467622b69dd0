//! The audit trail of cases: a hook on every committed change of a case that logs, in the same
//! commit, what the change's history says someone did to it (a callback, an event, a person's
//! action, the lawful basis of an exchange, an erasure). The log then holds what the case holds, never more and
//! never less, whichever part of civicflow made the change; agency exchanges, whose hashes the
//! history does not keep, are logged by the engine as it records their replies.

use super::entry::{Record, text_hash};
use crate::case::EventKind;
use crate::case::inbox::Cause;
use crate::store::{Hook, Preparing, Transaction};

#[derive(Debug, Default)]
pub struct Trail;

impl Hook for Trail {
    fn prepare(&self, change: &mut Preparing<'_>, tx: &mut Transaction) {
        let started_by = change.case.origin.as_ref().map(|o| &o.cause);
        for (case_id, event) in change.events {
            if let Some(record) = record_of(*case_id, &event.kind, started_by) {
                tx.audit.push(record);
            }
        }
    }
}

/// What the log says of an event of a case's history, if it is one the log keeps; `started_by`
/// is what started the case (its start, by a CloudEvent, is that event received).
fn record_of(
    case_id: crate::case::CaseId,
    kind: &EventKind,
    started_by: Option<&Cause>,
) -> Option<Record> {
    Some(match kind {
        EventKind::CaseStarted { .. } => match started_by {
            Some(Cause::Event {
                source,
                id,
                event_type,
            }) => Record::Event {
                case_id,
                source: source.clone(),
                id: id.clone(),
                event_type: event_type.clone(),
                taken_by: Some("start".to_owned()),
            },
            _ => return None,
        },
        EventKind::CallbackReceived { step, result } => Record::Callback {
            case_id,
            step: step.clone(),
            result: result.clone(),
        },
        EventKind::EventReceived {
            source,
            id,
            event_type,
            step,
        } => Record::Event {
            case_id,
            source: source.clone(),
            id: id.clone(),
            event_type: event_type.clone(),
            taken_by: Some(step.clone().unwrap_or_else(|| "kept".to_owned())),
        },
        EventKind::EventNoted {
            source,
            id,
            event_type,
        } => Record::Event {
            case_id,
            source: source.clone(),
            id: id.clone(),
            event_type: event_type.clone(),
            taken_by: None,
        },
        EventKind::OperatorAction {
            action,
            step,
            by,
            reason,
            ..
        } => Record::Action {
            case_id,
            step: step.clone(),
            action: action.as_str().to_owned(),
            by: by.clone(),
            reason_hash: text_hash(reason),
        },
        EventKind::Exchange {
            step,
            purpose,
            lawful_basis,
            law,
            consent_id,
            personal_data,
        } => Record::Basis {
            case_id,
            step: step.clone(),
            purpose: purpose.clone(),
            lawful_basis: lawful_basis.as_str().to_owned(),
            law: law.clone(),
            consent_id: consent_id.clone(),
            personal_data: personal_data.clone(),
        },
        EventKind::PersonalDataErased { why, by, reason } => Record::Erasure {
            case_id: Some(case_id),
            subject: None,
            why: why.clone(),
            by: by.clone(),
            reason_hash: reason.as_deref().map(text_hash),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{CaseId, OperatorActionKind};

    #[test]
    fn a_persons_action_is_logged_with_its_reason_hashed_and_a_step_change_is_not() {
        let id = CaseId::now_v7();
        let retry = EventKind::OperatorAction {
            action: OperatorActionKind::Retry,
            step: Some("birth".into()),
            by: "alice".into(),
            reason: "the mother of Nguyen Van A called".into(),
            details: serde_json::Value::Null,
        };
        let record = record_of(id, &retry, None).unwrap();
        let text = serde_json::to_string(&record).unwrap();
        assert!(!text.contains("Nguyen"), "{text}");
        assert!(text.contains(&text_hash("the mother of Nguyen Van A called")));
        let succeeded = EventKind::StepSucceeded {
            step: "birth".into(),
            output: serde_json::json!({}),
        };
        assert_eq!(record_of(id, &succeeded, None), None);
    }
}
