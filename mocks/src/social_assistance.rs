//! The commune's social-assistance office: a one-off birth allowance for a child of a poor
//! household, decided at once. This is the agency civicflow does not ship an adapter for: it
//! registers its own through civicflow's API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agency::Agency;
use crate::desk::Desk;
use crate::personal_id::PersonalId;
use crate::reply::{Refusal, Reply, parse};
use crate::world::World;

/// The allowance, as a multiple of the reference level (the funeral allowance's, in the
/// directory).
const MULTIPLE: u64 = 2;

pub struct SocialAssistance {
    desk: Desk,
    world: Arc<World>,
    records: Mutex<Records>,
}

#[derive(Debug, Default, Serialize)]
struct Records {
    allowances: Vec<Allowance>,
    /// Child → index in `allowances`: one allowance per child.
    #[serde(skip)]
    by_child: HashMap<PersonalId, usize>,
}

#[derive(Debug, Clone, Serialize)]
struct Allowance {
    allowance_id: String,
    child_personal_id: PersonalId,
    poor_household_certificate: String,
    amount_vnd: u64,
    granted_on: Date,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowanceRequest {
    child_personal_id: PersonalId,
    commune_code: String,
    /// `HN-<commune code>-<serial>`, issued by the commune to a poor household.
    #[serde(default)]
    poor_household_certificate: Option<String>,
}

impl Agency for SocialAssistance {
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

impl SocialAssistance {
    pub fn new(desk: Desk, world: Arc<World>) -> SocialAssistance {
        SocialAssistance {
            desk,
            world,
            records: Mutex::default(),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/birth-allowances", post(claim))
            .with_state(self)
    }

    fn decide(&self, req: AllowanceRequest) -> Result<Reply, Refusal> {
        let certificate = req.poor_household_certificate.unwrap_or_default();
        let mut parts = certificate.split('-');
        let (prefix, commune, serial) = (parts.next(), parts.next(), parts.next());
        let well_formed = prefix == Some("HN")
            && commune.is_some_and(|c| c.len() == 5 && c.bytes().all(|b| b.is_ascii_digit()))
            && serial.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            && parts.next().is_none();
        if !well_formed {
            return Err(Refusal::new(
                "NOT_POOR_HOUSEHOLD",
                "the allowance is for a child of a poor household: no valid poor-household certificate (HN-<commune>-<serial>) was given",
            )
            .on_field("poor_household_certificate"));
        }
        if commune != Some(req.commune_code.as_str()) {
            return Err(Refusal::new(
                "CERTIFICATE_OTHER_COMMUNE",
                format!(
                    "certificate {certificate} was issued by another commune than {}",
                    req.commune_code
                ),
            )
            .on_field("poor_household_certificate"));
        }
        let population = self.world.population.lock().expect("population lock");
        if population.get(&req.child_personal_id).is_none() {
            return Err(Refusal::new(
                "PERSON_NOT_IN_POPULATION_DB",
                format!(
                    "{} is not in the population database: register the birth first",
                    req.child_personal_id
                ),
            )
            .on_field("child_personal_id"));
        }
        drop(population);
        let mut records = self.records.lock().expect("records lock");
        if let Some(&i) = records.by_child.get(&req.child_personal_id) {
            return Err(Refusal::new(
                "ALREADY_GRANTED",
                format!(
                    "allowance {} was already granted for this child",
                    records.allowances[i].allowance_id
                ),
            ));
        }
        let serial = records.allowances.len() + 1;
        let allowance = Allowance {
            allowance_id: format!("TCSS-{}-{serial:06}", req.commune_code),
            child_personal_id: req.child_personal_id.clone(),
            poor_household_certificate: certificate,
            amount_vnd: self.world.directory.funeral_allowance.reference_level_vnd * MULTIPLE,
            granted_on: self.world.today(),
        };
        records.by_child.insert(req.child_personal_id, serial - 1);
        records.allowances.push(allowance.clone());
        Ok(Reply::created(json!(allowance)))
    }
}

async fn claim(
    State(sa): State<Arc<SocialAssistance>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = sa.clone();
    sa.desk
        .effectful(
            "birth-allowance",
            &headers,
            "/v1/birth-allowances",
            &body,
            move |bytes| {
                parse(bytes)
                    .and_then(|req| s.decide(req))
                    .unwrap_or_else(Reply::from)
            },
        )
        .await
}
