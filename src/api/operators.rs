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

use super::auth::Caller;
use super::cases::{ListOrder, parse_id, query_error, unknown_case, view};
use super::{ApiError, AppState};
use crate::auth::Operation;
use crate::case::IncidentReason;
use crate::case::query::{self, IncidentFilter, MAX_PAGE};
use crate::engine::{Action, ActionError};
use crate::store::{Order, Store};

/// The most incidents one bulk action goes through; a larger backlog takes several calls.
const MAX_BULK: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsQuery {
    #[serde(flatten)]
    filter: Filter,
    #[serde(default)]
    order: ListOrder,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub async fn incidents<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<IncidentsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::ListIncidents)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let page = query::incidents(
        state.engine.store(),
        &q.filter.into(),
        q.order.into(),
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await
    .map_err(query_error)?;
    Ok(Json(json!(page)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepAction {
    step: String,
    reason: Option<String>,
    /// `skip`: the output later steps need.
    #[serde(default)]
    output: Option<Value>,
    /// `fix`: the corrected case input, whole.
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelAction {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    #[serde(default)]
    filter: Filter,
    reason: Option<String>,
}

/// Retries every step with an open incident that matches the filter: "every case stuck at the
/// police since the outage began".
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
