pub mod adapters;
pub mod cases;
pub mod client;
pub mod incidents;
pub mod schema;
pub mod serve;
mod table;
pub mod tokens;
pub mod validate;
