//! Both chains end to end on the embedded store (sled).

mod support;

const BACKEND: support::Backend = support::Backend::Sled;

#[path = "chains/tests.rs"]
mod chains;
