//! The operators' door: the incident list, and the actions on a stuck case (retry, skip, fix,
//! cancel, bulk retry). Every action needs a reason, and is recorded with who did it.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::cases::{ListOrder, parse_id, query_error, unknown_case, view};
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::case::IncidentReason;
use crate::case::query::{self, IncidentFilter, MAX_PAGE};
use crate::case::query::{IncidentRow, Listing};
use crate::engine::{Action, ActionError};
use crate::store::{Order, Store};

/// The most incidents one bulk action goes through; a larger backlog takes several calls.
const MAX_BULK: usize = 10_000;

/// Which incidents a bulk action takes; every field given narrows.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    workflow: Option<String>,
    step: Option<String>,
    agency: Option<String>,
    reason: Option<IncidentReason>,
    /// Opened at or after this time (RFC 3339).
    opened_after: Option<Timestamp>,
    /// Opened before this time (RFC 3339).
    opened_before: Option<Timestamp>,
}

impl From<Filter> for IncidentFilter {
    fn from(f: Filter) -> IncidentFilter {
        IncidentFilter {
            workflow: f.workflow,
            step: f.step,
            agency: f.agency,
            reason: f.reason,
            opened_after: f.opened_after,
            opened_before: f.opened_before,
        }
    }
}

/// The incident list's query: a filter (every field given narrows) and a page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncidentsQuery {
    workflow: Option<String>,
    /// A step id; with `workflow`, read straight from its index.
    step: Option<String>,
    agency: Option<String>,
    reason: Option<IncidentReason>,
    /// Opened at or after this time (RFC 3339).
    opened_after: Option<Timestamp>,
    /// Opened before this time (RFC 3339).
    opened_before: Option<Timestamp>,
    /// `oldest` (default) or `newest` first.
    #[serde(default)]
    order: ListOrder,
    /// Where the previous page ended (its `next`).
    cursor: Option<String>,
    /// At most 500; default 50.
    limit: Option<usize>,
}

/// Open incidents (cases that need a person), read from an index, paged by cursor.
#[utoipa::path(get, path = "/v1/incidents", tag = "operators", params(IncidentsQuery),
    responses(
        (status = 200, description = "A page of incidents", body = Listing<IncidentRow>),
        (status = 400, description = "A filter or cursor that does not parse", body = ErrorBody),
    ))]
pub async fn incidents<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<IncidentsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::ListIncidents)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let filter = IncidentFilter {
        workflow: q.workflow,
        step: q.step,
        agency: q.agency,
        reason: q.reason,
        opened_after: q.opened_after,
        opened_before: q.opened_before,
    };
    let page = query::incidents(
        state.engine.store(),
        &filter,
        q.order.into(),
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await
    .map_err(query_error)?;
    Ok(Json(json!(page)))
}

/// An action on one step of a case.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepAction {
    step: String,
    /// Why; required, recorded in the history.
    reason: Option<String>,
    /// `skip`: the output later steps need.
    #[serde(default)]
    output: Option<Value>,
    /// `fix`: the corrected case input, whole.
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelAction {
    /// Why; required, recorded in the history.
    reason: Option<String>,
}

fn reason(given: Option<String>) -> Result<String, ApiError> {
    match given.map(|r| r.trim().to_owned()) {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
            "say why: every action needs a `reason`, which goes into the case's history",
        )
        .with_fields(vec![crate::workflow::definition::SchemaViolation {
            field: "/reason".to_owned(),
            message: "a non-empty reason is required".to_owned(),
        }])),
    }
}

fn action_error(e: ActionError) -> ApiError {
    match e {
        ActionError::UnknownCase(id) => unknown_case(id),
        ActionError::UnknownStep { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_step", e.to_string())
        }
        ActionError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, "state_conflict", e.to_string())
        }
        ActionError::InvalidOutput(v) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_output",
            "the output does not match the adapter's output schema",
        )
        .with_fields(v),
        ActionError::InvalidInput(v) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "the corrected input does not match the workflow's input schema",
        )
        .with_fields(v),
        ActionError::InvalidData(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_data",
            e.to_string(),
        ),
        ActionError::ShuttingDown => ApiError::unavailable(),
        ActionError::Missing(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "workflow_not_loaded",
            e.to_string(),
        ),
        ActionError::Store(e) => ApiError::internal(e),
    }
}

async fn act<S: Store + Clone>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    action: Action,
    why: String,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(id)?;
    let case = state
        .engine
        .act(id, action, &caller.0.actor(), &why)
        .await
        .map_err(action_error)?;
    Ok(Json(view(&case, caller.0.role.allows(Operation::Unmasked))))
}

fn step_body(body: Result<Json<StepAction>, JsonRejection>) -> Result<StepAction, ApiError> {
    body.map(|Json(b)| b).map_err(ApiError::from_json)
}

/// Retries a step now, with a fresh retry budget.
#[utoipa::path(post, path = "/v1/cases/{id}/retry", tag = "operators", request_body = StepAction,
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case after the action", body = Object),
        (status = 404, description = "No such case or step", body = ErrorBody),
        (status = 409, description = "The action does not fit the case's state; the message says why", body = ErrorBody),
        (status = 422, description = "No reason, or supplied data that breaks its schema", body = ErrorBody),
    ))]
pub async fn retry<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<StepAction>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::Act)?;
    let b = step_body(body)?;
    let why = reason(b.reason)?;
    act(&state, &caller, &id, Action::Retry { step: b.step }, why).await
}

/// Skips a step, with the output later steps need (or lets a held refusal stand).
#[utoipa::path(post, path = "/v1/cases/{id}/skip", tag = "operators", request_body = StepAction,
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case after the action", body = Object),
        (status = 404, description = "No such case or step", body = ErrorBody),
        (status = 409, description = "The action does not fit the case's state; the message says why", body = ErrorBody),
        (status = 422, description = "No reason, or supplied data that breaks its schema", body = ErrorBody),
    ))]
pub async fn skip<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<StepAction>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::Act)?;
    let b = step_body(body)?;
    let why = reason(b.reason)?;
    let action = Action::Skip {
        step: b.step,
        output: b.output,
    };
    act(&state, &caller, &id, action, why).await
}

/// Corrects the case's input and re-runs a step under a new revision.
#[utoipa::path(post, path = "/v1/cases/{id}/fix", tag = "operators", request_body = StepAction,
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case after the action", body = Object),
        (status = 404, description = "No such case or step", body = ErrorBody),
        (status = 409, description = "The action does not fit the case's state; the message says why", body = ErrorBody),
        (status = 422, description = "No reason, or supplied data that breaks its schema", body = ErrorBody),
    ))]
pub async fn fix<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<StepAction>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::Act)?;
    let b = step_body(body)?;
    let why = reason(b.reason)?;
    let input = b.input.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "input_required",
            "`fix` needs the corrected case `input`, whole",
        )
    })?;
    let action = Action::Fix {
        step: b.step,
        input,
    };
    act(&state, &caller, &id, action, why).await
}

/// Cancels a running case.
#[utoipa::path(post, path = "/v1/cases/{id}/cancel", tag = "operators", request_body = CancelAction,
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case after the action", body = Object),
        (status = 404, description = "No such case or step", body = ErrorBody),
        (status = 409, description = "The action does not fit the case's state; the message says why", body = ErrorBody),
        (status = 422, description = "No reason, or supplied data that breaks its schema", body = ErrorBody),
    ))]
pub async fn cancel<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<CancelAction>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::Act)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let why = reason(b.reason)?;
    act(&state, &caller, &id, Action::Cancel, why).await
}

/// A retry of every step an incident filter matches.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    #[serde(default)]
    filter: Filter,
    reason: Option<String>,
}

/// Retries every step with an open incident that matches the filter: "every case stuck at the
/// police since the outage began".
#[utoipa::path(post, path = "/v1/bulk/retry", tag = "operators", request_body = BulkRetry,
    responses(
        (status = 200, description = "`matched`, `retried`, `refused` (each with why), `more`", body = Object),
        (status = 422, description = "No reason", body = ErrorBody),
    ))]
pub async fn bulk_retry<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    body: Result<Json<BulkRetry>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::BulkAct)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let why = reason(b.reason)?;
    let filter: IncidentFilter = b.filter.into();
    let store = state.engine.store();
    // Gather first: retrying closes incidents, which moves the index under a running read.
    let mut targets = BTreeSet::new();
    let mut matched = 0;
    let mut without_step = 0;
    let mut cursor = None;
    let more = loop {
        let page = query::incidents(
            store,
            &filter,
            Order::Ascending,
            cursor.as_deref(),
            MAX_PAGE,
        )
        .await
        .map_err(query_error)?;
        for row in page.items {
            matched += 1;
            match row.step {
                Some(step) => {
                    targets.insert((row.case_id, step));
                }
                None => without_step += 1,
            }
        }
        match page.next {
            Some(next) if matched < MAX_BULK => cursor = Some(next),
            Some(_) => break true,
            None => break false,
        }
    };
    let by = caller.0.actor();
    let mut retried = 0;
    let mut refused = Vec::new();
    for (case_id, step) in targets {
        let action = Action::Retry { step: step.clone() };
        match state.engine.act(case_id, action, &by, &why).await {
            Ok(_) => retried += 1,
            Err(e @ (ActionError::ShuttingDown | ActionError::Store(_))) => {
                return Err(action_error(e));
            }
            Err(e) => refused.push(json!({
                "case_id": case_id,
                "step": step,
                "message": e.to_string(),
            })),
        }
    }
    Ok(Json(json!({
        "matched": matched,
        "retried": retried,
        "refused": refused,
        "case_incidents_not_retried": without_step,
        "more": more,
    })))
}
