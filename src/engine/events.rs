//! CloudEvents received (`POST /v1/events`): each starts the workflows whose trigger takes it
//! (or, when a case with its business key runs, goes to that case: signal-with-start) and
//! reaches the running cases a step of which waits, or will wait, for it. What it did is
//! recorded under its `source` + `id` in the same store as everything else, and only then
//! answered: the same event again is answered from the record and does nothing new. Every part
//! is idempotent on its own (a start under a key derived from the event or the business key, a
//! delivery that a case takes once), so an event interrupted by a crash and sent again by its
//! source does what it did, once.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use crate::case::cloud_event::{Action, Routed};
use crate::case::inbox::{Cause, index_value};
use crate::case::{CaseId, CaseStatus, CloudEvent, IdempotencyRecord, Made, Origin, index};
use crate::store::{Order, Store, StoreError, Transaction};
use crate::workflow::definition::Workflow;
use crate::workflow::spec::IfRunning;
use crate::workflow::triggers::{On, match_value};

use super::Engine;
use super::change::Change;
use super::drive::lost_race;
use super::start::{Caused, StartError};

/// The most cases one event reaches through waiting steps: a match value names one dossier.
const MAX_WAITING: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event `{id}` from `{origin}` was received before with other content")]
    IdReused { origin: String, id: String },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an event did: to each case it started or reached.
#[derive(Debug, Clone)]
pub struct Received {
    pub routed: Vec<Routed>,
    /// Answered from the record of the same event received before.
    pub replayed: bool,
}

impl<S: Store + Clone> Engine<S> {
    /// Receives one CloudEvent: starts, delivers, records, in that order.
    pub async fn receive_event(
        self: &Arc<Self>,
        event: CloudEvent,
    ) -> Result<Received, EventError> {
        if self.stopping() {
            return Err(EventError::ShuttingDown);
        }
        let key = format!("event:{}", event.key());
        let fingerprint = super::start::fingerprint(&event.event_type, None, &event.to_value());
        if let Some(found) = self.store.idempotency(&key).await? {
            return replay(found, &fingerprint, &event);
        }
        let defs = self.definitions();
        let mut routed = Vec::new();
        let triggers: Vec<_> = defs
            .event_triggers(&event.event_type, &event.source)
            .collect();
        for (wf, i) in triggers {
            if let Some(r) = self.trigger(&wf, i, &event).await? {
                routed.push(r);
            }
        }
        let reached: BTreeSet<String> = routed.iter().filter_map(|r| r.case_id.clone()).collect();
        let data = event.to_value();
        let values: BTreeSet<String> = defs
            .waits_for(&event.event_type, &event.source)
            .filter_map(|w| w.from.eval(&data).ok().as_ref().and_then(match_value))
            .collect();
        for value in values {
            let entry = index_value(&event.event_type, &value);
            let page = self
                .store
                .cases_by(index::AWAITS, &entry, None, Order::Ascending, MAX_WAITING)
                .await?;
            for id in page.ids {
                if reached.contains(&id.to_string()) {
                    continue;
                }
                if let Some(r) = self.deliver_event(id, &event).await? {
                    routed.push(r);
                }
            }
        }
        let record = IdempotencyRecord {
            fingerprint: fingerprint.clone(),
            made: Made::Event {
                routed: routed.clone(),
            },
        };
        let tx = Transaction {
            put_idempotency: vec![(key.clone(), record)],
            ..Transaction::default()
        };
        match self.store.commit(&tx).await {
            Ok(()) => Ok(Received {
                routed,
                replayed: false,
            }),
            // The same event, sent twice at once: answered as the one recorded first.
            Err(StoreError::KeyTaken { .. }) => {
                let found = self
                    .store
                    .idempotency(&key)
                    .await?
                    .ok_or(StoreError::KeyTaken { key })?;
                replay(found, &fingerprint, &event)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What trigger `i` of `wf` makes of `event`: a case started, or the event delivered to
    /// (or ignored by) the running case with its business key; `None` if its `when` is false.
    async fn trigger(
        self: &Arc<Self>,
        wf: &Arc<Workflow>,
        i: usize,
        event: &CloudEvent,
    ) -> Result<Option<Routed>, EventError> {
        let trigger = &wf.triggers[i];
        let On::Event(on) = &trigger.on else {
            return Ok(None);
        };
        let refused = |detail: String| Routed {
            workflow: wf.name.clone(),
            case_id: None,
            action: Action::Refused,
            detail: Some(detail),
        };
        let context = json!({ "event": event.to_value() });
        if let Some(when) = &trigger.when {
            match when.eval_bool(&context) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => {
                    return Ok(Some(refused(format!(
                        "its `when` cannot be evaluated: {e}"
                    ))));
                }
            }
        }
        let input = match trigger.with.eval(&context) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Some(refused(format!(
                    "its `with` cannot be evaluated: {e}"
                ))));
            }
        };
        let start_key = match &on.key {
            Some(key) => {
                let Some(value) = wf.key_of(key, &input) else {
                    return Ok(Some(refused(format!(
                        "the input made from it has no business key `{key}`"
                    ))));
                };
                let entry = format!("{key}={value}");
                let page = self
                    .store
                    .cases_by(index::KEY, &entry, None, Order::Ascending, MAX_WAITING)
                    .await?;
                let mut earlier = 0;
                for id in page.ids {
                    let Some(case) = self.store.case(id).await? else {
                        continue;
                    };
                    if case.workflow != wf.name {
                        continue;
                    }
                    earlier += 1;
                    if case.status == CaseStatus::Running {
                        return Ok(Some(match on.if_running {
                            IfRunning::Ignore => Routed {
                                workflow: wf.name.clone(),
                                case_id: Some(id.to_string()),
                                action: Action::Ignored,
                                detail: Some(format!("case {id} with {entry} is running")),
                            },
                            IfRunning::Deliver => self.deliver_or_note(id, event).await?,
                        }));
                    }
                }
                // Two events for one key at once both count the same cases before them, so
                // they start under the same key: one case, and the other event reaches it.
                format!("trigger:{}:{entry}:{earlier}", wf.name)
            }
            None => format!("event:{}:{}", event.key(), wf.name),
        };
        let caused = Caused {
            origin: Origin {
                cause: Cause::Event {
                    source: event.source.clone(),
                    id: event.id.clone(),
                    event_type: event.event_type.clone(),
                },
                correlation_id: event
                    .extension("correlationid")
                    .unwrap_or(&event.id)
                    .to_owned(),
                causation_id: event.id.clone(),
                depth: 0,
            },
            event: Some(event.clone()),
        };
        let started = self
            .start_caused(
                &wf.name,
                Some(wf.version),
                input,
                Some(&start_key),
                event.extension("traceparent"),
                Some(caused),
            )
            .await;
        Ok(Some(match started {
            Ok((case, _)) => Routed {
                workflow: wf.name.clone(),
                case_id: Some(case.id.to_string()),
                action: Action::Started,
                detail: None,
            },
            Err(StartError::KeyReused { case_id }) => self.deliver_or_note(case_id, event).await?,
            Err(StartError::Store(e)) => return Err(e.into()),
            Err(StartError::ShuttingDown) => return Err(EventError::ShuttingDown),
            Err(StartError::InvalidInput(violations)) => refused(format!(
                "the input made from it does not match the workflow's input schema: {}",
                crate::workflow::definition::SchemaViolation::prose(&violations)
            )),
            Err(e) => refused(e.to_string()),
        }))
    }

    async fn deliver_or_note(
        self: &Arc<Self>,
        id: CaseId,
        event: &CloudEvent,
    ) -> Result<Routed, EventError> {
        Ok(self
            .deliver_event(id, event)
            .await?
            .unwrap_or_else(|| Routed {
                workflow: String::new(),
                case_id: Some(id.to_string()),
                action: Action::Ignored,
                detail: Some(format!("case {id} has ended")),
            }))
    }

    /// Hands `event` to case `id`: a waiting step takes it, or the case keeps it for a step
    /// that will wait. `None` if the case has ended or is gone.
    async fn deliver_event(
        self: &Arc<Self>,
        id: CaseId,
        event: &CloudEvent,
    ) -> Result<Option<Routed>, EventError> {
        let received = std::time::Instant::now();
        let mut lock = self.locks.lock(id).await;
        let mut round = 0;
        loop {
            round += 1;
            let Some(case) = lock.load(&self.store).await? else {
                return Ok(None);
            };
            if case.status != CaseStatus::Running {
                return Ok(None);
            }
            let Ok(wf) = self.workflow_for(&case).await else {
                return Ok(Some(Routed {
                    workflow: case.workflow.clone(),
                    case_id: Some(id.to_string()),
                    action: Action::Ignored,
                    detail: Some("its workflow is not loaded".to_owned()),
                }));
            };
            let rev = case.rev;
            let mut change = Change::new(case, Some(rev), self.config.clock.now(), received);
            let action = self.decide.receive_event(&wf, &mut change, event.clone());
            if change.tx.events.is_empty() {
                // A redelivery: the case has it already.
                return Ok(Some(routed(&wf.name, id, action)));
            }
            match self.finish_change(&wf, change, &mut lock).await {
                Err(e) if lost_race(&e, round) => continue,
                Err(e) => return Err(e.into()),
                Ok(()) => return Ok(Some(routed(&wf.name, id, action))),
            }
        }
    }
}

fn routed(workflow: &str, id: CaseId, action: Action) -> Routed {
    Routed {
        workflow: workflow.to_owned(),
        case_id: Some(id.to_string()),
        action,
        detail: None,
    }
}

fn replay(
    found: IdempotencyRecord,
    fingerprint: &str,
    event: &CloudEvent,
) -> Result<Received, EventError> {
    match found.made {
        Made::Event { routed } if found.fingerprint == fingerprint => Ok(Received {
            routed,
            replayed: true,
        }),
        Made::Event { .. } => Err(EventError::IdReused {
            origin: event.source.clone(),
            id: event.id.clone(),
        }),
        _ => Err(StoreError::Corrupt {
            path: "the store".into(),
            detail: "an event's record names no routing".into(),
        }
        .into()),
    }
}
