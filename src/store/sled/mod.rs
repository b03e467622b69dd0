//! The embedded backend on sled.
//!
//! Everything lives in one sled tree, each table under its own key prefix, so that a group of
//! commits is one list of writes, made atomic across crashes by the [`journal`].
//!
//! Commits are encoded on the caller's task (the costly part, in parallel), then handed to one
//! writer thread. The writer takes every commit waiting, checks each (a case's revision, an
//! idempotency key's absence) and writes those that pass as one group; a syncer thread then syncs
//! the disk once for all the groups written meanwhile (group commit), and only then are they
//! answered. sled may block while its log buffers drain; that happens on these threads, never on
//! the async runtime.
//!
//! A case record starts with its revision and its index keys, so a commit checks the revision
//! and maintains the indexes without decoding the previous JSON.
//!
//! One process owns a sled store (a `LOCK` file refuses a second), so the nodes that share it
//! are engines in that process: claims and their leases live in memory ([`claim_table`]).
//!
//! The files: [`open`] (the data directory, the format, the threads), [`keys`] (one key prefix
//! per table), [`encoding`] (how records are laid out as bytes), [`commit`] (a transaction
//! encoded, and checked against the stored state), [`counters`] (the named counters' changes,
//! one record per group), [`writer`] (the writer and syncer threads),
//! [`journal`] (a group made atomic across crashes), [`claim_table`], [`reads`] (the contract's
//! reads), [`backup`] (a consistent copy while serving, and a store built from one),
//! [`check`] (every record read, to find the damaged ones) and [`write_stop`] (a full disk:
//! writes refused until they succeed again, without a restart).

mod backup;
mod check;
mod claim_table;
mod commit;
mod counters;
mod encoding;
mod journal;
mod keys;
mod open;
mod reads;
mod write_stop;
mod writer;

pub use backup::read_backup;
pub use check::{Checked, Damage, Unerased};
pub use open::{DEFAULT_CACHE_MIB, SledStore};
