//! The agencies' door: the callback of a `callback` step. The agency authenticates with its own
//! token (role `agency:<id>`) and names the step by the step's secret token in the URL; both
//! must match.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::engine::{CallbackAck, CallbackError};
use crate::store::{Store, StoreError};

/// An agency's answer to a `callback` step: the step's token in the URL, the agency's own
/// token in `Authorization`.
#[utoipa::path(post, path = "/v1/callbacks/{token}", tag = "agencies", request_body = Object,
    params(
        ("token" = String, Path, description = "The step's callback token"),
        ("Idempotency-Key" = Option<String>, Header, description = "The agency's message id: a repeat is acknowledged once"),
    ),
    responses(
        (status = 200, description = "`status`: recorded, duplicate or pending", body = Object),
        (status = 403, description = "Another agency's step", body = ErrorBody),
        (status = 404, description = "No step waits for this token", body = ErrorBody),
        (status = 409, description = "The step has finished, or was re-run with a new token", body = ErrorBody),
    ))]
pub async fn post<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(token) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::Callback)?;
    let agency = caller.0.role.agency().unwrap_or_default().to_owned();
    let Json(body) = body.map_err(ApiError::from_json)?;
    let key = super::idempotency_key(&headers)?.map(str::to_owned);
    let mut head = Map::new();
    for (k, v) in &headers {
        if k == "authorization" {
            continue;
        }
        if let Ok(v) = v.to_str() {
            head.insert(k.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    let ack = state
        .engine
        .callback(&token, &agency, key.as_deref(), Value::Object(head), body)
        .await
        .map_err(|e| match e {
            CallbackError::UnknownToken => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_token", e.to_string())
            }
            CallbackError::OtherAgency { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "other_agency", e.to_string())
            }
            CallbackError::Finished { .. } => {
                ApiError::new(StatusCode::CONFLICT, "step_finished", e.to_string())
            }
            CallbackError::Superseded { .. } => {
                ApiError::new(StatusCode::CONFLICT, "token_superseded", e.to_string())
            }
            CallbackError::ShuttingDown => ApiError::unavailable(),
            // Not the agency's fault, and not lost: retrying after the file is restored works.
            CallbackError::Missing(e) => {
                tracing::error!(case_id = %e.case_id, trace_id = %e.case_id.simple(), error = %e, "a callback for a case whose workflow is not loaded");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "workflow_not_loaded",
                    "the case's workflow is not loaded on this server; retry later",
                )
            }
            // Nothing was recorded, and the agency retries a 503: the race is not its doing.
            CallbackError::Store(e @ StoreError::Conflict { .. }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("{e}; retry the callback"),
            )
            .with_retry_after(std::time::Duration::from_secs(1)),
            CallbackError::Store(e) => ApiError::store(e),
        })?;
    let status = match ack {
        CallbackAck::Recorded => "recorded",
        CallbackAck::Duplicate => "duplicate",
        CallbackAck::StillPending => "pending",
    };
    Ok(Json(json!({"status": status})))
}
