//! The directory: which agencies exist, what they are called today, and the communes, provinces
//! and benefit rules they work with. Loaded from `data/directory.yaml` because agency names change
//! with government reorganisations and must not need a code change.

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::population::{Consent, Sex};
use crate::reply::Refusal;

const DIRECTORY_YAML: &str = include_str!("../data/directory.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    pub agencies: BTreeMap<String, AgencyInfo>,
    pub provinces: BTreeMap<String, String>,
    pub communes: Vec<Commune>,
    pub funeral_allowance: FuneralAllowanceRules,
    pub citizens: Vec<KnownCitizen>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyInfo {
    pub name: String,
    pub ministry: String,
    pub system: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commune {
    pub code: String,
    pub name: String,
    pub province: String,
    pub hospital: Hospital,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hospital {
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FuneralAllowanceRules {
    pub reference_level_vnd: u64,
    pub multiple: u64,
    pub eligible_categories: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownCitizen {
    pub personal_id: String,
    pub full_name: String,
    pub sex: Sex,
    pub date_of_birth: Date,
    pub commune: String,
    pub household_head_consent: Consent,
    pub insurance: String,
}

impl Directory {
    /// The directory compiled into the binary. It is checked by a unit test, so a broken data
    /// file fails the build's tests rather than a running mock.
    pub fn bundled() -> Directory {
        serde_saphyr::from_str(DIRECTORY_YAML)
            .expect("data/directory.yaml is checked by a unit test")
    }

    pub fn commune(&self, code: &str) -> Option<&Commune> {
        self.communes.iter().find(|c| c.code == code)
    }

    /// The commune a request names at `field`, or the refusal every agency gives for an
    /// unknown one.
    pub fn serving(&self, code: &str, field: &str) -> Result<&Commune, Refusal> {
        self.commune(code).ok_or_else(|| {
            Refusal::new(
                "UNKNOWN_COMMUNE",
                format!("no office of this agency serves commune {code}"),
            )
            .on_field(field)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personal_id::PersonalId;

    #[test]
    fn bundled_directory_is_consistent() {
        let dir = Directory::bundled();
        assert_eq!(dir.agencies.len(), 5);
        for commune in &dir.communes {
            assert!(
                dir.provinces.contains_key(&commune.province),
                "{}",
                commune.code
            );
        }
        for citizen in &dir.citizens {
            let id: PersonalId = citizen.personal_id.parse().unwrap();
            assert!(
                id.matches(citizen.sex, citizen.date_of_birth),
                "{}",
                citizen.personal_id
            );
            assert!(
                dir.commune(&citizen.commune).is_some(),
                "{}",
                citizen.personal_id
            );
        }
        assert_eq!(dir.funeral_allowance.eligible_categories.len(), 6);
    }
}
