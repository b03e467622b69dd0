//! Both chains end to end on PostgreSQL: the same tests as `chains.rs`, each server on a
//! database schema of its own.

mod support;

const BACKEND: support::Backend = support::Backend::Postgres;

#[path = "chains/tests.rs"]
mod chains;
