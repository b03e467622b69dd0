//! The portal's door for an incomplete dossier: the citizen's supplement, answering the
//! agency's request (Decree 61/2018, Art. 15(3)).

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::cases::{parse_id, seen_by};
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::engine::{ActionError, SupplementError};
use crate::store::Store;

/// A supplement: the request it answers, and what was missing, shaped as the case's input.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupplementBody {
    /// The request's id, as the case and the `step.supplement_requested` notification give it
    /// (`birth-1`).
    request_id: Option<String>,
    /// Only what the request asks for, shaped as the case's input, e.g.
    /// `{"mother": {"personal_id": "001190123456"}}`: merged into it.
    #[serde(default, deserialize_with = "super::json::unique_keys_opt")]
    #[schema(value_type = Object)]
    input: Option<Value>,
}

pub fn supplement_error(e: SupplementError) -> ApiError {
    let message = e.to_string();
    match e {
        SupplementError::UnknownRequest { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_request", message)
        }
        SupplementError::Answered(..) => {
            ApiError::new(StatusCode::CONFLICT, "request_answered", message)
        }
        SupplementError::Expired(..) => {
            ApiError::new(StatusCode::CONFLICT, "request_expired", message)
        }
        SupplementError::Closed(_) => {
            ApiError::new(StatusCode::CONFLICT, "request_closed", message)
        }
        SupplementError::KeyReused => {
            ApiError::new(StatusCode::CONFLICT, "idempotency_key_reused", message)
        }
        SupplementError::NotRequested { ref field, .. } => ApiError::invalid_field(
            "not_requested",
            &format!("/input/{}", field.replace('.', "/")),
            message,
        ),
        SupplementError::Empty(_) => ApiError::invalid_field("input_required", "/input", message),
    }
}

/// Supplements an incomplete dossier: the case's input gets what the request asked for, and
/// the step runs again with its statutory clock started again. Idempotent under an
/// `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/cases/{id}/supplements", tag = "portal", request_body = SupplementBody,
    params(
        ("id" = String, Path, description = "Case id"),
        ("Idempotency-Key" = Option<String>, Header, description = "The same key with the same supplement answers the case again instead of a 409"),
    ),
    responses(
        (status = 200, description = "The case, its step sent again with the completed dossier", body = Object),
        (status = 404, description = "No such case or request", body = ErrorBody),
        (status = 409, description = "`request_answered` (a request is supplemented once), `request_expired` (its deadline passed), or the key used for another supplement", body = ErrorBody),
        (status = 422, description = "No request id, nothing given, a field not asked for, or a dossier that breaks the workflow's input schema", body = ErrorBody),
    ))]
pub async fn post<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<SupplementBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::Supplement)?;
    let id = parse_id(&id)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let key = super::idempotency_key(&headers)?;
    let request_id = b
        .request_id
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| {
            ApiError::invalid_field(
                "request_id_required",
                "/request_id",
                "name the request this supplement answers, `request_id`",
            )
        })?;
    let input = match b.input {
        Some(input @ Value::Object(_)) => input,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "invalid_input",
                "/input",
                "`input` is an object shaped as the case's input",
            ));
        }
        None => {
            return Err(ApiError::invalid_field(
                "input_required",
                "/input",
                "send what the request asks for under `input`",
            ));
        }
    };
    let case = state
        .engine
        .supplement_case(id, &request_id, input, key, &caller.0.actor())
        .await
        .map_err(|e| match e {
            ActionError::Supplement(e) => supplement_error(e),
            other => super::operators::action_error(other),
        })?;
    Ok(Json(seen_by(&state, &caller, &case)))
}
