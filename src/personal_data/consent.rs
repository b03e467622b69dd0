//! Consent records (GovStack's Consent building block): what a citizen, or a child's guardian,
//! agreed to, for which data agreement, when, and whether it was withdrawn. A record is kept
//! under the pseudonym of whose consent it is, never the ID itself, so the table of consents
//! holds no personal data and outlives every erasure as the proof that an exchange was lawful.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::workflow::spec::GivenAs;

/// One person's consent to one data agreement, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsentRecord {
    /// Its own id: a new one each time consent is given again after a withdrawal.
    pub id: String,
    /// The data agreement consented to (the workflows' `exchange.consent.agreement`).
    pub agreement: String,
    /// The pseudonym of the person whose consent it is (`ps_…`).
    pub subject: String,
    /// `self`, or `guardian` for a child's data.
    pub given_as: GivenAs,
    /// When the citizen agreed (as the portal says), and when civicflow recorded it.
    pub given_at: Timestamp,
    pub recorded_at: Timestamp,
    /// The token that recorded it (the portal).
    pub recorded_by: String,
    /// How the citizen signed (a VNeID transaction, a signed form's number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawal_reason: Option<String>,
}

impl ConsentRecord {
    /// Given and not withdrawn: it allows exchanges now.
    pub fn is_given(&self) -> bool {
        self.withdrawn_at.is_none()
    }

    pub fn key(&self) -> String {
        consent_key(&self.agreement, &self.subject)
    }
}

/// How a consent is named in a case and in the `consent` index: the agreement and the
/// pseudonym of whose consent it is.
pub fn consent_key(agreement: &str, subject: &str) -> String {
    format!("{agreement} {subject}")
}
