//! The portal registers where its notifications go. The signing secret is shown once, in the
//! answer that registers the webhook.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody, shown_without};
use crate::auth::{Operation, random_hex};
use crate::store::{Store, Transaction};
use crate::webhooks::Webhook;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Where notifications are posted (http or https).
    url: String,
}

/// Registers a webhook (portal); its signing `secret` is in this answer only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "portal", request_body = Register,
    responses(
        (status = 201, description = "The webhook, with its `secret`", body = Object),
        (status = 422, description = "Not an http(s) URL (`invalid_url`), or an internal address the server does not allow (`internal_target`)", body = ErrorBody),
    ))]
pub async fn register<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    body: Result<Json<Register>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Operation::ManageWebhooks)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let parsed = reqwest::Url::parse(&b.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    let Some(parsed) = parsed else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_url",
            format!("`{}` is not an http(s) URL", b.url),
        ));
    };
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port_or_known_default().unwrap_or(80);
    if let Err(e) = state.webhook_targets.check(host, port).await {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "internal_target",
            e.to_string(),
        ));
    }
    let store = state.engine.store();
    let hook = Webhook {
        id: random_hex(6),
        url: b.url,
        secret: random_hex(24),
        created_at: state.engine.now(),
        created_by: caller.0.actor(),
        // What happens from now on: earlier notifications were not meant for it.
        cursor: store.feed_end().await.map_err(ApiError::internal)?,
        failures: 0,
        last_error: None,
        last_delivered_at: None,
    };
    let tx = Transaction {
        put_webhooks: vec![hook.clone()],
        ..Transaction::default()
    };
    commit(&state, tx).await?;
    state.feed.registered();
    let mut shown = public(&hook);
    shown["secret"] = json!(hook.secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

/// The webhooks, with how many notifications each has still to take and its last error.
#[utoipa::path(get, path = "/v1/webhooks", tag = "portal",
    responses((status = 200, description = "`items`", body = Object)))]
pub async fn list<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Operation::ManageWebhooks)?;
    let store = state.engine.store();
    let hooks = store.webhooks().await.map_err(ApiError::internal)?;
    let mut items = Vec::with_capacity(hooks.len());
    for hook in &hooks {
        let mut v = public(hook);
        let pending = store
            .feed_count(hook.cursor)
            .await
            .map_err(ApiError::internal)?;
        v["pending"] = json!(pending);
        items.push(v);
    }
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "portal",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ))]
pub async fn delete<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::ManageWebhooks)?;
    let store = state.engine.store();
    let hooks = store.webhooks().await.map_err(ApiError::internal)?;
    if !hooks.iter().any(|h| h.id == id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_webhook",
            format!("no webhook `{id}`"),
        ));
    }
    let tx = Transaction {
        delete_webhooks: vec![id],
        ..Transaction::default()
    };
    commit(&state, tx).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Commits a change to the webhooks. Every node reads whether any webhook is left when the
/// configuration version moves on (a deleted one stops being fed within that poll).
async fn commit<S: Store + Clone>(state: &AppState<S>, tx: Transaction) -> Result<(), ApiError> {
    state
        .engine
        .store()
        .commit(&tx)
        .await
        .map_err(ApiError::internal)
}

/// A webhook as shown: everything but its secret.
fn public(hook: &Webhook) -> Value {
    shown_without(hook, "secret")
}
