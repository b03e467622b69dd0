//! The `civicflow` command line: one file per command.

pub mod schema;
pub mod validate;
