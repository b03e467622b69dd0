//! `GET /metrics` for Prometheus, and the count of every API request by route and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::auth::Operation;
use crate::engine::Engine;
use crate::store::Store;

/// The scrape, for a token of role `metrics` (or an admin): in the OpenMetrics text format
/// when the reader accepts it (Prometheus does), else in Prometheus's classic text format.
#[utoipa::path(get, path = "/metrics", tag = "operators",
    responses((status = 200, description = "The metrics, in the OpenMetrics or the classic Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn read<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Operation::ReadMetrics)?;
    scrape(&state.engine, &headers).await
}

/// The scrape as an answer, in the format the request accepts: what `read` and the scrapers'
/// own address serve.
pub async fn scrape<S: Store + Clone>(
    engine: &Engine<S>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let text = engine
        .metrics()
        .scrape(engine.store(), engine.now())
        .await
        .map_err(ApiError::store)?;
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    Ok(if openmetrics {
        ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
    } else {
        let classic = crate::metrics::classic(&text);
        (
            [(CONTENT_TYPE, crate::metrics::CLASSIC_CONTENT_TYPE)],
            classic,
        )
            .into_response()
    })
}

/// Times every request and counts it under its route as declared (`/v1/cases/{id}`), never
/// the path as asked, so that an id never becomes a label; and, while traces are exported,
/// handles it in a `request` span, under the caller's `traceparent` if it sent one.
pub async fn count<S: Store + Clone>(
    State(state): State<AppState<S>>,
    request: Request,
    next: Next,
) -> Response {
    let began = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = if state.engine.traces().exporting() {
        traced(request, next, &method, &route).await
    } else {
        next.run(request).await
    };
    // A method is a label: any the HTTP standard does not name counts as one, `other`.
    let method = match method {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::HEAD
        | Method::OPTIONS => method.as_str(),
        _ => "other",
    };
    state
        .engine
        .metrics()
        .request(method, &route, response.status().as_u16(), began.elapsed());
    response
}

/// Runs the request in a `request` span under the caller's `traceparent`, if it sent one.
async fn traced(request: Request, next: Next, method: &Method, route: &str) -> Response {
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let caller = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::traces::parse_traceparent);
    if let Some(caller) = caller {
        let parent = opentelemetry::Context::new().with_remote_span_context(caller);
        // Only fails when no tracer is installed, and then there is nothing to export.
        let _ = span.set_parent(parent);
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
