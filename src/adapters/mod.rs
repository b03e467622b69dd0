//! Calling agencies: the HTTP side of an adapter manifest. The manifest's rules (compiled in
//! [`crate::workflow::definition`]) decide what a reply means; this module sends requests with
//! civicflow's metadata and classifies what comes back.

pub mod http;
pub mod xroad;
