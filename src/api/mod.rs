//! The HTTP API (axum): the portal starts and reads cases, operators find incidents and act,
//! agencies post callbacks, admins manage tokens. Every request but the health check and the
//! OpenAPI document (`/v1/openapi.json`) is authenticated ([`auth`]), and every error is JSON
//! with a stable `code`, a `message` and, for validation, the offending `fields`; a client's
//! mistake is never a 500.

mod agencies;
mod audit;
mod auth;
mod callbacks;
mod cases;
mod consents;
mod deadlines;
mod error;
mod events;
mod json;
mod kpis;
mod metrics;
mod openapi;
mod operators;
mod registry;
mod server;
mod store;
mod subjects;
mod supplements;
mod tokens;
mod ui;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::registry::Registry;
use crate::store::Store;
use crate::webhooks::Targets;
pub use auth::Limits;
pub use cases::{Reader, view};
pub use error::{ApiError, ErrorBody};
pub use openapi::openapi_json;
pub use server::{Connections, serve};

/// The largest request body accepted (a portal dossier is a few kilobytes).
const MAX_BODY: usize = 1 << 20;

/// What every handler shares.
pub struct AppState<S> {
    engine: Arc<Engine<S>>,
    registry: Arc<Registry<S>>,
    limiter: auth::Limiter,
    webhook_targets: Targets,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> AppState<S> {
        AppState {
            engine: self.engine.clone(),
            registry: self.registry.clone(),
            limiter: self.limiter.clone(),
            webhook_targets: self.webhook_targets,
        }
    }
}

/// The API's routes over one engine. The request limits are this node's: with several nodes,
/// a token may make `limits` requests to each. `webhook_targets` says where webhooks may point.
pub fn router<S: Store + Clone>(
    engine: Arc<Engine<S>>,
    registry: Arc<Registry<S>>,
    (limits, webhook_targets): (Limits, Targets),
) -> Router {
    let state = AppState {
        engine,
        registry,
        limiter: auth::limiter(limits),
        webhook_targets,
    };
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready::<S>))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/cases", post(cases::start::<S>).get(cases::list::<S>))
        .route("/v1/cases/{id}", get(cases::show::<S>))
        .route("/v1/cases/{id}/history", get(cases::history::<S>))
        .route("/v1/cases/{id}/extension", post(deadlines::extend::<S>))
        .route("/v1/cases/{id}/supplements", post(supplements::post::<S>))
        .route("/v1/cases/{id}/{action}", post(operators::act::<S>))
        .route("/v1/incidents", get(operators::incidents::<S>))
        .route("/v1/deadlines", get(deadlines::list::<S>))
        .route("/v1/bulk/retry", post(operators::bulk_retry::<S>))
        .route("/v1/kpis", get(kpis::read::<S>))
        .route("/v1/store/backup", get(store::backup::<S>))
        .route("/v1/agencies", get(agencies::list::<S>))
        .route("/v1/agencies/{agency}", get(agencies::show::<S>))
        .route("/v1/agencies/{agency}/circuit", post(agencies::set::<S>))
        .route("/metrics", get(metrics::read::<S>))
        .route("/v1/callbacks/{token}", post(callbacks::post::<S>))
        .route("/v1/events", post(events::post::<S>))
        .route(
            "/v1/consents",
            post(consents::record::<S>).get(consents::list::<S>),
        )
        .route("/v1/consents/withdrawals", post(consents::withdraw::<S>))
        .route("/v1/subjects/{id}", delete(subjects::erase::<S>))
        .route("/v1/audit/entries", get(audit::entries::<S>))
        .route("/v1/audit/heads", get(audit::heads::<S>))
        .route("/v1/audit/heads/latest", get(audit::latest_head::<S>))
        .route("/v1/audit/proofs/inclusion", get(audit::inclusion::<S>))
        .route("/v1/audit/proofs/consistency", get(audit::consistency::<S>))
        .route(
            "/v1/tokens",
            post(tokens::issue::<S>).get(tokens::list::<S>),
        )
        .route("/v1/tokens/{id}", delete(tokens::revoke::<S>))
        .route(
            "/v1/webhooks",
            post(webhooks::register::<S>).get(webhooks::list::<S>),
        )
        .route("/v1/webhooks/{id}", delete(webhooks::delete::<S>))
        .route(
            "/v1/adapters",
            post(registry::publish_adapter::<S>).get(registry::list_adapters::<S>),
        )
        .route(
            "/v1/adapters/{agency}/{name}/{version}/deprecate",
            post(registry::deprecate_adapter::<S>),
        )
        .route("/v1/adapters/test", post(registry::test_adapter::<S>))
        .route(
            "/v1/adapters/{agency}/{name}/{version}",
            get(registry::show_adapter::<S>),
        )
        .route(
            "/v1/workflows",
            post(registry::publish_workflow::<S>).get(registry::list_workflows::<S>),
        )
        .route("/v1/registry/changes", get(registry::changes::<S>))
        .merge(ui::routes::<S>())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(server::header_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count::<S>,
        ))
        .with_state(state)
}

/// The scrapers' own address (`serve --metrics-listen`): `GET /metrics` without a token, and
/// nothing else, for a network only Prometheus reaches.
pub fn metrics_router<S: Store + Clone>(engine: Arc<Engine<S>>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let engine = engine.clone();
                async move { metrics::scrape(&engine, &headers).await }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The longest `Idempotency-Key` kept: a key is stored with what it made, and a client's
/// UUID or message id is far shorter.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request's `Idempotency-Key`, if it sent one: visible ASCII, not empty, at most
/// [`MAX_IDEMPOTENCY_KEY`] bytes. An empty key would make every request that sends one share
/// one slot, so it is refused rather than taken as a key.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "invalid_header",
            "the Idempotency-Key header must be visible ASCII",
        )
    })?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_header",
            "the Idempotency-Key header is empty: send a key (a UUID, say) or no header",
        ));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::bad_request(
            "invalid_header",
            format!(
                "the Idempotency-Key header is {} bytes long; at most {MAX_IDEMPOTENCY_KEY} are kept",
                key.len()
            ),
        ));
    }
    Ok(Some(key))
}

/// Unauthenticated, for load balancers and the CLI's "is it up?".
#[utoipa::path(get, path = "/v1/health", tag = "portal", security(()),
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object)))]
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// How long readiness waits for the store to say whether it takes writes.
const READY_WITHIN: Duration = Duration::from_secs(2);
/// When a load balancer is told to ask again, in seconds.
const READY_RETRY_AFTER: u64 = 5;

/// Unauthenticated, for load balancers: whether this node should get requests. Not ready while
/// its store takes no writes (a full disk) or it is shutting down; liveness (`/v1/health`)
/// stays as it is, since restarting the node would not help.
#[utoipa::path(get, path = "/v1/ready", tag = "portal", security(()),
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = Object),
        (status = 503, description = "`{\"status\": \"not_ready\", \"reason\": \"storage_unavailable\" | \"shutting_down\", \"message\": …}`, with `Retry-After`", body = Object),
    ))]
async fn ready<S: Store + Clone>(State(state): State<AppState<S>>) -> Response {
    let not_ready = |reason: &str, message: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, HeaderValue::from(READY_RETRY_AFTER))],
            Json(json!({"status": "not_ready", "reason": reason, "message": message})),
        )
            .into_response()
    };
    if state.engine.stopping() {
        return not_ready("shutting_down", "this node is shutting down".to_owned());
    }
    match tokio::time::timeout(READY_WITHIN, state.engine.store().writable()).await {
        Ok(Ok(())) => Json(json!({"status": "ready"})).into_response(),
        // Unauthenticated: the condition, not the store's path or the disk's words, which the
        // log holds for the operators.
        Ok(Err(e)) if e.is_storage_failure() => not_ready(
            "storage_unavailable",
            "the store takes no writes for now; the server's log says why".to_owned(),
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "readiness could not ask the store");
            not_ready(
                "storage_unavailable",
                "the store could not be asked; the server's log says why".to_owned(),
            )
        }
        Err(_) => not_ready(
            "storage_unavailable",
            format!(
                "the store did not say within {} s whether it takes writes",
                READY_WITHIN.as_secs()
            ),
        ),
    }
}

/// The API's OpenAPI document, unauthenticated like the health check: what client generators
/// and API testers (Schemathesis) read.
async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi_json(),
    )
}

/// A record as the API shows it: serialized, less one field it never shows (a digest, a
/// secret, a definition's text).
fn shown_without<T: serde::Serialize>(record: &T, hidden: &str) -> Value {
    let mut v = json!(record);
    if let Some(fields) = v.as_object_mut() {
        fields.remove(hidden);
    }
    v
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
