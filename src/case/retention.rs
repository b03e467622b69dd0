//! How long a case's personal data is kept: when its workflow's retention is up after the case
//! ended (a timer fires then), and when it was erased. An erased case keeps its shape, its
//! statuses and times (what the on-time table counts), with every personal value a pseudonym.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// When the personal data is erased: the case's end plus its workflow's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase_at: Option<Timestamp>,
    /// When it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<Timestamp>,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        self.erase_at.is_none() && self.erased_at.is_none()
    }
}
