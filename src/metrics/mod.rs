//! What an operations team watches, in Prometheus's text format at `GET /metrics`: cases
//! started and finished, agency calls and their latency, retries, incidents, timers and how late
//! they fire, store commits, webhook delivery lag, API requests, and the on-time figures of the
//! month so far.
//!
//! Labels name workflows, agencies, steps, outcomes, routes and reasons, never a case id or
//! anything personal: a label's values must stay few, and a scrape is read by people who need
//! not see citizens' data.
//!
//! Most series are recorded as things happen (a [`Hook`] on committed changes, the engine's
//! calls and timers, the API's requests). What several nodes share is read from the store at
//! each scrape ([`Metrics::scrape`]): the incidents open now and the on-time figures, which
//! every node reports alike.

mod scrape;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::case::inbox::Cause;
use crate::case::{EventKind, Origin};
use crate::store::{Committed, Hook};

pub use scrape::{CLASSIC_CONTENT_TYPE, CONTENT_TYPE, classic};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    workflow: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    workflow: String,
    agency: String,
    step: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    workflow: String,
    agency: String,
    step: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    agency: String,
    step: String,
    /// `attempt` or `poll`.
    kind: String,
    /// `2xx`, `3xx`, `4xx`, `5xx` or `no_answer` (a timeout, a refused or reset connection).
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    workflow: String,
    /// Events: `started` (a case), `taken` (by a waiting step), `kept` (for a step that waits
    /// later). Chains: `started`, `not_started`.
    action: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimerLabels {
    /// `retry`, `poll`, `step_deadline` or `case_deadline`.
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route as the API declares it (`/v1/cases/{id}`), never the path as asked.
    route: String,
    status: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 1 ms to about 65 s, doubling.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Seconds from 10 ms to about 2.8 h, quadrupling: how late a timer fires, how long a
/// notification waits for its receiver.
fn long_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 11))
}

/// Every series this node records as things happen.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cases_started: Family<WorkflowLabels, Counter>,
    cases_finished: Family<FinishedLabels, Counter>,
    step_results: Family<ResultLabels, Counter>,
    retries: Family<StepLabels, Counter>,
    incidents_opened: Family<ReasonLabels, Counter>,
    reminders: Family<StepLabels, Counter>,
    escalations: Family<StepLabels, Counter>,
    extensions: Family<StepLabels, Counter>,
    supplements: Family<StepLabels, Counter>,
    events: Family<ActionLabels, Counter>,
    chains: Family<ActionLabels, Counter>,
    calls: Histograms<CallLabels>,
    timers: Histograms<TimerLabels>,
    commits: Histogram,
    webhook_lag: Histogram,
    requests: Histograms<RequestLabels>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("civicflow"),
            cases_started: Family::default(),
            cases_finished: Family::default(),
            step_results: Family::default(),
            retries: Family::default(),
            incidents_opened: Family::default(),
            reminders: Family::default(),
            escalations: Family::default(),
            extensions: Family::default(),
            supplements: Family::default(),
            events: Family::default(),
            chains: Family::default(),
            calls: Family::new_with_constructor(seconds),
            timers: Family::new_with_constructor(long_seconds),
            commits: seconds(),
            webhook_lag: long_seconds(),
            requests: Family::new_with_constructor(seconds),
        };
        let r = &mut m.registry;
        r.register(
            "cases_started",
            "Cases started, by workflow",
            m.cases_started.clone(),
        );
        r.register(
            "cases_finished",
            "Cases finished, by workflow and how they ended (completed, partially_completed, rejected, cancelled)",
            m.cases_finished.clone(),
        );
        r.register(
            "step_results",
            "Steps answered by their agency, by outcome (succeeded, rejected)",
            m.step_results.clone(),
        );
        r.register(
            "step_retries",
            "Step attempts that failed in a retryable way and were scheduled again",
            m.retries.clone(),
        );
        r.register(
            "incidents_opened",
            "Incidents opened, by reason",
            m.incidents_opened.clone(),
        );
        r.register(
            "deadline_reminders",
            "Reminders that a due time is near, by workflow, agency and step (`*`: the case as a whole)",
            m.reminders.clone(),
        );
        r.register(
            "deadline_escalations",
            "Overdue dossiers escalated, by workflow, agency and step (`*`: the case as a whole)",
            m.escalations.clone(),
        );
        r.register(
            "deadline_extensions",
            "Apologies with a new date given, by workflow, agency and step (`*`: the case as a whole)",
            m.extensions.clone(),
        );
        r.register(
            "supplements_requested",
            "Requests to the citizen to supplement an incomplete dossier, by workflow, agency and step",
            m.supplements.clone(),
        );
        r.register(
            "events",
            "CloudEvents that reached a case, by its workflow and what they did: started it, taken by a waiting step, kept for a step that waits later",
            m.events.clone(),
        );
        r.register(
            "chains",
            "Cases a case's end started (or did not: the input did not fit, the chain was too deep), by the workflow that follows",
            m.chains.clone(),
        );
        r.register_with_unit(
            "agency_call_duration",
            "Requests to agencies (step attempts and status polls), by how they were answered, from sending to the answer",
            Unit::Seconds,
            m.calls.clone(),
        );
        r.register_with_unit(
            "timer_lateness",
            "How long after its due time each timer fired",
            Unit::Seconds,
            m.timers.clone(),
        );
        r.register_with_unit(
            "store_commit_duration",
            "Case changes, from handing them to the store to their being durable",
            Unit::Seconds,
            m.commits.clone(),
        );
        r.register_with_unit(
            "webhook_delivery_lag",
            "Notifications acknowledged by a webhook, from the change they report to the acknowledgement",
            Unit::Seconds,
            m.webhook_lag.clone(),
        );
        r.register_with_unit(
            "api_request_duration",
            "API requests, by method, route and status",
            Unit::Seconds,
            m.requests.clone(),
        );
        m
    }

    /// An exchange with an agency: a step attempt or a status poll, answered with `status`
    /// (`None`: no answer) after `took`.
    pub fn agency_call(
        &self,
        agency: &str,
        step: &str,
        poll: bool,
        status: Option<u16>,
        took: Duration,
    ) {
        let outcome = match status {
            Some(s) => format!("{}xx", s / 100),
            None => "no_answer".to_owned(),
        };
        self.calls
            .get_or_create(&CallLabels {
                agency: agency.to_owned(),
                step: step.to_owned(),
                kind: if poll { "poll" } else { "attempt" }.to_owned(),
                outcome,
            })
            .observe(took.as_secs_f64());
    }

    /// A timer of `kind` (as [`crate::case::TimerKind::label`] names it) fired `late` after
    /// its due time.
    pub fn timer_fired(&self, kind: &str, late: Duration) {
        self.timers
            .get_or_create(&TimerLabels {
                kind: kind.to_owned(),
            })
            .observe(late.as_secs_f64());
    }

    pub fn commit(&self, took: Duration) {
        self.commits.observe(took.as_secs_f64());
    }

    /// A notification acknowledged `lag` after the change it reports.
    pub fn webhook_delivered(&self, lag: Duration) {
        self.webhook_lag.observe(lag.as_secs_f64());
    }

    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}

impl Hook for Metrics {
    fn committed(&self, change: &Committed<'_>) {
        let case = change.case;
        let step_labels = |step: &str| {
            let agency = case
                .steps
                .get(step)
                .map(|s| s.agency.clone())
                .unwrap_or_default();
            StepLabels {
                workflow: case.workflow.clone(),
                agency,
                step: step.to_owned(),
            }
        };
        let result = |step: &str, outcome: &str| {
            let StepLabels {
                workflow,
                agency,
                step,
            } = step_labels(step);
            ResultLabels {
                workflow,
                agency,
                step,
                outcome: outcome.to_owned(),
            }
        };
        let action = |what: &str| ActionLabels {
            workflow: case.workflow.clone(),
            action: what.to_owned(),
        };
        // A step's, or the case's as a whole (`*`).
        let labels_of = |step: &Option<String>| match step {
            Some(step) => step_labels(step),
            None => StepLabels {
                workflow: case.workflow.clone(),
                agency: "*".to_owned(),
                step: "*".to_owned(),
            },
        };
        for (_, event) in change.events {
            match &event.kind {
                EventKind::CaseStarted { workflow, .. } => {
                    self.cases_started
                        .get_or_create(&WorkflowLabels {
                            workflow: workflow.clone(),
                        })
                        .inc();
                    if let Some(Origin {
                        cause: Cause::Event { .. },
                        ..
                    }) = &case.origin
                    {
                        self.events.get_or_create(&action("started")).inc();
                    }
                }
                EventKind::EventReceived { step, .. } => {
                    let what = if step.is_some() { "taken" } else { "kept" };
                    self.events.get_or_create(&action(what)).inc();
                }
                EventKind::ChainStarted { workflow, .. } => {
                    self.chains
                        .get_or_create(&ActionLabels {
                            workflow: workflow.clone(),
                            action: "started".to_owned(),
                        })
                        .inc();
                }
                EventKind::ChainNotStarted { workflow, .. } => {
                    self.chains
                        .get_or_create(&ActionLabels {
                            workflow: workflow.clone(),
                            action: "not_started".to_owned(),
                        })
                        .inc();
                }
                EventKind::CaseFinished { status, .. } => {
                    self.cases_finished
                        .get_or_create(&FinishedLabels {
                            workflow: case.workflow.clone(),
                            status: status.as_str().to_owned(),
                        })
                        .inc();
                }
                EventKind::StepSucceeded { step, .. } => {
                    self.step_results
                        .get_or_create(&result(step, "succeeded"))
                        .inc();
                }
                EventKind::StepRejected { step, .. } => {
                    self.step_results
                        .get_or_create(&result(step, "rejected"))
                        .inc();
                }
                EventKind::AttemptFailed {
                    step,
                    retry_at: Some(_),
                    ..
                } => {
                    self.retries.get_or_create(&step_labels(step)).inc();
                }
                EventKind::Reminded { step, .. } => {
                    self.reminders.get_or_create(&labels_of(step)).inc();
                }
                EventKind::Escalated { step, .. } => {
                    self.escalations.get_or_create(&labels_of(step)).inc();
                }
                EventKind::Extended { step, .. } => {
                    self.extensions.get_or_create(&labels_of(step)).inc();
                }
                EventKind::SupplementRequested { step, .. } => {
                    self.supplements.get_or_create(&step_labels(step)).inc();
                }
                EventKind::IncidentOpened { reason, .. } => {
                    self.incidents_opened
                        .get_or_create(&ReasonLabels {
                            reason: reason.as_str().to_owned(),
                        })
                        .inc();
                }
                _ => {}
            }
        }
    }
}
