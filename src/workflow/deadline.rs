//! Statutory deadlines as the law writes them: in working days or in hours.

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
}
