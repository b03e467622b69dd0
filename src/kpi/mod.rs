//! The on-time figures the government judges every agency by: for each workflow, and for each
//! of its steps at each agency, how many finished on time or late, how many are open and still
//! in time or overdue, and how many working days they took.
//!
//! They are counted, not scanned: each case says which counters it falls under ([`tallies`]),
//! and the [`Kpi`] hook adds the difference from what it was counted under before to the store's
//! counters in the same commit as the change itself. A report ([`report`]) reads the counters
//! of its days, so it costs the same with a thousand cases stored or a million.
//!
//! The same counters keep the incidents open now, by reason (`incidents/open/<reason>/<workflow>/
//! <step or *>`), which every node's metrics report alike.
//!
//! A counter's name is `kpi/<state>/<day>/<workflow>/<agency>/<step>/<class>[/<working days>]`:
//! the state `done` is counted under the day (Vietnam time) a step or case finished, `open`
//! under the day it started, so a period is one range of names. The case as a whole is counted
//! under agency and step `*`.

pub mod report;

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::civil::Date;

use crate::calendar::{Calendar, vietnam_time};
use crate::case::{Case, CaseStatus, StepStatus, TimerKind};
use crate::store::{Hook, Preparing, Transaction};

/// Every on-time counter's name starts with this.
pub const PREFIX: &str = "kpi/";
/// Every open-incident counter's name starts with this.
pub const INCIDENTS: &str = "incidents/open/";
const DONE: &str = "done";
const OPEN: &str = "open";
/// The agency and step of a case counted as a whole.
pub const WHOLE_CASE: &str = "*";
/// `kpi/tier/<day started>/<workflow>/<tier>`: cases by their life event's tier.
pub const TIER: &str = "tier";
/// `kpi/extension/<day granted>/<workflow>/<agency>/<step>/<reason code>`: apologies and new
/// dates, by reason.
pub const EXTENSION: &str = "extension";

/// How a step or case that finished stands against its statutory due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    OnTime,
    /// After its first due time, by the new date of the case's apology.
    Extended,
    Late,
    /// It had no due time (no deadline in its definition, or one the calendar could not
    /// count).
    NoDeadline,
}

/// How an open step or case stands against its due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    InTime,
    /// Its due time passed: its deadline timer fired while it was open.
    Overdue,
    NoDeadline,
    /// Waiting for the citizen's supplement: the agency's clock is stopped.
    AwaitingCitizen,
}

impl Finished {
    fn as_str(self) -> &'static str {
        match self {
            Finished::OnTime => "on_time",
            Finished::Extended => "extended",
            Finished::Late => "late",
            Finished::NoDeadline => "no_deadline",
        }
    }
}

impl Open {
    fn as_str(self) -> &'static str {
        match self {
            Open::InTime => "in_time",
            Open::Overdue => "overdue",
            Open::NoDeadline => "no_deadline",
            Open::AwaitingCitizen => "awaiting_citizen",
        }
    }
}

/// One counter a case falls under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub workflow: String,
    pub agency: String,
    pub step: String,
    pub state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Finished on `day`, having taken `working_days`.
    Done {
        day: Date,
        class: Finished,
        working_days: u32,
    },
    /// Started on `day` and not finished.
    Open { day: Date, class: Open },
}

impl Tally {
    /// Built by pushing its parts, not by `format!`: every commit names the counters its case
    /// falls under, about forty names per case.
    pub fn name(&self) -> String {
        let (state, day, class, days) = match self.state {
            State::Done {
                day,
                class,
                working_days,
            } => (DONE, day, class.as_str(), Some(working_days)),
            State::Open { day, class } => (OPEN, day, class.as_str(), None),
        };
        let mut name = String::with_capacity(
            PREFIX.len() + 40 + self.workflow.len() + self.agency.len() + self.step.len(),
        );
        for part in [PREFIX, state, "/"] {
            name.push_str(part);
        }
        push_day(&mut name, day);
        for part in [
            "/",
            &self.workflow,
            "/",
            &self.agency,
            "/",
            &self.step,
            "/",
            class,
        ] {
            name.push_str(part);
        }
        if let Some(days) = days {
            name.push('/');
            name.push_str(itoa::Buffer::new().format(days));
        }
        name
    }

    /// The counter a name stands for, or `None` for a name not made by [`Tally::name`].
    pub fn parse(name: &str) -> Option<Tally> {
        let mut parts = name.strip_prefix(PREFIX)?.split('/');
        let state = parts.next()?;
        let day: Date = parts.next()?.parse().ok()?;
        let workflow = parts.next()?.to_owned();
        let agency = parts.next()?.to_owned();
        let step = parts.next()?.to_owned();
        let class = parts.next()?;
        let state = match state {
            DONE => State::Done {
                day,
                class: [
                    Finished::OnTime,
                    Finished::Extended,
                    Finished::Late,
                    Finished::NoDeadline,
                ]
                .into_iter()
                .find(|c| c.as_str() == class)?,
                working_days: parts.next()?.parse().ok()?,
            },
            OPEN => State::Open {
                day,
                class: [
                    Open::InTime,
                    Open::Overdue,
                    Open::NoDeadline,
                    Open::AwaitingCitizen,
                ]
                .into_iter()
                .find(|c| c.as_str() == class)?,
            },
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Tally {
            workflow,
            agency,
            step,
            state,
        })
    }
}

/// Appends `day` as `Display` writes it (`2026-12-01`): the years of four digits through
/// `itoa`, any other through `Display` itself.
fn push_day(out: &mut String, day: Date) {
    if !(1000..=9999).contains(&day.year()) {
        out.push_str(&day.to_string());
        return;
    }
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(day.year()));
    for part in [day.month(), day.day()] {
        out.push_str(if part < 10 { "-0" } else { "-" });
        out.push_str(digits.format(part));
    }
}

/// The day of `at` in Vietnam.
fn day_of(at: Timestamp) -> Date {
    at.to_zoned(vietnam_time()).date()
}

/// How a step or case that ran from `started` to `finished`, due at `due` (and before an
/// extension at `due_before`), is counted.
fn done(
    calendar: &Calendar,
    started: Timestamp,
    finished: Timestamp,
    (due, due_before): (Option<Timestamp>, Option<Timestamp>),
) -> State {
    let class = match due {
        None => Finished::NoDeadline,
        Some(_) if due_before.is_some_and(|first| finished <= first) => Finished::OnTime,
        Some(due) if finished <= due && due_before.is_some() => Finished::Extended,
        Some(due) if finished <= due => Finished::OnTime,
        Some(_) => Finished::Late,
    };
    // Outside the years the calendar knows, weekends alone are left out.
    let working_days = calendar
        .working_days_between(started, finished)
        .unwrap_or_else(|_| weekdays_between(day_of(started), day_of(finished)));
    State::Done {
        day: day_of(finished),
        class,
        working_days,
    }
}

fn weekdays_between(mut day: Date, last: Date) -> u32 {
    let mut n = 0;
    while day < last {
        let Ok(next) = day.tomorrow() else { break };
        day = next;
        if !matches!(
            day.weekday(),
            jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
        ) {
            n += 1;
        }
    }
    n
}

/// How an open step or case that started at `started` is counted: overdue once the deadline
/// timer `deadline` has fired (it is no longer among the case's timers) while it was open.
fn open(case: &Case, started: Timestamp, due: Option<Timestamp>, deadline: TimerKind) -> State {
    let class = match due {
        None => Open::NoDeadline,
        Some(_) if case.timers.contains_key(&deadline.id()) => Open::InTime,
        Some(_) => Open::Overdue,
    };
    State::Open {
        day: day_of(started),
        class,
    }
}

/// The counters `case` falls under as it stands: one per step that started (a step the agency
/// answered, accepted or refused, is done; one skipped or stopped after it started is not
/// counted), and one for the case as a whole (a cancelled case is not counted).
pub fn tallies(case: &Case, calendar: &Calendar) -> Vec<Tally> {
    let mut out = Vec::with_capacity(case.steps.len() + 1);
    for (id, s) in &case.steps {
        let Some(started) = s.started_at else {
            continue;
        };
        let state = match (s.status, s.finished_at) {
            (StepStatus::Succeeded | StepStatus::Rejected, Some(finished)) => done(
                calendar,
                started,
                finished,
                (s.due_at, due_before(case, Some(id))),
            ),
            // Not at its agency yet: the agency's time starts when the event comes.
            (
                StepStatus::Skipped
                | StepStatus::Stopped
                | StepStatus::AwaitingEvent
                | StepStatus::AwaitingConsent,
                _,
            ) => continue,
            (StepStatus::AwaitingSupplement, _) => State::Open {
                day: day_of(started),
                class: Open::AwaitingCitizen,
            },
            _ => open(
                case,
                started,
                s.due_at,
                TimerKind::StepDeadline { step: id.clone() },
            ),
        };
        out.push(Tally {
            workflow: case.workflow.clone(),
            agency: s.agency.clone(),
            step: id.clone(),
            state,
        });
    }
    let waiting = case
        .steps
        .values()
        .any(|s| s.status == StepStatus::AwaitingSupplement);
    let whole = match (case.status, case.finished_at) {
        (CaseStatus::Cancelled, _) => None,
        (CaseStatus::Running, _) if waiting => Some(State::Open {
            day: day_of(case.started_at),
            class: Open::AwaitingCitizen,
        }),
        (CaseStatus::Running, _) | (_, None) => Some(open(
            case,
            case.started_at,
            case.due_at,
            TimerKind::CaseDeadline,
        )),
        (_, Some(finished)) => Some(done(
            calendar,
            case.started_at,
            finished,
            (case.due_at, due_before(case, None)),
        )),
    };
    out.extend(whole.map(|state| Tally {
        workflow: case.workflow.clone(),
        agency: WHOLE_CASE.to_owned(),
        step: WHOLE_CASE.to_owned(),
        state,
    }));
    out
}

/// The due time a step (`None`: the case) had before the case's extension moved it.
fn due_before(case: &Case, step: Option<&str>) -> Option<Timestamp> {
    case.deadlines.extension.as_ref()?.due_before(step)
}

/// The counters of what the law's time limits made of `case`: its life event's tier, under the
/// day it started, and its extension's reason, under the day it was granted.
pub fn deadline_tallies(case: &Case) -> impl Iterator<Item = String> + '_ {
    let tier = case.deadlines.life_event.as_ref().map(|l| {
        format!(
            "{PREFIX}{TIER}/{}/{}/{}",
            case.started_on,
            case.workflow,
            l.tier.as_str()
        )
    });
    let extension = case.deadlines.extension.as_ref().map(|e| {
        let agency = e
            .step
            .as_ref()
            .and_then(|s| case.steps.get(s))
            .map_or(WHOLE_CASE, |s| s.agency.as_str());
        format!(
            "{PREFIX}{EXTENSION}/{}/{}/{agency}/{}/{}",
            day_of(e.at),
            case.workflow,
            e.step.as_deref().unwrap_or(WHOLE_CASE),
            e.reason_code
        )
    });
    tier.into_iter().chain(extension)
}

/// The open-incident counters `case` falls under: one per open incident.
pub fn incident_tallies(case: &Case) -> impl Iterator<Item = String> + '_ {
    case.incidents.iter().map(|i| {
        format!(
            "{INCIDENTS}{}/{}/{}",
            i.reason.as_str(),
            case.workflow,
            i.step.as_deref().unwrap_or(WHOLE_CASE)
        )
    })
}

/// The reason and workflow of an open-incident counter.
pub fn parse_incident(name: &str) -> Option<(&str, &str)> {
    let mut parts = name.strip_prefix(INCIDENTS)?.split('/');
    Some((parts.next()?, parts.next()?))
}

/// The hook that keeps the on-time counters: every committed change of a case takes it out of
/// the counters it was under and adds it to those it is under now, in the same commit.
#[derive(Debug)]
pub struct Kpi {
    calendar: &'static Calendar,
}

impl Kpi {
    pub fn new(calendar: &'static Calendar) -> Kpi {
        Kpi { calendar }
    }
}

impl Hook for Kpi {
    fn prepare(&self, change: &mut Preparing<'_>, tx: &mut Transaction) {
        let now: Vec<String> = tallies(change.case, self.calendar)
            .iter()
            .map(Tally::name)
            .chain(incident_tallies(change.case))
            .chain(deadline_tallies(change.case))
            .collect();
        if *change.tallies == now {
            return;
        }
        // As multisets: a name may stand twice (two incidents of one reason on one step).
        let mut difference: BTreeMap<&str, i64> = BTreeMap::new();
        for gone in change.tallies.iter() {
            *difference.entry(gone).or_default() -= 1;
        }
        for new in &now {
            *difference.entry(new).or_default() += 1;
        }
        tx.counts.extend(
            difference
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|(name, n)| (name.to_owned(), n)),
        );
        *change.tallies = now;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::case::{CaseId, StepState};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// A birth case started Friday 27 November 2026, 10:00 in Hanoi, due the next Wednesday's
    /// close, its birth step due Monday's close.
    fn case() -> Case {
        let mut birth = StepState::new("civil-status/birth-registration@1", "civil-status");
        birth.status = StepStatus::AwaitingCallback;
        birth.started_at = Some(at("2026-11-27T03:00:00Z"));
        birth.due_at = Some(at("2026-11-30T17:00:00Z"));
        let residence = StepState::new("police/residence-registration@1", "police");
        Case {
            id: CaseId::now_v7(),
            workflow: "birth-registration".into(),
            version: 1,
            status: CaseStatus::Running,
            input: json!({}),
            business_keys: BTreeMap::new(),
            started_at: at("2026-11-27T03:00:00Z"),
            started_on: "2026-11-27".parse().unwrap(),
            due_at: Some(at("2026-12-02T17:00:00Z")),
            finished_at: None,
            reason: None,
            steps: BTreeMap::from([("birth".into(), birth), ("residence".into(), residence)]),
            incidents: Vec::new(),
            timers: BTreeMap::from([
                ("deadline".into(), at("2026-12-02T17:00:00Z")),
                ("deadline/birth".into(), at("2026-11-30T17:00:00Z")),
            ]),
            next_seq: 0,
            tallies: Vec::new(),
            deadlines: Default::default(),
            origin: None,
            inbox: Default::default(),
            consents: Default::default(),
            retention: Default::default(),
            traceparent: None,
            rev: 1,
        }
    }

    fn names(case: &Case) -> Vec<String> {
        tallies(case, Calendar::vietnam())
            .iter()
            .map(Tally::name)
            .collect()
    }

    #[test]
    fn an_open_step_is_in_time_until_its_deadline_timer_fires() {
        let mut c = case();
        assert_eq!(
            names(&c),
            [
                "kpi/open/2026-11-27/birth-registration/civil-status/birth/in_time",
                "kpi/open/2026-11-27/birth-registration/*/*/in_time",
            ]
        );
        c.timers.remove("deadline/birth");
        assert_eq!(
            names(&c)[0],
            "kpi/open/2026-11-27/birth-registration/civil-status/birth/overdue"
        );
    }

    #[test]
    fn a_finished_step_counts_its_working_days_under_the_day_it_finished() {
        let mut c = case();
        let birth = c.steps.get_mut("birth").unwrap();
        birth.status = StepStatus::Succeeded;
        // Monday 30 November, 16:00 in Hanoi: before Monday's close, one working day.
        birth.finished_at = Some(at("2026-11-30T09:00:00Z"));
        assert_eq!(
            names(&c)[0],
            "kpi/done/2026-11-30/birth-registration/civil-status/birth/on_time/1"
        );
        // Tuesday 1 December, 01:00 in Hanoi: after Monday's close.
        let birth = c.steps.get_mut("birth").unwrap();
        birth.finished_at = Some(at("2026-11-30T18:00:00Z"));
        assert_eq!(
            names(&c)[0],
            "kpi/done/2026-12-01/birth-registration/civil-status/birth/late/2"
        );
    }

    #[test]
    fn a_step_finished_by_its_new_date_is_extended_and_counted_with_its_reason() {
        let mut c = case();
        let first = at("2026-11-30T17:00:00Z");
        let new = at("2026-12-02T17:00:00Z");
        c.deadlines.extension = Some(crate::case::Extension {
            step: Some("birth".into()),
            reason_code: "verification".into(),
            reason: "checking".into(),
            by: "test".into(),
            at: at("2026-11-27T08:00:00Z"),
            previous_due: first,
            due: new,
            case_due_before: None,
        });
        let birth = c.steps.get_mut("birth").unwrap();
        birth.due_at = Some(new);
        birth.status = StepStatus::Succeeded;
        // Tuesday 1 December: after the first due time, by the new one.
        birth.finished_at = Some(at("2026-12-01T03:00:00Z"));
        assert_eq!(
            names(&c)[0],
            "kpi/done/2026-12-01/birth-registration/civil-status/birth/extended/2"
        );
        // By the first due time it is on time, extension or not.
        c.steps.get_mut("birth").unwrap().finished_at = Some(at("2026-11-30T03:00:00Z"));
        assert!(names(&c)[0].ends_with("/on_time/1"), "{:?}", names(&c));
        // After the new one it is late.
        c.steps.get_mut("birth").unwrap().finished_at = Some(at("2026-12-03T03:00:00Z"));
        assert!(names(&c)[0].ends_with("/late/4"), "{:?}", names(&c));
        let law: Vec<String> = deadline_tallies(&c).collect();
        assert_eq!(
            law,
            ["kpi/extension/2026-11-27/birth-registration/civil-status/birth/verification"]
        );
    }

    #[test]
    fn a_cancelled_case_and_a_skipped_step_are_not_counted() {
        let mut c = case();
        c.steps.get_mut("birth").unwrap().status = StepStatus::Skipped;
        c.status = CaseStatus::Cancelled;
        c.finished_at = Some(at("2026-11-28T03:00:00Z"));
        assert!(names(&c).is_empty());
    }

    #[test]
    fn names_parse_back() {
        let mut c = case();
        c.status = CaseStatus::Completed;
        c.finished_at = Some(at("2026-12-03T03:00:00Z"));
        for t in tallies(&c, Calendar::vietnam()) {
            assert_eq!(Tally::parse(&t.name()), Some(t.clone()), "{}", t.name());
        }
        assert_eq!(Tally::parse("kpi/done/2026-11-30/w/a/s/on_time"), None);
        assert_eq!(Tally::parse("kpi/open/2026-11-30/w/a/s/in_time/3"), None);
        assert_eq!(Tally::parse("kpi/later/2026-11-30/w/a/s/in_time"), None);
    }

    #[test]
    fn names_spell_days_and_numbers_as_display_does() {
        let tally = |day: Date, working_days| Tally {
            workflow: "w".into(),
            agency: "a".into(),
            step: "s".into(),
            state: State::Done {
                day,
                class: Finished::Late,
                working_days,
            },
        };
        for (day, n) in [
            (jiff::civil::date(2026, 1, 9), 0),
            (jiff::civil::date(2026, 12, 31), 7),
            (jiff::civil::date(999, 10, 10), 10),
            (jiff::civil::date(-5, 3, 4), 4_000_000_000),
            (jiff::civil::date(9999, 12, 31), 123),
        ] {
            assert_eq!(
                tally(day, n).name(),
                format!("kpi/done/{day}/w/a/s/late/{n}")
            );
        }
    }

    #[test]
    fn the_hook_adds_only_the_difference() {
        let hook = Kpi::new(Calendar::vietnam());
        let mut tallies = Vec::new();
        let mut prepare = |case: &Case| {
            let mut tx = Transaction::default();
            let mut change = Preparing {
                case,
                events: &[],
                tallies: &mut tallies,
            };
            hook.prepare(&mut change, &mut tx);
            tx.counts
        };
        let mut c = case();
        let counts = prepare(&c);
        assert_eq!(counts.len(), 2);
        assert!(counts.iter().all(|(_, n)| *n == 1));

        c.timers.remove("deadline/birth");
        let step = "kpi/open/2026-11-27/birth-registration/civil-status/birth";
        assert_eq!(
            prepare(&c),
            [
                (format!("{step}/in_time"), -1),
                (format!("{step}/overdue"), 1)
            ]
        );
        assert!(prepare(&c).is_empty(), "nothing changed, nothing counted");
    }
}
