//! The portal registers where its notifications go. The signing secret is shown once, in the
//! answer that registers the webhook.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody, shown_without};
use crate::auth::{Operation, digest, random_hex};
use crate::case::{IdempotencyRecord, Made};
use crate::store::{Store, StoreError, Transaction};
use crate::webhooks::{Webhook, WebhookFormat};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Where notifications are posted (http or https).
    url: String,
    /// `civicflow` (the default): civicflow's notifications as JSON; `cloudevents`: each as a
    /// CloudEvent (structured mode), with the case's start too.
    #[serde(default)]
    format: WebhookFormat,
}

/// Registers a webhook (portal); its signing `secret` is in this answer only, or in the answer
/// to a retry under the same `Idempotency-Key` by the same token.
#[utoipa::path(post, path = "/v1/webhooks", tag = "portal", request_body = Register,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried registration return the same webhook, with its secret, instead of registering a second one"),
    ),
    responses(
        (status = 201, description = "The webhook, with its `secret`", body = Object),
        (status = 200, description = "The webhook this Idempotency-Key registered before, with its `secret`", body = Object),
        (status = 400, description = "An empty or overlong Idempotency-Key (`invalid_header`)", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for another URL, or its webhook was deleted since (`idempotency_key_reused`)", body = ErrorBody),
        (status = 422, description = "Not an http(s) URL (`invalid_url`), or an internal address the server does not allow (`internal_target`)", body = ErrorBody),
    ))]
pub async fn register<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<Register>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Operation::ManageWebhooks)?;
    let key = super::idempotency_key(&headers)?;
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
    let store = state.engine.store();
    // Scoped to the token: the answer holds the secret, which only its registrant may see.
    let key = key.map(|k| format!("webhook:{}:{k}", caller.0.token_id));
    // The URL may hold a secret of its own: the record keeps only its digest.
    let fingerprint = match b.format {
        WebhookFormat::Civicflow => digest(&b.url),
        WebhookFormat::Cloudevents => digest(&format!("cloudevents {}", b.url)),
    };
    if let Some(key) = &key
        && let Some(found) = store.idempotency(key).await.map_err(ApiError::store)?
    {
        return replay(&state, found, &fingerprint).await;
    }
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port_or_known_default().unwrap_or(80);
    if let Err(e) = state.webhook_targets.check(host, port).await {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "internal_target",
            e.to_string(),
        ));
    }
    let hook = Webhook {
        id: random_hex(6),
        url: b.url,
        secret: random_hex(24),
        created_at: state.engine.now(),
        created_by: caller.0.actor(),
        // What happens from now on: earlier notifications were not meant for it.
        cursor: store.feed_end().await.map_err(ApiError::store)?,
        failures: 0,
        last_error: None,
        last_delivered_at: None,
        format: b.format,
    };
    let mut tx = Transaction {
        put_webhooks: vec![hook.clone()],
        ..Transaction::default()
    };
    if let Some(key) = &key {
        let made = Made::Webhook {
            webhook_id: hook.id.clone(),
        };
        tx.put_idempotency.push((
            key.clone(),
            IdempotencyRecord {
                fingerprint: fingerprint.clone(),
                made,
            },
        ));
    }
    match store.commit(&tx).await {
        Ok(()) => {}
        // The same registration, made meanwhile by a concurrent retry: answer as its replay.
        Err(StoreError::KeyTaken { key }) => {
            let found = store
                .idempotency(&key)
                .await
                .map_err(ApiError::store)?
                .ok_or_else(|| ApiError::internal(format!("idempotency record {key} vanished")))?;
            return replay(&state, found, &fingerprint).await;
        }
        Err(e) => return Err(ApiError::store(e)),
    }
    Ok((StatusCode::CREATED, Json(with_secret(&hook))))
}

/// The answer to a registration retried under its `Idempotency-Key`: the webhook it made.
async fn replay<S: Store + Clone>(
    state: &AppState<S>,
    found: IdempotencyRecord,
    fingerprint: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let reused =
        |detail: String| ApiError::new(StatusCode::CONFLICT, "idempotency_key_reused", detail);
    let Made::Webhook { webhook_id } = found.made else {
        return Err(ApiError::internal(
            "a webhook's idempotency record names a case",
        ));
    };
    if found.fingerprint != fingerprint {
        return Err(reused(format!(
            "the Idempotency-Key was already used to register webhook `{webhook_id}` for another URL"
        )));
    }
    let hooks = state
        .engine
        .store()
        .webhooks()
        .await
        .map_err(ApiError::store)?;
    match hooks.iter().find(|h| h.id == webhook_id) {
        Some(hook) => Ok((StatusCode::OK, Json(with_secret(hook)))),
        None => Err(reused(format!(
            "the Idempotency-Key registered webhook `{webhook_id}`, which was deleted since"
        ))),
    }
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
    let hooks = store.webhooks().await.map_err(ApiError::store)?;
    let mut items = Vec::with_capacity(hooks.len());
    for hook in &hooks {
        let mut v = public(hook);
        let pending = store
            .feed_count(hook.cursor)
            .await
            .map_err(ApiError::store)?;
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
    let hooks = store.webhooks().await.map_err(ApiError::store)?;
    if !hooks.iter().any(|h| h.id == id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_webhook",
            format!("no webhook `{id}`"),
        ));
    }
    // Every node reads whether any webhook is left when the configuration version moves on
    // (a deleted one stops being fed within that poll).
    let tx = Transaction {
        delete_webhooks: vec![id],
        ..Transaction::default()
    };
    store.commit(&tx).await.map_err(ApiError::store)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook as shown: everything but its secret.
fn public(hook: &Webhook) -> Value {
    shown_without(hook, "secret")
}

/// A webhook as its registrant is shown it, once: with its secret.
fn with_secret(hook: &Webhook) -> Value {
    let mut shown = public(hook);
    shown["secret"] = json!(hook.secret);
    shown
}
