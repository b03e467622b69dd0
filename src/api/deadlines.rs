//! Deadlines with consequences, as the API serves them: the apology and new date an operator,
//! a supervisor or the late agency gives a case, and the dossiers by due time, overdue first.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use jiff::civil::Date;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::cases::{parse_id, query_error, seen_by};
use super::{ApiError, AppState, ErrorBody};
use crate::auth::{Operation, Role};
use crate::engine::{Action, ExtensionError, ExtensionRequest};
use crate::store::Store;
use crate::store::query::{self, DueFilter, DueRow, Listing};
use crate::workflow::spec::Party;

/// The longest apology reason kept: a paragraph, not a file.
const MAX_REASON: usize = 2000;

/// An apology and a new date (Decree 61/2018, Art. 19(9), form 04).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtensionBody {
    /// The late step; absent to extend the case as a whole.
    #[serde(default)]
    step: Option<String>,
    /// The new return date (`YYYY-MM-DD`): the dossier is due at its close.
    #[schema(value_type = String, format = Date)]
    until: Option<Date>,
    /// The apology's reason, as the citizen reads it.
    reason: Option<String>,
    /// A short code the on-time table counts reasons by (lowercase letters, digits, `_`);
    /// `other` when absent.
    #[serde(default)]
    reason_code: Option<String>,
}

fn reason_code(given: Option<String>) -> Result<String, ApiError> {
    let code = given.unwrap_or_else(|| "other".to_owned());
    let fits = code.len() <= 40
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if fits {
        Ok(code)
    } else {
        Err(ApiError::invalid_field(
            "invalid_reason_code",
            "/reason_code",
            format!(
                "`{code}` is not a reason code: lowercase letters, digits and `_`, starting with a letter, at most 40"
            ),
        ))
    }
}

/// The party a role grants as, checked against the workflow's `extension.granted_by`.
fn party(role: &Role) -> Option<(Party, Option<String>)> {
    match role {
        Role::Operator => Some((Party::Operator, None)),
        Role::Supervisor => Some((Party::Supervisor, None)),
        Role::Agency(a) => Some((Party::Agency, Some(a.clone()))),
        _ => None,
    }
}

pub fn extension_error(e: ExtensionError) -> ApiError {
    let message = e.to_string();
    match e {
        ExtensionError::AlreadyExtended { .. } => {
            ApiError::new(StatusCode::CONFLICT, "already_extended", message)
        }
        ExtensionError::NoticeTooLate { .. } => {
            ApiError::new(StatusCode::CONFLICT, "notice_too_late", message)
        }
        ExtensionError::NotRunning(_)
        | ExtensionError::StepNotOpen { .. }
        | ExtensionError::NoDueTime(_) => {
            ApiError::new(StatusCode::CONFLICT, "state_conflict", message)
        }
        ExtensionError::NotLater { .. }
        | ExtensionError::TooFar { .. }
        | ExtensionError::NotWorkingDay(_)
        | ExtensionError::Calendar(_) => ApiError::invalid_field("invalid_date", "/until", message),
        ExtensionError::NotAllowed { .. } | ExtensionError::OtherAgency { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
        }
    }
}

/// Gives the case its one apology and new date: the step's (and, if later, the case's) due
/// time moves to the close of `until`, the portal is told (`case.extended`), the history keeps
/// who granted it and why.
#[utoipa::path(post, path = "/v1/cases/{id}/extension", tag = "operators", request_body = ExtensionBody,
    params(("id" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case with its new due time", body = Object),
        (status = 403, description = "The workflow does not let this role grant it, or an agency asked for another's step", body = ErrorBody),
        (status = 404, description = "No such case or step", body = ErrorBody),
        (status = 409, description = "`already_extended` (a new date is given once), `notice_too_late` (less than a day before the due day), or a case or step that is not open", body = ErrorBody),
        (status = 422, description = "No reason, no date, or a date not after the due day or further than the workflow allows", body = ErrorBody),
    ))]
pub async fn extend<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ExtensionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::Extend)?;
    let id = parse_id(&id)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    let reason = b
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_field(
                "reason_required",
                "/reason",
                "say why: the apology states the reason for the delay",
            )
        })?;
    if reason.len() > MAX_REASON {
        return Err(ApiError::invalid_field(
            "reason_too_long",
            "/reason",
            format!("the reason is {} bytes; at most {MAX_REASON}", reason.len()),
        ));
    }
    let until = b.until.ok_or_else(|| {
        ApiError::invalid_field(
            "until_required",
            "/until",
            "give the new return date, `until`",
        )
    })?;
    let by = caller.0.actor();
    let ask = ExtensionRequest {
        step: b.step,
        until,
        reason_code: reason_code(b.reason_code)?,
        reason: reason.clone(),
        by: by.clone(),
        party: party(&caller.0.role),
    };
    let case = state
        .engine
        .act(id, Action::Extend(ask), &by, &reason)
        .await
        .map_err(super::operators::action_error)?;
    Ok(Json(seen_by(&state, &caller, &case)))
}

/// The deadline list's query: a filter (every field given narrows) and a page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadlinesQuery {
    workflow: Option<String>,
    agency: Option<String>,
    /// Escalated to this party: `supervisor`, `operator` or `agency:<id>`.
    escalated_to: Option<String>,
    /// `true`: only those whose due time has passed.
    #[serde(default)]
    overdue: bool,
    /// Where the previous page ended (its `next`).
    cursor: Option<String>,
    /// At most 500; default 50.
    limit: Option<usize>,
}

/// Open dossiers by due time, the most overdue first: each step still at its agency and each
/// running case, with its escalation, the case's extension and its life event's tier.
#[utoipa::path(get, path = "/v1/deadlines", tag = "operators", params(DeadlinesQuery),
    responses(
        (status = 200, description = "`items`, `next`, and `damaged`: the cases stepped over because their record is damaged", body = Listing<DueRow>),
        (status = 400, description = "A bad filter or cursor", body = ErrorBody),
    ))]
pub async fn list<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<DeadlinesQuery>, QueryRejection>,
) -> Result<Json<Listing<DueRow>>, ApiError> {
    caller.require(Operation::ListIncidents)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let now = state.engine.now();
    let filter = DueFilter {
        workflow: q.workflow,
        agency: q.agency,
        escalated_to: q.escalated_to,
        due_before: q.overdue.then_some(now),
    };
    let listed = query::deadlines(
        state.engine.store(),
        &filter,
        now,
        q.cursor.as_deref(),
        q.limit.unwrap_or(50),
    )
    .await
    .map_err(query_error)?;
    let mut listed = listed;
    // The apology's words are an operator's free text: masked as the case page masks them.
    if !caller.0.role.allows(Operation::Unmasked) {
        for row in &mut listed.items {
            if let Some(e) = &mut row.extension {
                e.reason = crate::case::masking::mask_numbers(&e.reason);
            }
        }
    }
    Ok(Json(listed))
}
