//! Chains: a case's end starts the workflows that follow it (`on: - case: {workflow,
//! outcome}`), with what it produced. The commit that ends the case sets a `chain` timer when
//! any loaded workflow follows it; the timer, fired under its claim, starts each follower under
//! a key derived from the ended case (a crash and a second firing start nothing twice) and
//! records what it started in the ended case's history, in the commit that clears the timer.
//! Every case of a chain carries its `correlationid`; each names the case end that caused it
//! (`causationid`) and how deep in the chain it is, and a chain longer than
//! [`MAX_CHAIN_DEPTH`] stops: the validator refuses a chain that leads back to its start, and
//! this is what stops a loop it could not see.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::case::inbox::Cause;
use crate::case::{Case, CaseStatus, EventKind, Origin, TimerKind};
use crate::store::{Store, StoreError};
use crate::workflow::spec::ChainOutcome;
use crate::workflow::triggers::MAX_CHAIN_DEPTH;

use super::Engine;
use super::change::Change;
use super::start::{Caused, StartError};

/// How a case ended, as chains name it; `None` while it runs.
pub(super) fn outcome_of(status: CaseStatus) -> Option<ChainOutcome> {
    match status {
        CaseStatus::Running => None,
        CaseStatus::Completed => Some(ChainOutcome::Completed),
        CaseStatus::Rejected | CaseStatus::PartiallyCompleted => Some(ChainOutcome::Refused),
        CaseStatus::Cancelled => Some(ChainOutcome::Failed),
    }
}

impl<S: Store + Clone> Engine<S> {
    /// Before a change commits: if it ends the case and a workflow follows this end, the
    /// chain timer goes in the same commit.
    pub(super) fn mark_chain(&self, change: &mut Change) {
        let finished = change
            .tx
            .events
            .iter()
            .any(|(_, e)| matches!(e.kind, EventKind::CaseFinished { .. }));
        if !finished {
            return;
        }
        let Some(outcome) = outcome_of(change.case.status) else {
            return;
        };
        if self
            .definitions()
            .followers(&change.case.workflow, outcome)
            .next()
            .is_some()
        {
            change.set_timer(TimerKind::Chain, change.now);
        }
    }

    /// The chain timer of an ended case fired: starts each follower, recording what it did.
    /// `false` if the server is stopping: nothing is committed, and the timer fires again
    /// once its claim lapses.
    pub(super) async fn run_chains(
        self: &Arc<Self>,
        change: &mut Change,
    ) -> Result<bool, StoreError> {
        let case = change.case.clone();
        let Some(outcome) = outcome_of(case.status) else {
            return Ok(true);
        };
        let depth = case.origin.as_ref().map_or(0, |o| o.depth) + 1;
        let correlation_id = case
            .origin
            .as_ref()
            .map_or_else(|| case.id.to_string(), |o| o.correlation_id.clone());
        let causation_id = self.finished_event_id(&case).await?;
        let context = ended_case_context(&case);
        let followers: Vec<_> = self
            .definitions()
            .followers(&case.workflow, outcome)
            .collect();
        for (wf, i) in followers {
            let trigger = &wf.triggers[i];
            let not_started = |reason: String| EventKind::ChainNotStarted {
                workflow: wf.name.clone(),
                reason,
            };
            if depth > MAX_CHAIN_DEPTH {
                change.event(not_started(format!(
                    "the chain would be {depth} cases long; a chain stops at {MAX_CHAIN_DEPTH}"
                )));
                continue;
            }
            match trigger.when.as_ref().map(|w| w.eval_bool(&context)) {
                Some(Ok(false)) => continue,
                Some(Err(e)) => {
                    change.event(not_started(format!("its `when` cannot be evaluated: {e}")));
                    continue;
                }
                None | Some(Ok(true)) => {}
            }
            let input = match trigger.with.eval(&context) {
                Ok(v) => v,
                Err(e) => {
                    change.event(not_started(format!("its `with` cannot be evaluated: {e}")));
                    continue;
                }
            };
            let caused = Caused {
                origin: Origin {
                    cause: Cause::Case {
                        case_id: case.id.to_string(),
                        workflow: case.workflow.clone(),
                        outcome: outcome.as_str().to_owned(),
                    },
                    correlation_id: correlation_id.clone(),
                    causation_id: causation_id.clone(),
                    depth,
                },
                event: None,
            };
            let key = format!("chain:{}:{}", case.id, wf.name);
            let traceparent = crate::traces::case_traceparent(case.id);
            match self
                .start_caused(
                    &wf.name,
                    Some(wf.version),
                    input,
                    Some(&key),
                    Some(&traceparent),
                    Some(caused),
                )
                .await
            {
                Ok((started, _)) => change.event(EventKind::ChainStarted {
                    workflow: wf.name.clone(),
                    case_id: started.id.to_string(),
                }),
                Err(StartError::Store(e)) => return Err(e),
                Err(StartError::ShuttingDown) => return Ok(false),
                Err(StartError::InvalidInput(v)) => change.event(not_started(format!(
                    "the input made from case {} does not match the input schema: {}",
                    case.id,
                    crate::workflow::definition::SchemaViolation::prose(&v)
                ))),
                Err(e) => change.event(not_started(e.to_string())),
            }
        }
        Ok(true)
    }

    /// The id of the lifecycle event of the case's end: the `causationid` of what it starts.
    async fn finished_event_id(&self, case: &Case) -> Result<String, StoreError> {
        let from = case.next_seq.saturating_sub(16);
        let events = self.store.history(case.id, from, 16).await?;
        let seq = events
            .iter()
            .rev()
            .find(|e| matches!(e.kind, EventKind::CaseFinished { .. }))
            .map_or(case.next_seq.saturating_sub(1), |e| e.seq);
        Ok(crate::webhooks::event_id(case.id, seq))
    }
}

/// What the `when` and `with` of a chain see of the case that ended.
pub(super) fn ended_case_context(case: &crate::case::Case) -> Value {
    let steps: serde_json::Map<String, Value> = case
        .steps
        .iter()
        .filter_map(|(id, s)| Some((id.clone(), json!({ "output": s.output.clone()? }))))
        .collect();
    json!({
        "case": {
            "id": case.id.to_string(),
            "workflow": case.workflow,
            "version": case.version,
            "status": case.status.as_str(),
            "reason": case.reason,
            "business_keys": case.business_keys,
        },
        "input": case.input,
        "steps": steps,
    })
}
