pub mod calendar;
pub mod case;
pub mod cli;
pub mod store;
pub mod workflow;
