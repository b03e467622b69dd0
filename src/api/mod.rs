//! The HTTP API (axum): the portal starts and reads cases, agencies post callbacks. Every error
//! is JSON with a stable `code`, a `message` and, for validation, the offending `fields`; a
//! client's mistake is never a 500.

mod error;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::case::{Case, CaseId};
use crate::engine::{CallbackAck, CallbackError, Engine, StartError};
use crate::store::Store;
pub use error::ApiError;

/// The largest request body accepted (a portal dossier is a few kilobytes).
const MAX_BODY: usize = 1 << 20;

pub fn router<S: Store + Clone>(engine: Arc<Engine<S>>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/cases", post(start_case::<S>))
        .route("/v1/cases/{id}", get(show_case::<S>))
        .route("/v1/cases/{id}/history", get(case_history::<S>))
        .route("/v1/callbacks/{token}", post(callback::<S>))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(engine)
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    workflow: String,
    #[serde(default)]
    version: Option<u32>,
    input: Value,
}

async fn start_case<S: Store + Clone>(
    State(engine): State<Arc<Engine<S>>>,
    headers: HeaderMap,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(ApiError::from_json)?;
    let key = match headers.get("idempotency-key") {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                "the Idempotency-Key header must be visible ASCII",
            )
        })?),
        None => None,
    };
    let (case, created) = engine
        .start(&request.workflow, request.version, request.input, key)
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
            StartError::BusinessKey { .. } | StartError::BusinessKeyTooLong { .. } => {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_input",
                    e.to_string(),
                )
            }
            StartError::KeyReused { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                e.to_string(),
            ),
            StartError::ShuttingDown => ApiError::unavailable(),
            StartError::Store(e) => ApiError::internal(e),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&case))).into_response())
}

fn parse_id(id: &str) -> Result<CaseId, ApiError> {
    CaseId::parse_str(id).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_case",
            format!("`{id}` is not a case id"),
        )
    })
}

fn unknown_case(id: CaseId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_case",
        format!("no case {id}"),
    )
}

async fn show_case<S: Store + Clone>(
    State(engine): State<Arc<Engine<S>>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    match engine.case(id).await.map_err(ApiError::internal)? {
        Some(case) => Ok(Json(view(&case))),
        None => Err(unknown_case(id)),
    }
}

async fn case_history<S: Store + Clone>(
    State(engine): State<Arc<Engine<S>>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let events = engine.history(id).await.map_err(ApiError::internal)?;
    // Every case's history starts with `case_started`: none means no such case.
    if events.is_empty() {
        return Err(unknown_case(id));
    }
    Ok(Json(json!({"case_id": id, "events": events})))
}

async fn callback<S: Store + Clone>(
    State(engine): State<Arc<Engine<S>>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(ApiError::from_json)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut head = Map::new();
    for (k, v) in &headers {
        if k == "authorization" {
            continue;
        }
        if let Ok(v) = v.to_str() {
            head.insert(k.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    let ack = engine
        .callback(&token, key.as_deref(), Value::Object(head), body)
        .await
        .map_err(|e| match e {
            CallbackError::UnknownToken => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_token", e.to_string())
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
                tracing::error!(error = %e, "a callback for a case whose workflow is not loaded");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "workflow_not_loaded",
                    "the case's workflow is not loaded on this server; retry later",
                )
            }
            CallbackError::Store(e) => ApiError::internal(e),
        })?;
    let status = match ack {
        CallbackAck::Recorded => "recorded",
        CallbackAck::Duplicate => "duplicate",
        CallbackAck::StillPending => "pending",
    };
    Ok(Json(json!({"status": status})))
}

/// A case as the portal sees it: no callback secrets, no raw input.
pub fn view(case: &Case) -> Value {
    let steps: Map<String, Value> = case
        .steps
        .iter()
        .map(|(id, s)| {
            let mut v = json!({
                "status": s.status.as_str(),
                "adapter": s.adapter,
                "agency": s.agency,
                "attempts": s.attempt,
            });
            let fields = [
                ("started_at", s.started_at.map(|t| json!(t))),
                ("finished_at", s.finished_at.map(|t| json!(t))),
                ("due_at", s.due_at.map(|t| json!(t))),
                ("output", s.output.clone()),
                ("rejection", s.rejection.as_ref().map(|r| json!(r))),
                ("error", s.error.as_ref().map(|e| json!(e))),
                ("note", s.note.as_ref().map(|n| json!(n))),
            ];
            for (k, value) in fields {
                if let Some(value) = value {
                    v[k] = value;
                }
            }
            (id.clone(), v)
        })
        .collect();
    json!({
        "id": case.id,
        "workflow": case.workflow,
        "version": case.version,
        "status": case.status.as_str(),
        "reason": case.reason,
        "business_keys": case.business_keys,
        "started_at": case.started_at,
        "due_at": case.due_at,
        "finished_at": case.finished_at,
        "steps": steps,
        "incidents": case.incidents,
    })
}
