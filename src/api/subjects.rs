//! A data subject's erasure request (Law 91/2025/QH15): an admin erases, early, the personal
//! data of every ended case found under the person's business keys, and is told what was kept
//! and why.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::engine::Erased;
use crate::store::Store;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ErasureQuery {
    /// Why, as the request was made (kept in each erased case's history).
    reason: Option<String>,
}

/// What an erasure request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureReport {
    /// The person, as a pseudonym: the report holds no personal data.
    subject: String,
    /// Each case found under the person's business keys: erased, already erased, or kept and
    /// why.
    cases: Vec<Erased>,
    /// What else civicflow holds of the person, and why it stays.
    kept: Vec<String>,
}

/// Erases a person's personal data now, where the law allows: every ended case under one of
/// their business keys (a requester, a deceased) is pseudonymised as its retention would; a
/// running case is kept until it ends.
#[utoipa::path(delete, path = "/v1/subjects/{id}", tag = "admin", params(
        ("id" = String, Path, description = "The person's personal ID"),
        ErasureQuery,
    ),
    responses(
        (status = 200, description = "What was erased, and what was kept and why", body = ErasureReport),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn erase<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ErasureQuery>, QueryRejection>,
) -> Result<Json<ErasureReport>, ApiError> {
    let Path(id) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::EraseSubject)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let id = id.trim();
    if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_subject",
            "the path names a personal ID: at most 64 characters",
        ));
    }
    let reason = q
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "the data subject's request".to_owned());
    let by = caller.0.actor();
    let cases = state
        .engine
        .erase_subject(id, &by, &reason)
        .await
        .map_err(ApiError::store)?;
    let subject = state.engine.pseudonym(id);
    let erased = cases.iter().filter(|c| c.outcome == "erased").count();
    tracing::info!(%subject, erased, found = cases.len(), by = %by, "a data subject's erasure request");
    Ok(Json(ErasureReport {
        subject,
        cases,
        kept: vec![
            "consent records: the proof that an exchange was lawful; they name the person only by this pseudonym".to_owned(),
            "cases that name the person other than under a business key (a parent, a household head): erased when their own retention is up".to_owned(),
        ],
    }))
}
