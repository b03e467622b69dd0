//! Vietnam Social Security: the health-insurance card of a child under 6 (taken in, then answered
//! on a status URL that civicflow polls) and the funeral allowance (decided at once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::agency::{Address, Agency, named};
use crate::desk::Desk;
use crate::directory::Hospital;
use crate::personal_id::PersonalId;
use crate::population::Sex;
use crate::reply::{Refusal, Reply, parse};
use crate::world::World;

pub struct SocialSecurity {
    desk: Desk,
    world: Arc<World>,
    records: Mutex<Records>,
}

#[derive(Debug, Default, Serialize)]
struct Records {
    card_applications: Vec<CardApplication>,
    funeral_allowances: Vec<FuneralAllowance>,
    #[serde(skip)]
    insurance_numbers: HashSet<String>,
    /// Application id → index in `card_applications`.
    #[serde(skip)]
    applications: HashMap<String, usize>,
    #[serde(skip)]
    insured_children: HashSet<PersonalId>,
    /// Deceased personal ID → index in `funeral_allowances`.
    #[serde(skip)]
    allowances: HashMap<PersonalId, usize>,
}

#[derive(Debug, Clone, Serialize)]
struct CardApplication {
    application_id: String,
    child_personal_id: PersonalId,
    polls_until_ready: u32,
    card: Card,
}

#[derive(Debug, Clone, Serialize)]
struct Card {
    social_insurance_number: String,
    card_code: String,
    holder: String,
    valid_from: Date,
    valid_to: Date,
    initial_hospital: Hospital,
}

#[derive(Debug, Clone, Serialize)]
struct FuneralAllowance {
    decision_number: String,
    deceased_personal_id: PersonalId,
    category: String,
    amount_vnd: u64,
    paid_to: PersonalId,
    payment: Payment,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardRequest {
    child_personal_id: PersonalId,
    full_name: String,
    date_of_birth: Date,
    sex: Sex,
    address: Address,
    birth_extract_number: String,
    #[serde(default)]
    initial_hospital_code: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FuneralRequest {
    deceased_personal_id: PersonalId,
    death_extract_number: String,
    date_of_death: Date,
    organizer: Organizer,
    payment: Payment,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Organizer {
    personal_id: PersonalId,
    full_name: String,
    relationship: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payment {
    method: PaymentMethod,
    #[serde(default)]
    bank_code: Option<String>,
    #[serde(default)]
    account_number: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PaymentMethod {
    BankTransfer,
    Cash,
}

/// A child's card runs until the day before the sixth birthday; a child who turns six before the
/// school year starts keeps it until 30 September of that year (Law on Health Insurance, art. 16).
fn card_valid_to(born: Date) -> Date {
    let sixth = born.saturating_add(jiff::Span::new().years(6));
    let day_before = sixth.yesterday().unwrap_or(sixth);
    let school_start = Date::new(sixth.year(), 9, 30).expect("30 September exists");
    if sixth < school_start {
        school_start
    } else {
        day_before
    }
}

impl Agency for SocialSecurity {
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

impl SocialSecurity {
    pub fn new(desk: Desk, world: Arc<World>) -> SocialSecurity {
        SocialSecurity {
            desk,
            world,
            records: Mutex::default(),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/child-health-insurance-cards", post(apply_for_card))
            .route("/v1/child-health-insurance-cards/{id}", get(card_status))
            .route("/v1/funeral-allowances", post(claim_funeral_allowance))
            .with_state(self)
    }

    fn apply(&self, req: CardRequest) -> Result<Reply, Refusal> {
        named("full_name", &req.full_name)?;
        named("birth_extract_number", &req.birth_extract_number)?;
        let commune = self
            .world
            .directory
            .serving(&req.address.commune_code, "address.commune_code")?;
        let hospital = match &req.initial_hospital_code {
            None => commune.hospital.clone(),
            Some(code) => self
                .world
                .directory
                .communes
                .iter()
                .map(|c| &c.hospital)
                .find(|h| h.code == *code)
                .cloned()
                .ok_or_else(|| {
                    Refusal::new(
                        "UNKNOWN_HOSPITAL",
                        format!("{code} is not a hospital that takes initial registrations"),
                    )
                    .on_field("initial_hospital_code")
                })?,
        };
        let population = self.world.population.lock().expect("population lock");
        let child = population.get(&req.child_personal_id).ok_or_else(|| {
            Refusal::new(
                "PERSON_NOT_IN_POPULATION_DB",
                format!(
                    "{} is not in the population database",
                    req.child_personal_id
                ),
            )
            .on_field("child_personal_id")
        })?;
        if child.date_of_birth != req.date_of_birth
            || child.sex != req.sex
            || child.full_name != req.full_name
        {
            return Err(Refusal::new(
                "DATA_MISMATCH",
                format!(
                    "the name, sex or date of birth does not match the population database for {}",
                    req.child_personal_id
                ),
            )
            .on_field("date_of_birth"));
        }
        let today = self.world.today();
        if req.date_of_birth.saturating_add(jiff::Span::new().years(6)) <= today {
            return Err(Refusal::new(
                "NOT_UNDER_SIX",
                format!(
                    "a child born on {} is not under 6 today ({today})",
                    req.date_of_birth
                ),
            )
            .on_field("date_of_birth"));
        }
        drop(population);
        let mut records = self.records.lock().expect("records lock");
        if records.insured_children.contains(&req.child_personal_id) {
            return Err(Refusal::new(
                "ALREADY_INSURED",
                format!(
                    "{} already has a health-insurance card",
                    req.child_personal_id
                ),
            )
            .on_field("child_personal_id"));
        }
        let province = &commune.province[1..];
        let number = {
            let mut rng = self.world.rng.lock().expect("rng lock");
            loop {
                let candidate = format!("{province}{:08}", rng.u32(..100_000_000));
                if !records.insurance_numbers.contains(&candidate) {
                    break candidate;
                }
            }
        };
        records.insurance_numbers.insert(number.clone());
        let application_id = format!("TE-{:07}", records.card_applications.len() + 1);
        let index = records.card_applications.len();
        records.applications.insert(application_id.clone(), index);
        records
            .insured_children
            .insert(req.child_personal_id.clone());
        records.card_applications.push(CardApplication {
            application_id: application_id.clone(),
            child_personal_id: req.child_personal_id,
            polls_until_ready: self.world.settings.card_ready_after_polls,
            card: Card {
                card_code: format!("TE1{province}{number}"),
                social_insurance_number: number,
                holder: req.full_name,
                valid_from: req.date_of_birth,
                valid_to: card_valid_to(req.date_of_birth),
                initial_hospital: hospital,
            },
        });
        Ok(Reply::accepted(json!({
            "application_id": application_id,
            "state": "processing",
            "status_url": format!("/v1/child-health-insurance-cards/{application_id}"),
        })))
    }

    fn card_status(&self, id: &str) -> Reply {
        let mut records = self.records.lock().expect("records lock");
        let Some(&index) = records.applications.get(id) else {
            return Reply::not_found(&format!("application {id}"));
        };
        let application = &mut records.card_applications[index];
        if application.polls_until_ready > 0 {
            application.polls_until_ready -= 1;
            return Reply::ok(json!({ "application_id": id, "state": "processing" }));
        }
        Reply::ok(json!({ "application_id": id, "state": "issued", "card": application.card }))
    }

    fn funeral(&self, req: FuneralRequest) -> Result<Reply, Refusal> {
        named("death_extract_number", &req.death_extract_number)?;
        named("organizer.full_name", &req.organizer.full_name)?;
        named("organizer.relationship", &req.organizer.relationship)?;
        if req.payment.method == PaymentMethod::BankTransfer {
            for (field, value) in [
                ("bank_code", &req.payment.bank_code),
                ("account_number", &req.payment.account_number),
            ] {
                if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    return Err(Refusal::new(
                        "MISSING_FIELD",
                        format!("a bank transfer needs payment.{field}"),
                    )
                    .on_field(format!("payment.{field}")));
                }
            }
        }
        let population = self.world.population.lock().expect("population lock");
        let deceased = population.get(&req.deceased_personal_id).ok_or_else(|| {
            Refusal::new(
                "PERSON_NOT_IN_POPULATION_DB",
                format!(
                    "{} is not in the population database",
                    req.deceased_personal_id
                ),
            )
            .on_field("deceased_personal_id")
        })?;
        if deceased.deceased_on != Some(req.date_of_death) {
            return Err(Refusal::new(
                "DEATH_NOT_REGISTERED",
                format!(
                    "no death of {} on {} is registered",
                    req.deceased_personal_id, req.date_of_death
                ),
            )
            .on_field("date_of_death"));
        }
        let rules = &self.world.directory.funeral_allowance;
        if !rules.eligible_categories.contains(&deceased.insurance) {
            return Err(Refusal::new(
                "DECEASED_NOT_ELIGIBLE",
                format!(
                    "the deceased's social-insurance status ({}) is not one of the six categories entitled to a funeral allowance",
                    deceased.insurance
                ),
            )
            .on_field("deceased_personal_id"));
        }
        let category = deceased.insurance.clone();
        if population
            .get(&req.organizer.personal_id)
            .is_none_or(|o| o.deceased_on.is_some())
        {
            return Err(Refusal::new(
                "ORGANIZER_UNKNOWN",
                format!(
                    "the funeral organizer {} is not a living person in the population database",
                    req.organizer.personal_id
                ),
            )
            .on_field("organizer.personal_id"));
        }
        drop(population);
        let mut records = self.records.lock().expect("records lock");
        if let Some(paid) = records
            .allowances
            .get(&req.deceased_personal_id)
            .map(|&i| &records.funeral_allowances[i])
        {
            return Err(Refusal::new(
                "ALREADY_PAID",
                format!(
                    "the funeral allowance for {} was already decided ({})",
                    req.deceased_personal_id, paid.decision_number
                ),
            )
            .on_field("deceased_personal_id"));
        }
        let record = FuneralAllowance {
            decision_number: format!(
                "MT-{}-{:06}",
                self.world.today().year(),
                records.funeral_allowances.len() + 1
            ),
            deceased_personal_id: req.deceased_personal_id,
            category,
            amount_vnd: rules.reference_level_vnd * rules.multiple,
            paid_to: req.organizer.personal_id,
            payment: req.payment,
        };
        let index = records.funeral_allowances.len();
        records
            .allowances
            .insert(record.deceased_personal_id.clone(), index);
        records.funeral_allowances.push(record.clone());
        Ok(Reply::created(json!({
            "decision_number": record.decision_number,
            "category": record.category,
            "amount_vnd": record.amount_vnd,
            "paid_to": record.paid_to,
            "payment_method": record.payment.method,
        })))
    }
}

async fn apply_for_card(
    State(ss): State<Arc<SocialSecurity>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = ss.clone();
    ss.desk
        .effectful(
            "child-health-insurance-card",
            &headers,
            "/v1/child-health-insurance-cards",
            &body,
            move |bytes| {
                parse(bytes)
                    .and_then(|req| s.apply(req))
                    .unwrap_or_else(Reply::from)
            },
        )
        .await
}

async fn card_status(
    State(ss): State<Arc<SocialSecurity>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/v1/child-health-insurance-cards/{id}");
    ss.desk.query(&headers, &path, || ss.card_status(&id)).await
}

async fn claim_funeral_allowance(
    State(ss): State<Arc<SocialSecurity>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = ss.clone();
    ss.desk
        .effectful(
            "funeral-allowance",
            &headers,
            "/v1/funeral-allowances",
            &body,
            move |bytes| {
                parse(bytes)
                    .and_then(|req| s.funeral(req))
                    .unwrap_or_else(Reply::from)
            },
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn card_validity_follows_the_school_year_rule() {
        assert_eq!(card_valid_to(date(2026, 3, 10)), date(2032, 9, 30));
        assert_eq!(card_valid_to(date(2026, 11, 20)), date(2032, 11, 19));
    }
}
