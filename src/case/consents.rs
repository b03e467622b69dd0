//! The consents a case's exchanges need, as the case knows them: which consent each
//! consent-based step needs (computed from the input when the case starts), and for each, the
//! record that allows it now. The engine keeps the copy current: a consent recorded or withdrawn
//! reaches every running case that needs it through the `consent` index, so deciding whether a
//! step may call its agency reads the case alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::workflow::spec::GivenAs;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseConsents {
    /// Step → the consent it needs (`<agreement> <subject pseudonym>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub needs: BTreeMap<String, String>,
    /// Consent → the record that allows its exchanges now (given, not withdrawn).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, Held>,
}

/// A consent record that allows exchanges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub id: String,
    pub given_as: GivenAs,
}

impl CaseConsents {
    pub fn is_empty(&self) -> bool {
        self.needs.is_empty() && self.held.is_empty()
    }

    /// The record that allows step `step`'s exchange, given as it must be; `None` if the step
    /// must wait.
    pub fn allowing(&self, step: &str, given_as: GivenAs) -> Option<&Held> {
        let key = self.needs.get(step)?;
        self.held.get(key).filter(|h| h.given_as == given_as)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_allowed_only_by_a_record_given_in_the_capacity_it_asks() {
        let mut consents = CaseConsents::default();
        consents
            .needs
            .insert("allowance".into(), "aid ps_guardian".into());
        assert_eq!(consents.allowing("allowance", GivenAs::Guardian), None);
        consents.held.insert(
            "aid ps_guardian".into(),
            Held {
                id: "cns_1".into(),
                given_as: GivenAs::Subject,
            },
        );
        assert_eq!(consents.allowing("allowance", GivenAs::Guardian), None);
        assert!(consents.allowing("allowance", GivenAs::Subject).is_some());
        assert_eq!(consents.allowing("birth", GivenAs::Subject), None);
    }
}
