//! The front desk of one mock agency: what every procedure call goes through, whatever the agency.
//! It logs the caller's metadata, applies injected faults, and enforces idempotency, so the
//! agency modules hold only their own business rules.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::json;

use crate::faults::{Fault, Faults, Injector};
use crate::ledger::{Ledger, Seen};
use crate::reply::{Refusal, Reply};

/// X-Road's request metadata civicflow sends on every agency call (checked by the gateway,
/// [`crate::xroad`]): who calls, the service, the case the call belongs to (the dossier number),
/// the citizen's pseudonym, and a unique id for the message.
pub const CLIENT_HEADER: &str = crate::xroad::CLIENT;
pub const SERVICE_HEADER: &str = crate::xroad::SERVICE;
pub const CASE_ID_HEADER: &str = crate::xroad::ISSUE;
pub const USER_ID_HEADER: &str = crate::xroad::USER_ID;
pub const MESSAGE_ID_HEADER: &str = crate::xroad::ID;
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
pub const TRACEPARENT_HEADER: &str = "traceparent";

const REQUEST_LOG_CAPACITY: usize = 20_000;

/// The metadata of one request, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct RequestMeta {
    pub at: Timestamp,
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
    pub case_id: Option<String>,
    pub message_id: Option<String>,
    pub client: Option<String>,
    pub service: Option<String>,
    pub user_id: Option<String>,
    pub fault: Option<String>,
}

#[derive(Debug)]
pub struct Desk {
    pub agency: String,
    pub ledger: Mutex<Ledger>,
    pub injector: Mutex<Injector>,
    log: Mutex<VecDeque<RequestMeta>>,
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Desk {
    pub fn new(agency: &str, faults: Faults, seed: u64) -> Desk {
        Desk {
            agency: agency.to_owned(),
            ledger: Mutex::new(Ledger::default()),
            injector: Mutex::new(Injector::new(faults, seed)),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// The logged requests, newest last, optionally only those of one case.
    pub fn requests(&self, case_id: Option<&str>) -> Vec<RequestMeta> {
        let log = self.log.lock().expect("request log lock");
        log.iter()
            .filter(|m| case_id.is_none() || m.case_id.as_deref() == case_id)
            .cloned()
            .collect()
    }

    fn admit(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> (std::time::Duration, Fault, RequestMeta) {
        let now = Timestamp::now();
        let (latency, fault) = self.injector().draw(now);
        let meta = RequestMeta {
            at: now,
            method: method.to_owned(),
            path: path.to_owned(),
            idempotency_key: header_str(headers, IDEMPOTENCY_KEY_HEADER),
            traceparent: header_str(headers, TRACEPARENT_HEADER),
            case_id: header_str(headers, CASE_ID_HEADER),
            message_id: header_str(headers, MESSAGE_ID_HEADER),
            client: header_str(headers, CLIENT_HEADER),
            service: header_str(headers, SERVICE_HEADER),
            user_id: header_str(headers, USER_ID_HEADER),
            fault: (fault != Fault::None).then(|| format!("{fault:?}")),
        };
        tracing::debug!(agency = %self.agency, ?meta, "request");
        let mut log = self.log.lock().expect("request log lock");
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(meta.clone());
        (latency, fault, meta)
    }

    /// Runs a procedure that changes the agency's records. `act` gets the raw body and returns the
    /// reply; it runs at most once per idempotency key.
    pub async fn effectful(
        &self,
        procedure: &'static str,
        headers: &HeaderMap,
        path: &str,
        body: &Bytes,
        act: impl FnOnce(&[u8]) -> Reply,
    ) -> Response {
        let (latency, fault, meta) = self.admit("POST", path, headers);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if fault.is_before_effect() {
            return self.fault_reply(fault);
        }
        let Some(key) = meta
            .idempotency_key
            .filter(|k| !k.is_empty() && k.len() <= 255)
        else {
            return respond(Refusal::new(
                "IDEMPOTENCY_KEY_REQUIRED",
                "this procedure changes records: send an Idempotency-Key header (1 to 255 characters)",
            )
            .with_status(StatusCode::BAD_REQUEST)
            .into());
        };
        let mut hasher = DefaultHasher::new();
        body.hash(&mut hasher);
        let fingerprint = hasher.finish();
        let reply = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            match ledger.check(&key, procedure, fingerprint) {
                Seen::Replay(reply) => reply,
                Seen::Conflict => Refusal::new(
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was already used for a different request",
                )
                .with_status(StatusCode::CONFLICT)
                .into(),
                Seen::New => {
                    let reply = act(body);
                    if reply.status.is_success() || reply.status == StatusCode::UNPROCESSABLE_ENTITY
                    {
                        ledger.record(
                            &key,
                            procedure,
                            fingerprint,
                            meta.case_id.as_deref(),
                            &reply,
                        );
                    }
                    reply
                }
            }
        };
        self.deliver(fault, reply).await
    }

    /// Answers a read (a status query), with the same faults as any other call.
    pub async fn query(
        &self,
        headers: &HeaderMap,
        path: &str,
        act: impl FnOnce() -> Reply,
    ) -> Response {
        let (latency, fault, _) = self.admit("GET", path, headers);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if fault.is_before_effect() {
            return self.fault_reply(fault);
        }
        self.deliver(fault, act()).await
    }

    pub fn injector(&self) -> std::sync::MutexGuard<'_, Injector> {
        self.injector
            .lock()
            .expect("no code panics while holding the injector")
    }

    fn fault_reply(&self, fault: Fault) -> Response {
        let retry_after = self.injector().faults.retry_after();
        let retry_after = HeaderValue::from(retry_after);
        match fault {
            Fault::InternalError => {
                (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/html")], "<html><body>Internal Server Error</body></html>")
                    .into_response()
            }
            Fault::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after)],
                axum::Json(json!({"reason_code": "RATE_LIMITED", "message": "too many requests, retry later"})),
            )
                .into_response(),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, retry_after)],
                axum::Json(json!({"reason_code": "SERVICE_UNAVAILABLE", "message": "the system is temporarily unavailable"})),
            )
                .into_response(),
        }
    }

    async fn deliver(&self, fault: Fault, reply: Reply) -> Response {
        match fault {
            Fault::Timeout => {
                let hold = self.injector().faults.timeout_hold();
                tokio::time::sleep(hold).await;
                respond(reply)
            }
            Fault::Reset => {
                let failing = futures_util::stream::once(async {
                    Err::<Bytes, std::io::Error>(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected reset",
                    ))
                });
                (
                    reply.status,
                    [(header::CONTENT_TYPE, "application/json")],
                    Body::from_stream(failing),
                )
                    .into_response()
            }
            Fault::Garbled => {
                let text = reply.body.to_string();
                let cut = text
                    .char_indices()
                    .nth(text.chars().count() / 2)
                    .map_or(0, |(i, _)| i);
                (
                    reply.status,
                    [(header::CONTENT_TYPE, "application/json")],
                    format!("{}\u{0}\u{fffd}", &text[..cut]),
                )
                    .into_response()
            }
            Fault::WrongRequestHash => {
                let mut response = respond(reply);
                response.headers_mut().insert(
                    crate::xroad::REQUEST_HASH,
                    HeaderValue::from_static("bm90IHRoZSBoYXNoIG9mIHRoZSByZXF1ZXN0IHNlbnQ="),
                );
                response
            }
            _ => respond(reply),
        }
    }
}

pub fn respond(reply: Reply) -> Response {
    (reply.status, axum::Json(reply.body)).into_response()
}
