pub mod adapters;
pub mod api;
pub mod calendar;
pub mod case;
pub mod cli;
pub mod engine;
pub mod store;
pub mod workflow;
