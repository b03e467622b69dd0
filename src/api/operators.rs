//! The operators' door: the incident list, and the actions on a stuck case (retry, skip, fix,
//! cancel, bulk retry). Every action needs a reason, and is recorded with who did it.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::agencies::{self, AgencyView};
use super::auth::Caller;
use super::cases::{ListOrder, parse_id, query_error, seen_by, unknown_case};
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::case::IncidentReason;
use crate::case::masking::{kept_where_masked, mask_all, mask_prose};
use crate::engine::{Action, ActionError};
use crate::store::query::IncidentRow;
use crate::store::query::{self, IncidentFilter, MAX_PAGE};
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

/// A page of incidents, and the agencies that are down now.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentPage {
    pub items: Vec<IncidentRow>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Agency outages open now (circuits open): one incident per agency, not one per case,
    /// with the steps that wait for it; on every page, filtered by `agency` only, and left
    /// out when a `reason` is asked for.
    pub outages: Vec<AgencyView>,
    /// Cases whose record is damaged (stepped over by this page, or found by the engine when
    /// their timers came due): each needs its record restored (`civicflow store check` lists
    /// every damaged record).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>, format = Uuid)]
    pub damaged: Vec<crate::case::CaseId>,
}

/// Open incidents (cases that need a person), read from an index, paged by cursor, and the
/// agency outages open now.
#[utoipa::path(get, path = "/v1/incidents", tag = "operators", params(IncidentsQuery),
    responses(
        (status = 200, description = "A page of incidents", body = IncidentPage),
        (status = 400, description = "A filter or cursor that does not parse", body = ErrorBody),
    ))]
pub async fn incidents<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<IncidentsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::ListIncidents)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let mut outages = Vec::new();
    if q.reason.is_none() {
        for agency in state.engine.agencies().keys() {
            let open = state.engine.circuits().is_open(agency);
            if open && q.agency.as_ref().is_none_or(|a| a == agency) {
                outages.push(agencies::view(&state.engine, agency, false).await?);
            }
        }
    }
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
    // An incident's message quotes the agency, which may quote a citizen's number: masked as
    // in the case view for roles that may not see it.
    // Named by this page's reads, and by the engine when their timers came due.
    let damaged: BTreeSet<_> = page
        .damaged
        .into_iter()
        .chain(state.engine.damaged().into_keys())
        .collect();
    let mut page = json!(IncidentPage {
        items: page.items,
        next: page.next,
        outages,
        damaged: damaged.into_iter().collect(),
    });
    if !caller.0.role.allows(Operation::Unmasked) {
        for row in page["items"].as_array_mut().into_iter().flatten() {
            row["message"] = mask_prose(&row["message"]);
            row["business_keys"] = mask_all(&row["business_keys"]);
        }
    }
    Ok(Json(page))
}

/// An operator's action on a case.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionName {
    /// Retry a step now, with a fresh retry budget.
    Retry,
    /// Skip a step, with the output later steps need (or let a held refusal stand).
    Skip,
    /// Correct the case's input and re-run a step under a new revision.
    Fix,
    /// Cancel the running case.
    Cancel,
}

/// What an action needs: always a reason; a step for all but `cancel`; `output` for `skip`
/// (optional), `input` for `fix`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    #[serde(default)]
    step: Option<String>,
    /// Why; required, recorded in the history.
    reason: Option<String>,
    /// `skip`: the output later steps need.
    #[serde(default, deserialize_with = "super::json::unique_keys_opt")]
    output: Option<Value>,
    /// `fix`: the corrected case input, whole. A role that sees personal data masked may send
    /// it back as shown: a value still masked keeps the stored one.
    #[serde(default, deserialize_with = "super::json::unique_keys_opt")]
    input: Option<Value>,
}

fn reason(given: Option<String>) -> Result<String, ApiError> {
    match given.map(|r| r.trim().to_owned()) {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(required(
            "reason_required",
            "/reason",
            "say why: every action needs a `reason`, which goes into the case's history",
        )),
    }
}

fn required(code: &'static str, field: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_fields(vec![
        crate::workflow::definition::SchemaViolation {
            field: field.to_owned(),
            message: "required".to_owned(),
        },
    ])
}

pub fn action_error(e: ActionError) -> ApiError {
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
        ActionError::Extension(e) => super::deadlines::extension_error(e),
        ActionError::Supplement(e) => super::supplements::supplement_error(e),
        ActionError::ShuttingDown => ApiError::unavailable(),
        ActionError::Missing(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "workflow_not_loaded",
            e.to_string(),
        ),
        ActionError::Store(e) => ApiError::store(e),
    }
}

/// Acts on one case (operators). Each action is checked against the case's state and recorded
/// in its history with who did it and why.
#[utoipa::path(post, path = "/v1/cases/{id}/{action}", tag = "operators", request_body = ActionRequest,
    params(
        ("id" = String, Path, description = "Case id"),
        ("action" = ActionName, Path, description = "retry, skip, fix or cancel"),
    ),
    responses(
        (status = 200, description = "The case after the action", body = Object),
        (status = 404, description = "No such case, step or action", body = ErrorBody),
        (status = 409, description = "The action does not fit the case's state; the message says why", body = ErrorBody),
        (status = 422, description = "No reason, no step, or supplied data that breaks its schema", body = ErrorBody),
    ))]
pub async fn act<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<ActionRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((id, action)) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::Act)?;
    let id = parse_id(&id)?;
    let name: ActionName = serde_json::from_value(json!(action)).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("`{action}` is not an action; the actions are retry, skip, fix and cancel"),
        )
    })?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let why = reason(b.reason)?;
    let step = || {
        b.step
            .clone()
            .ok_or_else(|| required("step_required", "/step", "name the `step` to act on"))
    };
    let action = match name {
        ActionName::Retry => Action::Retry { step: step()? },
        ActionName::Skip => Action::Skip {
            step: step()?,
            output: b.output.clone(),
        },
        ActionName::Fix => {
            let mut input = b.input.clone().ok_or_else(|| {
                required(
                    "input_required",
                    "/input",
                    "`fix` needs the corrected case `input`, whole",
                )
            })?;
            // A reader who sees personal data masked sends the input back as it was shown:
            // what is still masked is the stored value.
            if !caller.0.role.allows(Operation::Unmasked)
                && let Some(case) = state.engine.case(id).await.map_err(ApiError::store)?
            {
                input = kept_where_masked(&input, &case.input);
            }
            Action::Fix {
                step: step()?,
                input,
            }
        }
        ActionName::Cancel => Action::Cancel,
    };
    let case = state
        .engine
        .act(id, action, &caller.0.actor(), &why)
        .await
        .map_err(action_error)?;
    Ok(Json(seen_by(&state, &caller, &case)))
}

/// A retry of every step an incident filter matches.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    #[serde(default)]
    filter: Filter,
    reason: Option<String>,
    /// How many matching incidents the caller was shown and confirmed: if more match now,
    /// nothing is retried (`409 bulk_count_changed`, with the count now) until the new count
    /// is confirmed. Without it, whatever matches is retried.
    confirmed: Option<usize>,
}

/// Retries every step with an open incident that matches the filter: "every case stuck at the
/// police since the outage began".
#[utoipa::path(post, path = "/v1/bulk/retry", tag = "operators", request_body = BulkRetry,
    responses(
        (status = 200, description = "`matched`, `retried`, `refused` (each with why), `more`", body = Object),
        (status = 409, description = "More incidents match than were `confirmed` (`bulk_count_changed`): nothing was retried", body = ErrorBody),
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
    if let Some(confirmed) = b.confirmed
        && matched > confirmed
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "bulk_count_changed",
            format!(
                "{matched}{} incidents match the filter now, {confirmed} were confirmed: nothing was retried; confirm the new count",
                if more { " or more" } else { "" }
            ),
        ));
    }
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
