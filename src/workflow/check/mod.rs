//! Checking definition files: every problem in every file, located, not just the first.
//!
//! A file goes through three stages: YAML (syntax and input limits), structure (the JSON Schema
//! generated from [`crate::workflow::spec`], which also drives editor completion), and meaning
//! (references between steps and adapters, expressions, the step DAG). A stage runs only when the
//! one before found nothing, so one mistake gives one message.
//!
//! The files: [`structure`] (the YAML and structure stages), [`values`] (what a definition
//! writes inside its fields: expressions, templates, durations, retry policies, embedded JSON
//! Schemas), [`adapters`] and [`workflows`] (the meaning of each kind), [`graph`] (the steps'
//! dependencies).

mod adapters;
mod graph;
mod personal_data;
mod structure;
mod triggers;
mod values;
mod workflows;

pub use adapters::adapter;
pub use structure::{Parsed, parse_file};
pub use triggers::chains;
pub use workflows::{AdapterIndex, LATEST, workflow};
