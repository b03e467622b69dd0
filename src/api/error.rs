//! The one error shape of the API: `{"error": {"code", "message", "fields"?}}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{FailureLog, StoreError};
use crate::workflow::definition::SchemaViolation;

/// How long a client is told to wait before retrying a request the storage could not serve:
/// about how often a store whose writes stopped tries to write again.
const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Requests the store failed, logged at most once a minute: a failing disk fails every request.
static REQUEST_STORE_FAILURES: FailureLog = FailureLog::new();

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<SchemaViolation>,
    retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after: None,
        }
    }

    /// Tells the client when to try again (a `Retry-After` header, in whole seconds).
    pub fn with_retry_after(mut self, wait: Duration) -> ApiError {
        self.retry_after = Some(wait);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The offending fields of a validation error, each a JSON Pointer and what is wrong there.
    pub fn fields(&self) -> &[SchemaViolation] {
        &self.fields
    }

    pub fn with_fields(mut self, fields: Vec<SchemaViolation>) -> ApiError {
        self.fields = fields;
        self
    }

    /// A malformed body: the client's mistake, said precisely.
    pub fn from_json(rejection: JsonRejection) -> ApiError {
        ApiError::new(rejection.status(), "invalid_body", rejection.body_text())
    }

    /// Query parameters that do not parse.
    pub fn from_query(rejection: QueryRejection) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }

    /// A path segment that does not parse (a version that is not a number): the client's
    /// mistake, said in JSON like every other.
    pub fn from_path(rejection: PathRejection) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }

    /// A 422 about one field of the request, with the message said there too.
    pub fn invalid_field(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message.clone()).with_fields(vec![
            crate::workflow::definition::SchemaViolation {
                field: field.to_owned(),
                message,
            },
        ])
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; retry on another node or after restart",
        )
    }

    /// A store error: a race lost to a concurrent change (already decided again as often as
    /// it is worth) is the client's to retry, a 409; storage that fails (a full disk, a lost
    /// database) is a 503 to retry later, here or on another node; a damaged record is named,
    /// for the operators who restore it; anything else is our failure.
    pub fn store(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict { .. } | StoreError::ConfigChanged { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "concurrent_change",
                format!("{e}; other requests are changing the same thing at this moment: retry"),
            ),
            // Logged by the store when the condition starts, not once per refused request.
            StoreError::Unavailable { .. } => ApiError::storage_unavailable(&e),
            StoreError::Io { .. } => {
                REQUEST_STORE_FAILURES.absorbs("a request", &e);
                ApiError::storage_unavailable(&e)
            }
            StoreError::Damaged { .. } => {
                tracing::error!(error = %e, "a damaged record was read");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "damaged_record",
                    e.to_string(),
                )
            }
            other => ApiError::internal(other),
        }
    }

    /// The store cannot serve the request for now. The message says so without the store's
    /// path or the disk's words, which are the operators' (in the log), not the client's.
    fn storage_unavailable(e: &StoreError) -> ApiError {
        let message = match e {
            StoreError::Unavailable { .. } => {
                "civicflow's storage takes no writes for now; nothing was changed: retry later or on another node"
            }
            _ => {
                "civicflow's storage failed to answer; the request may not have been applied: retry later (with the same Idempotency-Key) or on another node"
            }
        };
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            message,
        )
        .with_retry_after(STORAGE_RETRY_AFTER)
    }

    /// Our failure, not the client's: logged in full, reported without internals.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "civicflow could not complete the request; it is logged",
        )
    }
}

/// What every error answer carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `invalid_input`, `forbidden`, `state_conflict`, …
    pub code: String,
    /// For people: what is wrong and, where it helps, what to do.
    pub message: String,
    /// For validation errors: each offending field, as a JSON Pointer, and what is wrong there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<SchemaViolation>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                fields: self.fields,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
