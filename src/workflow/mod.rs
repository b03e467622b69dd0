//! Workflow and adapter definitions: parsing, validation, expressions. No IO beyond reading the
//! files it is given.

pub mod catalog;
pub mod check;
pub mod deadline;
pub mod definition;
pub mod diagnostic;
pub mod exchange;
pub mod expr;
pub mod source;
pub mod spec;
pub mod triggers;
