//! A case: one run of a workflow for one citizen request. [`Case`] is its current state, kept in
//! one record; [`Event`]s are its append-only history; [`Timer`]s are its durable wake-ups. The
//! engine changes all three together, in one store transaction.

pub mod cloud_event;
pub mod consents;
pub mod deadlines;
pub mod inbox;
pub mod masking;
pub mod retention;
pub mod supplements;

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use cloud_event::CloudEvent;
pub use consents::CaseConsents;
pub use deadlines::{Deadlines, Extension, LifeEvent, Tier};
pub use inbox::{Inbox, Origin};
pub use retention::Retention;
pub use supplements::{Missing, RequestState, SupplementRequest, missing_of};

pub type CaseId = Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Running,
    Completed,
    PartiallyCompleted,
    Rejected,
    Cancelled,
}

impl CaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Running => "running",
            CaseStatus::Completed => "completed",
            CaseStatus::PartiallyCompleted => "partially_completed",
            CaseStatus::Rejected => "rejected",
            CaseStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for the steps it needs.
    Pending,
    /// An attempt is durable and its request is (or is about to be) in flight. After a crash,
    /// the request is sent again with the same idempotency key.
    Calling,
    /// The agency took the request in and will call back.
    AwaitingCallback,
    /// The agency took the request in; a poll timer is set.
    Polling,
    /// The last attempt failed in a retryable way; a retry timer is set.
    Backoff,
    /// Its agency's circuit is open (the agency is down, or in maintenance): its next attempt
    /// is held, not sent and not counted against its retry budget, until the circuit closes.
    WaitingForAgency,
    /// Retries exhausted or an unexpected reply: an incident is open and an operator must act.
    Failed,
    Succeeded,
    Rejected,
    /// Its condition was false, or a step it needs was skipped.
    Skipped,
    /// A step it needs was rejected, or the case stopped.
    Stopped,
    /// The agency found the dossier incomplete: it waits for the citizen's supplement (last
    /// of the variants: the store numbers them by position).
    AwaitingSupplement,
    /// It waits for a CloudEvent (`wait_for`) before it calls its agency (appended after the
    /// others, for the same reason).
    AwaitingEvent,
    /// Its exchange's basis is consent and no consent allows it: its agency gets no call until
    /// one is recorded (appended last, for the same reason).
    AwaitingConsent,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Calling => "calling",
            StepStatus::AwaitingCallback => "awaiting_callback",
            StepStatus::Polling => "polling",
            StepStatus::Backoff => "backoff",
            StepStatus::WaitingForAgency => "waiting_for_agency",
            StepStatus::Failed => "failed",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Rejected => "rejected",
            StepStatus::Skipped => "skipped",
            StepStatus::Stopped => "stopped",
            StepStatus::AwaitingSupplement => "awaiting_supplement",
            StepStatus::AwaitingEvent => "awaiting_event",
            StepStatus::AwaitingConsent => "awaiting_consent",
        }
    }

    /// Whether the step has its final outcome (no operator action pending).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Rejected
                | StepStatus::Skipped
                | StepStatus::Stopped
        )
    }

    /// Whether the step is at an agency: started and not finished.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            StepStatus::Calling
                | StepStatus::AwaitingCallback
                | StepStatus::Polling
                | StepStatus::Backoff
                | StepStatus::WaitingForAgency
                | StepStatus::Failed
                | StepStatus::AwaitingSupplement
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rejection {
    pub reason_code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// `agency/name@version`, as the case's workflow version pins it.
    pub adapter: String,
    pub agency: String,
    /// Changes only when an operator re-runs the step with corrected data; part of the
    /// idempotency key, so retries and crash replays reuse the key.
    pub revision: u32,
    /// Attempts made in this revision.
    pub attempt: u32,
    /// Attempts made before an operator's last retry: the retry policy counts from here, so a
    /// retry gives the step a fresh budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub budget_from: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<Timestamp>,
    /// Since when it waits for its agency's circuit to close (`WaitingForAgency`): the order
    /// in which held steps are released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The statutory due time, counted from when the step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// The last failure, as the agency or the network gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The secret in the step's callback URL (callback steps), the same for every attempt of a
    /// revision. Never shown outside the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_token: Option<String>,
    /// The status URL of a polled step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_url: Option<String>,
    /// Why the step was skipped or stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl StepState {
    /// Whether the steps that need this one may run: it succeeded, or an operator skipped it
    /// and supplied the output they need.
    pub fn provides_output(&self) -> bool {
        match self.status {
            StepStatus::Succeeded => true,
            StepStatus::Skipped => self.output.is_some(),
            _ => false,
        }
    }

    pub fn new(adapter: &str, agency: &str) -> StepState {
        StepState {
            status: StepStatus::Pending,
            adapter: adapter.to_owned(),
            agency: agency.to_owned(),
            revision: 1,
            attempt: 0,
            budget_from: 0,
            first_attempt_at: None,
            held_since: None,
            started_at: None,
            finished_at: None,
            due_at: None,
            input: None,
            output: None,
            rejection: None,
            error: None,
            callback_token: None,
            poll_url: None,
            note: None,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentReason {
    RetriesExhausted,
    UnexpectedReply,
    DeadlineMissed,
    /// The step's input or request could not be built from the case data (an expression failed,
    /// the input does not match the adapter's schema, the agency has no configured URL).
    InvalidData,
    /// The case's workflow version is not among the loaded definitions (its file was removed or
    /// changed without a new version): the case waits until it is restored.
    WorkflowNotLoaded,
    /// The agency refused a step whose workflow says `on_rejection: hold`: the case waits for
    /// an operator to correct the data and re-run it, or to let the refusal stand.
    RefusalAwaitingAction,
    /// The agency's reply carried another request's hash (`X-Road-Request-Hash`): it answers
    /// another request, or one changed on the way, and is not used.
    RequestHashMismatch,
}

impl IncidentReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentReason::RetriesExhausted => "retries_exhausted",
            IncidentReason::UnexpectedReply => "unexpected_reply",
            IncidentReason::DeadlineMissed => "deadline_missed",
            IncidentReason::InvalidData => "invalid_data",
            IncidentReason::WorkflowNotLoaded => "workflow_not_loaded",
            IncidentReason::RefusalAwaitingAction => "refusal_awaiting_action",
            IncidentReason::RequestHashMismatch => "request_hash_mismatch",
        }
    }

    pub const ALL: [IncidentReason; 7] = [
        IncidentReason::RetriesExhausted,
        IncidentReason::UnexpectedReply,
        IncidentReason::DeadlineMissed,
        IncidentReason::InvalidData,
        IncidentReason::WorkflowNotLoaded,
        IncidentReason::RefusalAwaitingAction,
        IncidentReason::RequestHashMismatch,
    ];
}

impl std::str::FromStr for IncidentReason {
    type Err = String;

    fn from_str(s: &str) -> Result<IncidentReason, String> {
        IncidentReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = IncidentReason::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "`{s}` is not an incident reason; the reasons are {}",
                    names.join(", ")
                )
            })
    }
}

/// Something about a case that needs a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Incident {
    /// The step it concerns; `None` for the case as a whole (its overall deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub reason: IncidentReason,
    pub message: String,
    pub opened_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: CaseId,
    pub workflow: String,
    pub version: u32,
    pub status: CaseStatus,
    pub input: Value,
    pub business_keys: BTreeMap<String, String>,
    pub started_at: Timestamp,
    /// The calendar date in Vietnam when the case started: what expressions see as
    /// `.case.started_on`, so a replay takes the same branches.
    pub started_on: Date,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Why the case ended as it did (a refusal, a cancellation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: BTreeMap<String, StepState>,
    /// Open incidents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<Incident>,
    /// The case's timers (by [`TimerKind::id`]) and when each is due. A change that replaces
    /// or clears a timer finds here which one the store holds, so a timer is one entry in the
    /// store, ordered by due time, and clearing it needs no read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timers: BTreeMap<String, Timestamp>,
    /// The sequence number the next history event gets.
    pub next_seq: u64,
    /// The portal's W3C `traceparent` when it started the case: the case's trace links to it,
    /// so the portal can follow its request in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The counters the case is counted under in the on-time figures ([`crate::kpi`]), as last
    /// committed: a change adds to the counters only the difference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tallies: Vec<String>,
    /// The life event's tier, the extension, the escalations.
    #[serde(default, skip_serializing_if = "Deadlines::is_empty")]
    pub deadlines: Deadlines,
    /// The event or the case that started it, when the portal did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// CloudEvents it received, and what its waiting steps expect.
    #[serde(default, skip_serializing_if = "Inbox::is_empty")]
    pub inbox: Inbox,
    /// The consents its exchanges need, and those recorded (empty if no step needs one).
    pub consents: CaseConsents,
    /// When its personal data is erased, and when it was.
    pub retention: Retention,
    /// Bumped by the store on every write: optimistic concurrency between writers.
    pub rev: u64,
}

/// An entry of a secondary index: cases are listed by `(name, value)`, ordered by case id
/// (time-ordered, UUIDv7).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexEntry {
    pub name: &'static str,
    pub value: String,
}

pub mod index {
    pub const STATUS: &str = "status";
    pub const WORKFLOW: &str = "workflow";
    /// `<name>=<value>` of each business key.
    pub const KEY: &str = "key";
    /// Each open incident, under one value per filter of the operators' list, ordered by when
    /// it opened: see [`incident_values`](super::incident_values).
    pub const INCIDENT: &str = "incident";
    /// `<agency>/<zero-padded milliseconds held since>/<step>` of each step waiting for its
    /// agency's circuit to close, so that the order of values is the order they were held in.
    pub const HELD: &str = "held";
    /// Each open due time (a step at its agency, a running case), under one value per filter
    /// of the operators' deadline list, ordered by the due time: see
    /// [`due_values`](super::due_values).
    pub const DUE: &str = "due";
    /// `<event type> <value>` of each step of a running case that will wait, or waits, for an
    /// event: how an event finds the cases it is for ([`inbox::Expect`]).
    pub const AWAITS: &str = "awaits";
    /// `<agreement> <subject pseudonym>` of each consent a step of a running case will need,
    /// or waits for: how a consent recorded or withdrawn finds the cases it is for.
    pub const CONSENT: &str = "consent";
}

impl Case {
    /// The due time step `id` is open under: its statutory one while at its agency, the
    /// citizen's while it waits for a supplement; `None` once it has its outcome.
    pub fn open_due(&self, id: &str) -> Option<Timestamp> {
        let s = self.steps.get(id)?;
        match s.status {
            StepStatus::AwaitingSupplement => self.deadlines.open_request(id).map(|r| r.due_at),
            StepStatus::Pending => None,
            status if status.is_final() => None,
            _ => s.due_at,
        }
    }

    /// Whether step `id` was refused and waits for an operator (`on_rejection: hold`).
    pub fn is_held(&self, id: &str) -> bool {
        self.incidents.iter().any(|i| {
            i.reason == IncidentReason::RefusalAwaitingAction && i.step.as_deref() == Some(id)
        })
    }

    /// The index entries this state puts the case under. The store keeps them in the same
    /// transaction as the case, by difference with the previous state. Each is read by a list
    /// someone asks for (a citizen's cases, the incident list, the steps held for an agency):
    /// an entry costs two writes of the store per change of its value, so there are none that
    /// nothing reads.
    pub fn index_entries(&self) -> Vec<IndexEntry> {
        let mut out = vec![
            IndexEntry {
                name: index::STATUS,
                value: self.status.as_str().to_owned(),
            },
            IndexEntry {
                name: index::WORKFLOW,
                value: self.workflow.clone(),
            },
        ];
        for (name, value) in &self.business_keys {
            out.push(IndexEntry {
                name: index::KEY,
                value: format!("{name}={value}"),
            });
        }
        for (id, step) in &self.steps {
            if let Some(since) = step.held_since
                && step.status == StepStatus::WaitingForAgency
            {
                out.push(IndexEntry {
                    name: index::HELD,
                    value: format!("{}/{}/{id}", step.agency, due_value(since)),
                });
            }
        }
        if self.status == CaseStatus::Running {
            for (step, expect) in &self.inbox.expects {
                if self.steps.get(step).is_some_and(|s| !s.status.is_final()) {
                    out.push(IndexEntry {
                        name: index::AWAITS,
                        value: expect.index_value(),
                    });
                }
            }
            for (step, key) in &self.consents.needs {
                if self.steps.get(step).is_some_and(|s| !s.status.is_final()) {
                    out.push(IndexEntry {
                        name: index::CONSENT,
                        value: key.clone(),
                    });
                }
            }
            let open = self.steps.iter().filter_map(|(id, s)| {
                Some((id.as_str(), Some(s.agency.as_str()), self.open_due(id)?))
            });
            let whole = self.due_at.map(|due| (deadlines::WHOLE_CASE, None, due));
            for (step, agency, due) in open.chain(whole) {
                let escalated = self.deadlines.escalated.get(step).map(String::as_str);
                for value in due_values(step, agency, escalated, due) {
                    out.push(IndexEntry {
                        name: index::DUE,
                        value,
                    });
                }
            }
        }
        for incident in &self.incidents {
            let agency = incident
                .step
                .as_ref()
                .and_then(|s| self.steps.get(s))
                .map(|s| s.agency.as_str());
            for value in incident_values(&self.workflow, agency, incident) {
                out.push(IndexEntry {
                    name: index::INCIDENT,
                    value,
                });
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The dimensions an incident is indexed under: each filter of the operators' list reads the
/// range of one of them. An index value is `<dimension>/<opened>/<reason>/<step or ->`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentDimension {
    All,
    Reason(IncidentReason),
    Workflow(String),
    Agency(String),
    Step { workflow: String, step: String },
}

impl IncidentDimension {
    /// The start of every index value under this dimension.
    pub fn prefix(&self) -> String {
        match self {
            IncidentDimension::All => "all/".to_owned(),
            IncidentDimension::Reason(r) => format!("reason:{}/", r.as_str()),
            IncidentDimension::Workflow(w) => format!("workflow:{w}/"),
            IncidentDimension::Agency(a) => format!("agency:{a}/"),
            IncidentDimension::Step { workflow, step } => format!("step:{workflow}:{step}/"),
        }
    }
}

/// The `incident` index values of one open incident of a case.
pub fn incident_values(workflow: &str, agency: Option<&str>, incident: &Incident) -> Vec<String> {
    let mut dims = vec![
        IncidentDimension::All,
        IncidentDimension::Reason(incident.reason),
        IncidentDimension::Workflow(workflow.to_owned()),
    ];
    if let Some(agency) = agency {
        dims.push(IncidentDimension::Agency(agency.to_owned()));
    }
    if let Some(step) = &incident.step {
        dims.push(IncidentDimension::Step {
            workflow: workflow.to_owned(),
            step: step.clone(),
        });
    }
    let tail = format!(
        "{}/{}/{}",
        due_value(incident.opened_at),
        incident.reason.as_str(),
        incident.step.as_deref().unwrap_or("-")
    );
    dims.iter()
        .map(|d| format!("{}{tail}", d.prefix()))
        .collect()
}

/// Which incident of its case an `incident` index value names: (opened at, reason, step).
pub fn parse_incident_value(value: &str) -> Option<(Timestamp, IncidentReason, Option<String>)> {
    let mut parts = value.rsplitn(4, '/');
    let step = parts.next()?;
    let reason = parts.next()?.parse().ok()?;
    let opened: i64 = parts.next()?.parse().ok()?;
    let step = (step != "-").then(|| step.to_owned());
    Some((Timestamp::from_millisecond(opened).ok()?, reason, step))
}

/// The dimensions a due time is indexed under: every filter of the deadline list reads the
/// range of one. A value is `<dimension>/<due>/<step or *>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueDimension {
    All,
    Agency(String),
    /// Escalated to this party (`supervisor`, `operator`, `agency:<id>`).
    Escalated(String),
}

impl DueDimension {
    pub fn prefix(&self) -> String {
        match self {
            DueDimension::All => "all/".to_owned(),
            DueDimension::Agency(a) => format!("agency:{a}/"),
            DueDimension::Escalated(to) => format!("escalated:{to}/"),
        }
    }
}

/// The `due` index values of one open due time.
pub fn due_values(
    step: &str,
    agency: Option<&str>,
    escalated: Option<&str>,
    due: Timestamp,
) -> Vec<String> {
    let mut dims = vec![DueDimension::All];
    dims.extend(agency.map(|a| DueDimension::Agency(a.to_owned())));
    dims.extend(escalated.map(|to| DueDimension::Escalated(to.to_owned())));
    let tail = format!("{}/{step}", due_value(due));
    dims.iter()
        .map(|d| format!("{}{tail}", d.prefix()))
        .collect()
}

/// The due time and step (`*`: the case) a `due` index value names.
pub fn parse_due_value(value: &str) -> Option<(Timestamp, String)> {
    let mut parts = value.rsplitn(3, '/');
    let step = parts.next()?;
    let due: i64 = parts.next()?.parse().ok()?;
    Some((Timestamp::from_millisecond(due).ok()?, step.to_owned()))
}

/// A time as an index value: milliseconds since the epoch, zero-padded to sort as text.
pub fn due_value(at: Timestamp) -> String {
    format!("{:015}", at.as_millisecond().max(0))
}

/// One entry of a case's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub seq: u64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    CaseStarted {
        workflow: String,
        version: u32,
    },
    StepSkipped {
        step: String,
        reason: String,
    },
    StepStopped {
        step: String,
        reason: String,
    },
    AttemptStarted {
        step: String,
        adapter: String,
        revision: u32,
        attempt: u32,
        idempotency_key: String,
        message_id: String,
        /// `METHOD url` of the request, for the history's reader.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    AttemptFailed {
        step: String,
        attempt: u32,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<Timestamp>,
    },
    StepAccepted {
        step: String,
        attempt: u32,
        status: u16,
    },
    /// The step's next attempt is held: its agency's circuit is open.
    StepHeld {
        step: String,
        agency: String,
    },
    CallbackReceived {
        step: String,
        /// What the agency said: `succeeded`, `rejected`, or `not understood`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    PollAnswered {
        step: String,
        status: u16,
        pending: bool,
    },
    StepSucceeded {
        step: String,
        output: Value,
    },
    StepRejected {
        step: String,
        reason_code: String,
        message: String,
    },
    IncidentOpened {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        reason: IncidentReason,
        message: String,
    },
    /// An open incident closed: the step it concerned moved on (an answer, a retry, a skip),
    /// or the case ended.
    IncidentClosed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        reason: IncidentReason,
    },
    /// A person acted on the case: who, why, and what they supplied.
    OperatorAction {
        action: OperatorActionKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        by: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        details: Value,
    },
    /// A case that had finished runs again: an operator re-ran a refused step.
    CaseReopened,
    /// The due time of a step (or, without `step`, of the case) is near.
    Reminded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        due_at: Timestamp,
    },
    /// The due time passed unfinished: the dossier is escalated.
    Escalated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        to: String,
        due_at: Timestamp,
    },
    /// An apology and a new date were given.
    Extended {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        reason_code: String,
        reason: String,
        by: String,
        previous_due: Timestamp,
        due_at: Timestamp,
    },
    /// The agency found the dossier incomplete and asked the citizen for what is missing.
    SupplementRequested {
        step: String,
        request_id: String,
        number: u32,
        missing: Vec<Missing>,
        due_at: Timestamp,
    },
    /// The citizen supplemented the dossier: the step runs again.
    Supplemented {
        step: String,
        request_id: String,
        /// The dotted paths of the input the supplement gave.
        fields: Vec<String>,
        by: String,
    },
    /// The citizen's deadline passed unanswered.
    SupplementExpired {
        step: String,
        request_id: String,
    },
    /// The agency was silent past the due time, and a law gives silence a meaning.
    SilenceDeemed {
        step: String,
        outcome: crate::workflow::spec::SilenceOutcome,
        legal_basis: String,
    },
    CaseFinished {
        status: CaseStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A step waits for a CloudEvent before it calls its agency.
    EventAwaited {
        step: String,
        event_type: String,
        /// The value the event's `match.from` must give; `None` if the input had none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        due_at: Option<Timestamp>,
    },
    /// A CloudEvent reached the case: a waiting step took it, or the case keeps it for a step
    /// that does not wait yet.
    EventReceived {
        source: String,
        id: String,
        event_type: String,
        /// The step that took it; `None` while it is kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
    /// A CloudEvent for the case (its business key's) that no step waits for: noted.
    EventNoted {
        source: String,
        id: String,
        event_type: String,
    },
    /// Events kept for steps that never waited for them passed their time to live.
    EventsExpired {
        ids: Vec<String>,
    },
    /// The basis of a step's exchange of personal data, before its first call (and before
    /// the first after a wait for consent).
    Exchange {
        step: String,
        purpose: String,
        lawful_basis: crate::workflow::spec::LawfulBasis,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        law: Option<String>,
        /// The consent record that allows it, on consent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        consent_id: Option<String>,
        /// The personal input fields it sends.
        personal_data: Vec<String>,
    },
    /// A step's exchange waits for consent: its agency gets no call until one is recorded.
    ConsentAwaited {
        step: String,
        agreement: String,
        due_at: Option<Timestamp>,
    },
    /// A consent the case needs was recorded.
    ConsentGiven {
        agreement: String,
        consent_id: String,
    },
    /// A consent the case needs was withdrawn: no exchange under it is sent from now on.
    ConsentWithdrawn {
        agreement: String,
        consent_id: String,
    },
    /// The case's personal data was erased: every personal value, here and in the events
    /// before, is a pseudonym from now on.
    PersonalDataErased {
        /// `retention` (its time was up) or `request` (the data subject's, through an admin).
        why: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The case's end started another workflow's case (a chain).
    ChainStarted {
        workflow: String,
        case_id: String,
    },
    /// A chain did not start: its input did not fit, or the chain was too long.
    ChainNotStarted {
        workflow: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperatorActionKind {
    Retry,
    Skip,
    Fix,
    Cancel,
    Extend,
    /// The portal's supplement of an incomplete dossier.
    Supplement,
}

impl OperatorActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorActionKind::Retry => "retry",
            OperatorActionKind::Skip => "skip",
            OperatorActionKind::Fix => "fix",
            OperatorActionKind::Cancel => "cancel",
            OperatorActionKind::Extend => "extend",
            OperatorActionKind::Supplement => "supplement",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimerKind {
    Retry {
        step: String,
    },
    Poll {
        step: String,
    },
    StepDeadline {
        step: String,
    },
    CaseDeadline,
    Reminder {
        step: String,
    },
    CaseReminder,
    /// The citizen's deadline to supplement a step's dossier.
    SupplementDue {
        step: String,
    },
    /// The earliest time an event kept for a step that does not wait yet expires.
    InboxExpiry,
    /// The case ended and workflows follow it: start them.
    Chain,
    /// The case's retention is up: erase its personal data.
    Erasure,
    /// A step waits for consent: look at the consent records again, in case a consent was
    /// recorded while it did not reach the case (the node recording it stopped).
    ConsentCheck,
}

impl TimerKind {
    /// The step the timer is for; `None` for the case's own deadline.
    pub fn step(&self) -> Option<&str> {
        match self {
            TimerKind::Retry { step }
            | TimerKind::Poll { step }
            | TimerKind::StepDeadline { step }
            | TimerKind::Reminder { step }
            | TimerKind::SupplementDue { step } => Some(step),
            TimerKind::CaseDeadline
            | TimerKind::CaseReminder
            | TimerKind::InboxExpiry
            | TimerKind::Chain
            | TimerKind::Erasure
            | TimerKind::ConsentCheck => None,
        }
    }

    /// The kind alone, without its step: what the metrics count timers by.
    pub fn label(&self) -> &'static str {
        match self {
            TimerKind::Retry { .. } => "retry",
            TimerKind::Poll { .. } => "poll",
            TimerKind::StepDeadline { .. } => "step_deadline",
            TimerKind::CaseDeadline => "case_deadline",
            TimerKind::Reminder { .. } => "reminder",
            TimerKind::CaseReminder => "case_reminder",
            TimerKind::SupplementDue { .. } => "supplement_due",
            TimerKind::InboxExpiry => "inbox_expiry",
            TimerKind::Chain => "chain",
            TimerKind::Erasure => "erasure",
            TimerKind::ConsentCheck => "consent_check",
        }
    }

    /// Unique among a case's timers: setting a timer of the same id replaces it.
    ///
    /// Built by concatenation, not `format!`: a change looks its timers up by id dozens of
    /// times per case.
    pub fn id(&self) -> String {
        let (kind, step) = match self {
            TimerKind::Retry { step } => ("retry/", step),
            TimerKind::Poll { step } => ("poll/", step),
            TimerKind::StepDeadline { step } => ("deadline/", step),
            TimerKind::Reminder { step } => ("remind/", step),
            TimerKind::SupplementDue { step } => ("supplement/", step),
            TimerKind::CaseDeadline => return "deadline".to_owned(),
            TimerKind::CaseReminder => return "remind".to_owned(),
            TimerKind::InboxExpiry => return "inbox".to_owned(),
            TimerKind::Chain => return "chain".to_owned(),
            TimerKind::Erasure => return "erasure".to_owned(),
            TimerKind::ConsentCheck => return "consent".to_owned(),
        };
        let mut id = String::with_capacity(kind.len() + step.len());
        id.push_str(kind);
        id.push_str(step);
        id
    }

    /// The kind whose [`TimerKind::id`] is `id`; `None` for an id no kind has.
    pub fn from_id(id: &str) -> Option<TimerKind> {
        let step = |rest: &str| (!rest.is_empty()).then(|| rest.to_owned());
        if id == "deadline" {
            Some(TimerKind::CaseDeadline)
        } else if id == "remind" {
            Some(TimerKind::CaseReminder)
        } else if id == "inbox" {
            Some(TimerKind::InboxExpiry)
        } else if id == "chain" {
            Some(TimerKind::Chain)
        } else if id == "erasure" {
            Some(TimerKind::Erasure)
        } else if id == "consent" {
            Some(TimerKind::ConsentCheck)
        } else if let Some(rest) = id.strip_prefix("remind/") {
            step(rest).map(|step| TimerKind::Reminder { step })
        } else if let Some(rest) = id.strip_prefix("supplement/") {
            step(rest).map(|step| TimerKind::SupplementDue { step })
        } else if let Some(rest) = id.strip_prefix("retry/") {
            step(rest).map(|step| TimerKind::Retry { step })
        } else if let Some(rest) = id.strip_prefix("poll/") {
            step(rest).map(|step| TimerKind::Poll { step })
        } else {
            step(id.strip_prefix("deadline/")?).map(|step| TimerKind::StepDeadline { step })
        }
    }
}

/// A durable wake-up of a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub case_id: CaseId,
    pub due_at: Timestamp,
    pub kind: TimerKind,
}

/// Where a callback token leads: a step of a case, in one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackTarget {
    pub case_id: CaseId,
    pub step: String,
    pub revision: u32,
}

/// What a portal's `Idempotency-Key` was first used for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// A digest of the request body: the same key with another body is a conflict.
    pub fingerprint: String,
    #[serde(flatten)]
    pub made: Made,
}

/// What the first request under an idempotency key made. Stored as a field beside the
/// fingerprint (`case_id` or `webhook_id`), so records written before webhooks had keys read
/// as they were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Made {
    Case {
        case_id: CaseId,
    },
    Webhook {
        webhook_id: String,
    },
    /// What a CloudEvent did: the same event again is answered the same.
    Event {
        routed: Vec<cloud_event::Routed>,
    },
}

impl IdempotencyRecord {
    pub fn case(fingerprint: String, case_id: CaseId) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint,
            made: Made::Case { case_id },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_kind_reads_back_from_its_id() {
        let step = || "birth".to_owned();
        for kind in [
            TimerKind::Retry { step: step() },
            TimerKind::Poll { step: step() },
            TimerKind::StepDeadline { step: step() },
            TimerKind::CaseDeadline,
            TimerKind::Reminder { step: step() },
            TimerKind::CaseReminder,
            TimerKind::SupplementDue { step: step() },
            TimerKind::InboxExpiry,
            TimerKind::Chain,
        ] {
            assert_eq!(TimerKind::from_id(&kind.id()), Some(kind));
        }
        for bad in ["", "retry/", "poll", "deadline/", "remind/", "other/birth"] {
            assert_eq!(TimerKind::from_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_idempotency_record_stored_before_webhooks_had_keys_reads_as_a_case() {
        let id = CaseId::now_v7();
        let stored = format!(r#"{{"fingerprint":"f00d","case_id":"{id}"}}"#);
        let record: IdempotencyRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(record, IdempotencyRecord::case("f00d".into(), id));
        assert_eq!(serde_json::to_string(&record).unwrap(), stored);
        let hook = IdempotencyRecord {
            fingerprint: "f00d".into(),
            made: Made::Webhook {
                webhook_id: "1c5962e8b157".into(),
            },
        };
        let text = serde_json::to_string(&hook).unwrap();
        assert_eq!(
            text,
            r#"{"fingerprint":"f00d","webhook_id":"1c5962e8b157"}"#
        );
        assert_eq!(
            serde_json::from_str::<IdempotencyRecord>(&text).unwrap(),
            hook
        );
    }
}
