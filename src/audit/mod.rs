//! The audit log: an append-only record of every exchange with an agency, every callback and
//! event received, every person's action on a case, every token and consent given or taken
//! back, every erasure — kept so that when a citizen disputes a decision, or an agency says it
//! never received a request, what was sent, by whom, when and what came back can be shown, and
//! shown not to have been altered since.
//!
//! After X-Road's message log and Certificate Transparency (RFC 6962/9162): each [`Entry`] is
//! a leaf of a Merkle tree ([`merkle`]), chained to the entry before; every so many entries or
//! seconds a [`Signer`] signs a [`TreeHead`] with Ed25519; [`Log`] serves inclusion and
//! consistency proofs; [`verify`] checks a whole log against the keys an auditor trusts and
//! names the first entry that does not match.
//!
//! The records ([`entry`], [`head`]) are plain data the store keeps (`Transaction::audit`,
//! `Transaction::put_tree_heads`); the store numbers and chains them as it commits. What makes
//! them ([`Trail`], the engine) and what reads them ([`Log`], [`verify`]) sit above the store.

pub mod entry;
pub mod head;
mod log;
pub mod merkle;
mod signer;
mod trail;
pub mod verify;

pub use entry::{Entry, Record, Tail};
pub use head::{HeadError, HeadSigner, TreeHead, TrustedKeys};
pub use log::{Log, LogError};
pub use signer::{Signer, SignerConfig};
pub use trail::Trail;
