//! Police (national residence database): permanent residence registration of a newborn, which
//! completes only once the household head consents and is answered by calling civicflow back;
//! and permanent residence deregistration of a deceased person.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agency::{Address, Agency, named};
use crate::desk::{Desk, IDEMPOTENCY_KEY_HEADER, TRACEPARENT_HEADER, respond};
use crate::personal_id::PersonalId;
use crate::population::Consent;
use crate::reply::{Refusal, Reply, parse};
use crate::world::World;

/// How long the police keep trying to deliver a callback before giving the registration up to a
/// person (a real system would alert its own operators).
const CALLBACK_PATIENCE: Duration = Duration::from_secs(3600);

pub struct Police {
    desk: Desk,
    world: Arc<World>,
    records: Mutex<Records>,
}

#[derive(Debug, Default, Serialize)]
struct Records {
    registrations: Vec<Registration>,
    deregistrations: Vec<Deregistration>,
    /// Registration id → index in `registrations`.
    #[serde(skip)]
    by_id: HashMap<String, usize>,
    /// People with a registration awaiting consent.
    #[serde(skip)]
    awaiting: HashSet<PersonalId>,
    #[serde(skip)]
    registered: usize,
}

impl Records {
    fn find(&self, id: &str) -> Option<&Registration> {
        self.by_id.get(id).map(|&i| &self.registrations[i])
    }

    fn find_mut(&mut self, id: &str) -> Option<&mut Registration> {
        self.by_id.get(id).map(|&i| &mut self.registrations[i])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum RegistrationState {
    AwaitingConsent,
    Registered,
    Refused,
}

#[derive(Debug, Clone, Serialize)]
struct Registration {
    registration_id: String,
    personal_id: PersonalId,
    full_name: String,
    address: Address,
    household_head_personal_id: PersonalId,
    state: RegistrationState,
    household_number: Option<String>,
    registered_on: Option<Date>,
    refusal: Option<Value>,
    callback_url: String,
    #[serde(skip)]
    traceparent: Option<String>,
    callback: CallbackDelivery,
}

#[derive(Debug, Clone, Default, Serialize)]
struct CallbackDelivery {
    attempts: u32,
    delivered: bool,
    last_status: Option<u16>,
    last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Deregistration {
    deregistration_number: String,
    personal_id: PersonalId,
    commune_code: String,
    deregistered_on: Date,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationRequest {
    personal_id: PersonalId,
    full_name: String,
    date_of_birth: Date,
    address: Address,
    household_head_personal_id: PersonalId,
    relationship_to_head: String,
    birth_extract_number: String,
    callback_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeregistrationRequest {
    personal_id: PersonalId,
    full_name: String,
    death_extract_number: String,
    date_of_death: Date,
    address: Address,
    requester_personal_id: PersonalId,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentAnswer {
    granted: bool,
}

impl Agency for Police {
    fn desk(&self) -> &Desk {
        &self.desk
    }
    fn world(&self) -> &World {
        &self.world
    }
    fn records(&self) -> Value {
        json!(*self.records.lock().expect("records lock"))
    }
}

impl Police {
    pub fn new(desk: Desk, world: Arc<World>) -> Police {
        Police {
            desk,
            world,
            records: Mutex::default(),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/residence-registrations", post(register))
            .route("/v1/residence-registrations/{id}", get(registration_status))
            .route("/v1/residence-deregistrations", post(deregister))
            .route(
                "/admin/residence-registrations/{id}/consent",
                post(answer_consent),
            )
            .with_state(self)
    }

    fn register(
        self: &Arc<Self>,
        req: RegistrationRequest,
        traceparent: Option<String>,
    ) -> Result<Reply, Refusal> {
        named("full_name", &req.full_name)?;
        // The child's relationship to the household head is a part of the form the desk asks
        // the family for, not a reason to refuse.
        if req.relationship_to_head.trim().is_empty() {
            return Ok(Reply::incomplete(vec![(
                "relationship_to_head".to_owned(),
                "the child's relationship to the household head, as the residence form (CT01) asks"
                    .to_owned(),
            )]));
        }
        named("birth_extract_number", &req.birth_extract_number)?;
        if !(req.callback_url.starts_with("http://") || req.callback_url.starts_with("https://")) {
            return Err(
                Refusal::new("INVALID_FIELD", "callback_url must be an http(s) URL")
                    .on_field("callback_url"),
            );
        }
        let commune = self
            .world
            .directory
            .serving(&req.address.commune_code, "address.commune_code")?;
        named("address.detail", &req.address.detail)?;
        let population = self.world.population.lock().expect("population lock");
        let person = population.get(&req.personal_id).ok_or_else(|| {
            Refusal::new(
                "PERSON_NOT_IN_POPULATION_DB",
                format!(
                    "{} is not in the population database: register the birth first",
                    req.personal_id
                ),
            )
            .on_field("personal_id")
        })?;
        if person.full_name != req.full_name || person.date_of_birth != req.date_of_birth {
            return Err(Refusal::new(
                "DATA_MISMATCH",
                format!(
                    "the name or date of birth does not match the population database for {}",
                    req.personal_id
                ),
            )
            .on_field("full_name"));
        }
        if let Some(current) = &person.commune {
            return Err(Refusal::new(
                "ALREADY_REGISTERED",
                format!(
                    "{} already has a permanent residence in commune {current}",
                    req.personal_id
                ),
            )
            .on_field("personal_id"));
        }
        let head = population
            .get(&req.household_head_personal_id)
            .filter(|h| h.deceased_on.is_none())
            .ok_or_else(|| {
                Refusal::new(
                    "HOUSEHOLD_HEAD_UNKNOWN",
                    format!(
                        "{} is not a living person in the population database",
                        req.household_head_personal_id
                    ),
                )
                .on_field("household_head_personal_id")
            })?;
        if head.commune.as_deref() != Some(commune.code.as_str()) {
            return Err(Refusal::new(
                "OUTSIDE_COMMUNE",
                format!(
                    "the household of {} is not registered in {} ({})",
                    head.personal_id, commune.name, commune.code
                ),
            )
            .on_field("address.commune_code"));
        }
        let consent = head.household_head_consent;
        drop(population);
        let mut records = self.records.lock().expect("records lock");
        if records.awaiting.contains(&req.personal_id) {
            return Err(Refusal::new(
                "ALREADY_REQUESTED",
                format!(
                    "a registration of {} is already awaiting the household head's consent",
                    req.personal_id
                ),
            )
            .on_field("personal_id"));
        }
        let registration_id = format!("CT-{}-{:06}", commune.code, records.registrations.len() + 1);
        let index = records.registrations.len();
        records.by_id.insert(registration_id.clone(), index);
        records.awaiting.insert(req.personal_id.clone());
        records.registrations.push(Registration {
            registration_id: registration_id.clone(),
            personal_id: req.personal_id,
            full_name: req.full_name,
            address: req.address,
            household_head_personal_id: req.household_head_personal_id,
            state: RegistrationState::AwaitingConsent,
            household_number: None,
            registered_on: None,
            refusal: None,
            callback_url: req.callback_url,
            traceparent,
            callback: CallbackDelivery::default(),
        });
        if consent != Consent::Manual {
            let police = self.clone();
            let id = registration_id.clone();
            let delay = self.world.settings.consent_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                police.decide(&id, consent == Consent::Auto).ok();
            });
        }
        Ok(Reply::accepted(json!({
            "registration_id": registration_id,
            "state": RegistrationState::AwaitingConsent,
            "status_url": format!("/v1/residence-registrations/{registration_id}"),
        })))
    }

    /// Records the household head's answer and calls civicflow back with the outcome.
    fn decide(self: &Arc<Self>, id: &str, granted: bool) -> Result<(), Refusal> {
        let mut records = self.records.lock().expect("records lock");
        let seq = records.registered + 1;
        let registration = records.find_mut(id).ok_or_else(|| {
            Refusal::new("NOT_FOUND", format!("no registration {id}"))
                .with_status(StatusCode::NOT_FOUND)
        })?;
        if registration.state != RegistrationState::AwaitingConsent {
            return Err(Refusal::new(
                "ALREADY_DECIDED",
                format!("registration {id} is already {:?}", registration.state),
            )
            .with_status(StatusCode::CONFLICT));
        }
        if granted {
            let mut population = self.world.population.lock().expect("population lock");
            if let Some(person) = population.get_mut(&registration.personal_id) {
                person.commune = Some(registration.address.commune_code.clone());
            }
            registration.state = RegistrationState::Registered;
            registration.household_number =
                Some(format!("HK-{}-{seq:06}", registration.address.commune_code));
            registration.registered_on = Some(self.world.today());
        } else {
            registration.state = RegistrationState::Refused;
            registration.refusal = Some(json!({
                "reason_code": "HOUSEHOLD_HEAD_REFUSED",
                "message": format!("the household head {} did not consent", registration.household_head_personal_id),
            }));
        }
        let person = registration.personal_id.clone();
        if granted {
            records.registered = seq;
        }
        records.awaiting.remove(&person);
        let police = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { police.deliver_callback(&id).await });
        Ok(())
    }

    fn outcome(registration: &Registration) -> Value {
        match registration.state {
            RegistrationState::Registered => json!({
                "registration_id": registration.registration_id,
                "outcome": "registered",
                "residence": {
                    "personal_id": registration.personal_id,
                    "commune_code": registration.address.commune_code,
                    "household_number": registration.household_number,
                    "registered_on": registration.registered_on,
                },
            }),
            RegistrationState::Refused => {
                let mut body = registration.refusal.clone().unwrap_or_default();
                body["registration_id"] = json!(registration.registration_id);
                body["outcome"] = json!("refused");
                body
            }
            RegistrationState::AwaitingConsent => json!({
                "registration_id": registration.registration_id,
                "outcome": "awaiting_consent",
            }),
        }
    }

    /// Delivers the outcome to civicflow, retrying with backoff while it is unreachable or failing,
    /// as a real agency's outbox does.
    async fn deliver_callback(&self, id: &str) {
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            let (url, body, traceparent) = {
                let records = self.records.lock().expect("records lock");
                let Some(r) = records.find(id) else { return };
                (
                    r.callback_url.clone(),
                    Self::outcome(r),
                    r.traceparent.clone(),
                )
            };
            let mut request = self
                .world
                .http
                .post(&url)
                .json(&body)
                .header(IDEMPOTENCY_KEY_HEADER, format!("police-callback-{id}"));
            let token = self
                .world
                .callback_token
                .lock()
                .expect("token lock")
                .clone();
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(tp) = traceparent {
                request = request.header(TRACEPARENT_HEADER, tp);
            }
            let result = request.timeout(Duration::from_secs(10)).send().await;
            let done = {
                let mut records = self.records.lock().expect("records lock");
                let Some(r) = records.find_mut(id) else {
                    return;
                };
                r.callback.attempts += 1;
                match &result {
                    Ok(reply) => {
                        let status = reply.status();
                        r.callback.last_status = Some(status.as_u16());
                        r.callback.delivered = status.is_success();
                        // A 4xx other than 429 means civicflow will never accept this callback:
                        // retrying cannot help, so the police stop (and their operators would look).
                        status.is_success()
                            || (status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS)
                    }
                    Err(e) => {
                        r.callback.last_error = Some(e.to_string());
                        false
                    }
                }
            };
            if done || started.elapsed() > CALLBACK_PATIENCE {
                if !done {
                    tracing::warn!(registration = id, "giving up delivering the callback");
                }
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn status(&self, id: &str) -> Reply {
        let records = self.records.lock().expect("records lock");
        match records.find(id) {
            Some(r) => Reply::ok(Self::outcome(r)),
            None => Reply::not_found(&format!("registration {id}")),
        }
    }

    fn deregister(&self, req: DeregistrationRequest) -> Result<Reply, Refusal> {
        named("full_name", &req.full_name)?;
        named("death_extract_number", &req.death_extract_number)?;
        let mut population = self.world.population.lock().expect("population lock");
        if population.get(&req.requester_personal_id).is_none() {
            return Err(Refusal::new(
                "REQUESTER_UNKNOWN",
                format!(
                    "the requester {} is not in the population database",
                    req.requester_personal_id
                ),
            )
            .on_field("requester_personal_id"));
        }
        let person = population.get_mut(&req.personal_id).ok_or_else(|| {
            Refusal::new(
                "PERSON_NOT_IN_POPULATION_DB",
                format!("{} is not in the population database", req.personal_id),
            )
            .on_field("personal_id")
        })?;
        if person.full_name != req.full_name {
            return Err(Refusal::new(
                "DATA_MISMATCH",
                format!(
                    "the population database has {} as {:?}",
                    req.personal_id, person.full_name
                ),
            )
            .on_field("full_name"));
        }
        if person.deceased_on != Some(req.date_of_death) {
            return Err(Refusal::new(
                "DEATH_NOT_REGISTERED",
                format!(
                    "no death of {} on {} is registered: register the death first",
                    req.personal_id, req.date_of_death
                ),
            )
            .on_field("date_of_death"));
        }
        match &person.commune {
            None => {
                return Err(Refusal::new(
                    "ALREADY_DEREGISTERED",
                    format!(
                        "{} has no permanent residence to deregister",
                        req.personal_id
                    ),
                )
                .on_field("personal_id"));
            }
            Some(c) if *c != req.address.commune_code => {
                return Err(Refusal::new(
                    "OUTSIDE_COMMUNE",
                    format!(
                        "{} resides in commune {c}, not {}",
                        req.personal_id, req.address.commune_code
                    ),
                )
                .on_field("address.commune_code"));
            }
            Some(_) => {}
        }
        person.commune = None;
        let today = self.world.today();
        let mut records = self.records.lock().expect("records lock");
        let record = Deregistration {
            deregistration_number: format!(
                "XTT-{}-{:06}",
                req.address.commune_code,
                records.deregistrations.len() + 1
            ),
            personal_id: req.personal_id,
            commune_code: req.address.commune_code,
            deregistered_on: today,
        };
        records.deregistrations.push(record.clone());
        Ok(Reply::created(json!({
            "deregistration_number": record.deregistration_number,
            "deregistered_on": record.deregistered_on,
        })))
    }
}

async fn register(State(police): State<Arc<Police>>, headers: HeaderMap, body: Bytes) -> Response {
    let p = police.clone();
    let traceparent = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    police
        .desk
        .effectful(
            "residence-registration",
            &headers,
            "/v1/residence-registrations",
            &body,
            move |bytes| {
                parse(bytes)
                    .and_then(|req| p.register(req, traceparent))
                    .unwrap_or_else(Reply::from)
            },
        )
        .await
}

async fn registration_status(
    State(police): State<Arc<Police>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/residence-registrations/{id}");
    police
        .desk
        .query(&headers, &path, || police.status(&id))
        .await
}

async fn deregister(
    State(police): State<Arc<Police>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = police.clone();
    police
        .desk
        .effectful(
            "residence-deregistration",
            &headers,
            "/v1/residence-deregistrations",
            &body,
            move |bytes| {
                parse(bytes)
                    .and_then(|req| p.deregister(req))
                    .unwrap_or_else(Reply::from)
            },
        )
        .await
}

/// An operator of the mock answers for a household head whose consent is `manual`.
async fn answer_consent(
    State(police): State<Arc<Police>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let result =
        parse::<ConsentAnswer>(&body).and_then(|answer| police.decide(&id, answer.granted));
    match result {
        Ok(()) => respond(Reply::ok(json!({ "registration_id": id, "decided": true }))),
        Err(refusal) => respond(refusal.into()),
    }
}
