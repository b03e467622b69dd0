//! Mock government agencies for civicflow: civil status, police and Vietnam Social Security (and a
//! hospital that certifies deaths as CloudEvents), each
//! on its own port, each behaving like a real system on a bad day when asked to (faults), and each
//! counting its effects per idempotency key so tests can prove "exactly once".
//!
//! Start them in-process with [`start`], or as the `civicflow-mocks` binary.

pub mod admin;
pub mod agency;
pub mod civil_status;
pub mod desk;
pub mod directory;
pub mod faults;
pub mod hospital;
pub mod ledger;
pub mod personal_id;
pub mod police;
pub mod population;
pub mod reply;
pub mod server;
pub mod social_assistance;
pub mod social_security;
pub mod world;
pub mod xroad;

pub use server::{MocksConfig, RunningMocks, start};
