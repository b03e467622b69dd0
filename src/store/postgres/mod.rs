//! The PostgreSQL backend: several civicflow nodes share one database, any of which may die.
//!
//! Commits that arrive together share one PostgreSQL transaction ([`batch`]), with
//! `synchronous_commit` on and every statement pipelined in one round trip ([`commit`]). Claims are
//! rows: a due timer or a webhook carries its holder, its lease and its epoch, claimed with
//! `FOR UPDATE SKIP LOCKED`, and a fenced commit locks and checks the row in its own
//! transaction. Notifications are numbered as readers seal them ([`feed`]). The schema is versioned migrations
//! ([`migrate`]), applied by `civicflow migrate` or `serve --migrate`.
//!
//! The files: [`open`] (the pool, the schema check), [`migrate`] (and `schema/*.sql`),
//! [`commit`], [`reads`], [`feed`].

mod audit;
mod batch;
mod commit;
mod feed;
mod migrate;
mod open;
mod reads;

pub use migrate::SCHEMA_VERSION;
pub use open::{Exchanges, Options, PgStore};
