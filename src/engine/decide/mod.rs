//! The step decisions: what a case does next, given its state and what just happened (a start,
//! a reply, a callback, a timer). Pure: they read the case and the workflow and write into the
//! [`Change`]; no store, no network, no clock but the change's `now`.
//!
//! [`progress`] moves a case on, [`attempt`] is one try of a step, [`reply`] what an answer or a
//! callback means for it, [`timer`] what a timer that came due means, [`deadline`] what a due
//! time brings: a reminder, an escalation, a deemed outcome, an extension; [`supplement`] an
//! incomplete dossier, its request to the citizen and the step run again; [`wait`] a step
//! that waits for a CloudEvent, and the events a case keeps for steps that wait later;
//! [`consent`] an exchange that waits for the citizen's consent.

mod attempt;
mod consent;
mod deadline;
mod progress;
mod reply;
mod supplement;
mod timer;
mod wait;

pub use consent::CONSENT_RECHECK;
pub use deadline::{ExtensionError, ExtensionRequest};
pub use progress::Decider;

#[cfg(test)]
mod tests;
