//! Starting a case: its input checked against the workflow's schema, its business keys,
//! and the Idempotency-Key that makes a retried start return the same case.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::Value;

use crate::calendar::vietnam_time;
use crate::case::inbox::{Expect, Kept};
use crate::case::{
    Case, CaseId, CaseStatus, CloudEvent, Deadlines, EventKind, IdempotencyRecord, Inbox,
    LifeEvent, Made, Origin, StepState, Tier, TimerKind,
};
use crate::store::{Store, StoreError};
use crate::workflow::deadline::Deadline;
use crate::workflow::definition::{SchemaViolation, Workflow};
use crate::workflow::expr::{EvalError, Input, Part};
use crate::workflow::triggers::{match_value, source_taken};

use super::Engine;
use super::change::Change;

/// The key of the idempotency record of a start under the caller's key `key`.
pub(super) fn start_record_key(key: &str) -> String {
    format!("start:{key}")
}

/// The longest business-key value a case may have: it is an index key, and a citizen's ID or a
/// dossier number is far shorter.
pub const MAX_KEY_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no workflow named `{name}`{}", version.map(|v| format!(" in version {v}")).unwrap_or_default())]
    UnknownWorkflow { name: String, version: Option<u32> },
    #[error("the input does not match the workflow's input schema")]
    InvalidInput(Vec<SchemaViolation>),
    #[error("business key `{key}` cannot be computed: {error}")]
    BusinessKey { key: String, error: EvalError },
    #[error(
        "business key `{key}` is {len} bytes long; at most {MAX_KEY_BYTES} are kept in the index"
    )]
    BusinessKeyTooLong { key: String, len: usize },
    #[error(
        "business key `{key}` holds a control character (U+{code:04X}); a key is printable text"
    )]
    BusinessKeyControl { key: String, code: u32 },
    #[error("the life event's date cannot be read from the input: {0}")]
    LifeEvent(String),
    #[error("the Idempotency-Key was already used with a different request, for case {case_id}")]
    KeyReused { case_id: CaseId },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What started a case when the portal did not: the event or the case behind it, and the
/// event itself, which the case keeps for a step that waits for it.
#[derive(Debug, Clone)]
pub struct Caused {
    pub origin: Origin,
    pub event: Option<CloudEvent>,
}

impl<S: Store + Clone> Engine<S> {
    /// Starts a case: checks the input, writes the case and its first events in one
    /// transaction, then starts the steps that are ready.
    pub async fn start(
        self: &Arc<Self>,
        name: &str,
        version: Option<u32>,
        input: Value,
        idempotency_key: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<(Case, bool), StartError> {
        self.start_caused(name, version, input, idempotency_key, traceparent, None)
            .await
    }

    /// [`Engine::start`] for a case an event or another case started.
    pub async fn start_caused(
        self: &Arc<Self>,
        name: &str,
        version: Option<u32>,
        input: Value,
        idempotency_key: Option<&str>,
        traceparent: Option<&str>,
        caused: Option<Caused>,
    ) -> Result<(Case, bool), StartError> {
        let began = Instant::now();
        let from = SystemTime::now();
        if self.stopping() {
            return Err(StartError::ShuttingDown);
        }
        let workflow = match self.definitions().workflow(name, version) {
            Some(wf) => wf,
            // Perhaps published on another node since this one last looked.
            None => {
                if let Err(e) = self.reload_definitions().await {
                    tracing::error!(error = %e, "the definitions cannot be loaded again");
                }
                self.definitions().workflow(name, version).ok_or_else(|| {
                    StartError::UnknownWorkflow {
                        name: name.to_owned(),
                        version,
                    }
                })?
            }
        };
        let fingerprint = fingerprint(name, version, &input);
        let idem_key = idempotency_key.map(start_record_key);
        if let Some(key) = &idem_key
            && let Some(found) = self.store.idempotency(key).await?
        {
            return self.replay_start(found, &fingerprint).await;
        }
        let violations = workflow.input.violations(&input);
        if !violations.is_empty() {
            return Err(StartError::InvalidInput(violations));
        }
        let keys = self.business_keys(&workflow, &input)?;
        let now = self.config.clock.now();
        let started_on = now.to_zoned(vietnam_time()).date();
        let life_event = life_event(&workflow, &input, started_on)?;
        let id = CaseId::now_v7();
        let (origin, event) = caused.map_or((None, None), |c| (Some(c.origin), c.event));
        let inbox = self.inbox_at_start(&workflow, &input, event, now);
        let consents = self.consents_at_start(&workflow, &input).await?;
        let case = Case {
            id,
            workflow: workflow.name.clone(),
            version: workflow.version,
            status: CaseStatus::Running,
            input,
            business_keys: keys,
            started_at: now,
            started_on,
            due_at: None,
            finished_at: None,
            reason: None,
            steps: workflow
                .steps
                .iter()
                .map(|s| {
                    (
                        s.id.clone(),
                        StepState::new(&s.adapter.reference, &s.adapter.agency),
                    )
                })
                .collect(),
            incidents: Vec::new(),
            timers: BTreeMap::new(),
            next_seq: 0,
            tallies: Vec::new(),
            deadlines: Deadlines {
                life_event,
                ..Deadlines::default()
            },
            origin,
            inbox,
            consents,
            retention: Default::default(),
            // Kept only when well formed: it is the portal's, and it is stored.
            traceparent: traceparent
                .filter(|t| crate::traces::parse_traceparent(t).is_some())
                .map(str::to_owned),
            rev: 0,
        };
        let mut lock = self.locks.lock(id).await;
        let mut change = Change::new(case, None, now, began);
        change.event(EventKind::CaseStarted {
            workflow: workflow.name.clone(),
            version: workflow.version,
        });
        if let Some(expiry) = change.case.inbox.next_expiry() {
            change.set_timer(TimerKind::InboxExpiry, expiry);
        }
        if let Some(deadline) = workflow.deadline {
            match self.decide.calendar.due(now, deadline) {
                Ok(due) => {
                    change.case.due_at = Some(due);
                    self.decide
                        .schedule_due(&mut change, None, due, &workflow.consequences);
                }
                Err(e) => change.note_calendar_error(None, &e),
            }
        }
        if let Some(key) = idem_key {
            change
                .tx
                .put_idempotency
                .push((key, IdempotencyRecord::case(fingerprint.clone(), id)));
        }
        self.decide.progress(&workflow, &mut change);
        let (case, calls) = match self.commit(change).await {
            Ok(done) => done,
            // Another request with the same key won the race: answer as its replay.
            Err(StoreError::KeyTaken { key }) => {
                let found = self
                    .store
                    .idempotency(&key)
                    .await?
                    .ok_or_else(|| StoreError::KeyTaken { key: key.clone() })?;
                return self.replay_start(found, &fingerprint).await;
            }
            Err(e) => return Err(e.into()),
        };
        lock.remember_if_busy(case.clone(), &workflow, &calls);
        self.traces.case_started(
            case.id,
            &case.workflow,
            case.version,
            from,
            case.traceparent.as_deref(),
        );
        self.dispatch(calls);
        drop(lock);
        if !case.consents.is_empty() {
            self.recheck_consents(case.id, &case.consents).await?;
        }
        Ok((case, true))
    }

    /// A new case's inbox: what each waiting step expects, from the input, and the event that
    /// started it, kept for the step that waits for it.
    fn inbox_at_start(
        &self,
        workflow: &Workflow,
        input: &Value,
        event: Option<CloudEvent>,
        now: jiff::Timestamp,
    ) -> Inbox {
        let mut inbox = Inbox::default();
        let context = Input::of(Part::Object(vec![("input", Part::Borrowed(input))]));
        let mut keep_days = None;
        for step in &workflow.steps {
            let Some(wait) = &step.wait_for else { continue };
            let value = wait.expect.eval_in(&context).ok();
            if let Some(value) = value.as_ref().and_then(match_value) {
                inbox.expects.insert(
                    step.id.clone(),
                    Expect {
                        event_type: wait.event_type.clone(),
                        value,
                    },
                );
            }
            if let Some(e) = &event
                && e.event_type == wait.event_type
                && source_taken(&wait.sources, &e.source)
            {
                keep_days = keep_days.max(Some(wait.keep_early));
            }
        }
        if let (Some(event), Some(days)) = (event, keep_days)
            && let Ok(expires_at) = self.decide.calendar.due(now, Deadline::WorkingDays(days))
        {
            inbox.kept.push(Kept {
                event,
                received_at: now,
                expires_at,
            });
        }
        inbox
    }

    /// The business keys of a case with this input, as the workflow computes them.
    pub(super) fn business_keys(
        &self,
        workflow: &Workflow,
        input: &Value,
    ) -> Result<BTreeMap<String, String>, StartError> {
        let mut keys = BTreeMap::new();
        if workflow.business_keys.is_empty() {
            return Ok(keys);
        }
        let context = Input::of(Part::Object(vec![("input", Part::Borrowed(input))]));
        for (key, expr) in &workflow.business_keys {
            let value = expr
                .eval_in(&context)
                .map_err(|error| StartError::BusinessKey {
                    key: key.clone(),
                    error,
                })?;
            let value = match value {
                Value::String(s) => s,
                Value::Null => continue,
                other => other.to_string(),
            };
            if value.len() > MAX_KEY_BYTES {
                return Err(StartError::BusinessKeyTooLong {
                    key: key.clone(),
                    len: value.len(),
                });
            }
            if let Some(c) = value.chars().find(|c| c.is_control()) {
                return Err(StartError::BusinessKeyControl {
                    key: key.clone(),
                    code: u32::from(c),
                });
            }
            keys.insert(key.clone(), value);
        }
        Ok(keys)
    }

    async fn replay_start(
        &self,
        found: IdempotencyRecord,
        fingerprint: &str,
    ) -> Result<(Case, bool), StartError> {
        let Made::Case { case_id } = found.made else {
            return Err(StoreError::Corrupt {
                path: "the store".into(),
                detail: "a start's idempotency record names no case".into(),
            }
            .into());
        };
        if found.fingerprint != fingerprint {
            return Err(StartError::KeyReused { case_id });
        }
        let case = self
            .store
            .case(case_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                path: "the store".into(),
                detail: format!("an idempotency record names case {case_id}, which does not exist"),
            })?;
        Ok((case, false))
    }
}

/// The case's standing against its life event's legal time limit: on time if it starts on the
/// limit's last day or before.
fn life_event(
    workflow: &Workflow,
    input: &Value,
    started_on: jiff::civil::Date,
) -> Result<Option<LifeEvent>, StartError> {
    let Some(rule) = &workflow.life_event else {
        return Ok(None);
    };
    let context = Input::of(Part::Object(vec![("input", Part::Borrowed(input))]));
    let date = match rule.date.eval_in(&context) {
        Ok(Value::Null) => return Ok(None),
        Ok(Value::String(text)) => text
            .parse::<jiff::civil::Date>()
            .map_err(|e| StartError::LifeEvent(format!("`{text}` is not a date: {e}")))?,
        Ok(other) => {
            return Err(StartError::LifeEvent(format!(
                "{other} is not a date (`YYYY-MM-DD`)"
            )));
        }
        Err(e) => return Err(StartError::LifeEvent(e.to_string())),
    };
    if date > started_on {
        return Err(StartError::LifeEvent(format!(
            "{date} is after today ({started_on}): the event has not happened yet"
        )));
    }
    let limit = rule
        .limit(date)
        .ok_or_else(|| StartError::LifeEvent(format!("{date} is out of range")))?;
    let tier = if started_on <= limit {
        Tier::OnTime
    } else {
        Tier::Late
    };
    Ok(Some(LifeEvent { date, limit, tier }))
}

/// A stable digest of a request, to tell a retried request from a different one under the same
/// key. Not a security boundary: FNV-1a over canonical JSON.
pub(super) fn fingerprint(name: &str, version: Option<u32>, input: &Value) -> String {
    let mut hash = Fnv1a(0xcbf2_9ce4_8422_2325);
    // Hashed as it is written, the same bytes as `format!("{name}\0{version:?}\0{input}")`
    // without the text in between.
    use std::io::Write as _;
    write!(hash, "{name}\u{0}{version:?}\u{0}").expect("hashing does not fail");
    serde_json::to_writer(&mut hash, input).expect("JSON values serialize");
    format!("{:016x}", hash.0)
}

/// FNV-1a over the bytes written to it.
struct Fnv1a(u64);

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::fingerprint;

    /// Stored idempotency records hold fingerprints: they must not change between versions.
    #[test]
    fn a_fingerprint_is_fnv1a_of_name_version_and_compact_json() {
        let input = json!({"child": {"name": "An"}, "n": [1, 2.5, null]});
        assert_eq!(
            fingerprint("birth-registration", Some(1), &input),
            "9bcda5019c4c2c85"
        );
        assert_eq!(
            fingerprint("birth-registration", None, &json!({})),
            "064cb03573333292"
        );
    }
}
