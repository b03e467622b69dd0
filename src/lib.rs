//! civicflow: a durable orchestrator for interlinked public services.

pub mod cli;
pub mod workflow;
