//! The on-time table over a period, read from the counters of its days.

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde::Serialize;

use super::{EXTENSION, Finished, Open, PREFIX, State, TIER, Tally, WHOLE_CASE};
use crate::store::{Store, StoreError};

/// The longest period one report covers: a year, leap or not.
pub const MAX_DAYS: i32 = 366;

/// What a report covers: days in Vietnam, both included; a workflow and an agency narrow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub from: Date,
    pub to: Date,
    pub workflow: Option<String>,
    pub agency: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the period ends ({to}) before it starts ({from})")]
    Backwards { from: Date, to: Date },
    #[error(
        "the period from {from} to {to} is longer than {MAX_DAYS} days; ask for a year at most"
    )]
    TooLong { from: Date, to: Date },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The figures of one step at one agency, or of a workflow's cases as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// Finished in the period, by their due time.
    pub finished_on_time: u64,
    /// Finished after their first due time, by the new date the case's apology gave.
    pub finished_extended: u64,
    /// Finished after the due time in force.
    pub finished_late: u64,
    /// Finished in the period with no statutory due time.
    pub finished_without_deadline: u64,
    /// Started in the period, not finished, due time not passed.
    pub open_in_time: u64,
    /// Started in the period, not finished, due time passed.
    pub open_overdue: u64,
    pub open_without_deadline: u64,
    /// Started in the period, not finished, waiting for the citizen's supplement: the
    /// agency's clock is stopped.
    pub open_awaiting_citizen: u64,
    /// Finished by their first due time among those finished with a due time, from 0 to 1;
    /// `null` when none.
    pub on_time_rate: Option<f64>,
    /// Working days taken by those finished in the period (nearest rank); `null` when none.
    pub working_days_median: Option<u32>,
    pub working_days_p90: Option<u32>,
}

/// One step of a workflow at one agency.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StepFigures {
    pub agency: String,
    pub step: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkflowFigures {
    pub workflow: String,
    /// The workflow's cases as a whole, against the workflow's deadline; left out when the
    /// report is narrowed to an agency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cases: Option<Figures>,
    /// Its steps, by agency then step.
    pub steps: Vec<StepFigures>,
    /// Cases started in the period by their life event's tier (`on_time`, `late`); empty for
    /// a workflow without one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, u64>,
    /// Apologies with a new date given in the period, by reason code.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Report {
    #[schema(value_type = String, format = Date)]
    pub from: Date,
    #[schema(value_type = String, format = Date)]
    pub to: Date,
    pub workflows: Vec<WorkflowFigures>,
}

/// Counts as read, before the rates and percentiles.
#[derive(Debug, Default)]
struct Sums {
    on_time: i64,
    extended: i64,
    late: i64,
    finished_without: i64,
    in_time: i64,
    overdue: i64,
    open_without: i64,
    awaiting_citizen: i64,
    /// Working days taken → how many finished took them.
    days: BTreeMap<u32, i64>,
}

impl Sums {
    fn add(&mut self, state: State, n: i64) {
        match state {
            State::Done {
                class,
                working_days,
                ..
            } => {
                match class {
                    Finished::OnTime => self.on_time += n,
                    Finished::Extended => self.extended += n,
                    Finished::Late => self.late += n,
                    Finished::NoDeadline => self.finished_without += n,
                }
                *self.days.entry(working_days).or_default() += n;
            }
            State::Open { class, .. } => match class {
                Open::InTime => self.in_time += n,
                Open::Overdue => self.overdue += n,
                Open::NoDeadline => self.open_without += n,
                Open::AwaitingCitizen => self.awaiting_citizen += n,
            },
        }
    }

    fn figures(&self) -> Figures {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let (on_time, extended, late) =
            (count(self.on_time), count(self.extended), count(self.late));
        let timed = on_time + extended + late;
        Figures {
            finished_on_time: on_time,
            finished_extended: extended,
            finished_late: late,
            finished_without_deadline: count(self.finished_without),
            open_in_time: count(self.in_time),
            open_overdue: count(self.overdue),
            open_without_deadline: count(self.open_without),
            open_awaiting_citizen: count(self.awaiting_citizen),
            on_time_rate: (timed > 0).then(|| on_time as f64 / timed as f64),
            working_days_median: nearest_rank(&self.days, 50),
            working_days_p90: nearest_rank(&self.days, 90),
        }
    }
}

/// The smallest value with at least `percent`% of the counts at or below it.
fn nearest_rank(counts: &BTreeMap<u32, i64>, percent: u64) -> Option<u32> {
    let total: u64 = counts
        .values()
        .map(|n| u64::try_from(*n).unwrap_or(0))
        .sum();
    if total == 0 {
        return None;
    }
    let rank = (total * percent).div_ceil(100).max(1);
    let mut seen = 0;
    for (value, n) in counts {
        seen += u64::try_from(*n).unwrap_or(0);
        if seen >= rank {
            return Some(*value);
        }
    }
    None
}

/// The first counter name of `state` on `day` or later.
fn bound(state: &str, day: Date) -> String {
    format!("{PREFIX}{state}/{day}")
}

/// The workflow, agency (`None` for a tier, which is the case's) and class (tier or reason
/// code) of a tier or extension counter.
fn parse_law(name: &str) -> Option<(&str, Option<&str>, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (kind, rest) = rest.split_once('/')?;
    let mut parts = rest.split('/');
    let _day = parts.next()?;
    let workflow = parts.next()?;
    let found = match kind {
        TIER => (workflow, None, parts.next()?),
        EXTENSION => {
            let agency = parts.next()?;
            let _step = parts.next()?;
            (workflow, Some(agency), parts.next()?)
        }
        _ => return None,
    };
    parts.next().is_none().then_some(found)
}

/// The on-time table of `period`: the counters of its days, summed.
pub async fn read<S: Store>(store: &S, period: &Period) -> Result<Report, ReportError> {
    let (from, to) = (period.from, period.to);
    if to < from {
        return Err(ReportError::Backwards { from, to });
    }
    let after = to
        .tomorrow()
        .map_err(|_| ReportError::TooLong { from, to })?;
    if (after - from).get_days() > MAX_DAYS {
        return Err(ReportError::TooLong { from, to });
    }
    let mut sums: BTreeMap<(String, String, String), Sums> = BTreeMap::new();
    for state in [super::DONE, super::OPEN] {
        let counts = store
            .counts(&bound(state, from), &bound(state, after))
            .await?;
        for (name, n) in counts {
            let Some(t) = Tally::parse(&name) else {
                tracing::warn!(counter = %name, "a counter of a name this civicflow does not make is left out");
                continue;
            };
            let whole = t.agency == WHOLE_CASE;
            if period.workflow.as_ref().is_some_and(|w| *w != t.workflow)
                || period
                    .agency
                    .as_ref()
                    .is_some_and(|a| whole || *a != t.agency)
            {
                continue;
            }
            sums.entry((t.workflow, t.agency, t.step))
                .or_default()
                .add(t.state, n);
        }
    }
    // workflow → (tiers, extension reasons)
    let mut by_law: BTreeMap<String, [BTreeMap<String, u64>; 2]> = BTreeMap::new();
    for (which, kind) in [(0, TIER), (1, EXTENSION)] {
        let counts = store
            .counts(&bound(kind, from), &bound(kind, after))
            .await?;
        for (name, n) in counts {
            let Some((workflow, agency, class)) = parse_law(&name) else {
                tracing::warn!(counter = %name, "a counter of a name this civicflow does not make is left out");
                continue;
            };
            let agency_kept = match (&period.agency, agency) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
            };
            if period.workflow.as_ref().is_some_and(|w| w != workflow) || !agency_kept {
                continue;
            }
            let entry = by_law.entry(workflow.to_owned()).or_default();
            *entry[which].entry(class.to_owned()).or_default() += u64::try_from(n).unwrap_or(0);
        }
    }
    let mut workflows: Vec<WorkflowFigures> = Vec::new();
    let names: std::collections::BTreeSet<String> = sums
        .keys()
        .map(|(w, _, _)| w.clone())
        .chain(by_law.keys().cloned())
        .collect();
    for name in names {
        let [tiers, extensions] = by_law.remove(&name).unwrap_or_default();
        workflows.push(WorkflowFigures {
            workflow: name,
            cases: None,
            steps: Vec::new(),
            tiers: tiers.into_iter().filter(|(_, n)| *n > 0).collect(),
            extensions: extensions.into_iter().filter(|(_, n)| *n > 0).collect(),
        });
    }
    for ((workflow, agency, step), s) in sums {
        let Some(w) = workflows.iter_mut().find(|w| w.workflow == workflow) else {
            continue;
        };
        if agency == WHOLE_CASE {
            w.cases = Some(s.figures());
        } else {
            w.steps.push(StepFigures {
                agency,
                step,
                figures: s.figures(),
            });
        }
    }
    Ok(Report {
        from,
        to,
        workflows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_and_extension_counters_read_back_their_workflow_agency_and_class() {
        assert_eq!(
            parse_law("kpi/tier/2026-12-01/birth-registration/late"),
            Some(("birth-registration", None, "late"))
        );
        assert_eq!(
            parse_law("kpi/extension/2026-12-01/birth-registration/police/residence/verification"),
            Some(("birth-registration", Some("police"), "verification"))
        );
        for bad in [
            "kpi/tier/2026-12-01/birth-registration",
            "kpi/tier/2026-12-01/w/late/more",
            "kpi/done/2026-12-01/w/a/s/late/1",
            "kpi/extension/2026-12-01/w/a/s",
        ] {
            assert_eq!(parse_law(bad), None, "{bad}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let counts = BTreeMap::from([(0, 2), (1, 5), (2, 2), (7, 1)]);
        assert_eq!(nearest_rank(&counts, 50), Some(1));
        assert_eq!(nearest_rank(&counts, 90), Some(2));
        assert_eq!(nearest_rank(&counts, 100), Some(7));
        assert_eq!(nearest_rank(&BTreeMap::new(), 50), None);
        assert_eq!(nearest_rank(&BTreeMap::from([(3, 1)]), 90), Some(3));
    }

    #[test]
    fn the_rate_counts_only_those_with_a_due_time() {
        let mut s = Sums::default();
        let day: Date = "2026-11-30".parse().unwrap();
        let done = |class| State::Done {
            day,
            class,
            working_days: 1,
        };
        s.add(done(Finished::OnTime), 3);
        s.add(done(Finished::Late), 1);
        s.add(done(Finished::NoDeadline), 4);
        s.add(
            State::Open {
                day,
                class: Open::Overdue,
            },
            2,
        );
        let f = s.figures();
        assert_eq!(f.on_time_rate, Some(0.75));
        assert_eq!(
            (f.finished_without_deadline, f.open_overdue, f.open_in_time),
            (4, 2, 0)
        );
        assert_eq!(f.working_days_median, Some(1));
    }
}
