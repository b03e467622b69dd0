//! Storage: the one contract every backend keeps ([`Store`], its promises written on the
//! trait), the records it stores, and the backends beside each other. Shaped after Restate's
//! per-table storage API: a [`Transaction`] is a backend-neutral set of writes that
//! [`Store::commit`] applies atomically and durably.
//!
//! Backends: [`sled`](self::sled) (embedded, one process, the default) and
//! [`postgres`](self::postgres) (several nodes on one database). The conformance suite in
//! `tests/conformance/` is what every backend must pass.
//!
//! **Architecture Invariant:** the store knows cases (`crate::case`) and nothing above itself:
//! not the engine, not auth, webhooks or the registry, whose records live here as plain data.

mod case_encoding;
mod claimed_work;
mod commit_hook;
mod contract;
mod error;
mod failure_log;
pub mod postgres;
pub mod query;
mod shared_records;
pub mod sled;
mod transaction;

pub(crate) use case_encoding::{decode as decode_case, encode as encode_case};
pub use claimed_work::{Claimed, Fence, NodeId, Work};
pub use commit_hook::{Committed, Hook, Preparing};
pub use contract::{Copied, Groups, IndexRange, Order, Page, Position, Store};
pub use error::StoreError;
pub use failure_log::FailureLog;
pub use shared_records::{
    ApiToken, Circuit, CircuitChange, CircuitState, Deprecation, Kind, Notification, Published,
    RegistryChange, Webhook, WebhookFormat,
};
pub use transaction::{CaseWrite, Checked, Grouping, Transaction};

/// The version of the on-disk format. A store written by another format version is refused,
/// unless it is one of [`UPGRADES_FROM`].
pub const FORMAT_VERSION: u32 = 7;

/// Older format versions this one reads as they are: opening such a store (or restoring such a
/// backup) moves its version on. Version 6 added the record of the counters' changes not yet
/// folded into them, which a version-5 store simply does not have; version 7 added the audit
/// log, which a version-6 store starts empty. An older binary refuses a newer store rather
/// than miss those changes (or leave exchanges out of the log).
pub const UPGRADES_FROM: &[u32] = &[5, 6];
