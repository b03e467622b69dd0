//! The door for event sources: CloudEvents 1.0 over HTTP, in the structured mode
//! (`application/cloudevents+json`), the binary mode (`ce-*` headers, the data as the body) and
//! batches (`application/cloudevents-batch+json`). An event source's token posts only its own
//! `source` and the types a workflow takes from it; each event is answered once what it did is
//! durable, and the same `source` + `id` again is answered the same.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::{Operation, Role};
use crate::case::CloudEvent;
use crate::case::cloud_event::{Invalid, Routed, is_json};
use crate::engine::EventError;
use crate::store::Store;

/// The most events one batch carries.
pub const MAX_BATCH: usize = 100;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// What one event did.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventAnswer {
    pub id: String,
    pub source: String,
    /// Each case it started or reached, and how; empty if no workflow takes it.
    pub routed: Vec<Routed>,
}

/// One event of a batch: what it did, or why it was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// 202 done now, 200 done before (a redelivery), or the error's status.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed: Option<Vec<Routed>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Receives CloudEvents (an event source, or an admin). Structured mode: the event as a JSON object with
/// `Content-Type: application/cloudevents+json`. Binary mode: `ce-specversion`, `ce-id`,
/// `ce-source`, `ce-type` (and any other attribute as `ce-<name>`) as headers, the data as a
/// JSON body. Batch: a JSON array of structured events with
/// `Content-Type: application/cloudevents-batch+json`, each answered on its own.
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(description = "A CloudEvent (structured), an array of events (batch), or the event's data (binary mode, with `ce-*` headers)",
        content(
            (Object = "application/cloudevents+json"),
            (Vec<Object> = "application/cloudevents-batch+json"),
            (Object = "application/json"),
        )),
    params(
        ("ce-specversion" = Option<String>, Header, description = "Binary mode: `1.0`"),
        ("ce-id" = Option<String>, Header, description = "Binary mode: the event's id"),
        ("ce-source" = Option<String>, Header, description = "Binary mode: the event's source"),
        ("ce-type" = Option<String>, Header, description = "Binary mode: the event's type"),
    ),
    responses(
        (status = 202, description = "What the event did, durable", body = EventAnswer),
        (status = 200, description = "The same event was received before: what it did then", body = EventAnswer),
        (status = 207, description = "A batch: each event's answer, in order", body = [BatchItem]),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 403, description = "This token may not post events, or not from this source, or not of this type", body = ErrorBody),
        (status = 409, description = "The same `source` and `id` came before with other content", body = ErrorBody),
        (status = 413, description = "A batch of more than 100 events", body = ErrorBody),
        (status = 415, description = "Neither a CloudEvents media type nor `ce-*` headers", body = ErrorBody),
        (status = 422, description = "Not a CloudEvent: the attribute is named", body = ErrorBody),
    ))]
pub async fn post<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Operation::PostEvent)?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if media == BATCH {
        let Value::Array(items) = parse(&body)? else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "a batch is a JSON array of events",
            ));
        };
        if items.len() > MAX_BATCH {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!(
                    "a batch carries at most {MAX_BATCH} events; this one has {}",
                    items.len()
                ),
            ));
        }
        let mut answers = Vec::with_capacity(items.len());
        for item in items {
            let answer = match receive(&state, &caller.0.role, item_event(item)).await {
                Ok((answer, replayed)) => BatchItem {
                    status: if replayed { 200 } else { 202 },
                    id: Some(answer.id),
                    source: Some(answer.source),
                    routed: Some(answer.routed),
                    error: None,
                    message: None,
                },
                Err(refused) => {
                    let (e, id, source) = *refused;
                    BatchItem {
                        status: e.status().as_u16(),
                        id,
                        source,
                        routed: None,
                        error: Some(e.code().to_owned()),
                        message: Some(e.message().to_owned()),
                    }
                }
            };
            answers.push(answer);
        }
        return Ok((StatusCode::MULTI_STATUS, Json(answers)).into_response());
    }
    let event = if media == STRUCTURED {
        CloudEvent::from_json(parse(&body)?).map_err(invalid)?
    } else if headers.contains_key("ce-specversion") {
        binary(&headers, &body)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_a_cloudevent",
            format!(
                "send `Content-Type: {STRUCTURED}` (one event), `{BATCH}` (an array), or the event's attributes as `ce-*` headers (binary mode)"
            ),
        ));
    };
    let (answer, replayed) = receive(&state, &caller.0.role, Ok(event))
        .await
        .map_err(|refused| refused.0)?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = (status, Json(answer)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Why an event was refused, with its id and source when it had them (a batch names them).
type Refused = Box<(ApiError, Option<String>, Option<String>)>;

fn item_event(item: Value) -> Result<CloudEvent, Refused> {
    let id = item.get("id").and_then(Value::as_str).map(str::to_owned);
    let source = item
        .get("source")
        .and_then(Value::as_str)
        .map(str::to_owned);
    CloudEvent::from_json(item).map_err(|e| Box::new((invalid(e), id, source)))
}

/// One event, checked against the caller's role, then received.
async fn receive<S: Store + Clone>(
    state: &AppState<S>,
    role: &Role,
    event: Result<CloudEvent, Refused>,
) -> Result<(EventAnswer, bool), Refused> {
    let event = event?;
    let named = |e: ApiError| Box::new((e, Some(event.id.clone()), Some(event.source.clone())));
    if !role.may_send_from(&event.source) {
        return Err(named(ApiError::new(
            StatusCode::FORBIDDEN,
            "source_not_allowed",
            format!(
                "a token with role `{role}` may not post events from `{}`",
                event.source
            ),
        )));
    }
    if matches!(role, Role::Source(_))
        && !state
            .engine
            .definitions()
            .takes_event(&event.event_type, &event.source)
    {
        return Err(named(ApiError::new(
            StatusCode::FORBIDDEN,
            "type_not_allowed",
            format!(
                "no workflow takes events of type `{}` from `{}`",
                event.event_type, event.source
            ),
        )));
    }
    let (id, source) = (event.id.clone(), event.source.clone());
    match state.engine.receive_event(event).await {
        Ok(received) => Ok((
            EventAnswer {
                id,
                source,
                routed: received.routed,
            },
            received.replayed,
        )),
        Err(e) => {
            let message = e.to_string();
            Err(Box::new((
                match e {
                    EventError::IdReused { .. } => {
                        ApiError::new(StatusCode::CONFLICT, "event_id_reused", message)
                    }
                    EventError::ShuttingDown => ApiError::unavailable(),
                    EventError::Store(e) => ApiError::store(e),
                },
                Some(id),
                Some(source),
            )))
        }
    }
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    let mut d = serde_json::Deserializer::from_slice(body);
    let value = super::json::unique_keys(&mut d)
        .and_then(|v| d.end().map(|()| v))
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the body is not JSON: {e}"),
            )
        })?;
    Ok(value)
}

fn invalid(e: Invalid) -> ApiError {
    let field = format!("/{}", e.attribute());
    ApiError::invalid_field("invalid_event", &field, e.to_string())
}

/// An event in the binary mode: its attributes from the `ce-*` headers (percent-decoded, as
/// the HTTP binding writes them), its data the body, described by `Content-Type`.
fn binary(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, ApiError> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let text = percent_encoding::percent_decode(value.as_bytes())
            .decode_utf8()
            .map_err(|_| {
                ApiError::invalid_field(
                    "invalid_event",
                    &format!("/{attribute}"),
                    format!("header `{name}` is not UTF-8 once percent-decoded"),
                )
            })?;
        attributes.insert(attribute.to_owned(), Value::String(text.into_owned()));
    }
    if !body.is_empty() {
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        if !is_json(media) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_data",
                format!("the data is `{media}`; civicflow reads JSON data only"),
            ));
        }
        attributes.insert("datacontenttype".into(), Value::String(media.to_owned()));
        attributes.insert("data".into(), parse(body)?);
    }
    CloudEvent::from_json(Value::Object(attributes)).map_err(invalid)
}
