//! The portal's door: start a case, read it, list a citizen's cases; and a case's history, for
//! operators.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::case::masking::{Personal, mask_all, mask_numbers, mask_prose, mask_text};
use crate::case::{
    Case, CaseId, CaseStatus, Event, Extension, Incident, LifeEvent, Rejection, StepStatus,
    SupplementRequest,
};
use crate::engine::StartError;
use crate::store::query::{self, CaseFilter, QueryError};
use crate::store::{Order, Store};
use crate::workflow::definition::Workflow;

/// A case to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    workflow: String,
    /// Default: the newest loaded version.
    #[serde(default)]
    version: Option<u32>,
    /// The portal's dossier, checked against the workflow's input schema.
    #[serde(deserialize_with = "super::json::unique_keys")]
    input: Value,
}

/// Starts a case (portal). A retried request with the same `Idempotency-Key` answers the same
/// case with 200; the same key with another body is a 409.
#[utoipa::path(post, path = "/v1/cases", tag = "portal", request_body = StartRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried start return the same case"),
        ("traceparent" = Option<String>, Header, description = "The portal's W3C trace context: kept on the case, whose trace links to it"),
    ),
    responses(
        (status = 201, description = "The case, started", body = CaseView),
        (status = 200, description = "The case this Idempotency-Key started before", body = CaseView),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "The key was used with another body", body = ErrorBody),
        (status = 422, description = "The input breaks the workflow's input schema; every field named", body = ErrorBody),
    ))]
pub async fn start<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    caller.require(Operation::StartCase)?;
    let Json(request) = body.map_err(ApiError::from_json)?;
    let key = super::idempotency_key(&headers)?;
    let (case, created) = state
        .engine
        .start(
            &request.workflow,
            request.version,
            request.input,
            key,
            headers.get("traceparent").and_then(|v| v.to_str().ok()),
        )
        .await
        .map_err(|e| match e {
            StartError::UnknownWorkflow { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_workflow", e.to_string())
            }
            StartError::InvalidInput(violations) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                "the input does not match the workflow's input schema",
            )
            .with_fields(violations),
            StartError::BusinessKey { .. }
            | StartError::BusinessKeyTooLong { .. }
            | StartError::BusinessKeyControl { .. }
            | StartError::LifeEvent(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
                e.to_string(),
            ),
            StartError::KeyReused { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                e.to_string(),
            ),
            StartError::ShuttingDown => ApiError::unavailable(),
            StartError::Store(e) => ApiError::store(e),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&case, Reader::Unmasked))).into_response())
}

pub fn parse_id(id: &str) -> Result<CaseId, ApiError> {
    CaseId::parse_str(id).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_case",
            format!("`{id}` is not a case id"),
        )
    })
}

pub fn unknown_case(id: CaseId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_case",
        format!("no case {id}"),
    )
}

/// The longest a read may wait for a case to end.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long to wait for the case to end.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Answer as soon as the case has ended, or once this much time has passed (`30s`, at most
    /// `60s`), instead of at once.
    wait: Option<String>,
}

/// A case: status, steps, results the reader may see, refusals, due dates, open incidents.
/// With `wait`, the answer comes when the case ends (or the wait is over): a portal follows a
/// case without polling.
#[utoipa::path(get, path = "/v1/cases/{id}", tag = "portal",
    params(("id" = String, Path, description = "Case id"), ShowQuery),
    responses(
        (status = 200, description = "The case (personal data masked for roles without unmasked access)", body = CaseView),
        (status = 400, description = "A wait that is not a duration or is longer than 60s", body = ErrorBody),
        (status = 404, description = "No such case", body = ErrorBody),
    ))]
pub async fn show<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::ReadCase)?;
    let id = parse_id(&id)?;
    let Query(query) = query.map_err(ApiError::from_query)?;
    let wait = match query.wait.as_deref() {
        None => std::time::Duration::ZERO,
        Some(text) => {
            let wait = crate::workflow::definition::duration(text)
                .map_err(|e| ApiError::bad_request("invalid_query", e))?;
            if wait > MAX_WAIT {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("`wait` is {text}; a read waits at most 60s"),
                ));
            }
            wait
        }
    };
    let found = state
        .engine
        .case_when_ended(id, wait)
        .await
        .map_err(ApiError::store)?;
    match found {
        Some(case) => Ok(Json(seen_by(&state, &caller, &case))),
        None => Err(unknown_case(id)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// A business key, `name=value` (e.g. `requester=001190123456`).
    key: Option<String>,
    workflow: Option<String>,
    status: Option<CaseStatus>,
    #[serde(default)]
    order: ListOrder,
    /// Where the previous page ended (its `next`).
    cursor: Option<String>,
    /// At most 500; default 50.
    limit: Option<usize>,
}

/// `oldest` first or `newest` first.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListOrder {
    #[default]
    Oldest,
    Newest,
}

impl From<ListOrder> for Order {
    fn from(o: ListOrder) -> Order {
        match o {
            ListOrder::Oldest => Order::Ascending,
            ListOrder::Newest => Order::Descending,
        }
    }
}

pub fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::BadCursor(_) => ApiError::bad_request("invalid_cursor", e.to_string()),
        QueryError::Store(e) => ApiError::store(e),
    }
}

/// Cases by business key, workflow or status, paged by cursor.
#[utoipa::path(get, path = "/v1/cases", tag = "portal", params(ListQuery),
    responses(
        (status = 200, description = "`items` (case summaries), `next`, and `damaged`: the cases stepped over because their record is damaged", body = Object),
        (status = 400, description = "No filter, or a bad one", body = ErrorBody),
    ))]
pub async fn list<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::ListCases)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let filter = CaseFilter {
        key: q.key,
        workflow: q.workflow,
        status: q.status,
    };
    if filter.is_empty() {
        return Err(ApiError::bad_request(
            "filter_required",
            "give at least one of `key` (name=value), `workflow` or `status`",
        ));
    }
    if let Some(key) = &filter.key
        && !key.contains('=')
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("key `{key}` must be `name=value`, e.g. `requester=001190123456`"),
        ));
    }
    if let Some(key) = &filter.key
        && key.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("key {key:?} holds a control character; no business key does"),
        ));
    }
    let page = query::cases(
        state.engine.store(),
        &filter,
        q.order.into(),
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await
    .map_err(query_error)?;
    let unmasked = caller.0.role.allows(Operation::Unmasked);
    let items: Vec<Value> = page.items.iter().map(|c| summary(c, unmasked)).collect();
    let mut listed = json!({"items": items, "next": page.next});
    if !page.damaged.is_empty() {
        listed["damaged"] = json!(page.damaged);
    }
    Ok(Json(listed))
}

/// Every event of a case's history: attempts with their requests and replies, operators'
/// actions with who and why.
#[utoipa::path(get, path = "/v1/cases/{id}/history", tag = "operators",
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case's events, oldest first (personal data masked for roles without unmasked access)", body = HistoryView),
        (status = 404, description = "No such case", body = ErrorBody),
    ))]
pub async fn history<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::ReadHistory)?;
    let id = parse_id(&id)?;
    let events = state.engine.history(id).await.map_err(ApiError::store)?;
    // Every case's history starts with `case_started`: none means no such case.
    if events.is_empty() {
        return Err(unknown_case(id));
    }
    let unmasked = caller.0.role.allows(Operation::Unmasked);
    let wf = match state.engine.case(id).await.map_err(ApiError::store)? {
        Some(case) if !unmasked => state.engine.workflow_of_case(&case),
        _ => None,
    };
    let reader = if unmasked {
        Reader::Unmasked
    } else {
        Reader::Masked(wf.as_deref())
    };
    let events = events.iter().map(|e| event_view(e, reader)).collect();
    Ok(Json(json!(HistoryView {
        case_id: id,
        events
    })))
}

/// A case's business keys, masked whole for a reader who may not see them: they are citizens'
/// IDs and dossier numbers.
fn business_keys(case: &Case, unmasked: bool) -> BTreeMap<String, String> {
    case.business_keys
        .iter()
        .map(|(k, v)| {
            let v = if unmasked { v.clone() } else { mask_text(v) };
            (k.clone(), v)
        })
        .collect()
}

/// One line of a case list.
fn summary(case: &Case, unmasked: bool) -> Value {
    json!({
        "id": case.id,
        "workflow": case.workflow,
        "version": case.version,
        "status": case.status.as_str(),
        "business_keys": business_keys(case, unmasked),
        "started_at": case.started_at,
        "due_at": case.due_at,
        "extended": case.deadlines.extension.is_some(),
        "tier": case.deadlines.life_event.as_ref().map(|l| l.tier),
        "awaiting_supplement": case.steps.values().any(|s| s.status == StepStatus::AwaitingSupplement),
        "finished_at": case.finished_at,
        "incidents": case.incidents.len(),
    })
}

/// A case as the API shows it: no callback secrets, no bookkeeping.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseView {
    #[schema(value_type = String, format = Uuid)]
    id: CaseId,
    workflow: String,
    version: u32,
    status: CaseStatus,
    /// Why the case ended as it did (a refusal, a cancellation).
    reason: Option<String>,
    /// The portal's dossier.
    #[schema(value_type = Object)]
    input: Value,
    /// Each business key (a citizen's ID, the dossier number) and its value.
    business_keys: BTreeMap<String, String>,
    #[schema(value_type = String, format = DateTime)]
    started_at: Timestamp,
    /// The case's statutory due time in force: the new date's close once extended.
    #[schema(value_type = Option<String>, format = DateTime)]
    due_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    finished_at: Option<Timestamp>,
    /// The life event's date, the legal limit from it, and the case's tier (`on_time`, `late`).
    #[serde(skip_serializing_if = "Option::is_none")]
    life_event: Option<LifeEvent>,
    /// The apology and new date the case was given (once), with its reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    extension: Option<Extension>,
    /// Overdue steps (`*`: the case) and to whom each was escalated.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    escalated: BTreeMap<String, String>,
    /// The agencies' requests for a supplement of the dossier, oldest first: what is missing,
    /// by when, and whether it was answered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    supplements: Vec<SupplementRequest>,
    /// The event or the case that started it, when the portal did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<crate::case::Origin>,
    /// The CloudEvents it received (their data masked for a reader who sees no personal data):
    /// `kept` for steps that do not wait yet, `taken` by each step, and what each waiting step
    /// `expects`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    inbox: Option<Value>,
    /// When its personal data is erased (its workflow's retention after it ended), and when
    /// it was: every personal value is a pseudonym since.
    #[serde(skip_serializing_if = "crate::case::Retention::is_empty")]
    #[schema(value_type = Object)]
    retention: crate::case::Retention,
    steps: BTreeMap<String, StepView>,
    /// Open incidents: what needs a person.
    incidents: Vec<Incident>,
}

/// One step of a case as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    status: StepStatus,
    /// `agency/name@version`.
    adapter: String,
    agency: String,
    revision: u32,
    /// Attempts made in this revision.
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    started_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    finished_at: Option<Timestamp>,
    /// The step's statutory due time.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    due_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection: Option<Rejection>,
    /// The last failure, as the agency or the network gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Why the step was skipped or stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// A case's history as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    #[schema(value_type = String, format = Uuid)]
    case_id: CaseId,
    /// Oldest first, as the reader may see them.
    #[schema(value_type = Vec<Event>)]
    events: Vec<Value>,
}

/// How a reader sees a case's personal data.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    /// A role that may see it (the portal, a supervisor).
    Unmasked,
    /// Masked as the case's workflow and adapters mark it; everything, if it is not loaded.
    Masked(Option<&'a Workflow>),
}

impl Reader<'_> {
    /// What the case's input holds, as this reader may see it.
    fn input(&self, input: &Value) -> Value {
        match self {
            Reader::Unmasked => input.clone(),
            Reader::Masked(Some(wf)) => wf.input.personal().mask(input),
            Reader::Masked(None) => mask_all(input),
        }
    }

    /// What step `step`'s output holds, as this reader may see it.
    fn output(&self, step: &str, output: &Value) -> Value {
        match self {
            Reader::Unmasked => output.clone(),
            Reader::Masked(wf) => wf
                .and_then(|wf| wf.step(step))
                .map_or_else(Personal::everything, |s| {
                    s.adapter.output.personal().clone()
                })
                .mask(output),
        }
    }

    /// Prose civicflow keeps, with its long numbers masked for a masked reader.
    fn prose(&self, text: &str) -> String {
        match self {
            Reader::Unmasked => text.to_owned(),
            Reader::Masked(_) => mask_numbers(text),
        }
    }

    fn masks(&self) -> bool {
        matches!(self, Reader::Masked(_))
    }
}

/// A case as a reader sees it: no callback secrets; personal data masked for `reader`.
pub fn view(case: &Case, reader: Reader<'_>) -> Value {
    let prose = |t: &Option<String>| t.as_deref().map(|t| reader.prose(t));
    let steps = case
        .steps
        .iter()
        .map(|(id, s)| {
            let step = StepView {
                status: s.status,
                adapter: s.adapter.clone(),
                agency: s.agency.clone(),
                revision: s.revision,
                attempts: s.attempt,
                started_at: s.started_at,
                finished_at: s.finished_at,
                due_at: s.due_at,
                output: s.output.as_ref().map(|o| reader.output(id, o)),
                rejection: s.rejection.as_ref().map(|r| Rejection {
                    reason_code: r.reason_code.clone(),
                    message: reader.prose(&r.message),
                }),
                error: prose(&s.error),
                note: prose(&s.note),
            };
            (id.clone(), step)
        })
        .collect();
    let incidents = case
        .incidents
        .iter()
        .map(|i| Incident {
            message: reader.prose(&i.message),
            ..i.clone()
        })
        .collect();
    json!(CaseView {
        id: case.id,
        workflow: case.workflow.clone(),
        version: case.version,
        status: case.status,
        reason: prose(&case.reason),
        input: reader.input(&case.input),
        business_keys: business_keys(case, !reader.masks()),
        started_at: case.started_at,
        due_at: case.due_at,
        finished_at: case.finished_at,
        life_event: case.deadlines.life_event.clone(),
        extension: case.deadlines.extension.as_ref().map(|e| Extension {
            reason: reader.prose(&e.reason),
            ..e.clone()
        }),
        escalated: case.deadlines.escalated.clone(),
        supplements: case
            .deadlines
            .supplements
            .iter()
            .map(|r| SupplementRequest {
                missing: r
                    .missing
                    .iter()
                    .map(|m| crate::case::Missing {
                        name: m.name.clone(),
                        reason: reader.prose(&m.reason),
                    })
                    .collect(),
                ..r.clone()
            })
            .collect(),
        origin: case.origin.clone(),
        inbox: (!case.inbox.is_empty()).then(|| inbox_view(&case.inbox, reader)),
        retention: case.retention.clone(),
        steps,
        incidents,
    })
}

/// A case's inbox as a reader may see it: events' data and expected values masked whole for a
/// reader who sees no personal data (an event's data has no schema to mask it by).
fn inbox_view(inbox: &crate::case::Inbox, reader: Reader<'_>) -> Value {
    let mut shown = json!(inbox);
    if reader.masks() {
        for kept in shown["kept"].as_array_mut().into_iter().flatten() {
            mask_event(&mut kept["event"]);
        }
        for taken in shown["taken"]
            .as_object_mut()
            .into_iter()
            .flat_map(|t| t.values_mut())
        {
            mask_event(&mut taken["event"]);
        }
        for expect in shown["expects"]
            .as_object_mut()
            .into_iter()
            .flat_map(|t| t.values_mut())
        {
            expect["value"] = crate::case::masking::mask_all(&expect["value"]);
        }
    }
    shown
}

fn mask_event(event: &mut Value) {
    if let Some(data) = event.get("data") {
        event["data"] = crate::case::masking::mask_all(data);
    }
    if let Some(subject) = event.get("subject") {
        event["subject"] = crate::case::masking::mask_all(subject);
    }
}

/// An event of a case's history as `reader` sees it: a step's output and an operator's supplied
/// data masked as the definitions mark them, prose with its long numbers masked.
fn event_view(event: &Event, reader: Reader<'_>) -> Value {
    let mut v = json!(event);
    if !reader.masks() {
        return v;
    }
    let step = v["step"].as_str().unwrap_or_default().to_owned();
    if let Some(fields) = v.as_object_mut() {
        for (key, value) in fields.iter_mut() {
            *value = match key.as_str() {
                "message" | "error" | "reason" | "note" => mask_prose(value),
                "output" => reader.output(&step, value),
                "details" => match value.as_object() {
                    Some(details) => Value::Object(
                        details
                            .iter()
                            .map(|(k, d)| {
                                let d = match k.as_str() {
                                    "input" | "previous_input" => reader.input(d),
                                    "output" => reader.output(&step, d),
                                    _ => d.clone(),
                                };
                                (k.clone(), d)
                            })
                            .collect(),
                    ),
                    None => value.clone(),
                },
                _ => continue,
            };
        }
    }
    v
}

/// `case` as `caller` may see it: masked by its definitions unless the role may see personal
/// data.
pub fn seen_by<S: Store + Clone>(state: &AppState<S>, caller: &Caller, case: &Case) -> Value {
    if caller.0.role.allows(Operation::Unmasked) {
        return view(case, Reader::Unmasked);
    }
    let wf = state.engine.workflow_of_case(case);
    view(case, Reader::Masked(wf.as_deref()))
}
