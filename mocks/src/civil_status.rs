//! Civil status (commune People's Committee, Ministry of Justice software): birth registration,
//! which has the population database issue the child's personal ID, and death registration.

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
use serde_json::json;

use crate::agency::{Address, Agency, days_between, named};
use crate::desk::Desk;
use crate::personal_id::PersonalId;
use crate::population::{Citizen, Consent, Sex};
use crate::reply::{Refusal, Reply, parse};
use crate::world::World;

/// How late a birth may be registered through this procedure; later is "late registration", a
/// separate procedure with its own dossier.
const BIRTH_REGISTRATION_WINDOW_DAYS: i32 = 60;

pub struct CivilStatus {
    desk: Desk,
    world: Arc<World>,
    records: Mutex<Records>,
}

#[derive(Debug, Default, Serialize)]
struct Records {
    births: Vec<BirthRecord>,
    deaths: Vec<DeathRecord>,
    /// Birth-certificate number → index in `births`.
    #[serde(skip)]
    by_certificate: HashMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
struct BirthRecord {
    registration_number: String,
    birth_extract_number: String,
    child_personal_id: PersonalId,
    child_full_name: String,
    birth_certificate_number: String,
    office_commune_code: String,
    registered_on: Date,
}

#[derive(Debug, Clone, Serialize)]
struct DeathRecord {
    registration_number: String,
    death_extract_number: String,
    deceased_personal_id: PersonalId,
    date_of_death: Date,
    office_commune_code: String,
    registered_on: Date,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BirthRequest {
    office_commune_code: String,
    requester_personal_id: PersonalId,
    child: Child,
    birth_certificate_number: String,
    mother: Parent,
    #[serde(default)]
    father: Option<Parent>,
    permanent_address: Address,
    /// Registered after the 60 days the Civil Status Law gives (Art. 15): the office takes it
    /// as a late registration, with the checks that go with one, instead of refusing it.
    #[serde(default)]
    late_registration: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Child {
    full_name: String,
    date_of_birth: Date,
    sex: Sex,
    ethnicity: String,
    nationality: String,
    place_of_birth: String,
    home_town: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Parent {
    full_name: String,
    #[serde(default)]
    personal_id: Option<PersonalId>,
    #[serde(default)]
    passport_number: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeathRequest {
    office_commune_code: String,
    requester_personal_id: PersonalId,
    deceased: Deceased,
    death_notice_number: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Deceased {
    personal_id: PersonalId,
    full_name: String,
    date_of_death: Date,
    place_of_death: String,
}

impl Agency for CivilStatus {
    fn desk(&self) -> &Desk {
        &self.desk
    }
    fn world(&self) -> &World {
        &self.world
    }
    fn records(&self) -> serde_json::Value {
        json!(*self.records.lock().expect("records lock"))
    }
}

impl CivilStatus {
    pub fn new(desk: Desk, world: Arc<World>) -> CivilStatus {
        CivilStatus {
            desk,
            world,
            records: Mutex::default(),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/birth-registrations", post(register_birth))
            .route("/v1/death-registrations", post(register_death))
            .with_state(self)
    }

    fn birth(&self, req: BirthRequest) -> Result<Reply, Refusal> {
        named("child.full_name", &req.child.full_name)?;
        named("child.ethnicity", &req.child.ethnicity)?;
        named("child.nationality", &req.child.nationality)?;
        named("child.place_of_birth", &req.child.place_of_birth)?;
        named("child.home_town", &req.child.home_town)?;
        named("birth_certificate_number", &req.birth_certificate_number)?;
        let office = self
            .world
            .directory
            .serving(&req.office_commune_code, "office_commune_code")?;
        req.permanent_address.within(office, "permanent_address")?;
        let today = self.world.today();
        let born = req.child.date_of_birth;
        if born > today {
            return Err(Refusal::new(
                "BIRTH_DATE_IN_FUTURE",
                format!("the date of birth {born} is after today ({today})"),
            )
            .on_field("child.date_of_birth"));
        }
        if days_between(born, today) > BIRTH_REGISTRATION_WINDOW_DAYS && !req.late_registration {
            return Err(Refusal::new(
                "BIRTH_TOO_OLD",
                format!(
                    "the child was born on {born}, more than {BIRTH_REGISTRATION_WINDOW_DAYS} days ago: this needs a late birth registration (`late_registration: true`)"
                ),
            )
            .on_field("child.date_of_birth"));
        }
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
        // A parent with neither a personal ID nor a passport number is a missing paper, not a
        // refusal: the office asks for every such part at once, and registers the birth when
        // the dossier comes back complete.
        let mut missing = Vec::new();
        for (field, parent) in [
            ("mother", Some(&req.mother)),
            ("father", req.father.as_ref()),
        ] {
            let Some(parent) = parent else { continue };
            let no_passport = parent
                .passport_number
                .as_deref()
                .is_none_or(|p| p.trim().is_empty());
            if parent.personal_id.is_none() && no_passport {
                missing.push((
                    format!("{field}.personal_id"),
                    format!("the {field}'s identity document: a personal ID, or a passport number for a foreign parent"),
                ));
            }
        }
        if !missing.is_empty() {
            return Ok(Reply::incomplete(missing));
        }
        for (field, parent) in [
            ("mother", Some(&req.mother)),
            ("father", req.father.as_ref()),
        ] {
            let Some(parent) = parent else { continue };
            named(&format!("{field}.full_name"), &parent.full_name)?;
            // A foreign parent's passport is not checked against the population database.
            if let Some(id) = &parent.personal_id
                && population.get(id).is_none_or(|c| c.deceased_on.is_some())
            {
                return Err(Refusal::new(
                    "PARENT_UNKNOWN",
                    format!("the {field}'s personal ID {id} is not in the population database"),
                )
                .on_field(format!("{field}.personal_id")));
            }
        }
        let mut records = self.records.lock().expect("records lock");
        if let Some(existing) = records
            .by_certificate
            .get(&req.birth_certificate_number)
            .map(|&i| &records.births[i])
        {
            return Err(Refusal::new(
                "BIRTH_ALREADY_REGISTERED",
                format!(
                    "birth certificate {} was already registered as {}",
                    req.birth_certificate_number, existing.registration_number
                ),
            )
            .on_field("birth_certificate_number"));
        }
        let province = self
            .world
            .directory
            .commune(&req.office_commune_code)
            .map(|c| c.province.clone())
            .unwrap_or_default();
        let child_id = {
            let mut rng = self.world.rng.lock().expect("rng lock");
            population.issue_id(&province, req.child.sex, born, &mut rng)
        };
        population.insert(Citizen {
            personal_id: child_id.clone(),
            full_name: req.child.full_name.clone(),
            sex: req.child.sex,
            date_of_birth: born,
            commune: None,
            household_head_consent: Consent::Auto,
            insurance: "none".to_owned(),
            deceased_on: None,
        });
        let seq = records.births.len() + 1;
        let record = BirthRecord {
            registration_number: format!("{seq}/{}", today.year()),
            birth_extract_number: format!(
                "TLKS-{}-{}-{seq:06}",
                req.office_commune_code,
                today.year()
            ),
            child_personal_id: child_id,
            child_full_name: req.child.full_name,
            birth_certificate_number: req.birth_certificate_number,
            office_commune_code: req.office_commune_code,
            registered_on: today,
        };
        let index = records.births.len();
        records
            .by_certificate
            .insert(record.birth_certificate_number.clone(), index);
        records.births.push(record.clone());
        Ok(Reply::created(json!({
            "registration_number": record.registration_number,
            "birth_extract_number": record.birth_extract_number,
            "child_personal_id": record.child_personal_id,
            "registered_on": record.registered_on,
            "office": { "commune_code": office.code, "name": office.name },
        })))
    }

    fn death(&self, req: DeathRequest) -> Result<Reply, Refusal> {
        named("deceased.full_name", &req.deceased.full_name)?;
        named("deceased.place_of_death", &req.deceased.place_of_death)?;
        named("death_notice_number", &req.death_notice_number)?;
        let office = self
            .world
            .directory
            .serving(&req.office_commune_code, "office_commune_code")?;
        let today = self.world.today();
        let died = req.deceased.date_of_death;
        if died > today {
            return Err(Refusal::new(
                "DATE_OF_DEATH_IN_FUTURE",
                format!("the date of death {died} is after today ({today})"),
            )
            .on_field("deceased.date_of_death"));
        }
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
        let id = &req.deceased.personal_id;
        let citizen = population.get_mut(id).ok_or_else(|| {
            Refusal::new(
                "PERSON_NOT_IN_POPULATION_DB",
                format!("{id} is not in the population database"),
            )
            .on_field("deceased.personal_id")
        })?;
        if citizen.full_name != req.deceased.full_name {
            return Err(Refusal::new(
                "NAME_MISMATCH",
                format!(
                    "the population database has {id} as {:?}, not {:?}",
                    citizen.full_name, req.deceased.full_name
                ),
            )
            .on_field("deceased.full_name"));
        }
        if let Some(on) = citizen.deceased_on {
            return Err(Refusal::new(
                "DEATH_ALREADY_REGISTERED",
                format!("the death of {id} was already registered ({on})"),
            )
            .on_field("deceased.personal_id"));
        }
        if died < citizen.date_of_birth {
            return Err(Refusal::new(
                "INVALID_FIELD",
                format!("the date of death {died} is before the date of birth"),
            )
            .on_field("deceased.date_of_death"));
        }
        if citizen.commune.as_deref() != Some(office.code.as_str()) {
            return Err(Refusal::new(
                "OUTSIDE_COMMUNE",
                format!(
                    "{id} did not reside in {}: register the death where the deceased last resided",
                    office.name
                ),
            )
            .on_field("office_commune_code"));
        }
        citizen.deceased_on = Some(died);
        let mut records = self.records.lock().expect("records lock");
        let seq = records.deaths.len() + 1;
        let record = DeathRecord {
            registration_number: format!("{seq}/{}", today.year()),
            death_extract_number: format!(
                "TLKT-{}-{}-{seq:06}",
                req.office_commune_code,
                today.year()
            ),
            deceased_personal_id: id.clone(),
            date_of_death: died,
            office_commune_code: req.office_commune_code,
            registered_on: today,
        };
        records.deaths.push(record.clone());
        Ok(Reply::created(json!({
            "registration_number": record.registration_number,
            "death_extract_number": record.death_extract_number,
            "registered_on": record.registered_on,
        })))
    }
}

async fn register_birth(
    State(agency): State<Arc<CivilStatus>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let a = agency.clone();
    agency
        .desk
        .effectful(
            "birth-registration",
            &headers,
            "/v1/birth-registrations",
            &body,
            move |bytes| {
                parse(bytes)
                    .and_then(|req| a.birth(req))
                    .unwrap_or_else(Reply::from)
            },
        )
        .await
}

async fn register_death(
    State(agency): State<Arc<CivilStatus>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let a = agency.clone();
    agency
        .desk
        .effectful(
            "death-registration",
            &headers,
            "/v1/death-registrations",
            &body,
            move |bytes| {
                parse(bytes)
                    .and_then(|req| a.death(req))
                    .unwrap_or_else(Reply::from)
            },
        )
        .await
}
