//! The admin side of every mock agency: what tests and operators of the mocks use to shape a run
//! (faults, citizens) and to check it (effect counters, request metadata, records).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::json;

use crate::agency::Agency;
use crate::desk::respond;
use crate::faults::{Faults, Outage};
use crate::population::{Citizen, Consent};
use crate::reply::{Refusal, Reply, parse};

pub fn router<A: Agency>(agency: Arc<A>) -> Router {
    Router::new()
        .route("/", get(info::<A>))
        .route("/admin/faults", get(faults::<A>).put(set_faults::<A>))
        .route("/admin/outages", post(start_outage::<A>))
        .route("/admin/effects", get(effects::<A>))
        .route("/admin/requests", get(requests::<A>))
        .route("/admin/records", get(records::<A>))
        .route("/admin/citizens", get(citizens::<A>).post(add_citizen::<A>))
        .route("/admin/callback-token", put(set_callback_token::<A>))
        .with_state(agency)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackToken {
    token: Option<String>,
}

/// Sets the bearer token the agencies call civicflow back with (`null` for none).
async fn set_callback_token<A: Agency>(State(agency): State<Arc<A>>, body: Bytes) -> Response {
    let req = match parse::<CallbackToken>(&body) {
        Ok(r) => r,
        Err(refusal) => return respond(refusal.into()),
    };
    *agency.world().callback_token.lock().expect("token lock") = req.token;
    StatusCode::NO_CONTENT.into_response()
}

async fn info<A: Agency>(State(agency): State<Arc<A>>) -> Response {
    let id = &agency.desk().agency;
    let info = agency.world().directory.agencies.get(id);
    Json(json!({ "agency": id, "info": info })).into_response()
}

async fn faults<A: Agency>(State(agency): State<Arc<A>>) -> Response {
    Json(agency.desk().injector().faults.clone()).into_response()
}

#[derive(Debug, Deserialize)]
struct SeedQuery {
    seed: Option<u64>,
}

/// Replaces the fault configuration; `?seed=N` also restarts the generator, for a reproducible run.
async fn set_faults<A: Agency>(
    State(agency): State<Arc<A>>,
    Query(q): Query<SeedQuery>,
    body: Bytes,
) -> Response {
    let faults = match parse::<Faults>(&body) {
        Ok(f) => f,
        Err(refusal) => return respond(refusal.into()),
    };
    if let Err(e) = faults.validate() {
        return respond(Refusal::new("INVALID_FAULTS", e.to_string()).into());
    }
    agency.desk().injector().replace(faults.clone(), q.seed);
    Json(faults).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageRequest {
    duration_ms: u64,
}

/// Starts an outage now, for `duration_ms`.
async fn start_outage<A: Agency>(State(agency): State<Arc<A>>, body: Bytes) -> Response {
    let req = match parse::<OutageRequest>(&body) {
        Ok(r) => r,
        Err(refusal) => return respond(refusal.into()),
    };
    let from = Timestamp::now();
    let until = from
        .saturating_add(SignedDuration::from_millis(req.duration_ms as i64))
        .unwrap_or(from);
    let outage = Outage { from, until };
    agency.desk().injector().faults.outages.push(outage.clone());
    (StatusCode::CREATED, Json(outage)).into_response()
}

async fn effects<A: Agency>(State(agency): State<Arc<A>>) -> Response {
    let ledger = agency.desk().ledger.lock().expect("ledger lock");
    Json(json!({ "keys": ledger.keys(), "cases": ledger.cases() })).into_response()
}

#[derive(Debug, Deserialize)]
struct RequestsQuery {
    case_id: Option<String>,
}

async fn requests<A: Agency>(
    State(agency): State<Arc<A>>,
    Query(q): Query<RequestsQuery>,
) -> Response {
    Json(agency.desk().requests(q.case_id.as_deref())).into_response()
}

async fn records<A: Agency>(State(agency): State<Arc<A>>) -> Response {
    Json(agency.records()).into_response()
}

#[derive(Debug, Deserialize)]
struct CitizenQuery {
    consent: Option<Consent>,
    insurance: Option<String>,
    commune: Option<String>,
    living: Option<bool>,
    limit: Option<usize>,
}

/// Lists citizens, so that a test or a benchmark can pick real people with the properties it needs.
async fn citizens<A: Agency>(
    State(agency): State<Arc<A>>,
    Query(q): Query<CitizenQuery>,
) -> Response {
    let population = agency.world().population.lock().expect("population lock");
    let found: Vec<&Citizen> = population
        .iter()
        .filter(|c| {
            q.consent
                .is_none_or(|want| c.household_head_consent == want)
        })
        .filter(|c| q.insurance.as_ref().is_none_or(|want| c.insurance == *want))
        .filter(|c| {
            q.commune
                .as_ref()
                .is_none_or(|want| c.commune.as_ref() == Some(want))
        })
        .filter(|c| q.living.is_none_or(|want| c.deceased_on.is_none() == want))
        .take(q.limit.unwrap_or(100))
        .collect();
    Json(found).into_response()
}

async fn add_citizen<A: Agency>(State(agency): State<Arc<A>>, body: Bytes) -> Response {
    let citizen = match parse::<Citizen>(&body) {
        Ok(c) => c,
        Err(refusal) => return respond(refusal.into()),
    };
    if !citizen
        .personal_id
        .matches(citizen.sex, citizen.date_of_birth)
    {
        return respond(
            Refusal::new(
                "INVALID_FIELD",
                "the personal ID's century/sex digit or year does not match the person",
            )
            .on_field("personal_id")
            .into(),
        );
    }
    let mut population = agency.world().population.lock().expect("population lock");
    if population.get(&citizen.personal_id).is_some() {
        return respond(
            Refusal::new(
                "ALREADY_EXISTS",
                format!("{} already exists", citizen.personal_id),
            )
            .with_status(StatusCode::CONFLICT)
            .into(),
        );
    }
    population.insert(citizen.clone());
    respond(Reply {
        status: StatusCode::CREATED,
        body: json!(citizen),
        effect: true,
    })
}
