//! Personal data as Law 91/2025/QH15 on Personal Data Protection and Decree 356/2025/ND-CP
//! treat it: keyed pseudonyms under a key kept apart from the store ([`pseudonym`]), and the
//! consent records the portal keeps for citizens ([`consent`]).

pub mod consent;
pub mod erasure;
pub mod pseudonym;

pub use consent::{ConsentRecord, consent_key};
pub use pseudonym::PseudonymKey;
