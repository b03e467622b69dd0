//! The registry of definitions published at run time: adapters an agency registers, workflows
//! that use them. A published definition is immutable (a change is a new version), kept in the
//! store as the text that was checked, and every change to the registry is recorded with who
//! made it and when.

mod publish;

pub use crate::store::{Deprecation, Kind, Published, RegistryChange as Change};
pub use publish::{PublishError, Registry, Retire};
