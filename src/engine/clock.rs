//! The engine's time.
//!
//! Statutory deadlines are days away, so a test cannot wait for one. Like Temporal's test server,
//! the engine reads time through a clock that a test can skip forward; in production it is the
//! system clock, never skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    skipped_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> Timestamp {
        let skipped = SignedDuration::from_millis(self.skipped_ms.load(Ordering::Relaxed));
        Timestamp::now()
            .checked_add(skipped)
            .unwrap_or(Timestamp::MAX)
    }

    /// Moves this clock (and every clone of it) forward: timers due by the new time fire on the
    /// timer loop's next tick.
    pub fn skip(&self, by: SignedDuration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.skipped_ms.fetch_add(ms.max(0), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_moves_every_clone_forward() {
        let clock = Clock::system();
        let other = clock.clone();
        clock.skip(SignedDuration::from_hours(48));
        let ahead = other.now().duration_since(Timestamp::now());
        assert!(ahead >= SignedDuration::from_hours(47), "{ahead:?}");
    }

    #[test]
    fn time_never_goes_back() {
        let clock = Clock::system();
        clock.skip(SignedDuration::from_hours(-5));
        assert!(clock.now() >= Timestamp::now() - SignedDuration::from_secs(1));
    }
}
