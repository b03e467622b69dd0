//! Working days for statutory deadlines: Monday to Friday, minus public holidays, from a holiday
//! calendar kept as data (`src/calendar/vietnam.yaml`), in Vietnam's time (UTC+7, no DST).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::{Offset, TimeZone};
use serde::Deserialize;

use crate::workflow::deadline::Deadline;

const VIETNAM: &str = include_str!("vietnam.yaml");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error(
        "the deadline falls on or after {date}, outside the holiday calendar's years ({first}–{last}); add the year to src/calendar/vietnam.yaml"
    )]
    OutsideYears { date: Date, first: i16, last: i16 },
    #[error("the holiday calendar is invalid: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    first_year: i16,
    last_year: i16,
    holidays: Vec<Holiday>,
    #[serde(default)]
    working_saturdays: Vec<Date>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Holiday {
    date: Date,
    name: String,
}

#[derive(Debug, Clone)]
pub struct Calendar {
    first_year: i16,
    last_year: i16,
    holidays: BTreeMap<Date, String>,
    working_saturdays: BTreeSet<Date>,
}

/// Vietnam's civil time: UTC+7 all year.
pub fn vietnam_time() -> TimeZone {
    TimeZone::fixed(Offset::constant(7))
}

/// The last day still in time for a due time: a deadline of working days closes at midnight,
/// which is the start of the next day.
pub fn due_day(due: Timestamp) -> Date {
    (due - jiff::SignedDuration::from_nanos(1))
        .to_zoned(vietnam_time())
        .date()
}

/// The close (midnight, Vietnam time) of `day`: a new date's due time.
pub fn close_of(day: Date) -> Result<Timestamp, CalendarError> {
    day.tomorrow()
        .and_then(|d| d.to_zoned(vietnam_time()))
        .map(|z| z.timestamp())
        .map_err(|e| CalendarError::Invalid(e.to_string()))
}

impl Calendar {
    pub fn parse(text: &str) -> Result<Calendar, CalendarError> {
        let file: File =
            serde_saphyr::from_str(text).map_err(|e| CalendarError::Invalid(e.to_string()))?;
        if file.first_year > file.last_year {
            return Err(CalendarError::Invalid(
                "first_year is after last_year".into(),
            ));
        }
        let within = |d: &Date| (file.first_year..=file.last_year).contains(&d.year());
        if let Some(h) = file.holidays.iter().find(|h| !within(&h.date)) {
            return Err(CalendarError::Invalid(format!(
                "holiday {} is outside the calendar's years",
                h.date
            )));
        }
        Ok(Calendar {
            first_year: file.first_year,
            last_year: file.last_year,
            holidays: file
                .holidays
                .into_iter()
                .map(|h| (h.date, h.name))
                .collect(),
            working_saturdays: file.working_saturdays.into_iter().collect(),
        })
    }

    /// The calendar shipped with civicflow.
    pub fn vietnam() -> &'static Calendar {
        static CALENDAR: OnceLock<Calendar> = OnceLock::new();
        CALENDAR.get_or_init(|| {
            Calendar::parse(VIETNAM).expect("the shipped calendar is checked by a unit test")
        })
    }

    pub fn is_working_day(&self, date: Date) -> Result<bool, CalendarError> {
        if !(self.first_year..=self.last_year).contains(&date.year()) {
            return Err(CalendarError::OutsideYears {
                date,
                first: self.first_year,
                last: self.last_year,
            });
        }
        if self.working_saturdays.contains(&date) {
            return Ok(true);
        }
        let weekend = matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday);
        Ok(!weekend && !self.holidays.contains_key(&date))
    }

    /// The working days from `start` to `end` as the law counts a time taken: those after the
    /// day of `start`, up to and including the day of `end` (Vietnam time), so a step answered
    /// on the day it started took 0 and one answered on the next working day took 1.
    pub fn working_days_between(
        &self,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<u32, CalendarError> {
        let tz = vietnam_time();
        let last = end.to_zoned(tz.clone()).date();
        let mut day = start.to_zoned(tz).date();
        let mut n = 0;
        while day < last {
            day = day
                .tomorrow()
                .map_err(|e| CalendarError::Invalid(e.to_string()))?;
            if self.is_working_day(day)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// When the reminder `n` working days before `due` goes out: at the start (midnight,
    /// Vietnam time) of the n-th working day before the due day, so that the day before the due
    /// day, the last on which the decree still allows an apology and a new date, is among
    /// those the reminder leaves.
    pub fn reminder(&self, due: Timestamp, n: u32) -> Result<Timestamp, CalendarError> {
        let tz = vietnam_time();
        let mut day = due_day(due);
        let mut left = n;
        while left > 0 {
            day = day
                .yesterday()
                .map_err(|e| CalendarError::Invalid(e.to_string()))?;
            if self.is_working_day(day)? {
                left -= 1;
            }
        }
        day.to_zoned(tz)
            .map(|z| z.timestamp())
            .map_err(|e| CalendarError::Invalid(e.to_string()))
    }

    /// The close of the `n`-th working day after the day `due` closes: how far an extension of
    /// `n` working days may reach.
    pub fn after_due(&self, due: Timestamp, n: u32) -> Result<Timestamp, CalendarError> {
        let last = due_day(due)
            .to_zoned(vietnam_time())
            .map_err(|e| CalendarError::Invalid(e.to_string()))?
            .timestamp();
        self.due(last, Deadline::WorkingDays(n))
    }

    /// When a deadline that starts running at `start` expires. `n working days` ends at the
    /// close (midnight, Vietnam time) of the n-th working day after the day of `start`, as the
    /// law counts from the day after a dossier is received; `n hours` is wall-clock.
    pub fn due(&self, start: Timestamp, deadline: Deadline) -> Result<Timestamp, CalendarError> {
        match deadline {
            Deadline::Hours(h) => Ok(start + jiff::SignedDuration::from_hours(i64::from(h))),
            Deadline::WorkingDays(n) => {
                let tz = vietnam_time();
                let mut day = start.to_zoned(tz.clone()).date();
                let mut left = n;
                while left > 0 {
                    day = day
                        .tomorrow()
                        .map_err(|e| CalendarError::Invalid(e.to_string()))?;
                    if self.is_working_day(day)? {
                        left -= 1;
                    }
                }
                let close = day
                    .tomorrow()
                    .map_err(|e| CalendarError::Invalid(e.to_string()))?;
                close
                    .to_zoned(tz)
                    .map(|z| z.timestamp())
                    .map_err(|e| CalendarError::Invalid(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_shipped_calendar_parses() {
        let c = Calendar::parse(VIETNAM).unwrap();
        assert!(c.holidays.len() > 20);
    }

    #[test]
    fn counts_from_the_next_working_day_to_its_close() {
        let c = Calendar::vietnam();
        // Monday 23 November 2026, 10:00 in Hanoi: 1 working day ends at Tuesday's close.
        let due = c
            .due(at("2026-11-23T03:00:00Z"), Deadline::WorkingDays(1))
            .unwrap();
        assert_eq!(due, at("2026-11-24T17:00:00Z"));
        // Friday: the weekend does not count.
        let due = c
            .due(at("2026-11-27T03:00:00Z"), Deadline::WorkingDays(1))
            .unwrap();
        assert_eq!(due, at("2026-11-30T17:00:00Z"));
    }

    #[test]
    fn tet_and_compensatory_days_are_skipped() {
        let c = Calendar::vietnam();
        // Friday 13 February 2026, before Tet: the week of 16–20 February is off.
        let due = c
            .due(at("2026-02-13T03:00:00Z"), Deadline::WorkingDays(1))
            .unwrap();
        assert_eq!(due, at("2026-02-23T17:00:00Z"));
        // Hung Kings' day falls on Sunday 26 April 2026: Monday 27 is off, and 30 April and
        // 1 May too: Tuesday 28 and Wednesday 29, then Monday 4 May.
        let due = c
            .due(at("2026-04-24T03:00:00Z"), Deadline::WorkingDays(3))
            .unwrap();
        assert_eq!(due, at("2026-05-04T17:00:00Z"));
    }

    #[test]
    fn a_worked_saturday_counts() {
        let c = Calendar::vietnam();
        assert!(c.is_working_day("2025-04-26".parse().unwrap()).unwrap());
        assert!(!c.is_working_day("2025-05-02".parse().unwrap()).unwrap());
    }

    #[test]
    fn working_days_taken_skip_weekends_and_holidays() {
        let c = Calendar::vietnam();
        let days = |a, b| c.working_days_between(at(a), at(b)).unwrap();
        // Friday 27 November 2026, 10:00 in Hanoi, to the same evening: none.
        assert_eq!(days("2026-11-27T03:00:00Z", "2026-11-27T12:00:00Z"), 0);
        // To Monday 30 November: the weekend does not count.
        assert_eq!(days("2026-11-27T03:00:00Z", "2026-11-30T03:00:00Z"), 1);
        // Wednesday 29 April 2026 to Monday 4 May: 30 April and 1 May are holidays.
        assert_eq!(days("2026-04-29T03:00:00Z", "2026-05-04T03:00:00Z"), 1);
        // An end before the start took none.
        assert_eq!(days("2026-11-30T03:00:00Z", "2026-11-27T03:00:00Z"), 0);
    }

    #[test]
    fn a_reminder_goes_out_at_the_start_of_a_working_day_before_the_due_day() {
        let c = Calendar::vietnam();
        // Due at the close of Tuesday 4 May 2027. 30 April (a Friday) is a holiday, and so is
        // Monday 3 May, in compensation for 1 May on a Saturday: one working day before the
        // due day is Thursday 29 April, two are Wednesday 28.
        let due = at("2027-05-04T17:00:00Z");
        assert_eq!(due_day(due), jiff::civil::date(2027, 5, 4));
        assert_eq!(c.reminder(due, 1).unwrap(), at("2027-04-28T17:00:00Z"));
        assert_eq!(c.reminder(due, 2).unwrap(), at("2027-04-27T17:00:00Z"));
        // An extension of two working days from there reaches Thursday 6 May's close.
        assert_eq!(c.after_due(due, 2).unwrap(), at("2027-05-06T17:00:00Z"));
        assert_eq!(
            close_of(jiff::civil::date(2027, 5, 6)).unwrap(),
            at("2027-05-06T17:00:00Z")
        );
    }

    #[test]
    fn hours_are_wall_clock() {
        let c = Calendar::vietnam();
        let due = c
            .due(at("2026-11-28T03:00:00Z"), Deadline::Hours(48))
            .unwrap();
        assert_eq!(due, at("2026-11-30T03:00:00Z"));
    }

    #[test]
    fn a_deadline_beyond_the_calendar_is_an_error() {
        let c = Calendar::vietnam();
        let err = c
            .due(at("2027-12-30T03:00:00Z"), Deadline::WorkingDays(3))
            .unwrap_err();
        assert!(matches!(err, CalendarError::OutsideYears { .. }), "{err}");
        assert!(err.to_string().contains("2025–2027"), "{err}");
    }
}
