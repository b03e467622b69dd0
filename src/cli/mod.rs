//! The command line: the server (`serve`), the client commands over its API, and the
//! checks of definition files.

pub mod adapters;
pub mod agencies;
pub mod audit;
pub mod cases;
pub mod client;
pub mod deadlines;
pub mod incidents;
pub mod kpi;
pub mod schema;
pub mod serve;
pub mod store;
mod table;
pub mod tokens;
pub mod validate;

/// The exit status of a command whose reader went away (`… | head`): what a shell reports for a
/// process ended by SIGPIPE (128 + 13).
pub const CLOSED_PIPE: u8 = 141;
