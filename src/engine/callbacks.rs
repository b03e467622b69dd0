//! An agency's answer to a `callback` step, through the step's token: taken once, by the
//! step's own agency, and recorded before it is acknowledged.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::Value;

use crate::case::{CallbackTarget, CaseId, IdempotencyRecord};
use crate::store::{Store, StoreError};
use crate::traces::CaseSpan;
use opentelemetry::trace::SpanKind;

use super::change::Change;
use super::drive::lost_race;
use super::start::fingerprint;
use super::{Engine, MissingWorkflow};

#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("no step waits for this callback token")]
    UnknownToken,
    #[error("step `{step}` belongs to agency `{agency}`; only its own agency may answer it")]
    OtherAgency { step: String, agency: String },
    #[error(
        "step `{step}` of case {case_id} has already finished ({status}); this callback changes nothing"
    )]
    Finished {
        case_id: CaseId,
        step: String,
        status: &'static str,
    },
    #[error(
        "step `{step}` of case {case_id} was re-run since this token was issued; use the new token"
    )]
    Superseded { case_id: CaseId, step: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Missing(#[from] MissingWorkflow),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAck {
    Recorded,
    /// The same callback (same `Idempotency-Key`) was recorded before: nothing changed.
    Duplicate,
    /// The agency says "not yet": nothing to record.
    StillPending,
}

impl<S: Store + Clone> Engine<S> {
    /// An agency's answer to a `callback` step, through the step's token. `agency` is who the
    /// caller authenticated as: only the step's own agency may answer it.
    pub async fn callback(
        self: &Arc<Self>,
        token: &str,
        agency: &str,
        message_key: Option<&str>,
        headers: Value,
        body: Value,
    ) -> Result<CallbackAck, CallbackError> {
        let began = Instant::now();
        let from = SystemTime::now();
        if self.stopping() {
            return Err(CallbackError::ShuttingDown);
        }
        let message_key = message_key
            .map(str::to_owned)
            .unwrap_or_else(|| fingerprint("callback", None, &body));
        let seen_key = format!("callback:{token}:{message_key}");
        let target: CallbackTarget = self
            .store
            .token(token)
            .await?
            .ok_or(CallbackError::UnknownToken)?;
        let mut lock = self.locks.lock(target.case_id).await;
        let mut round = 0;
        loop {
            round += 1;
            let case = lock
                .load(&self.store)
                .await?
                .ok_or(CallbackError::UnknownToken)?;
            let step = case
                .steps
                .get(&target.step)
                .ok_or(CallbackError::UnknownToken)?;
            if step.agency != agency {
                return Err(CallbackError::OtherAgency {
                    step: target.step,
                    agency: step.agency.clone(),
                });
            }
            if self.store.idempotency(&seen_key).await?.is_some() {
                return Ok(CallbackAck::Duplicate);
            }
            let workflow = self.workflow_for(&case).await?;
            // Both answers tell the agency to stop sending: the state they come from must be
            // durable first.
            if step.revision != target.revision {
                self.store.settle().await?;
                return Err(CallbackError::Superseded {
                    case_id: case.id,
                    step: target.step,
                });
            }
            if step.status.is_final() {
                self.store.settle().await?;
                return Err(CallbackError::Finished {
                    case_id: case.id,
                    step: target.step,
                    status: step.status.as_str(),
                });
            }
            let now = self.config.clock.now();
            let rev = case.rev;
            let mut change = Change::new(case, Some(rev), now, began);
            let ack = self.decide.on_callback(
                &workflow,
                &mut change,
                &target.step,
                headers.clone(),
                body.clone(),
            );
            if ack == CallbackAck::Recorded {
                change.tx.put_idempotency.push((
                    seen_key.clone(),
                    IdempotencyRecord::case(message_key.clone(), change.case.id),
                ));
            }
            match self.finish_change(&workflow, change, &mut lock).await {
                Ok(()) => {}
                Err(e) if lost_race(&e, round) => continue,
                // The same callback, recorded meanwhile through another node: answered as a
                // duplicate once its record is durable.
                Err(StoreError::KeyTaken { .. }) => {
                    self.store.settle().await?;
                    return Ok(CallbackAck::Duplicate);
                }
                Err(e) => return Err(e.into()),
            }
            self.overhead.record_step_overhead(began.elapsed());
            let outcome = match ack {
                CallbackAck::Recorded => "recorded",
                CallbackAck::Duplicate => "duplicate",
                CallbackAck::StillPending => "still_pending",
            };
            self.traces.case_span(
                target.case_id,
                CaseSpan::new(format!("callback {}", target.step), SpanKind::Server, from)
                    .attribute("civicflow.step", target.step.clone())
                    .attribute("civicflow.agency", agency.to_owned())
                    .outcome(outcome, false),
            );
            return Ok(ack);
        }
    }
}
