//! Builds the application once, for `civicflow serve`, the tests' in-process harness and the
//! benchmark alike: the definitions (bundled files and published ones, checked together), the
//! registry, the webhook feed, the engine over the store it is given, the API's router, and
//! the background work every node runs (timers, webhook delivery, following the shared
//! configuration).
//!
//! Several `App`s may share one store: each is a node. Nothing one node keeps in memory is
//! needed by another: what they share goes through the store (claims for work, the
//! configuration version for definitions; the store itself for whether a change notifies).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::task::JoinHandle;

use crate::api::{self, Limits};
use crate::engine::{self, Engine};
use crate::metrics::Metrics;
use crate::registry::{PublishError, Registry};
use crate::store::{Store, StoreError};
use crate::traces::Traces;
use crate::webhooks::{Deliverer, Feed, Targets};
use crate::workflow::catalog;
use crate::workflow::diagnostic::Diagnostic;

/// How often a node looks at the shared configuration's version, and so how soon a
/// publication made on another node is in force on this one.
pub const CONFIG_POLL: Duration = Duration::from_secs(1);

/// What an application is built from, besides its store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bundled workflow and adapter files.
    pub workflows: PathBuf,
    pub engine: engine::Config,
    /// Requests per API token, on this node.
    pub limits: Limits,
    /// Where the cases' traces go (nowhere unless an OTLP endpoint is configured).
    pub traces: Arc<Traces>,
    /// Where webhooks may point.
    pub webhook_targets: Targets,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "{} problem(s) in {dir} or the published definitions; `civicflow validate` checks the files",
        problems.len()
    )]
    Definitions {
        dir: String,
        problems: Vec<Diagnostic>,
    },
    #[error("no base URL for agency {0}: give --agency NAME=URL, or --with-mocks")]
    NoAgencyUrl(String),
    #[error(transparent)]
    Registry(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One node: the engine over a store, its API, and its background work once started.
pub struct App<S> {
    pub engine: Arc<Engine<S>>,
    pub registry: Arc<Registry<S>>,
    /// The configuration version the definitions were read at when built.
    built_at: u64,
    limits: Limits,
    webhook_targets: Targets,
    tasks: Vec<JoinHandle<()>>,
    /// Signs the audit log's tree heads while the node runs, and once more as it stops.
    signer: Arc<crate::audit::Signer<S>>,
}

impl<S: Store + Clone> App<S> {
    /// Loads and checks every definition, and builds the engine over `store`. Nothing runs
    /// until [`App::start`].
    pub async fn build(store: S, settings: Settings) -> Result<App<S>, BuildError> {
        let (bundled, mut problems) =
            catalog::read_files(std::slice::from_ref(&settings.workflows));
        let registry = Arc::new(Registry::new(store.clone(), bundled));
        let loaded = match registry.load().await {
            Ok(loaded) => Some(loaded),
            Err(PublishError::Invalid(mut found)) => {
                problems.append(&mut found);
                None
            }
            Err(e) => return Err(e.into()),
        };
        let loaded = match loaded {
            Some(loaded) if problems.is_empty() => loaded,
            _ => {
                return Err(BuildError::Definitions {
                    dir: settings.workflows.display().to_string(),
                    problems,
                });
            }
        };
        // One name per agency, however many adapters it has.
        let missing: BTreeSet<&str> = loaded
            .1
            .agencies()
            .filter(|a| !settings.engine.agencies.contains_key(*a))
            .collect();
        if !missing.is_empty() {
            return Err(BuildError::NoAgencyUrl(Vec::from_iter(missing).join(", ")));
        }
        let built_at = loaded.0;
        let kpi = Arc::new(crate::kpi::Kpi::new(crate::calendar::Calendar::vietnam()));
        let metrics = Arc::new(Metrics::new());
        let hooks: Vec<Arc<dyn crate::store::Hook>> = vec![Arc::new(Feed), kpi, metrics.clone()];
        let engine = Engine::new(
            store,
            registry.clone(),
            loaded,
            settings.engine,
            hooks,
            (metrics, settings.traces),
        );
        // The agencies' circuits as the store holds them, before the timer loop fires anything:
        // a held step's timer must not release it on a node that has not read its agency's
        // open circuit yet (after a restart, the follower's first read races the first timers).
        let stored = engine.store().circuits().await?;
        engine.circuits().follow(stored);
        let signer = Arc::new(engine.audit_signer());
        Ok(App {
            signer,
            engine,
            registry,
            built_at,
            limits: settings.limits,
            webhook_targets: settings.webhook_targets,
            tasks: Vec::new(),
        })
    }

    /// The HTTP API of this node.
    pub fn router(&self) -> Router {
        api::router(
            self.engine.clone(),
            self.registry.clone(),
            (self.limits, self.webhook_targets),
        )
    }

    /// Starts the background work: the timer loop (due timers fire at once, which is how
    /// retries, polls and lost attempts resume after a crash), webhook delivery, and following
    /// the shared configuration.
    pub fn start(&mut self) {
        let store = self.engine.store().clone();
        self.tasks.push(self.engine.run());
        let deliverer = Deliverer::new(
            store,
            self.engine.node(),
            self.engine.claim_lease(),
            self.engine.metrics().clone(),
            self.webhook_targets,
        );
        self.tasks.push(deliverer.spawn());
        self.tasks
            .push(tokio::spawn(self.engine.clone().follow_circuits()));
        self.tasks.push(tokio::spawn(follow_config(
            self.engine.clone(),
            self.built_at,
        )));
        self.tasks
            .push(tokio::spawn(schedule_old_erasures(self.engine.clone())));
        self.tasks.push(tokio::spawn(self.signer.clone().run()));
    }

    /// Stops taking new work, waits for in-flight agency calls (up to the drain timeout) and
    /// stops the background work. Returns how many calls were parked, to resume after the next
    /// start.
    pub async fn shutdown(self) -> usize {
        let parked = self.engine.shutdown().await;
        for task in self.tasks {
            task.abort();
        }
        // The last entries signed too, so that a stop leaves no unsigned tail behind.
        if let Err(e) = self.signer.sign(true).await {
            tracing::warn!(error = %e, "the audit log's last tree head could not be signed; the next start signs it");
        }
        parked
    }
}

/// Cases that ended before their workflow had a retention get their erasure time (issue 37):
/// one pass over the ended cases, in the background, when the node starts.
async fn schedule_old_erasures<S: Store + Clone>(engine: Arc<Engine<S>>) {
    match engine.schedule_old_erasures().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            cases = n,
            "ended cases got the time their personal data is erased"
        ),
        Err(e) => {
            tracing::error!(error = %e, "the ended cases' erasure times could not be set; the next start tries again")
        }
    }
}

/// Follows the shared configuration from version `seen` (what the node was built from): when
/// it moves on (a publication on any node), reloads the definitions.
async fn follow_config<S: Store + Clone>(engine: Arc<Engine<S>>, seen: u64) {
    let mut seen = Some(seen);
    loop {
        let poll = CONFIG_POLL.mul_f64(0.75 + fastrand::f64() / 2.0);
        tokio::time::sleep(poll).await;
        let version = match engine.store().config_version().await {
            Ok(v) => v,
            Err(e) => {
                if !engine
                    .store_failures()
                    .absorbs("reading the configuration version", &e)
                {
                    tracing::error!(error = %e, "cannot read the configuration version");
                }
                continue;
            }
        };
        if seen == Some(version) {
            continue;
        }
        match engine.reload_definitions().await {
            Ok(_) => seen = Some(version),
            // A store that cannot be read or synced (a full disk): said once a minute, not at
            // every poll.
            Err(PublishError::Store(e))
                if engine
                    .store_failures()
                    .absorbs("loading the published definitions", &e) => {}
            Err(e) => {
                tracing::error!(error = %e, "the published definitions cannot be loaded; this node keeps those it runs");
            }
        }
    }
}
