//! The portal's consent records (GovStack's Consent building block): a citizen, or a child's
//! guardian, agrees to a data agreement a workflow's exchange asks for; withdraws it; and sees
//! what they agreed to. Steps that wait for a consent go on as soon as it is recorded.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::engine::{ConsentError, ConsentGiven};
use crate::personal_data::ConsentRecord;
use crate::store::Store;
use crate::workflow::spec::GivenAs;

/// The longest personal ID taken: a citizen's 12 digits, a foreigner's passport number.
const MAX_PERSONAL_ID: usize = 64;

/// A consent the citizen gave at the portal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    /// The personal ID of who consents: the data subject, or a child's guardian. Kept only as
    /// its pseudonym.
    subject: Option<String>,
    /// The data agreement consented to, as a workflow's exchange names it.
    agreement: Option<String>,
    /// `self` (default) or `guardian`.
    #[serde(default)]
    given_as: GivenAs,
    /// Must be `true`: a consent is the citizen's act, never a default or a pre-ticked box.
    opt_in: Option<bool>,
    /// When the citizen agreed; now if absent.
    given_at: Option<Timestamp>,
    /// How the citizen signed: a VNeID transaction, a signed form's number.
    evidence: Option<String>,
}

/// A withdrawal of a consent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalBody {
    subject: Option<String>,
    agreement: Option<String>,
    /// Why, in the citizen's words (optional).
    reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsentsQuery {
    /// The personal ID whose consents to list.
    subject: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentList {
    items: Vec<ConsentRecord>,
}

fn personal_id(field: &str, value: Option<String>) -> Result<String, ApiError> {
    let value = value.unwrap_or_default();
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid_field(
            "subject_required",
            field,
            "give the personal ID of who consents, `subject`",
        ));
    }
    if value.len() > MAX_PERSONAL_ID || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::invalid_field(
            "invalid_subject",
            field,
            format!(
                "`subject` is a personal ID: at most {MAX_PERSONAL_ID} characters, no spaces or control characters"
            ),
        ));
    }
    Ok(value.to_owned())
}

/// `value` if a loaded workflow asks consent to it; the definitions are read again first if
/// none does (one may have been published on another node since this one looked).
async fn agreement<S: Store + Clone>(
    state: &AppState<S>,
    value: Option<String>,
) -> Result<String, ApiError> {
    let value = value.unwrap_or_default();
    if state
        .engine
        .definitions()
        .agreements()
        .contains(value.as_str())
    {
        return Ok(value);
    }
    if let Err(e) = state.engine.reload_definitions().await {
        tracing::error!(error = %e, "the definitions cannot be loaded again");
    }
    let defs = state.engine.definitions();
    let known = defs.agreements();
    if known.contains(value.as_str()) {
        return Ok(value);
    }
    let list = known
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(ApiError::invalid_field(
        "unknown_agreement",
        "/agreement",
        if value.is_empty() {
            format!("name the data agreement consented to, `agreement`: one of {list}")
        } else {
            format!("no loaded workflow asks consent to `{value}`; the agreements are {list}")
        },
    ))
}

fn consent_error(e: ConsentError) -> ApiError {
    let message = e.to_string();
    match e {
        ConsentError::NotRecorded(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "consent_not_found", message)
        }
        ConsentError::ShuttingDown => ApiError::unavailable(),
        ConsentError::Store(e) => ApiError::store(e),
    }
}

/// Records a citizen's consent to a data agreement; steps waiting for it call their agencies.
/// The same consent again (same capacity, time and evidence) answers the record kept.
#[utoipa::path(post, path = "/v1/consents", tag = "portal", request_body = ConsentBody,
    responses(
        (status = 201, description = "Recorded: steps that waited for it go on", body = ConsentRecord),
        (status = 200, description = "The same consent, recorded before", body = ConsentRecord),
        (status = 422, description = "No subject, an agreement no workflow asks for, or `opt_in` not `true`", body = ErrorBody),
    ))]
pub async fn record<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    body: Result<Json<ConsentBody>, JsonRejection>,
) -> Result<(StatusCode, Json<ConsentRecord>), ApiError> {
    caller.require(Operation::ManageConsents)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let subject = personal_id("/subject", b.subject)?;
    let agreement = agreement(&state, b.agreement).await?;
    if b.opt_in != Some(true) {
        return Err(ApiError::invalid_field(
            "opt_in_required",
            "/opt_in",
            "a consent is recorded only with `opt_in: true`, the citizen's own act: never a default",
        ));
    }
    let (record, new) = state
        .engine
        .record_consent(ConsentGiven {
            personal_id: subject,
            agreement,
            given_as: b.given_as,
            given_at: b.given_at,
            evidence: b.evidence.filter(|e| !e.trim().is_empty()),
            by: caller.0.actor(),
        })
        .await
        .map_err(consent_error)?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)))
}

/// Withdraws a consent: no exchange under it is sent from now on; steps already at their
/// agency are not recalled.
#[utoipa::path(post, path = "/v1/consents/withdrawals", tag = "portal", request_body = WithdrawalBody,
    responses(
        (status = 200, description = "The record, withdrawn", body = ConsentRecord),
        (status = 404, description = "No consent of this person to this agreement", body = ErrorBody),
        (status = 422, description = "No subject or agreement", body = ErrorBody),
    ))]
pub async fn withdraw<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    body: Result<Json<WithdrawalBody>, JsonRejection>,
) -> Result<Json<ConsentRecord>, ApiError> {
    caller.require(Operation::ManageConsents)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let subject = personal_id("/subject", b.subject)?;
    let agreement = agreement(&state, b.agreement).await?;
    let reason = b
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "withdrawn by the citizen".to_owned());
    let record = state
        .engine
        .withdraw_consent(&subject, &agreement, reason)
        .await
        .map_err(consent_error)?;
    Ok(Json(record))
}

/// A person's consents, one per agreement, given or withdrawn.
#[utoipa::path(get, path = "/v1/consents", tag = "portal", params(ConsentsQuery),
    responses(
        (status = 200, description = "The person's consent records", body = ConsentList),
        (status = 400, description = "No subject", body = ErrorBody),
    ))]
pub async fn list<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<ConsentsQuery>, QueryRejection>,
) -> Result<Json<ConsentList>, ApiError> {
    caller.require(Operation::ManageConsents)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let subject = q.subject.trim();
    if subject.is_empty() || subject.len() > MAX_PERSONAL_ID {
        return Err(ApiError::bad_request(
            "invalid_subject",
            format!(
                "`subject` is the personal ID whose consents to list, at most {MAX_PERSONAL_ID} characters"
            ),
        ));
    }
    let items = state
        .engine
        .consents_of(subject)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(ConsentList { items }))
}
