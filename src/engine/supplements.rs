//! The portal's supplement of an incomplete dossier: checked against the request it answers
//! (which, in time, not answered before, only what was asked for), merged into the case's
//! input and checked against the workflow's schema; the step runs again under a new revision,
//! a new idempotency key, since its request to the agency is not the one before.

use serde_json::{Map, Value, json};

use std::sync::Arc;

use super::change::Change;
use super::{Action, ActionError, Engine};
use crate::case::{Case, CaseId, IdempotencyRecord, Made, RequestState, StepStatus};
use crate::store::{Store, StoreError};
use crate::workflow::definition::Workflow;

/// A supplement the portal sends.
#[derive(Debug, Clone)]
pub struct SupplementAsk {
    /// The request it answers (`<step>-<number>`).
    pub request_id: String,
    /// What was missing, shaped as the case's input (`{"mother": {"personal_id": …}}`): merged
    /// into it.
    pub input: Value,
    /// The portal's `Idempotency-Key`, stored with the change.
    pub idempotency: Option<(String, IdempotencyRecord)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupplementError {
    #[error("case {case_id} has no request `{request_id}`{}", known_list(.known))]
    UnknownRequest {
        case_id: crate::case::CaseId,
        request_id: String,
        known: Vec<String>,
    },
    #[error("request `{0}` was already answered at {1}: a request is supplemented once")]
    Answered(String, jiff::Timestamp),
    #[error(
        "request `{0}` expired at {1}: the dossier was not supplemented in time, and the step was refused"
    )]
    Expired(String, jiff::Timestamp),
    #[error(
        "request `{0}` is closed: its step ended without it (the agency answered, or the case was cancelled)"
    )]
    Closed(String),
    #[error("`{field}` was not asked for: request `{request_id}` asks for {asked}")]
    NotRequested {
        field: String,
        request_id: String,
        asked: String,
    },
    #[error("the supplement gives nothing: send what request `{0}` asks for under `input`")]
    Empty(String),
    #[error("the Idempotency-Key was already used with a different supplement of this case")]
    KeyReused,
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "; it has none".to_owned()
    } else {
        format!("; its requests are {}", known.join(", "))
    }
}

/// Every leaf of `value` as a dotted path: what a supplement gives.
fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (k, v) in fields {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// `patch` merged into `base`: objects field by field, anything else replaced.
fn merged(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            let mut out: Map<String, Value> = b.clone();
            for (k, v) in p {
                let next = match out.get(k) {
                    Some(old) => merged(old, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), next);
            }
            Value::Object(out)
        }
        _ => patch.clone(),
    }
}

impl<S: Store + Clone> Engine<S> {
    /// The portal's supplement of case `case_id`, idempotent under `key`: the same key with
    /// the same supplement answers the case as it is now, with another one is refused.
    pub async fn supplement_case(
        self: &Arc<Self>,
        case_id: CaseId,
        request_id: &str,
        input: Value,
        key: Option<&str>,
        by: &str,
    ) -> Result<Case, ActionError> {
        let fingerprint = super::start::fingerprint(request_id, None, &input);
        let key = key.map(|k| format!("supplement:{case_id}:{k}"));
        if let Some(key) = &key
            && let Some(found) = self.store.idempotency(key).await?
        {
            return self.replay_supplement(case_id, found, &fingerprint).await;
        }
        let ask = SupplementAsk {
            request_id: request_id.to_owned(),
            input,
            idempotency: key
                .clone()
                .map(|k| (k, IdempotencyRecord::case(fingerprint.clone(), case_id))),
        };
        let reason = format!("supplement for request {request_id}");
        match self
            .act(case_id, Action::Supplement(ask), by, &reason)
            .await
        {
            Err(ActionError::Store(StoreError::KeyTaken { key })) => {
                let found = self
                    .store
                    .idempotency(&key)
                    .await?
                    .ok_or(StoreError::KeyTaken { key })?;
                self.replay_supplement(case_id, found, &fingerprint).await
            }
            done => done,
        }
    }

    async fn replay_supplement(
        &self,
        case_id: CaseId,
        found: IdempotencyRecord,
        fingerprint: &str,
    ) -> Result<Case, ActionError> {
        let same_case = matches!(found.made, Made::Case { case_id: c } if c == case_id);
        if found.fingerprint != fingerprint || !same_case {
            return Err(SupplementError::KeyReused.into());
        }
        self.store
            .case(case_id)
            .await?
            .ok_or(ActionError::UnknownCase(case_id))
    }

    /// Applies a supplement to a case being changed: the answer's details for the history.
    pub(super) fn supplement(
        &self,
        wf: &Workflow,
        change: &mut Change,
        ask: &SupplementAsk,
        by: &str,
    ) -> Result<Value, ActionError> {
        let case = &change.case;
        let Some(request) = case
            .deadlines
            .supplements
            .iter()
            .find(|r| r.id == ask.request_id)
            .cloned()
        else {
            return Err(SupplementError::UnknownRequest {
                case_id: case.id,
                request_id: ask.request_id.clone(),
                known: case
                    .deadlines
                    .supplements
                    .iter()
                    .map(|r| r.id.clone())
                    .collect(),
            }
            .into());
        };
        match request.state {
            RequestState::Answered => {
                let at = request.answered_at.unwrap_or(request.requested_at);
                return Err(SupplementError::Answered(request.id, at).into());
            }
            RequestState::Expired => {
                return Err(SupplementError::Expired(request.id, request.due_at).into());
            }
            RequestState::Closed => {
                return Err(SupplementError::Closed(request.id).into());
            }
            // Its deadline passed and its timer has not fired yet: too late all the same.
            RequestState::Open if change.now >= request.due_at => {
                return Err(SupplementError::Expired(request.id, request.due_at).into());
            }
            RequestState::Open => {}
        }
        if case.steps[&request.step].status != StepStatus::AwaitingSupplement {
            return Err(ActionError::Conflict(format!(
                "step `{}` is {}, not waiting for this supplement",
                request.step,
                case.steps[&request.step].status.as_str()
            )));
        }
        let mut given = Vec::new();
        leaves("", &ask.input, &mut given);
        given.retain(|g| !g.is_empty());
        if given.is_empty() {
            return Err(SupplementError::Empty(request.id).into());
        }
        if let Some(field) = given.iter().find(|f| !request.asks_for(f)) {
            let asked: Vec<String> = request
                .missing
                .iter()
                .map(|m| format!("`{}`", m.name))
                .collect();
            return Err(SupplementError::NotRequested {
                field: field.clone(),
                request_id: request.id,
                asked: asked.join(", "),
            }
            .into());
        }
        let input = merged(&case.input, &ask.input);
        let keys = self.checked_input(wf, &input)?;
        let step = wf.step(&request.step).ok_or_else(|| {
            ActionError::InvalidData(format!(
                "step `{}` is not in the case's workflow",
                request.step
            ))
        })?;
        change.case.input = input;
        change.case.business_keys = keys;
        let now = change.now;
        change
            .case
            .deadlines
            .settle_open_request(&request.step, RequestState::Answered, now);
        if let Some((key, record)) = &ask.idempotency {
            change
                .tx
                .put_idempotency
                .push((key.clone(), record.clone()));
        }
        change.event(crate::case::EventKind::Supplemented {
            step: request.step.clone(),
            request_id: request.id.clone(),
            fields: given.clone(),
            by: by.to_owned(),
        });
        change.close_step(&request.step);
        let revision = change.case.steps[&request.step].revision + 1;
        change.reset_step(&request.step, revision);
        self.decide.rerun_supplemented(wf, change, step, &request);
        Ok(json!({"request_id": request.id, "fields": given, "revision": revision}))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_supplement_is_merged_field_by_field_and_read_as_dotted_leaves() {
        let base = json!({"mother": {"full_name": "Lan"}, "n": 1});
        let patch = json!({"mother": {"personal_id": "001190123456"}});
        assert_eq!(
            merged(&base, &patch),
            json!({"mother": {"full_name": "Lan", "personal_id": "001190123456"}, "n": 1})
        );
        let mut out = Vec::new();
        leaves("", &json!({"a": {"b": 1, "c": {}}, "d": [1]}), &mut out);
        assert_eq!(out, ["a.b", "a.c", "d"]);
    }
}
