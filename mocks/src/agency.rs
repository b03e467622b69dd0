//! What every mock agency is to the rest of the crate, and the small rules they share.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::desk::Desk;
use crate::directory::Commune;
use crate::reply::Refusal;
use crate::world::World;

pub trait Agency: Send + Sync + 'static {
    fn desk(&self) -> &Desk;
    fn world(&self) -> &World;
    /// Everything the agency has registered, for tests to compare with what civicflow believes.
    fn records(&self) -> serde_json::Value;
}

/// A Vietnamese address after the 2025 reform: a commune (or ward) and the detail within it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub commune_code: String,
    pub detail: String,
}

impl Address {
    /// Refuses an address outside the commune whose office handles the request.
    pub fn within(&self, office: &Commune, field: &str) -> Result<(), Refusal> {
        if self.commune_code != office.code {
            return Err(Refusal::new(
                "OUTSIDE_COMMUNE",
                format!(
                    "the address is in commune {}, outside {} ({})",
                    self.commune_code, office.name, office.code
                ),
            )
            .on_field(format!("{field}.commune_code")));
        }
        named(&format!("{field}.detail"), &self.detail)
    }
}

/// Refuses a blank text field.
pub fn named(field: &str, value: &str) -> Result<(), Refusal> {
    if value.trim().is_empty() {
        return Err(Refusal::new(
            "INVALID_FIELD",
            format!("the field {field} must not be blank"),
        )
        .on_field(field));
    }
    Ok(())
}

/// Whole days from `from` to `to`.
pub fn days_between(from: Date, to: Date) -> i32 {
    from.until(to)
        .map(|span| span.get_days())
        .unwrap_or(i32::MAX)
}
