//! Admins issue and revoke API tokens. A token's secret is shown once, in the answer that
//! issues it; civicflow keeps only its digest.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody, shown_without};
use crate::auth::{self, ApiToken, Operation, Role, TokenError};
use crate::store::Store;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// portal, operator, supervisor, agency:<agency id>, admin or metrics.
    role: String,
    /// Who holds it.
    name: String,
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Unknown(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_token", e.to_string())
        }
        TokenError::AlreadyRevoked { .. } => {
            ApiError::new(StatusCode::CONFLICT, "already_revoked", e.to_string())
        }
        TokenError::NoName => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            e.to_string(),
        ),
        TokenError::Store(e) => ApiError::store(e),
    }
}

/// Issues a token (admin); its secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "admin", request_body = IssueRequest,
    responses(
        (status = 201, description = "The token, with its secret `token`", body = Object),
        (status = 422, description = "An unknown role", body = ErrorBody),
    ))]
pub async fn issue<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    body: Result<Json<IssueRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Operation::ManageTokens)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let role: Role = b.role.parse().map_err(|e: auth::UnknownRole| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_role",
            e.to_string(),
        )
    })?;
    let now = state.engine.now();
    let (token, secret) = auth::issue(state.engine.store(), role, &b.name, &caller.0.actor(), now)
        .await
        .map_err(token_error)?;
    let mut shown = public(&token);
    shown["token"] = json!(secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

/// Every token, revoked ones included; never a secret.
#[utoipa::path(get, path = "/v1/tokens", tag = "admin",
    responses((status = 200, description = "`items`", body = Object)))]
pub async fn list<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::ManageTokens)?;
    let mut tokens = state
        .engine
        .store()
        .api_tokens()
        .await
        .map_err(ApiError::store)?;
    tokens.sort_by_key(|t| t.created_at);
    let items: Vec<Value> = tokens.iter().map(public).collect();
    Ok(Json(json!({"items": items})))
}

/// Revokes a token: it stops working at once.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "admin",
    params(("id" = String, Path, description = "Token id (the part after `cf_`)")),
    responses(
        (status = 200, description = "The revoked token", body = Object),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 409, description = "Already revoked", body = ErrorBody),
    ))]
pub async fn revoke<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::ManageTokens)?;
    let now = state.engine.now();
    let token = auth::revoke(state.engine.store(), &id, &caller.0.actor(), now)
        .await
        .map_err(token_error)?;
    Ok(Json(public(&token)))
}

/// A token as shown: everything but its digest.
fn public(token: &ApiToken) -> Value {
    shown_without(token, "digest")
}
