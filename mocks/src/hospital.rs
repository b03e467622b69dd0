//! A hospital that certifies deaths and tells the state as a CloudEvent. A doctor certifies a
//! death at the hospital's desk (`POST /v1/death-certificates`: the deceased's personal ID, the
//! date, the relative who declares it); the hospital reads the deceased from the population
//! database, issues a death certificate (giấy báo tử) and sends
//! `vn.gov.moh.death.certified.v1` to the event sink it was given (civicflow's `/v1/events`,
//! with its token), as a source that delivers at least once: it sends again, under the same
//! `id`, until the sink answers 2xx, or refuses it for good (a 4xx other than 408 and 429).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agency::{Agency, named};
use crate::desk::{Desk, respond};
use crate::personal_id::PersonalId;
use crate::reply::{Refusal, Reply, parse};
use crate::world::World;

/// The hospital's CloudEvents `source`.
pub const SOURCE: &str = "urn:vn:moh:hospital:bach-mai";
/// The type of its death certificates.
pub const DEATH_CERTIFIED: &str = "vn.gov.moh.death.certified.v1";
/// Sends before the hospital gives an event up.
const MAX_SENDS: u32 = 12;

pub struct Hospital {
    desk: Desk,
    world: Arc<World>,
    records: Mutex<Records>,
    sink: Mutex<Option<Sink>>,
}

/// Where events go, and the bearer token that sends them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    pub url: String,
    pub token: String,
}

#[derive(Debug, Default, Serialize)]
struct Records {
    certificates: Vec<Value>,
    events: Vec<Sent>,
}

/// An event and how its delivery went.
#[derive(Debug, Clone, Serialize)]
struct Sent {
    event: Value,
    sends: u32,
    /// `pending`, `delivered`, `refused` (a 4xx), `no_sink` or `given_up`.
    state: &'static str,
    last_status: Option<u16>,
    answer: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Certify {
    deceased_personal_id: PersonalId,
    date_of_death: Date,
    declarant: Declarant,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declarant {
    personal_id: PersonalId,
    full_name: String,
    relationship: String,
}

impl Agency for Hospital {
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

impl Hospital {
    pub fn new(desk: Desk, world: Arc<World>, sink: Option<Sink>) -> Hospital {
        Hospital {
            desk,
            world,
            records: Mutex::default(),
            sink: Mutex::new(sink),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/death-certificates", post(certify))
            .route("/admin/event-sink", put(set_sink))
            .route("/admin/events", get(events))
            .with_state(self)
    }

    /// The certificate and the event that tells it, or why the doctor's entry is refused.
    fn certificate(&self, req: Certify) -> Result<Value, Refusal> {
        named("declarant.full_name", &req.declarant.full_name)?;
        named("declarant.relationship", &req.declarant.relationship)?;
        let today = self.world.today();
        if req.date_of_death > today {
            return Err(Refusal::new(
                "DATE_OF_DEATH_IN_FUTURE",
                format!(
                    "the date of death {} is after today ({today})",
                    req.date_of_death
                ),
            )
            .on_field("date_of_death"));
        }
        let population = self.world.population.lock().expect("population lock");
        let id = &req.deceased_personal_id;
        let deceased = population.get(id).ok_or_else(|| {
            Refusal::new(
                "PERSON_NOT_IN_POPULATION_DB",
                format!("{id} is not in the population database"),
            )
            .on_field("deceased_personal_id")
        })?;
        if population.get(&req.declarant.personal_id).is_none() {
            return Err(Refusal::new(
                "DECLARANT_UNKNOWN",
                format!(
                    "the declarant {} is not in the population database",
                    req.declarant.personal_id
                ),
            )
            .on_field("declarant.personal_id"));
        }
        let commune = deceased.commune.clone().unwrap_or_default();
        let name = deceased.full_name.clone();
        drop(population);
        let mut records = self.records.lock().expect("records lock");
        let number = format!("GBT-BM-{:06}", records.certificates.len() + 1);
        let data = json!({
            "certificate_number": number,
            "hospital": "Bach Mai Hospital",
            "deceased": {
                "personal_id": id,
                "full_name": name,
                "date_of_death": req.date_of_death,
                "place_of_death": "Bach Mai Hospital, Hà Nội",
            },
            "last_address": {"commune_code": commune, "detail": "permanent residence on record"},
            "declarant": req.declarant,
        });
        let event = json!({
            "specversion": "1.0",
            "id": format!("{number}/certified"),
            "source": SOURCE,
            "type": DEATH_CERTIFIED,
            "subject": number,
            "time": jiff::Timestamp::now().to_string(),
            "datacontenttype": "application/json",
            "data": data,
        });
        records.certificates.push(data.clone());
        records.events.push(Sent {
            event: event.clone(),
            sends: 0,
            state: "pending",
            last_status: None,
            answer: None,
        });
        Ok(json!({"certificate": data, "event": event}))
    }

    /// Sends event `i` until the sink takes it or refuses it for good.
    async fn deliver(self: Arc<Self>, i: usize) {
        let mut wait = Duration::from_millis(200);
        loop {
            let sink = self.sink.lock().expect("sink lock").clone();
            let event = self.records.lock().expect("records lock").events[i]
                .event
                .clone();
            let Some(sink) = sink else {
                self.note(i, "no_sink", None, None);
                return;
            };
            let sent = self
                .world
                .http
                .post(&sink.url)
                .bearer_auth(&sink.token)
                .header("content-type", "application/cloudevents+json")
                .body(event.to_string())
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let (state, status, answer) = match sent {
                Ok(r) => {
                    let status = r.status();
                    let answer = r.json::<Value>().await.ok();
                    let state = if status.is_success() {
                        "delivered"
                    } else if status.is_client_error()
                        && status != StatusCode::REQUEST_TIMEOUT
                        && status != StatusCode::TOO_MANY_REQUESTS
                    {
                        "refused"
                    } else {
                        "pending"
                    };
                    (state, Some(status.as_u16()), answer)
                }
                Err(_) => ("pending", None, None),
            };
            let sends = self.note(i, state, status, answer);
            if state != "pending" {
                return;
            }
            if sends >= MAX_SENDS {
                self.note(i, "given_up", status, None);
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    fn note(
        &self,
        i: usize,
        state: &'static str,
        status: Option<u16>,
        answer: Option<Value>,
    ) -> u32 {
        let mut records = self.records.lock().expect("records lock");
        let sent = &mut records.events[i];
        if state != "no_sink" && state != "given_up" {
            sent.sends += 1;
        }
        sent.state = state;
        sent.last_status = status.or(sent.last_status);
        if answer.is_some() {
            sent.answer = answer;
        }
        sent.sends
    }
}

async fn certify(
    State(hospital): State<Arc<Hospital>>,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    let made = parse::<Certify>(&body).and_then(|req| hospital.certificate(req));
    match made {
        Ok(answer) => {
            let i = hospital.records.lock().expect("records lock").events.len() - 1;
            tokio::spawn(hospital.clone().deliver(i));
            respond(Reply::created(answer))
        }
        Err(refusal) => respond(Reply::from(refusal)),
    }
}

async fn set_sink(State(hospital): State<Arc<Hospital>>, body: Bytes) -> Response {
    match parse::<Option<Sink>>(&body) {
        Ok(sink) => {
            *hospital.sink.lock().expect("sink lock") = sink;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => respond(Reply::from(refusal)),
    }
}

async fn events(State(hospital): State<Arc<Hospital>>) -> Response {
    Json(json!(hospital.records.lock().expect("records lock").events)).into_response()
}
