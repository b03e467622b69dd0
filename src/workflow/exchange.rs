//! The personal data a workflow passes between agencies, compiled: each step's exchange (its
//! purpose, its lawful basis, the consent it needs) and how long a case's personal data is kept
//! after the case ends (Law 91/2025/QH15 on Personal Data Protection, Decree 356/2025/ND-CP).

use crate::workflow::deadline::{self, Deadline};
use crate::workflow::expr::{self, Expr};
use crate::workflow::spec::{ExchangeSpec, GivenAs, LawfulBasis, RetentionSpec};

/// A step's passing of personal data to its agency, as declared.
#[derive(Debug)]
pub struct Exchange {
    pub purpose: String,
    pub basis: LawfulBasis,
    /// The law that allows it without consent.
    pub law: Option<String>,
    /// The personal input fields it sends.
    pub personal_data: Vec<String>,
    pub consent: Option<ConsentNeed>,
    /// Over `.input`: the citizen the exchange is made for, named to the agency by pseudonym.
    pub end_user: Option<Expr>,
}

/// The consent an exchange waits for: a record of `from`'s, for `agreement`.
#[derive(Debug)]
pub struct ConsentNeed {
    pub agreement: String,
    /// Over `.input`: the personal ID of who consents, computed when the case starts.
    pub from: Expr,
    pub given_as: GivenAs,
    pub within: Deadline,
}

/// How long a case's personal data outlives the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Calendar days after the case ended.
    pub days: u32,
    pub legal_basis: String,
}

impl Exchange {
    pub(super) fn compile(spec: &ExchangeSpec) -> Result<Exchange, String> {
        let consent = match (&spec.consent, spec.basis_is_consent()) {
            (Some(c), true) => Some(ConsentNeed {
                agreement: c.agreement.clone(),
                from: Expr::compile(expr::inner(&c.from).unwrap_or(&c.from))?,
                given_as: c.given_as,
                within: Deadline::parse(&c.within)
                    .ok_or_else(|| format!("`{}` is not a deadline", c.within))?,
            }),
            (None, true) => return Err("a consent-based exchange names its `consent`".into()),
            (Some(_), false) => {
                return Err("only a consent-based exchange names a `consent`".into());
            }
            (None, false) => None,
        };
        let end_user = match &spec.end_user {
            Some(e) => Some(
                Expr::compile(expr::inner(e).unwrap_or(e))
                    .map_err(|e| format!("`end_user`: {e}"))?,
            ),
            None => None,
        };
        Ok(Exchange {
            purpose: spec.purpose.clone(),
            basis: spec.lawful_basis,
            law: spec.law.clone(),
            personal_data: spec.personal_data.clone(),
            consent,
            end_user,
        })
    }
}

impl ExchangeSpec {
    pub fn basis_is_consent(&self) -> bool {
        self.lawful_basis == LawfulBasis::Consent
    }
}

impl Retention {
    pub(super) fn compile(spec: &RetentionSpec) -> Result<Retention, String> {
        Ok(Retention {
            days: deadline::calendar_days(&spec.after_end)
                .ok_or_else(|| format!("`{}` is not in days", spec.after_end))?,
            legal_basis: spec.legal_basis.clone(),
        })
    }
}
