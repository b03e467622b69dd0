//! What a timer that came due means for a case: a retry, a poll, a watchdog, a deadline.

use crate::adapters::http::{Metadata, Sender};
use crate::case::{StepStatus, Timer, TimerKind};
use crate::engine::change::{Call, Change};
use crate::workflow::definition::Workflow;
use crate::workflow::spec::Method;

use super::attempt::WATCHDOG_MARGIN;
use super::progress::{Decider, idempotency_key};

impl Decider {
    /// A timer of the case came due (the change has already cleared it).
    pub fn on_timer(&self, wf: &Workflow, change: &mut Change, timer: &Timer) {
        match &timer.kind {
            TimerKind::Retry { step } => {
                let (Some(def), Some(s)) = (wf.step(step), change.case.steps.get(step)) else {
                    return;
                };
                match s.status {
                    StepStatus::Backoff => {
                        let n = s.attempt + 1;
                        self.attempt_or_hold(def, change, n);
                    }
                    StepStatus::WaitingForAgency if self.circuits.is_open(&s.agency) => {
                        self.hold(def, change, false);
                    }
                    StepStatus::WaitingForAgency => self.release(def, change),
                    StepStatus::Calling => {
                        let error = "no reply was recorded within the timeout: the server stopped or the reply was lost".to_owned();
                        self.retry_or_fail(def, change, error, None, None);
                    }
                    _ => {}
                }
            }
            TimerKind::Poll { step } => {
                let (Some(def), Some(s)) = (wf.step(step), change.case.steps.get(step)) else {
                    return;
                };
                if s.status != StepStatus::Polling {
                    return;
                }
                // Its agency is down: ask again at the next interval, without a call.
                if self.circuits.is_open(&s.agency) {
                    self.schedule_poll(def, change);
                    return;
                }
                let Some(url) = s.poll_url.clone() else {
                    return;
                };
                let (revision, attempt) = (s.revision, s.attempt);
                let (agency, adapter) = (s.agency.clone(), s.adapter.clone());
                let key = idempotency_key(&change.case, step, revision);
                let user = self.end_user(def, &change.case);
                let meta = Metadata::new(
                    change.case.id,
                    key,
                    uuid::Uuid::new_v4().to_string(),
                    Sender {
                        client: &self.xroad_client,
                        adapter: &adapter,
                        user: user.as_deref(),
                    },
                );
                // If the process stops mid-poll, this timer polls again.
                change.set_timer(
                    TimerKind::Poll { step: step.clone() },
                    change.now + def.timeout + WATCHDOG_MARGIN,
                );
                Call {
                    case_id: change.case.id,
                    agency,
                    adapter,
                    step: step.clone(),
                    revision,
                    attempt,
                    poll: true,
                    method: Method::Get,
                    url,
                    headers: Vec::new(),
                    body: None,
                    meta,
                    timeout: def.timeout,
                    ready_at: change.began,
                }
                .queue(change);
            }
            TimerKind::StepDeadline { step } => self.step_due(wf, change, step),
            TimerKind::CaseDeadline => self.case_due(wf, change),
            TimerKind::Reminder { step } => self.remind(change, Some(step)),
            TimerKind::CaseReminder => self.remind(change, None),
            TimerKind::SupplementDue { step } => self.supplement_due(wf, change, step),
            TimerKind::InboxExpiry => self.expire_kept(change),
            // The engine starts the chained cases, erases a case and reads its consents again
            // itself (each needs the store); nothing here.
            TimerKind::Chain | TimerKind::Erasure | TimerKind::ConsentCheck => {}
        }
    }
}
