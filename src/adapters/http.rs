//! One HTTP exchange with an agency, and what it means for the step.

use std::time::Duration;

use serde_json::{Map, Value};

use super::xroad;
use crate::workflow::definition::{Adapter, Decision, Rules, Schema};
use crate::workflow::expr::Input;
use crate::workflow::spec::Method;

/// The metadata every call carries (see `docs/mocks.md` for how agencies read it): its
/// idempotency key, a W3C `traceparent`, and X-Road's message metadata ([`xroad`]).
#[derive(Debug, Clone)]
pub struct Metadata {
    pub idempotency_key: String,
    /// The case: the dossier number (`X-Road-Issue`).
    pub case_id: String,
    /// The message's own id (`X-Road-Id`).
    pub message_id: String,
    pub traceparent: String,
    /// This node (`X-Road-Client`).
    pub client: String,
    /// The agency's operation and its version (`X-Road-Service`).
    pub service: String,
    /// The citizen's pseudonym (`X-Road-UserId`), where the workflow names the citizen.
    pub user: Option<String>,
}

/// Who sends a call: this node's X-Road client, and the citizen it is for.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub client: &'a str,
    /// The adapter, `agency/operation@version`.
    pub adapter: &'a str,
    pub user: Option<&'a str>,
}

impl Metadata {
    /// A call's metadata: a fresh W3C `traceparent` whose trace id is the case id, so an
    /// agency's traces of one case line up.
    pub fn new(
        case_id: uuid::Uuid,
        idempotency_key: String,
        message_id: String,
        sender: Sender<'_>,
    ) -> Metadata {
        Metadata {
            idempotency_key,
            case_id: case_id.to_string(),
            traceparent: format!("00-{}-{}-01", case_id.simple(), crate::auth::random_hex(8)),
            message_id,
            client: sender.client.to_owned(),
            service: xroad::service(sender.client, sender.adapter),
            user: sender.user.map(str::to_owned),
        }
    }
}

/// What the agency's `X-Road-Request-Hash` said of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// It sent none.
    Absent,
    /// The hash of the request sent.
    Matches,
    /// Another hash: the reply answers another request, or a changed one.
    Differs(String),
}

/// One exchange: what came back, and the hashes the audit log keeps of it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub reply: Reply,
    /// The request's hash, as `X-Road-Request-Hash` carries it.
    pub request_hash: String,
    /// The hash of the reply's body; `None` when nothing came back.
    pub reply_hash: Option<String>,
    pub sent_at: jiff::Timestamp,
}

/// The longest wait an agency's `Retry-After` can ask for: an agency's value is any number,
/// and a wait beyond every deadline and retry window would only overflow the engine's clock
/// arithmetic. A day: longer maintenance is what circuits are for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What came back: an HTTP answer, or no answer at all.
#[derive(Debug, Clone)]
pub enum Reply {
    Answered {
        status: u16,
        /// The reply as reply rules see it, `{status, headers, body}`, built once as it
        /// arrives: the rules, the poll URL and a trial all read it, and each would otherwise
        /// copy the body. The body is the parsed JSON, or the raw text when it is not JSON.
        context: Value,
        retry_after: Option<Duration>,
        echo: Echo,
    },
    /// A timeout, a refused or reset connection: the agency may or may not have acted.
    NoAnswer { error: String },
}

impl Reply {
    /// An answer; a `Retry-After` beyond [`MAX_RETRY_AFTER`] counts as that long.
    pub fn answered(
        status: u16,
        headers: Map<String, Value>,
        body: Value,
        retry_after: Option<Duration>,
    ) -> Reply {
        let retry_after = retry_after.map(|r| r.min(MAX_RETRY_AFTER));
        Reply::Answered {
            status,
            context: Value::Object(Map::from_iter([
                ("status".to_owned(), Value::from(status)),
                ("headers".to_owned(), Value::Object(headers)),
                ("body".to_owned(), body),
            ])),
            retry_after,
            echo: Echo::Absent,
        }
    }

    /// The reply, with what its `X-Road-Request-Hash` says of the request whose hash is `sent`.
    fn echoing(mut self, sent: &str) -> Reply {
        if let Reply::Answered { context, echo, .. } = &mut self
            && let Some(got) = context["headers"][xroad::REQUEST_HASH].as_str()
        {
            *echo = if got == sent {
                Echo::Matches
            } else {
                Echo::Differs(got.to_owned())
            };
        }
        self
    }

    /// The request hash the agency sent back, if any.
    pub fn echoed(&self) -> Option<&str> {
        self.context()["headers"][xroad::REQUEST_HASH].as_str()
    }

    /// The reply as reply rules see it: `{status, headers, body}`; `null` for no answer.
    pub fn context(&self) -> &Value {
        match self {
            Reply::Answered { context, .. } => context,
            Reply::NoAnswer { .. } => &Value::Null,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Answered { status, .. } => Some(*status),
            Reply::NoAnswer { .. } => None,
        }
    }
}

/// What a reply means for the step.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success(Value),
    Rejected {
        reason_code: String,
        message: String,
    },
    /// The agency took the request in; the result comes later.
    Pending,
    /// The dossier is incomplete: what is missing, to ask the citizen for.
    NeedsSupplement(Vec<crate::case::Missing>),
    Retryable {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Not retried: an operator must look.
    Unexpected(String),
    /// The agency's `X-Road-Request-Hash` is not the hash of the request sent: the reply is
    /// not used, and an operator must look.
    RequestHashMismatch(String),
}

impl Outcome {
    /// The outcome's class, as traces name it: `succeeded`, `rejected`, `pending`,
    /// `needs_supplement`, `retryable` or `unexpected`.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "succeeded",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Pending => "pending",
            Outcome::NeedsSupplement(_) => "needs_supplement",
            Outcome::Retryable { .. } => "retryable",
            Outcome::Unexpected(_) => "unexpected",
            Outcome::RequestHashMismatch(_) => "request_hash_mismatch",
        }
    }
}

/// Applies the manifest's rules, then civicflow's defaults: no answer, 429 and 5xx are
/// retryable; anything else no rule matched is unexpected.
pub fn classify(rules: &Rules, output: &Schema, reply: &Reply) -> Outcome {
    let (status, body, retry_after) = match reply {
        Reply::NoAnswer { error } => {
            return Outcome::Retryable {
                error: error.clone(),
                retry_after: None,
            };
        }
        Reply::Answered {
            status,
            echo: Echo::Differs(got),
            ..
        } => {
            return Outcome::RequestHashMismatch(format!(
                "HTTP {status}: the agency's X-Road-Request-Hash `{got}` is not the hash of the request sent: the reply answers another request, or a changed one"
            ));
        }
        Reply::Answered {
            status,
            context,
            retry_after,
            ..
        } => (*status, &context["body"], *retry_after),
    };
    let excerpt = || {
        let text = match body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.chars().take(300).collect::<String>()
    };
    match rules.decide(reply.context()) {
        Ok(Decision::Success(value)) => {
            let problems = output.violations(&value);
            if problems.is_empty() {
                Outcome::Success(value)
            } else {
                Outcome::Unexpected(format!(
                    "HTTP {status}: the output does not match the adapter's output schema: {}",
                    crate::workflow::definition::SchemaViolation::prose(&problems)
                ))
            }
        }
        Ok(Decision::Rejection {
            reason_code,
            message,
        }) => Outcome::Rejected {
            reason_code,
            message,
        },
        Ok(Decision::Pending) => Outcome::Pending,
        Ok(Decision::NeedsSupplement(missing)) => match crate::case::missing_of(&missing) {
            Ok(missing) => Outcome::NeedsSupplement(missing),
            Err(e) => Outcome::Unexpected(format!("HTTP {status}: {e}")),
        },
        Ok(Decision::NoMatch) if status == 429 || status >= 500 => Outcome::Retryable {
            error: format!("HTTP {status}: {}", excerpt()),
            retry_after,
        },
        Ok(Decision::NoMatch) => Outcome::Unexpected(format!(
            "HTTP {status} matches no rule of the adapter: {}",
            excerpt()
        )),
        Err(_) if status == 429 || status >= 500 => Outcome::Retryable {
            error: format!("HTTP {status}: {}", excerpt()),
            retry_after,
        },
        Err(e) => Outcome::Unexpected(format!("HTTP {status}: {e}; the reply was: {}", excerpt())),
    }
}

/// Sends one request with its metadata. Never fails: every failure is a [`Reply`].
pub async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    headers: &[(String, String)],
    body: Option<&Value>,
    meta: &Metadata,
    timeout: Duration,
) -> Sent {
    let sent_at = jiff::Timestamp::now();
    let method = match method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
    };
    let bytes = body_bytes(body);
    let request_hash = xroad::request_hash(method.as_str(), &target(url), &meta.message_id, &bytes);
    let sent = |reply: Reply, reply_hash: Option<String>| Sent {
        reply,
        request_hash: request_hash.clone(),
        reply_hash,
        sent_at,
    };
    let mut request = client
        .request(method, url)
        .timeout(timeout)
        .header("idempotency-key", &meta.idempotency_key)
        .header(xroad::CLIENT, &meta.client)
        .header(xroad::SERVICE, &meta.service)
        .header(xroad::ID, &meta.message_id)
        .header(xroad::ISSUE, &meta.case_id)
        .header("traceparent", &meta.traceparent);
    if let Some(user) = &meta.user {
        request = request.header(xroad::USER_ID, user);
    }
    for (k, v) in headers {
        request = request.header(k, v);
    }
    if body.is_some() {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return sent(no_answer(url, e), None),
    };
    let status = response.status().as_u16();
    let mut head = Map::new();
    for (k, v) in response.headers() {
        if let Ok(v) = v.to_str() {
            head.insert(k.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after_secs);
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return sent(no_answer(url, e), None),
    };
    let reply_hash = xroad::reply_hash(&bytes);
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    let reply = Reply::answered(status, head, body, retry_after).echoing(&request_hash);
    sent(reply, Some(reply_hash))
}

/// The bytes a request's body is sent as: its JSON, or nothing.
fn body_bytes(body: Option<&Value>) -> Vec<u8> {
    body.map_or_else(Vec::new, |b| {
        serde_json::to_vec(b).expect("a JSON value always serializes")
    })
}

/// The request target (path and query) of `url`, as sent on the wire.
fn target(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        },
        Err(_) => url.to_owned(),
    }
}

/// The hash of the request [`send`] will send (`X-Road-Request-Hash`), known before it is
/// sent: what the audit log records as the call is decided.
pub fn request_hash(method: Method, url: &str, message_id: &str, body: Option<&Value>) -> String {
    xroad::request_hash(method.as_str(), &target(url), message_id, &body_bytes(body))
}

/// A `Retry-After` in seconds; a number too large for any integer is as long as can be (and
/// capped by [`Reply::answered`]). An HTTP date is not read: the agencies send seconds.
fn retry_after_secs(value: &str) -> Option<Duration> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_secs(digits.parse().unwrap_or(u64::MAX)))
}

fn no_answer(url: &str, e: reqwest::Error) -> Reply {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    Reply::NoAnswer {
        error: format!("{kind} ({url}): {detail}"),
    }
}

/// A request built from a manifest's templates.
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

/// The URL, headers and body of a request to `base`, from the manifest's templates.
pub fn build(adapter: &Adapter, base: &str, ctx: &Input) -> Result<Request, String> {
    let path = text(adapter.path.eval_in(ctx).map_err(|e| e.to_string())?);
    let mut headers = Vec::new();
    for (k, t) in &adapter.headers {
        headers.push((k.clone(), text(t.eval_in(ctx).map_err(|e| e.to_string())?)));
    }
    let body = match &adapter.body {
        Some(t) => Some(t.eval_in(ctx).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok(Request {
        url: format!("{}{path}", base.trim_end_matches('/')),
        headers,
        body,
    })
}

/// The URL a step's status is polled at, from what the agency's reply gave (`url`, relative
/// to its `base` or absolute): only at the agency's own address (scheme, host, port, and
/// under its base path), since a poll carries the adapter's credentials.
pub fn status_url(base: &str, url: &str) -> Result<String, String> {
    let base_url = reqwest::Url::parse(base)
        .map_err(|e| format!("the agency's base URL `{base}` cannot be read: {e}"))?;
    let relative = !url.starts_with("//") && url.starts_with('/');
    let resolved = if relative {
        reqwest::Url::parse(&format!("{}{url}", base.trim_end_matches('/')))
    } else {
        base_url.join(url)
    }
    .map_err(|e| format!("the status URL `{url}` cannot be read: {e}"))?;
    let prefix = base_url.path().trim_end_matches('/');
    let same_place = resolved.scheme() == base_url.scheme()
        && resolved.host_str() == base_url.host_str()
        && resolved.port_or_known_default() == base_url.port_or_known_default()
        && resolved.path().starts_with(prefix);
    if !same_place {
        return Err(format!(
            "the status URL `{url}` is not at the agency's address `{base}`: it is not polled"
        ));
    }
    Ok(resolved.into())
}

/// A template's value as text: strings bare, anything else as JSON.
pub fn text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_is_seconds_and_at_most_a_day() {
        let capped = |v: &str| {
            let reply = Reply::answered(503, Map::new(), Value::Null, retry_after_secs(v));
            match reply {
                Reply::Answered { retry_after, .. } => retry_after,
                Reply::NoAnswer { .. } => unreachable!(),
            }
        };
        assert_eq!(capped(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(capped("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(capped("99999999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(capped("-1"), None);
        assert_eq!(capped("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(capped(""), None);
    }
}
