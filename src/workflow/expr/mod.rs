//! Expressions: jq, through `jaq`, the expression language of the CNCF Serverless Workflow
//! standard. An expression is written `${ <jq> }`; its input (`.`) is a JSON context object whose
//! shape depends on where it appears (see `docs/workflow-language.md`).
//!
//! Functions that would make evaluation depend on anything but its input (`now`, `env`, `input`,
//! `debug`, …) are not available: an expression must give the same answer when a case is
//! replayed after a crash.
//!
//! [`compiled`] compiles and evaluates, [`fast`] reads plain lookups without jq, [`input`] is
//! what an expression reads, [`step_refs`] which steps it reads.

mod compiled;
mod fast;
mod input;
mod step_refs;

pub use compiled::{EvalError, Expr, StepRefs, inner};
pub use input::{Input, Part};

#[cfg(test)]
mod tests;
