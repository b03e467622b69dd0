//! The pages: the incident list, the deadlines, a case, a citizen's cases, the bulk retry and
//! the on-time table, one file each, and the forms they share. Each asks the API's handler as the
//! signed-in token and renders what it answers.

mod bulk;
mod case;
mod chart;
mod deadlines;
mod forms;
mod incidents;
mod kpis;
mod search;

pub use bulk::bulk_retry;
pub use case::{act, case, extend};
pub use deadlines::deadlines;
pub use incidents::incidents;
pub use kpis::kpis;
pub use search::search;
