//! What the law's time limits made of a case beyond its due times: the tier of its life event,
//! the one apology and new date it may get, and to whom its overdue dossiers were escalated.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::supplements::{RequestState, SupplementRequest};

/// The step key of [`Deadlines::escalated`] that stands for the case as a whole.
pub const WHOLE_CASE: &str = "*";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deadlines {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub life_event: Option<LifeEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
    /// Overdue steps (`*`: the case) and to whom each was escalated (`supervisor`,
    /// `operator`, `agency:<id>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub escalated: BTreeMap<String, String>,
    /// Every request for a supplement the case's agencies made, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplements: Vec<SupplementRequest>,
}

impl Deadlines {
    pub fn is_empty(&self) -> bool {
        self.life_event.is_none()
            && self.extension.is_none()
            && self.escalated.is_empty()
            && self.supplements.is_empty()
    }

    /// Settles the request step `step` waits on, if any: answered (at `at`) or expired.
    pub fn settle_open_request(&mut self, step: &str, state: RequestState, at: Timestamp) {
        if let Some(r) = self
            .supplements
            .iter_mut()
            .rev()
            .find(|r| r.step == step && r.state == RequestState::Open)
        {
            r.state = state;
            if state == RequestState::Answered {
                r.answered_at = Some(at);
            }
        }
    }

    /// The request step `step` waits on, if it waits for the citizen.
    pub fn open_request(&self, step: &str) -> Option<&SupplementRequest> {
        self.supplements
            .iter()
            .rev()
            .find(|r| r.step == step && r.state == RequestState::Open)
    }
}

/// How a case stands against the legal time limit of the life event it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Started within the limit.
    OnTime,
    /// Started after it: a late registration, with what the law asks of one.
    Late,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::OnTime => "on_time",
            Tier::Late => "late",
        }
    }

    pub const ALL: [Tier; 2] = [Tier::OnTime, Tier::Late];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LifeEvent {
    /// The birth's or death's date.
    #[schema(value_type = String, format = Date)]
    pub date: Date,
    /// The last day a case could start on to be on time.
    #[schema(value_type = String, format = Date)]
    pub limit: Date,
    pub tier: Tier,
}

/// The apology with its reason and the new date (Decree 61/2018, Art. 19(9), form 04): a case
/// gets one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Extension {
    /// The step whose agency is late; absent when the case as a whole was extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// A short code the on-time table counts reasons by, e.g. `verification`.
    pub reason_code: String,
    /// The apology's reason, as the citizen reads it.
    pub reason: String,
    /// Who granted it.
    pub by: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The due time it replaced.
    #[schema(value_type = String, format = DateTime)]
    pub previous_due: Timestamp,
    /// The new due time: the close of the new date.
    #[schema(value_type = String, format = DateTime)]
    pub due: Timestamp,
    /// The case's due time before, when a step's new date moved the case's too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub case_due_before: Option<Timestamp>,
}

impl Extension {
    /// The due time `step` (`None`: the case) had before this extension, if it moved it.
    pub fn due_before(&self, step: Option<&str>) -> Option<Timestamp> {
        match (step, self.step.as_deref()) {
            (Some(s), Some(mine)) if s == mine => Some(self.previous_due),
            (Some(_), _) => None,
            (None, None) => Some(self.previous_due),
            (None, Some(_)) => self.case_due_before,
        }
    }
}
