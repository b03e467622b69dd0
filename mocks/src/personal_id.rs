//! The 12-digit personal ID number of the national population database: a 3-digit province code,
//! one digit for century and sex, the 2-digit year of birth and six random digits.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::population::Sex;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonalId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a personal ID number is 12 digits (3-digit province, century/sex digit, 2-digit year, 6 digits), got {0:?}"
)]
pub struct MalformedId(String);

impl PersonalId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn province(&self) -> &str {
        &self.0[..3]
    }

    /// The century/sex digit: 20th century male 0, female 1; 21st century male 2, female 3; and
    /// so on, two digits a century.
    pub fn century_sex_digit(year: i16, sex: Sex) -> Option<u8> {
        let century = (year / 100) - 19;
        if !(0..5).contains(&century) {
            return None;
        }
        let base = century as u8 * 2;
        Some(match sex {
            Sex::Male => base,
            Sex::Female => base + 1,
        })
    }

    /// Builds an ID from its parts; `serial` is the six random digits.
    pub fn compose(province: &str, sex: Sex, born: Date, serial: u32) -> Option<PersonalId> {
        let digit = Self::century_sex_digit(born.year(), sex)?;
        let id = format!(
            "{province}{digit}{:02}{:06}",
            born.year() % 100,
            serial % 1_000_000
        );
        id.parse().ok()
    }

    /// True when the century/sex digit and the year digits agree with a person's data.
    pub fn matches(&self, sex: Sex, born: Date) -> bool {
        let digit = Self::century_sex_digit(born.year(), sex);
        let bytes = self.0.as_bytes();
        digit == Some(bytes[3] - b'0') && self.0[4..6] == format!("{:02}", born.year() % 100)
    }
}

impl FromStr for PersonalId {
    type Err = MalformedId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(PersonalId(s.to_owned()))
        } else {
            Err(MalformedId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for PersonalId {
    type Error = MalformedId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PersonalId> for String {
    fn from(id: PersonalId) -> String {
        id.0
    }
}

impl fmt::Display for PersonalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn composes_the_national_format() {
        let id = PersonalId::compose("001", Sex::Female, date(2026, 11, 20), 42).unwrap();
        assert_eq!(id.as_str(), "001326000042");
        assert!(id.matches(Sex::Female, date(2026, 11, 20)));
        assert!(!id.matches(Sex::Male, date(2026, 11, 20)));
        let old = PersonalId::compose("079", Sex::Male, date(1958, 1, 1), 123456).unwrap();
        assert_eq!(old.as_str(), "079058123456");
    }

    #[test]
    fn refuses_malformed_ids() {
        for bad in ["", "00119012345", "0011901234567", "00119012345a"] {
            assert!(bad.parse::<PersonalId>().is_err(), "{bad}");
        }
    }
}
