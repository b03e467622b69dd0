//! The engine: takes a case, runs its workflow's steps against the agencies, and never loses or
//! repeats anything, whatever happens to the process.
//!
//! Every change to a case goes through [`Engine::change`] under the case's lock: load, decide,
//! commit (durable), and only then act (send a request, answer a callback). A case that waits
//! (for a timer, a callback or an operator) is only on disk: the engine holds nothing for it.

mod actions;
mod adapter_test;
mod agency_outages;
mod callbacks;
mod chains;
mod change;
mod clock;
mod consents;
mod decide;
mod definitions;
mod drive;
mod end_watch;
mod erasure;
mod events;
mod exchanges;
mod locks;
mod start;
mod step_overhead;
mod supplements;
mod timers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::calendar::Calendar;
use crate::case::{Case, CaseId, Event};
use crate::circuits::Circuits;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{FailureLog, Hook, Store, StoreError};
use crate::traces::Traces;
use crate::workflow::definition::Definitions;

pub use actions::{Action, ActionError};
pub use adapter_test::TrialError;
pub use callbacks::{CallbackAck, CallbackError};
pub use consents::{ConsentError, ConsentGiven};
pub use decide::{CONSENT_RECHECK, ExtensionError, ExtensionRequest};
pub use definitions::MissingWorkflow;
pub use erasure::Erased;
pub use events::{EventError, Received};
pub use start::{Caused, MAX_KEY_BYTES, StartError};
pub use supplements::{SupplementAsk, SupplementError};

pub use change::Call;
pub use clock::Clock;
use definitions::Loaded;
pub use step_overhead::{Overhead, Percentiles};

use decide::Decider;

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
    /// The key of the pseudonyms of citizens' IDs: whose consent a step needs is found by it.
    pub pseudonyms: crate::personal_data::PseudonymKey,
    /// This node's X-Road client, `INSTANCE/CLASS/MEMBER/SUBSYSTEM`, on every agency call.
    pub xroad_client: String,
    /// When this node signs the audit log's tree heads, and with which key.
    pub audit: crate::audit::SignerConfig,
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
    /// The audit log, as proofs are read from it.
    audit: Arc<crate::audit::Log<S>>,
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
        hooks.push(Arc::new(crate::audit::Trail));
        let audit = Arc::new(crate::audit::Log::new(store.clone()));
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
                xroad_client: config.xroad_client.clone(),
                pseudonyms: config.pseudonyms.clone(),
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
            audit,
        })
    }

    /// The audit log of this node's store.
    pub fn audit(&self) -> &Arc<crate::audit::Log<S>> {
        &self.audit
    }

    /// This node's audit log signer, as configured.
    pub fn audit_signer(&self) -> crate::audit::Signer<S> {
        crate::audit::Signer::new(self.audit.clone(), self.config.audit.clone())
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
}

impl<S> Drop for Engine<S> {
    fn drop(&mut self) {
        self.idle.notify_waiters();
    }
}
