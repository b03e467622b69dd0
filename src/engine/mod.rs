//! The engine: takes a case, runs its workflow's steps against the agencies, and never loses or
//! repeats anything, whatever happens to the process.
//!
//! Every change to a case goes through [`Engine::change`] under the case's lock: load, decide,
//! commit (durable), and only then act (send a request, answer a callback). A case that waits
//! (for a timer, a callback or an operator) is only on disk: the engine holds nothing for it.

mod actions;
mod adapter_test;
mod agency_outages;
mod change;
mod clock;
mod decide;
mod drive;
mod end_watch;
mod locks;
mod step_overhead;
mod timers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::Notify;

use crate::calendar::{Calendar, vietnam_time};
use crate::case::{
    CallbackTarget, Case, CaseId, CaseStatus, Event, EventKind, IdempotencyRecord, Made, StepState,
    TimerKind,
};
use crate::circuits::Circuits;
use crate::metrics::Metrics;
use crate::registry::{PublishError, Registry};
use crate::store::{FailureLog, Hook, Store, StoreError};
use crate::traces::{CaseSpan, Traces};
use crate::workflow::definition::{Definitions, SchemaViolation, Workflow};
use crate::workflow::expr::{EvalError, Input, Part};
use opentelemetry::trace::SpanKind;

pub use actions::{Action, ActionError};
pub use adapter_test::TrialError;
pub use change::Call;
pub use clock::Clock;
pub use step_overhead::{Overhead, Percentiles};

use change::Change;
use decide::Decider;
use drive::lost_race;

/// Where civicflow is reached by agencies (for callback URLs) and where each agency is.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL agencies call back, e.g. `http://127.0.0.1:7100`.
    pub public_url: String,
    /// Agency id → base URL.
    pub agencies: BTreeMap<String, String>,
    /// How long SIGTERM waits for in-flight calls before parking them.
    pub drain_timeout: Duration,
    /// How long work this node claims (a due timer, a webhook's deliveries) stays its own
    /// without renewal: how soon another node takes over the work of one that died or stalled.
    pub claim_lease: Duration,
    pub clock: Clock,
    /// When agencies' circuits open and how held steps are released.
    pub circuits: crate::circuits::Settings,
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
    #[error("the Idempotency-Key was already used with a different request, for case {case_id}")]
    KeyReused { case_id: CaseId },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

/// A case runs the workflow version it started on; that version must stay loaded, and stay
/// what it was: a file changed under the same version (other steps) cannot run the cases
/// started on it, which wait, with an incident, until the file is restored.
#[derive(Debug, thiserror::Error)]
#[error("case {case_id} runs workflow `{name}` version {version}, which {}", if *.changed {
    "is loaded with other steps than the case has: its file was changed under the same version; restore it, and give the change a new version"
} else {
    "is not loaded; restore its file in workflows/"
})]
pub struct MissingWorkflow {
    pub case_id: CaseId,
    pub name: String,
    pub version: u32,
    /// The version is loaded, but its steps are not the case's.
    pub changed: bool,
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

/// Definitions as loaded at a configuration version.
struct Loaded {
    version: u64,
    defs: Arc<Definitions>,
}

pub struct Engine<S> {
    store: S,
    /// This engine's name among the nodes sharing the store: what its claims are held by.
    node: String,
    registry: Arc<Registry<S>>,
    /// Replaced whole when the definitions change (a publication on any node); a change holds
    /// the `Arc` it started with.
    defs: std::sync::RwLock<Loaded>,
    config: Config,
    decide: Decider,
    /// What follows every committed change (the webhook feed, …).
    hooks: Vec<Arc<dyn Hook>>,
    http: reqwest::Client,
    locks: locks::Locks,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    timers_changed: Notify,
    /// Places for timers firing at once ([`timers::MAX_FIRING`]).
    firing: Arc<tokio::sync::Semaphore>,
    overhead: Overhead,
    metrics: Arc<Metrics>,
    traces: Arc<Traces>,
    /// Who waits for which case to end.
    watchers: Arc<end_watch::Watchers>,
    /// Agencies whose probe or release this node is running (one at a time per agency).
    outage_work: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Storage failures met by background work, logged at most once a minute.
    store_failures: FailureLog,
    /// Cases whose record this node found damaged, with what is wrong: named in the incident
    /// list until a restart.
    damaged: std::sync::Mutex<BTreeMap<CaseId, String>>,
}

impl<S: Store + Clone> Engine<S> {
    /// An engine over `store`, running `defs` (loaded at configuration version `version`) and
    /// telling `hooks` of every committed change.
    pub fn new(
        store: S,
        registry: Arc<Registry<S>>,
        (version, defs): (u64, Definitions),
        config: Config,
        mut hooks: Vec<Arc<dyn Hook>>,
        (metrics, traces): (Arc<Metrics>, Arc<Traces>),
    ) -> Arc<Engine<S>> {
        let watchers = Arc::new(end_watch::Watchers::default());
        hooks.push(watchers.clone());
        Arc::new(Engine {
            store,
            node: uuid::Uuid::new_v4().to_string(),
            registry,
            defs: std::sync::RwLock::new(Loaded {
                version,
                defs: Arc::new(defs),
            }),
            decide: Decider {
                calendar: Calendar::vietnam(),
                public_url: config.public_url.clone(),
                agencies: config.agencies.clone(),
                circuits: Arc::new(Circuits::new(config.circuits.clone())),
            },
            config,
            hooks,
            // No redirects: a redirect would carry the adapter's credentials to another host;
            // an agency's 3xx is an answer its reply rules classify (issue 33).
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("the HTTP client builds with default TLS-less settings"),
            locks: locks::Locks::new(locks::SLOTS),
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            timers_changed: Notify::new(),
            firing: Arc::new(tokio::sync::Semaphore::new(timers::MAX_FIRING)),
            overhead: Overhead::default(),
            metrics,
            traces,
            watchers,
            outage_work: std::sync::Mutex::default(),
            store_failures: FailureLog::new(),
            damaged: std::sync::Mutex::default(),
        })
    }

    /// The agencies' circuits as this node follows them.
    pub fn circuits(&self) -> &Arc<Circuits> {
        &self.decide.circuits
    }

    /// Cases whose record this node found damaged when their timers came due, with what is
    /// wrong.
    pub fn damaged(&self) -> BTreeMap<CaseId, String> {
        self.damaged.lock().expect("not poisoned").clone()
    }

    /// The agencies this node calls, by id, with their base URLs.
    pub fn agencies(&self) -> &BTreeMap<String, String> {
        &self.config.agencies
    }

    /// This engine's name among the nodes sharing its store.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where background work on this node reports storage failures (logged at most once a
    /// minute while the store fails).
    pub fn store_failures(&self) -> &FailureLog {
        &self.store_failures
    }

    /// How long this node's claims last without renewal.
    pub fn claim_lease(&self) -> Duration {
        self.config.claim_lease
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn overhead(&self) -> &Overhead {
        &self.overhead
    }

    /// Where this node's traces go.
    pub fn traces(&self) -> &Traces {
        &self.traces
    }

    /// The series this node records for Prometheus.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The engine's clock: what "now" is for cases and for records made through the API.
    pub fn now(&self) -> jiff::Timestamp {
        self.config.clock.now()
    }

    pub fn definitions(&self) -> Arc<Definitions> {
        self.defs.read().expect("not poisoned").defs.clone()
    }

    /// Runs `defs`, loaded at configuration version `version`, from now on, unless what runs
    /// was loaded at a later version already (a reload and a publication may race). Cases keep
    /// the workflow version they started on, which stays among the definitions.
    pub fn set_definitions(&self, version: u64, defs: Definitions) {
        let mut loaded = self.defs.write().expect("not poisoned");
        if version >= loaded.version {
            *loaded = Loaded {
                version,
                defs: Arc::new(defs),
            };
        }
    }

    /// Loads the definitions again if the shared configuration moved on since they were
    /// loaded (a publication on another node): how every node follows the registry.
    pub async fn reload_definitions(&self) -> Result<(), PublishError> {
        let loaded = self.defs.read().expect("not poisoned").version;
        if self.store.config_version().await? == loaded {
            return Ok(());
        }
        let (version, defs) = self.registry.load().await?;
        self.set_definitions(version, defs);
        Ok(())
    }

    /// Starts the timer loop. Timers due while the server was down fire at once: that is how
    /// retries, polls and lost attempts resume after a crash.
    pub fn run(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move { engine.timer_loop().await })
    }

    /// Stops taking new work and waits up to the drain timeout for in-flight calls to finish
    /// and their replies to be recorded. A call still running then is parked: its attempt is
    /// durable, and its watchdog timer re-sends it (same idempotency key) after the next start.
    pub async fn shutdown(&self) -> usize {
        self.stopping.store(true, Ordering::SeqCst);
        self.timers_changed.notify_one();
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        loop {
            let idle = self.idle.notified();
            let n = self.in_flight.load(Ordering::SeqCst);
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight.load(Ordering::SeqCst);
            }
        }
    }

    /// Whether this engine is shutting down: it takes no new work.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

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
        let idem_key = idempotency_key.map(|k| format!("start:{k}"));
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
        let id = CaseId::now_v7();
        let case = Case {
            id,
            workflow: workflow.name.clone(),
            version: workflow.version,
            status: CaseStatus::Running,
            input,
            business_keys: keys,
            started_at: now,
            started_on: now.to_zoned(vietnam_time()).date(),
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
        if let Some(deadline) = workflow.deadline {
            match self.decide.calendar.due(now, deadline) {
                Ok(due) => {
                    change.case.due_at = Some(due);
                    change.set_timer(TimerKind::CaseDeadline, due);
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
        Ok((case, true))
    }

    /// The business keys of a case with this input, as the workflow computes them.
    fn business_keys(
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

    pub async fn case(&self, id: CaseId) -> Result<Option<Case>, StoreError> {
        self.store.case(id).await
    }

    pub async fn history(&self, id: CaseId) -> Result<Vec<Event>, StoreError> {
        let mut all = Vec::new();
        loop {
            let page = self.store.history(id, all.len() as u64, 1000).await?;
            let done = page.len() < 1000;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

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

    /// The workflow `case` runs, bound to the adapter versions it started with, if it is loaded
    /// as the case knows it: what the API masks a case's data by. A read does not reload the
    /// definitions (the configuration follower does that within a second): a case whose
    /// workflow is not loaded is masked whole rather than costing a reload per read.
    pub fn workflow_of_case(&self, case: &Case) -> Option<Arc<Workflow>> {
        self.workflow_of(case).ok()
    }

    /// The workflow a case runs; if it is not loaded, the definitions are loaded again first
    /// in case another node published it since.
    async fn workflow_for(&self, case: &Case) -> Result<Arc<Workflow>, MissingWorkflow> {
        if let Ok(wf) = self.workflow_of(case) {
            return Ok(wf);
        }
        if let Err(e) = self.reload_definitions().await {
            tracing::error!(error = %e, "the definitions cannot be loaded again");
        }
        self.workflow_of(case)
    }

    fn workflow_of(&self, case: &Case) -> Result<Arc<Workflow>, MissingWorkflow> {
        let missing = |changed| MissingWorkflow {
            case_id: case.id,
            name: case.workflow.clone(),
            version: case.version,
            changed,
        };
        // Bound to the adapter versions the case started with.
        let wf = self
            .definitions()
            .bound(&case.workflow, case.version, |step| {
                case.steps.get(step).map(|s| s.adapter.clone())
            })
            .ok_or_else(|| missing(false))?;
        // Every decision indexes the case's steps by the workflow's: they must be the same.
        let same = wf.steps.len() == case.steps.len()
            && wf.steps.iter().all(|s| case.steps.contains_key(&s.id));
        if !same {
            return Err(missing(true));
        }
        Ok(wf)
    }
}

/// A stable digest of a request, to tell a retried request from a different one under the same
/// key. Not a security boundary: FNV-1a over canonical JSON.
fn fingerprint(name: &str, version: Option<u32>, input: &Value) -> String {
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

impl<S> Drop for Engine<S> {
    fn drop(&mut self) {
        self.idle.notify_waiters();
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
