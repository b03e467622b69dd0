//! Statutory deadlines as the law writes them (in working days or in hours) and what follows
//! from them: a reminder before the due time, an escalation when it passes, one apology with a
//! new date, the meaning of an agency's silence, and the legal time limit of a life event.

use jiff::civil::Date;

use crate::workflow::definition::Template;
use crate::workflow::expr::Expr;
use crate::workflow::spec::{Party, SilenceOutcome, SupplementClock, SupplementSpec};

/// A deadline as written in a definition file. Working days are counted by the engine against a
/// holiday calendar; hours are wall-clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    WorkingDays(u32),
    Hours(u32),
}

impl std::fmt::Display for Deadline {
    /// As a definition writes it: `3 working days`, `1 working day`, `48 hours`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deadline::WorkingDays(1) => f.write_str("1 working day"),
            Deadline::WorkingDays(n) => write!(f, "{n} working days"),
            Deadline::Hours(1) => f.write_str("1 hour"),
            Deadline::Hours(n) => write!(f, "{n} hours"),
        }
    }
}

impl Deadline {
    /// Parses `3 working days`, `1 working day`, `48 hours`.
    pub fn parse(text: &str) -> Option<Deadline> {
        let (n, unit) = text.trim().split_once(' ')?;
        let n: u32 = n.parse().ok()?;
        match unit {
            "working day" | "working days" => Some(Deadline::WorkingDays(n)),
            "hour" | "hours" if n > 0 => Some(Deadline::Hours(n)),
            _ => None,
        }
    }
}

/// What a due time brings with it, for a step or for a case as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consequences {
    /// Working days before the due time that the reminder goes out.
    pub remind_before: Option<u32>,
    /// Whom an overdue dossier is escalated to.
    pub escalate_to: Option<Party>,
    pub extension: ExtensionRule,
}

/// Who may give an apology and a new date, and how far the new date may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRule {
    pub granted_by: Vec<Party>,
    /// In working days after the due time it replaces.
    pub at_most: Option<u32>,
}

impl Default for ExtensionRule {
    fn default() -> ExtensionRule {
        ExtensionRule {
            granted_by: crate::workflow::spec::default_granters(),
            at_most: None,
        }
    }
}

/// What an agency's silence past the due time means, by a law's provision.
#[derive(Debug, Clone)]
pub struct Silence {
    pub outcome: SilenceOutcome,
    pub legal_basis: String,
    /// For a deemed approval: the step's output, over the case.
    pub output: Option<Template>,
}

/// The legal time limit of the life event a case registers.
#[derive(Debug, Clone)]
pub struct LifeEventRule {
    /// The event's date, over `.input`.
    pub date: Expr,
    /// Calendar days from the event.
    pub within_days: u32,
    pub legal_basis: String,
}

impl LifeEventRule {
    /// The last day a case may start on to be on time for an event on `date`.
    pub fn limit(&self, date: Date) -> Option<Date> {
        date.checked_add(jiff::Span::new().days(i64::from(self.within_days)))
            .ok()
    }
}

/// How a step's incomplete dossier is supplemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupplementRule {
    /// The citizen's working days.
    pub within: u32,
    pub clock: SupplementClock,
    pub max_requests: u32,
}

impl SupplementRule {
    /// The citizen's time when no definition says: ten working days.
    pub const DEFAULT_WITHIN: u32 = 10;

    /// The step's rule: its own fields, else the workflow's, else the defaults.
    pub fn of(
        step: Option<&SupplementSpec>,
        workflow: Option<&SupplementSpec>,
    ) -> Result<SupplementRule, String> {
        let within = step
            .and_then(|s| s.within.as_ref())
            .or_else(|| workflow.and_then(|w| w.within.as_ref()));
        Ok(SupplementRule {
            within: match within {
                Some(text) => working_days(text)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("`{text}` is not a time in working days"))?,
                None => SupplementRule::DEFAULT_WITHIN,
            },
            clock: step
                .and_then(|s| s.clock)
                .or_else(|| workflow.and_then(|w| w.clock))
                .unwrap_or_default(),
            max_requests: step
                .and_then(|s| s.max_requests)
                .or_else(|| workflow.and_then(|w| w.max_requests))
                .unwrap_or(1)
                .max(1),
        })
    }
}

/// Parses `<n> working days` (a reminder, an extension's reach).
pub fn working_days(text: &str) -> Option<u32> {
    match Deadline::parse(text)? {
        Deadline::WorkingDays(n) => Some(n),
        Deadline::Hours(_) => None,
    }
}

/// Parses `<n> days` (calendar days, as the law counts a life event's time limit).
pub fn calendar_days(text: &str) -> Option<u32> {
    let (n, unit) = text.trim().split_once(' ')?;
    let n: u32 = n.parse().ok()?;
    (matches!(unit, "day" | "days") && n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_two_units() {
        assert_eq!(
            Deadline::parse("3 working days"),
            Some(Deadline::WorkingDays(3))
        );
        assert_eq!(
            Deadline::parse("1 working day"),
            Some(Deadline::WorkingDays(1))
        );
        assert_eq!(Deadline::parse("48 hours"), Some(Deadline::Hours(48)));
        assert_eq!(Deadline::parse("3 days"), None);
        assert_eq!(Deadline::parse("0 hours"), None);
        for text in ["3 working days", "1 working day", "48 hours", "1 hour"] {
            assert_eq!(Deadline::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn reminders_are_in_working_days_and_life_events_in_calendar_days() {
        assert_eq!(working_days("2 working days"), Some(2));
        assert_eq!(working_days("2 hours"), None);
        assert_eq!(calendar_days("60 days"), Some(60));
        assert_eq!(calendar_days("1 day"), Some(1));
        assert_eq!(calendar_days("0 days"), None);
        assert_eq!(calendar_days("60 working days"), None);
    }
}
