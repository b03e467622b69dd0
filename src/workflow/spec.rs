//! The file formats, exactly as written in YAML: workflow files and adapter manifests. These types
//! generate the JSON Schemas under `docs/schema/` (editor completion) and the structural check of
//! `civicflow validate`; [`crate::workflow::definition`] holds the checked, compiled form.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const WORKFLOW_NAME_PATTERN: &str = r"^[a-z][a-z0-9-]*$";
pub const STEP_ID_PATTERN: &str = r"^[a-z][a-z0-9_]*$";
pub const ADAPTER_ID_PATTERN: &str = r"^[a-z][a-z0-9-]*/[a-z][a-z0-9-]*$";
pub const ADAPTER_REF_PATTERN: &str = r"^[a-z][a-z0-9-]*/[a-z][a-z0-9-]*@([1-9][0-9]*|latest)$";
pub const EXPR_PATTERN: &str = r"^\s*\$\{[\s\S]*\}\s*$";
pub const DURATION_PATTERN: &str = r"^[0-9]+(ms|s|m|h)( [0-9]+(ms|s|m|h))*$";
pub const DEADLINE_PATTERN: &str = r"^[0-9]+ (working days?|hours?)$";
pub const WORKING_DAYS_PATTERN: &str = r"^[0-9]+ working days?$";
pub const DAYS_PATTERN: &str = r"^[0-9]+ days?$";

/// What each pattern means, for messages.
pub const PATTERN_HELP: &[(&str, &str)] = &[
    (
        WORKFLOW_NAME_PATTERN,
        "a name is lowercase letters, digits and `-`, starting with a letter",
    ),
    (
        STEP_ID_PATTERN,
        "a step id is lowercase letters, digits and `_`, starting with a letter, so that `.steps.<id>` works in expressions",
    ),
    (
        ADAPTER_ID_PATTERN,
        "an adapter id is `agency/name`, e.g. `police/residence-registration`",
    ),
    (
        ADAPTER_REF_PATTERN,
        "an adapter reference is `agency/name@version` or `agency/name@latest`, e.g. `police/residence-registration@1`",
    ),
    (
        EXPR_PATTERN,
        "an expression is written `${ <jq expression> }`",
    ),
    (
        DURATION_PATTERN,
        "a duration is like `500ms`, `30s`, `5m`, `2h` or `1h 30m`",
    ),
    (
        DEADLINE_PATTERN,
        "a deadline is `<n> working days` or `<n> hours`, e.g. `3 working days`",
    ),
    (
        WORKING_DAYS_PATTERN,
        "a time here is `<n> working days`, e.g. `1 working day`",
    ),
    (
        EVENT_TYPE_PATTERN,
        "an event type is reverse-DNS words, e.g. `vn.gov.moh.death.certified.v1`",
    ),
    (
        DAYS_PATTERN,
        "a legal time limit is `<n> days`, calendar days as the law counts them, e.g. `60 days`",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    Workflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    Adapter,
}

/// An interlinked public service: the steps of one citizen request across agencies.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "civicflow workflow")]
pub struct WorkflowSpec {
    pub kind: WorkflowKind,
    /// Stable name; cases are started by name.
    #[schemars(regex(pattern = WORKFLOW_NAME_PATTERN))]
    pub name: String,
    /// Several versions of one workflow may be loaded at once; a case stays on the version it
    /// started with.
    #[schemars(range(min = 1))]
    pub version: u32,
    pub title: String,
    /// The legal text the chain implements.
    pub legal_basis: String,
    /// The statutory limit of the whole chain, e.g. `3 working days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DEADLINE_PATTERN))]
    pub deadline: Option<String>,
    /// A working-day notice before the case's due time: the portal and the agencies are told
    /// the dossier is due soon, while an apology and a new date may still be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = WORKING_DAYS_PATTERN))]
    pub remind_before: Option<String>,
    /// What happens when the case's due time passes unfinished, besides the overdue incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_breach: Option<BreachSpec>,
    /// Who may give the citizen an apology and one new date for the whole case, and how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionSpec>,
    /// The life event the procedure registers, and the legal time limit counted from it (a
    /// birth within 60 days, a death within 15): a case started after the limit is `late`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub life_event: Option<LifeEventSpec>,
    /// When an agency finds the dossier incomplete: the citizen's time, the clock, how many
    /// requests; each step's own `supplement` overrides it field by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplement: Option<SupplementSpec>,
    /// What else starts a case besides the portal: an event of a type (a hospital certifies a
    /// death), or another workflow's case ending (a chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<TriggerSpec>,
    /// How long the personal data of a case is kept after it ends, and why: then it is erased
    /// or pseudonymised everywhere civicflow wrote it. Required when the input schema marks
    /// anything `x-personal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// JSON Schema of the input the portal submits.
    pub input_schema: BTreeMap<String, Value>,
    /// Names and expressions (over `.input`) of the keys a case is found by.
    pub business_keys: BTreeMap<String, ExprText>,
    #[schemars(length(min = 1))]
    pub steps: Vec<StepSpec>,
}

/// An expression, `${ <jq> }`.
pub type ExprText = String;

/// One procedure at one agency.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    #[schemars(regex(pattern = STEP_ID_PATTERN))]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `agency/name@version`, or `agency/name@latest`: the newest version, which a new version
    /// may become only if this workflow still checks with it. A case keeps the version it
    /// started with.
    #[schemars(regex(pattern = ADAPTER_REF_PATTERN))]
    pub adapter: String,
    /// Steps that must finish first. Steps with no mutual dependency run in parallel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Runs the step only when this expression is true; otherwise the step is skipped.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub condition: Option<ExprText>,
    /// The adapter's input: any JSON, where a string `${ … }` is an expression.
    pub with: Value,
    /// The statutory deadline of this step; the adapter's applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DEADLINE_PATTERN))]
    pub deadline: Option<String>,
    /// Per-attempt timeout, overriding the adapter's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,
    /// Retry policy, overriding the adapter's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// What an agency's refusal of this step stops.
    #[serde(default)]
    pub on_rejection: OnRejection,
    /// A working-day notice before the step's due time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = WORKING_DAYS_PATTERN))]
    pub remind_before: Option<String>,
    /// What happens when the step's due time passes unanswered, besides the overdue incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_breach: Option<BreachSpec>,
    /// Who may give an apology and one new date for this step, and how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<ExtensionSpec>,
    /// What the agency's silence past the due time means, where a law says so: off unless
    /// declared, with the law's text in `legal_basis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_silence: Option<SilenceSpec>,
    /// When this step's agency finds the dossier incomplete; the workflow's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplement: Option<SupplementSpec>,
    /// An event the step waits for before it calls its agency (a hospital's certificate, a
    /// court's decision); `with` then reads it as `.event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitForSpec>,
    /// The personal data the step passes to its agency, why, and on what lawful basis:
    /// required when `with` reads an input field marked `x-personal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeSpec>,
}

/// A passing of personal data to an agency (Law 91/2025/QH15 on Personal Data Protection): its
/// purpose, its lawful basis, and the personal input fields it sends.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSpec {
    /// What the agency uses the data for, as the citizen is told.
    #[schemars(length(min = 1))]
    pub purpose: String,
    pub lawful_basis: LawfulBasis,
    /// The law that requires or allows the exchange without consent; required unless the
    /// basis is `consent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub law: Option<String>,
    /// The input fields marked personal that `with` sends, by name (`child`, `mother`).
    #[serde(default)]
    pub personal_data: Vec<String>,
    /// Whose consent, to which data agreement: required when the basis is `consent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentSpec>,
    /// The citizen the exchange is made for (`${ .input.requester_personal_id }`): the
    /// agency is told who, as a keyed pseudonym in `X-Road-UserId`, never the ID itself.
    /// Without it, no end user is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
}

/// Why an exchange of personal data is lawful. Every basis but `consent` names its law.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LawfulBasis {
    /// The data subject (or a child's guardian) agreed, and has not withdrawn.
    Consent,
    /// A law obliges the agency to process it (a birth registered by the civil-status office).
    LegalObligation,
    /// A state agency's task under a law (public administration, social insurance).
    PublicTask,
    /// A contract the data subject is party to.
    Contract,
    /// To protect someone's life or health in an emergency.
    VitalInterests,
}

impl LawfulBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            LawfulBasis::Consent => "consent",
            LawfulBasis::LegalObligation => "legal_obligation",
            LawfulBasis::PublicTask => "public_task",
            LawfulBasis::Contract => "contract",
            LawfulBasis::VitalInterests => "vital_interests",
        }
    }
}

/// The consent an exchange needs: a data agreement, and the person whose record allows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentSpec {
    /// The data agreement consented to, e.g. `poor-household-birth-allowance`: what the portal
    /// shows the citizen and records their answer to.
    #[schemars(regex(pattern = WORKFLOW_NAME_PATTERN))]
    pub agreement: String,
    /// The personal ID of who consents, an expression over `.input`: the data subject, or a
    /// child's guardian.
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub from: ExprText,
    /// In what capacity: `self` (the default) or `guardian` (for a child's data).
    #[serde(default, rename = "as")]
    pub given_as: GivenAs,
    /// How long the step waits for the consent, e.g. `10 working days`; then an incident asks
    /// an operator.
    #[schemars(regex(pattern = WORKING_DAYS_PATTERN))]
    pub within: String,
}

/// In what capacity a consent is given.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GivenAs {
    /// By the data subject.
    #[default]
    #[serde(rename = "self")]
    Subject,
    /// By a parent or guardian, for a child's data.
    Guardian,
}

impl GivenAs {
    pub fn as_str(self) -> &'static str {
        match self {
            GivenAs::Subject => "self",
            GivenAs::Guardian => "guardian",
        }
    }
}

/// How long a case's personal data is kept after it ends.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// Calendar days after the case ends, e.g. `365 days`.
    #[schemars(regex(pattern = DAYS_PATTERN))]
    pub after_end: String,
    /// Why that long: the law or the purpose.
    #[schemars(length(min = 1))]
    pub legal_basis: String,
}

/// A CloudEvents type: reverse-DNS words, e.g. `vn.gov.moh.death.certified.v1`.
pub const EVENT_TYPE_PATTERN: &str = r"^[a-z0-9]+(\.[a-z0-9_-]+)+$";

/// What starts a case: exactly one of `event` and `case`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventTriggerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<CaseTriggerSpec>,
    /// Starts the case only when this expression (over `.event`, or `.case`, `.input` and
    /// `.steps` of the case that ended) is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub when: Option<ExprText>,
    /// The new case's input, any JSON where a string `${ … }` is an expression over the same;
    /// checked against the input schema when the case starts.
    pub with: Value,
}

/// A CloudEvent that starts the workflow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTriggerSpec {
    #[serde(rename = "type")]
    #[schemars(regex(pattern = EVENT_TYPE_PATTERN))]
    pub event_type: String,
    /// The `source` attributes taken: a source is taken when it starts with one of these.
    #[schemars(length(min = 1))]
    pub sources: Vec<String>,
    /// A business key of this workflow: if a case with the new input's value of it is running,
    /// the event goes to that case instead of starting a second one (signal-with-start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What an event for a running case does: `deliver` it to the case (the default) or
    /// `ignore` it.
    #[serde(default)]
    pub if_running: IfRunning,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IfRunning {
    #[default]
    Deliver,
    Ignore,
}

/// Another workflow's case ending, which starts this workflow with what it produced.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseTriggerSpec {
    #[schemars(regex(pattern = WORKFLOW_NAME_PATTERN))]
    pub workflow: String,
    /// How it ended: `completed`, `refused` (rejected or partially completed), or `failed`
    /// (cancelled before its end).
    pub outcome: ChainOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChainOutcome {
    Completed,
    Refused,
    Failed,
}

impl ChainOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainOutcome::Completed => "completed",
            ChainOutcome::Refused => "refused",
            ChainOutcome::Failed => "failed",
        }
    }
}

/// An event a step waits for, matched to the case by a value both carry.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForSpec {
    #[serde(rename = "type")]
    #[schemars(regex(pattern = EVENT_TYPE_PATTERN))]
    pub event_type: String,
    /// The `source` attributes taken, as in a trigger.
    #[schemars(length(min = 1))]
    pub sources: Vec<String>,
    #[serde(rename = "match")]
    pub matching: MatchSpec,
    /// How long the step waits, e.g. `5 working days`; then an incident asks an operator.
    #[schemars(regex(pattern = WORKING_DAYS_PATTERN))]
    pub within: String,
    /// How long an event that reaches the case before the step waits is kept for it (default
    /// `10 working days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = WORKING_DAYS_PATTERN))]
    pub keep_early: Option<String>,
}

/// An event is the case's when `from` (over the event) equals `expect` (over `.input`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub from: ExprText,
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub expect: ExprText,
}

/// How a supplement of an incomplete dossier goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupplementSpec {
    /// The citizen's time to supplement, e.g. `10 working days` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = WORKING_DAYS_PATTERN))]
    pub within: Option<String>,
    /// How the step's statutory clock counts once the dossier is complete: `restart` from zero,
    /// as the decree says (the default), or `resume` where it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<SupplementClock>,
    /// How many requests the step may make (default 1: the decree asks for one, complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SupplementClock {
    #[default]
    Restart,
    Resume,
}

/// Who is meant: operators, supervisors, or the step's own agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Operator,
    Supervisor,
    /// The agency the step is at (its supervisors, through its token and the feed).
    Agency,
}

impl SilenceOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceOutcome::Approved => "approved",
            SilenceOutcome::Refused => "refused",
        }
    }
}

impl Party {
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Operator => "operator",
            Party::Supervisor => "supervisor",
            Party::Agency => "agency",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreachSpec {
    /// Whom the overdue dossier is escalated to: it is listed as theirs, and the feed says so.
    pub escalate_to: Party,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtensionSpec {
    /// Who may grant it, besides an admin. Default: supervisors.
    #[serde(default = "default_granters")]
    #[schemars(length(min = 1))]
    pub granted_by: Vec<Party>,
    /// The furthest the new date may be from the due time it replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = WORKING_DAYS_PATTERN))]
    pub at_most: Option<String>,
}

pub fn default_granters() -> Vec<Party> {
    vec![Party::Supervisor]
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SilenceOutcome {
    /// Deemed approved: the step succeeds with `output`.
    Approved,
    /// Deemed refused: the step is refused, as `on_rejection` says.
    Refused,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceSpec {
    pub outcome: SilenceOutcome,
    /// The law that gives the agency's silence this meaning; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// For `approved`: the step's output, any JSON where a string `${ … }` is an expression
    /// over the case (`.input`, `.steps`, `.case`); checked against the adapter's output schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LifeEventSpec {
    /// The event's date (`YYYY-MM-DD`), an expression over `.input`.
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub date: ExprText,
    /// The legal time limit from the event, in calendar days, e.g. `60 days`.
    #[schemars(regex(pattern = DAYS_PATTERN))]
    pub within: String,
    /// The law that sets the limit.
    pub legal_basis: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnRejection {
    /// Only the steps that need this one (directly or not) are stopped; other branches finish.
    #[default]
    StopDependents,
    /// The whole case stops; running branches finish their current step.
    StopCase,
    /// The steps that need this one wait, and an incident asks an operator to act: correct the
    /// data and re-run the step, or let the refusal stand (the dependants then stop).
    Hold,
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub initial_interval: String,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_interval: String,
    #[serde(default = "default_multiplier")]
    #[schemars(range(min = 1.0))]
    pub multiplier: f64,
    /// No retry starts after this long since the first attempt.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_duration: String,
}

fn default_multiplier() -> f64 {
    2.0
}

/// How an agency's procedure is called. Owned and versioned by the agency.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "civicflow adapter")]
pub struct AdapterSpec {
    pub kind: AdapterKind,
    /// `agency/name`.
    #[schemars(regex(pattern = ADAPTER_ID_PATTERN))]
    pub id: String,
    #[schemars(range(min = 1))]
    pub version: u32,
    /// The owning agency: the part of `id` before `/`.
    #[schemars(regex(pattern = WORKFLOW_NAME_PATTERN))]
    pub agency: String,
    pub title: String,
    /// JSON Schema of what a step's `with` must produce.
    pub input_schema: BTreeMap<String, Value>,
    /// JSON Schema of the output a success produces.
    pub output_schema: BTreeMap<String, Value>,
    pub request: RequestSpec,
    /// How the reply to the request is classified.
    pub reply: OutcomesSpec,
    pub completion: CompletionSpec,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
    pub retry: RetrySpec,
    /// The statutory deadline of the procedure.
    #[schemars(regex(pattern = DEADLINE_PATTERN))]
    pub deadline: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "PATCH")]
    Patch,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// The HTTP request. Templates see `.input` (the step's input), `.case`, `.step` and, for
/// callback adapters, `.callback.url`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub method: Method,
    /// Relative to the agency's base URL (configuration, not this file); may be `${ … }`.
    pub path: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The JSON body; any JSON where a string `${ … }` is an expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// Rules over a reply `{status, headers, body}`, tried in order: success, needs_supplement,
/// rejection, pending.
/// Connection errors, timeouts, 429 and 5xx are retryable failures without a rule; anything
/// else is an unexpected reply, a technical failure that is not retried.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomesSpec {
    pub success: SuccessSpec,
    /// The dossier is incomplete: the agency says what is missing, and the citizen is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_supplement: Option<NeedsSupplementSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<RejectionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuccessSpec {
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub when: ExprText,
    /// The step's output; must match the adapter's output schema.
    pub output: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectionSpec {
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub when: ExprText,
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub reason_code: ExprText,
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub message: ExprText,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NeedsSupplementSpec {
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub when: ExprText,
    /// What is missing: a list of `{name, reason}`, `name` a dotted path into the case's input
    /// (`mother.personal_id`), or of such names alone.
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub missing: ExprText,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingSpec {
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub when: ExprText,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The reply is the result.
    Sync,
    /// The reply says "pending"; the agency later posts the result to `.callback.url`.
    Callback,
    /// The reply says "pending"; civicflow asks a status URL at an interval.
    Poll,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionSpec {
    pub mode: Mode,
    /// For `callback`: how the posted result `{headers, body}` is classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<OutcomesSpec>,
    /// For `poll`: where and how often to ask, and how status replies are classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<PollSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollSpec {
    /// The status URL, an expression over the pending reply `{status, headers, body}`; a path is
    /// relative to the agency's base URL.
    #[schemars(regex(pattern = EXPR_PATTERN))]
    pub url: ExprText,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,
    pub reply: OutcomesSpec,
}

/// The JSON Schema of workflow files.
pub fn workflow_schema() -> Value {
    schema_for::<WorkflowSpec>()
}

/// The JSON Schema of adapter manifests.
pub fn adapter_schema() -> Value {
    schema_for::<AdapterSpec>()
}

fn schema_for<T: JsonSchema>() -> Value {
    // An optional field is left out, never written `null`: so the schema has no `null`
    // alternatives, and a wrong value gets the message of the field's own type.
    let generator = schemars::generate::SchemaSettings::draft07()
        .with_transform(schemars::transform::RecursiveTransform(drop_null))
        .into_generator();
    let mut schema =
        serde_json::to_value(generator.into_root_schema_for::<T>()).expect("a schema is JSON");
    // Every object's keys in order: the committed schemas are byte-for-byte what `civicflow
    // schema` prints whether or not a build keeps JSON objects in insertion order (serde_json's
    // `preserve_order`, which any dependency may turn on).
    schema.sort_all_objects();
    schema
}

fn drop_null(schema: &mut schemars::Schema) {
    let is_null = |v: &Value| v == &serde_json::json!({"type": "null"});
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            schema.insert("type".to_owned(), only);
        }
    }
    let Some(Value::Array(alternatives)) = schema.get("anyOf") else {
        return;
    };
    if let [a, b] = alternatives.as_slice()
        && (is_null(a) || is_null(b))
    {
        let kept = if is_null(a) { b.clone() } else { a.clone() };
        schema.remove("anyOf");
        if let Value::Object(fields) = kept {
            for (k, v) in fields {
                schema.insert(k, v);
            }
        }
    }
}
