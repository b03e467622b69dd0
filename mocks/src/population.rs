//! The national population database as the mocks see it: every agency checks people against it,
//! and civil status adds newborns and records deaths in it. Shared by all mock agencies, as the
//! real database is shared by every ministry.

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::directory::Directory;
use crate::personal_id::PersonalId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Male,
    Female,
}

/// How a household head answers a request to register someone into the household.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// Confirms in VNeID shortly after the request.
    Auto,
    /// Waits until an operator of the mock answers (`POST /admin/residence-registrations/{id}/consent`).
    Manual,
    /// Declines.
    Refuse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Citizen {
    pub personal_id: PersonalId,
    pub full_name: String,
    pub sex: Sex,
    pub date_of_birth: Date,
    /// Commune of permanent residence; `None` once deregistered.
    pub commune: Option<String>,
    pub household_head_consent: Consent,
    /// Social-insurance category, `none` for people outside the system.
    pub insurance: String,
    #[serde(default)]
    pub deceased_on: Option<Date>,
}

#[derive(Debug, Default)]
pub struct Population {
    citizens: BTreeMap<PersonalId, Citizen>,
}

const FAMILY_NAMES: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
];
/// Middle and given names as Vietnamese parents give them to a son or to a daughter: `Văn`
/// marks a man, `Thị` a woman, and most given names are one or the other.
const MALE_MIDDLE_NAMES: &[&str] = &["Văn", "Minh", "Đức", "Quang", "Thanh", "Hữu"];
const FEMALE_MIDDLE_NAMES: &[&str] = &["Thị", "Ngọc", "Thu", "Thanh", "Minh"];
const MALE_GIVEN_NAMES: &[&str] = &["An", "Bình", "Dũng", "Khánh", "Nam", "Phúc", "Hùng", "Tuấn"];
const FEMALE_GIVEN_NAMES: &[&str] = &["Chi", "Giang", "Hà", "Linh", "Quỳnh", "Lan", "Hương", "Mai"];

impl Population {
    /// The directory's known citizens plus `generated` more, drawn from `seed` so that a run can be
    /// reproduced.
    pub fn seeded(directory: &Directory, seed: u64, generated: usize) -> Population {
        let mut population = Population::default();
        for known in &directory.citizens {
            let id: PersonalId = known
                .personal_id
                .parse()
                .expect("checked by directory tests");
            population.citizens.insert(
                id.clone(),
                Citizen {
                    personal_id: id,
                    full_name: known.full_name.clone(),
                    sex: known.sex,
                    date_of_birth: known.date_of_birth,
                    commune: Some(known.commune.clone()),
                    household_head_consent: known.household_head_consent,
                    insurance: known.insurance.clone(),
                    deceased_on: None,
                },
            );
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let categories = &directory.funeral_allowance.eligible_categories;
        while population.citizens.len() < directory.citizens.len() + generated {
            let commune = &directory.communes[rng.usize(..directory.communes.len())];
            let sex = if rng.bool() { Sex::Male } else { Sex::Female };
            let born = Date::new(rng.i16(1940..=2006), rng.i8(1..=12), rng.i8(1..=28))
                .expect("valid date");
            let Some(id) = PersonalId::compose(&commune.province, sex, born, rng.u32(..1_000_000))
            else {
                continue;
            };
            if population.citizens.contains_key(&id) {
                continue;
            }
            let consent = match rng.u8(..10) {
                0 => Consent::Manual,
                1 => Consent::Refuse,
                _ => Consent::Auto,
            };
            let insurance = if rng.bool() {
                categories[rng.usize(..categories.len())].clone()
            } else {
                "none".to_owned()
            };
            let (middles, givens) = match sex {
                Sex::Male => (MALE_MIDDLE_NAMES, MALE_GIVEN_NAMES),
                Sex::Female => (FEMALE_MIDDLE_NAMES, FEMALE_GIVEN_NAMES),
            };
            let full_name = format!(
                "{} {} {}",
                FAMILY_NAMES[rng.usize(..FAMILY_NAMES.len())],
                middles[rng.usize(..middles.len())],
                givens[rng.usize(..givens.len())]
            );
            population.citizens.insert(
                id.clone(),
                Citizen {
                    personal_id: id,
                    full_name,
                    sex,
                    date_of_birth: born,
                    commune: Some(commune.code.clone()),
                    household_head_consent: consent,
                    insurance,
                    deceased_on: None,
                },
            );
        }
        population
    }

    pub fn get(&self, id: &PersonalId) -> Option<&Citizen> {
        self.citizens.get(id)
    }

    pub fn get_mut(&mut self, id: &PersonalId) -> Option<&mut Citizen> {
        self.citizens.get_mut(id)
    }

    pub fn insert(&mut self, citizen: Citizen) {
        self.citizens.insert(citizen.personal_id.clone(), citizen);
    }

    /// Issues a personal ID that no one holds yet, for a newborn.
    pub fn issue_id(
        &self,
        province: &str,
        sex: Sex,
        born: Date,
        rng: &mut fastrand::Rng,
    ) -> PersonalId {
        loop {
            let id = PersonalId::compose(province, sex, born, rng.u32(..1_000_000))
                .expect("newborns are born in a century the format covers");
            if !self.citizens.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Citizen> {
        self.citizens.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_citizens_have_names_that_match_their_sex() {
        let directory = Directory::bundled();
        let population = Population::seeded(&directory, 7, 2_000);
        let known: Vec<&str> = directory
            .citizens
            .iter()
            .map(|c| c.personal_id.as_str())
            .collect();
        let mut seen = 0;
        for c in population.iter() {
            if known.contains(&c.personal_id.to_string().as_str()) {
                continue;
            }
            seen += 1;
            let parts: Vec<&str> = c.full_name.split(' ').collect();
            let (middle, given) = (parts[1], parts[2]);
            let (middles, givens) = match c.sex {
                Sex::Male => (MALE_MIDDLE_NAMES, MALE_GIVEN_NAMES),
                Sex::Female => (FEMALE_MIDDLE_NAMES, FEMALE_GIVEN_NAMES),
            };
            assert!(middles.contains(&middle), "{} is {:?}", c.full_name, c.sex);
            assert!(givens.contains(&given), "{} is {:?}", c.full_name, c.sex);
        }
        assert!(seen > 1_000);
    }
}
