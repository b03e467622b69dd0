//! The HTTP server of the API: what `axum::serve` does (a task per connection, the client's
//! address for [`ConnectInfo`], graceful shutdown), with one difference: hyper's header buffer
//! is raised above [`MAX_HEADERS`], so that a request with oversized headers reaches the API's
//! own check and gets a JSON 431 like any other client mistake, instead of hyper's empty one.
//! A request larger than [`BUFFER`] still gets hyper's.
//!
//! Slow clients cannot pin the server's memory ([`Connections`]): a request head must arrive
//! within the header-read timeout (hyper closes the connection otherwise), a request must be
//! read and answered within the request timeout (a JSON 408 otherwise; a streamed answer, such
//! as a backup, has only to start), and connections beyond the cap wait in the listen backlog
//! until one ends.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::ApiError;

/// The most header bytes a request may carry (names and values): far above any real client.
pub const MAX_HEADERS: usize = 64 << 10;

/// hyper's read buffer: what a request's head may fill before hyper refuses it itself.
const BUFFER: usize = 2 << 20;

/// What the server grants each client: how many connections at once, and how long a request
/// head and a whole request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    pub max: usize,
    pub header_read: Duration,
    pub request: Duration,
}

impl Default for Connections {
    fn default() -> Connections {
        Connections {
            max: 10_000,
            // hyper's own default once a timer is set; it also closes idle kept-alive
            // connections, so a client's pool should let go of them sooner.
            header_read: Duration::from_secs(30),
            // Above the longest wait a read may ask for (`?wait=`, 60 s).
            request: Duration::from_secs(120),
        }
    }
}

/// Answers `408 request_timeout` to a request that was not read and answered within `limit`.
async fn request_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not received and answered within {} s",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// Refuses a request whose headers exceed [`MAX_HEADERS`], in JSON.
pub async fn header_limit(request: Request, next: Next) -> Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADERS {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's headers are {size} bytes; at most {MAX_HEADERS} are read"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the connections finish
/// what they are doing and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Connections,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.request,
        request_deadline,
    ));
    let places = Arc::new(Semaphore::new(limits.max));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A place first: beyond the cap, connections wait in the listen backlog.
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "a connection could not be accepted");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(move |mut r: hyper::Request<Incoming>| {
                r.extensions_mut().insert(ConnectInfo(peer));
                r.map(axum::body::Body::new)
            })
            .map_err(|e: Infallible| match e {});
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let _place = place;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .max_buf_size(BUFFER)
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let io = TokioIo::new(stream);
            let connection =
                builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
            tokio::pin!(connection);
            let mut stopping = false;
            let done = loop {
                tokio::select! {
                    done = connection.as_mut() => break done,
                    _ = stopped.changed(), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            };
            if let Err(e) = done {
                tracing::debug!(%peer, error = %e, "a connection ended with an error");
            }
        });
        // Forget the connections that have ended.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}
