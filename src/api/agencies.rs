//! The agencies civicflow calls, and their circuits: which are down (open), since when, how
//! many steps wait for each, what failed last; operators open one by hand for a planned
//! maintenance and close it again.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::circuits::{Circuit, CircuitChange};
use crate::engine::Engine;
use crate::store::Store;

/// Held steps counted per agency, at most: beyond it the count says "at least".
pub const HELD_COUNTED: usize = 100_000;

/// An agency and its circuit as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgencyView {
    pub agency: String,
    /// `closed`: calls go out; `open`: they are held (the agency is down or in maintenance).
    #[schema(value_type = String, example = "open")]
    pub state: &'static str,
    /// When the circuit took its state (absent for one that never opened).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub since: Option<Timestamp>,
    /// Who opened it by hand; absent when the calls' failures opened it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_by: Option<String>,
    /// Why it is in its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The failure last seen from the agency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Steps waiting for the agency (counted up to 100,000).
    pub held_steps: usize,
    /// Failed probes since it opened.
    pub failed_probes: u32,
    /// When the next probe may go (automatic openings only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_probe_at: Option<Timestamp>,
    /// Its openings and closings, newest last (in `GET /v1/agencies/{agency}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub changes: Option<Vec<CircuitChange>>,
}

/// The agencies, as `GET /v1/agencies` lists them.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgencyList {
    pub items: Vec<AgencyView>,
}

/// Open or close an agency's circuit by hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCircuit {
    /// `open` (calls are held until it is closed, with no probes) or `closed`.
    #[schema(example = "open")]
    state: String,
    /// Why: recorded in the circuit's audit trail with who did it.
    reason: String,
}

/// How `agency` stands, with its audit trail if `changes`.
pub async fn view<S: Store + Clone>(
    engine: &Engine<S>,
    agency: &str,
    changes: bool,
) -> Result<AgencyView, ApiError> {
    let c: Circuit = engine.circuits().get(agency);
    let held_steps = engine
        .held_count(agency, HELD_COUNTED)
        .await
        .map_err(ApiError::store)?;
    // A closed circuit has no opener, no probe and no failed probes (`circuits::close`).
    Ok(AgencyView {
        agency: agency.to_owned(),
        state: c.state.as_str(),
        since: (c.version > 0).then_some(c.since),
        opened_by: c.opened_by,
        reason: c.reason,
        last_error: c.last_error,
        held_steps,
        failed_probes: c.failed_probes,
        next_probe_at: c.probe_at,
        changes: changes.then_some(c.changes),
    })
}

/// Every agency civicflow calls, with its circuit: which are down, since when, the steps that
/// wait for them and what failed last.
#[utoipa::path(get, path = "/v1/agencies", tag = "operators",
    responses((status = 200, description = "The agencies", body = AgencyList)))]
pub async fn list<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Json<AgencyList>, ApiError> {
    caller.require(Operation::ReadAgencies)?;
    let mut items = Vec::new();
    for agency in state.engine.agencies().keys() {
        items.push(view(&state.engine, agency, false).await?);
    }
    Ok(Json(AgencyList { items }))
}

/// One agency's circuit, with its audit trail.
#[utoipa::path(get, path = "/v1/agencies/{agency}", tag = "operators",
    params(("agency" = String, Path, description = "Agency id")),
    responses(
        (status = 200, description = "The agency", body = AgencyView),
        (status = 404, description = "civicflow calls no such agency", body = ErrorBody),
    ))]
pub async fn show<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<AgencyView>, ApiError> {
    let Path(agency) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::ReadAgencies)?;
    known(&state.engine, &agency)?;
    Ok(Json(view(&state.engine, &agency, true).await?))
}

/// Opens an agency's circuit by hand (a planned maintenance: its calls are held, not probed,
/// until it is closed) or closes it (held steps are released at once), with a reason.
#[utoipa::path(post, path = "/v1/agencies/{agency}/circuit", tag = "operators",
    params(("agency" = String, Path, description = "Agency id")),
    request_body = SetCircuit,
    responses(
        (status = 200, description = "The agency, as it is now", body = AgencyView),
        (status = 404, description = "civicflow calls no such agency", body = ErrorBody),
        (status = 422, description = "A state other than `open` or `closed`, or no reason", body = ErrorBody),
    ))]
pub async fn set<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<SetCircuit>, JsonRejection>,
) -> Result<Json<AgencyView>, ApiError> {
    let Path(agency) = path.map_err(ApiError::from_path)?;
    caller.require(Operation::SetCircuit)?;
    let Json(b) = body.map_err(ApiError::from_json)?;
    known(&state.engine, &agency)?;
    let open = match b.state.as_str() {
        "open" => true,
        "closed" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_state",
                format!("`{other}` is not a circuit state: give `open` or `closed`"),
            ));
        }
    };
    if b.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
            "say why the circuit is opened or closed: it goes into the audit trail",
        ));
    }
    state
        .engine
        .set_circuit(&agency, open, &caller.0.actor(), b.reason.trim())
        .await
        .map_err(ApiError::store)?;
    Ok(Json(view(&state.engine, &agency, true).await?))
}

fn known<S: Store + Clone>(engine: &Engine<S>, agency: &str) -> Result<(), ApiError> {
    if engine.agencies().contains_key(agency) {
        return Ok(());
    }
    let names: Vec<&str> = engine.agencies().keys().map(String::as_str).collect();
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_agency",
        format!(
            "civicflow calls no agency `{agency}`; it calls {}",
            names.join(", ")
        ),
    ))
}
