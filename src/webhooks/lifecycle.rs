//! A notification as a CloudEvent, for a webhook that asks for them: the case id as `subject`,
//! the id of the case's history event as its `id` (so a redelivery is the same event), the
//! chain's `correlationid` and `causationid`, the case's trace context as `traceparent` (the
//! distributed-tracing extension), the notification as `data`. Its type is a lifecycle event of
//! the CNCF Serverless Workflow specification where one fits (`workflow.started`, `completed`,
//! `faulted`, `cancelled`; `task.completed`, `faulted`, `skipped`), else civicflow's own
//! (`vn.civicflow.step.reminder.v1`, …).

use serde_json::{Value, json};

use super::Notification;
use crate::case::CaseId;

/// The kind of the notification of a case's start: CloudEvents webhooks receive it, civicflow's
/// own shape never did and does not.
pub const STARTED: &str = "case.started";

/// The id of the CloudEvent of case `case`'s history event `seq`: what a chained case names
/// as its cause.
pub fn event_id(case: CaseId, seq: u64) -> String {
    format!("{case}.{seq}")
}

/// The CloudEvent of notification `n`, at feed position `seq`.
pub fn cloud_event(n: &Notification, seq: u64) -> Value {
    let id = match n.event_seq {
        Some(event) => event_id(n.case_id, event),
        None => format!("feed.{seq}"),
    };
    let mut data = json!(n);
    for internal in ["event_seq", "correlation_id", "causation_id"] {
        data.as_object_mut().map(|o| o.remove(internal));
    }
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("urn:civicflow:workflow:{}:{}", n.workflow, n.version),
        "type": event_type(n),
        "subject": n.case_id.to_string(),
        "time": n.at.to_string(),
        "datacontenttype": "application/json",
        "correlationid": n.correlation_id.clone().unwrap_or_else(|| n.case_id.to_string()),
        "traceparent": crate::traces::case_traceparent(n.case_id),
        "data": data,
    });
    if let Some(cause) = &n.causation_id {
        event["causationid"] = json!(cause);
    }
    event
}

fn event_type(n: &Notification) -> String {
    let lifecycle = match (n.kind.as_str(), n.status.as_str()) {
        (STARTED, _) => Some("workflow.started"),
        ("case.finished", "completed") => Some("workflow.completed"),
        ("case.finished", "cancelled") => Some("workflow.cancelled"),
        ("case.finished", _) => Some("workflow.faulted"),
        ("step.finished", "succeeded") => Some("task.completed"),
        ("step.finished", "rejected") => Some("task.faulted"),
        ("step.finished", _) => Some("task.skipped"),
        _ => None,
    };
    match lifecycle {
        Some(t) => format!("io.serverlessworkflow.{t}.v1"),
        None => format!("vn.civicflow.{}.v1", n.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(kind: &str, status: &str) -> Notification {
        Notification {
            kind: kind.into(),
            case_id: CaseId::now_v7(),
            workflow: "death-registration".into(),
            version: 3,
            at: "2026-12-07T01:00:00Z".parse().unwrap(),
            step: None,
            status: status.into(),
            data: Value::Null,
            event_seq: Some(7),
            correlation_id: Some("GBT-1/certified".into()),
            causation_id: None,
        }
    }

    #[test]
    fn a_case_end_is_a_serverless_workflow_lifecycle_event() {
        let n = notification("case.finished", "completed");
        let e = cloud_event(&n, 40);
        assert_eq!(e["type"], "io.serverlessworkflow.workflow.completed.v1");
        assert_eq!(e["id"], format!("{}.7", n.case_id));
        assert_eq!(e["subject"], n.case_id.to_string());
        assert_eq!(e["correlationid"], "GBT-1/certified");
        assert_eq!(e["data"]["status"], "completed");
        assert!(e["data"].get("event_seq").is_none());
        assert!(
            e["traceparent"]
                .as_str()
                .unwrap()
                .contains(&n.case_id.simple().to_string())
        );
        let refused = cloud_event(&notification("case.finished", "rejected"), 1);
        assert_eq!(refused["type"], "io.serverlessworkflow.workflow.faulted.v1");
        let reminder = cloud_event(&notification("step.reminder", "due_soon"), 1);
        assert_eq!(reminder["type"], "vn.civicflow.step.reminder.v1");
    }
}
