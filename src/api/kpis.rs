//! The on-time table: what the government measures of every agency, over a period.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use jiff::civil::Date;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::{ApiError, AppState, ErrorBody};
use crate::auth::Operation;
use crate::calendar::vietnam_time;
use crate::kpi::report::{self, Period, Report, ReportError};
use crate::store::Store;

/// The period and what narrows it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KpiQuery {
    /// First day (Vietnam time), included; default: the first of `to`'s month.
    #[param(value_type = Option<String>, format = Date)]
    from: Option<Date>,
    /// Last day (Vietnam time), included; default: today. At most 366 days after `from`.
    #[param(value_type = Option<String>, format = Date)]
    to: Option<Date>,
    workflow: Option<String>,
    /// Only this agency's steps (the cases as a whole are left out).
    agency: Option<String>,
}

/// On time, late, open and overdue, per workflow and per step at each agency: steps and cases
/// finished in the period by their statutory due time, those started in it and still open, the
/// on-time rate and the working days taken (median, 90th percentile).
#[utoipa::path(get, path = "/v1/kpis", tag = "operators", params(KpiQuery),
    responses(
        (status = 200, description = "The on-time table", body = Report),
        (status = 400, description = "A period that does not parse, ends before it starts or is longer than a year", body = ErrorBody),
    ))]
pub async fn read<S: Store + Clone>(
    State(state): State<AppState<S>>,
    caller: Caller,
    q: Result<Query<KpiQuery>, QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    caller.require(Operation::ReadKpis)?;
    let Query(q) = q.map_err(ApiError::from_query)?;
    let today = state.engine.now().to_zoned(vietnam_time()).date();
    let to = q.to.unwrap_or(today);
    let period = Period {
        from: q.from.unwrap_or_else(|| to.first_of_month()),
        to,
        workflow: q.workflow,
        agency: q.agency,
    };
    match report::read(state.engine.store(), &period).await {
        Ok(report) => Ok(Json(report)),
        Err(ReportError::Store(e)) => Err(ApiError::store(e)),
        Err(e) => Err(ApiError::bad_request("invalid_period", e.to_string())),
    }
}
