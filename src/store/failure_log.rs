//! Storage failures met by background work (timers, replies, circuits, webhook delivery) and
//! by requests, logged at most once a minute with how many were met meanwhile: a failing disk must not also
//! fill the log, and work that fails on the store is retried by the timer that brought it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::StoreError;

const EVERY: Duration = Duration::from_secs(60);

pub struct FailureLog {
    state: Mutex<Logged>,
}

impl Default for FailureLog {
    fn default() -> FailureLog {
        FailureLog::new()
    }
}

struct Logged {
    at: Option<Instant>,
    since: u64,
}

impl FailureLog {
    pub const fn new() -> FailureLog {
        FailureLog {
            state: Mutex::new(Logged { at: None, since: 0 }),
        }
    }

    /// Whether `e` is the storage failing (see [`StoreError::is_storage_failure`]): if so, it is
    /// counted, and logged unless one was in the last minute; the caller logs anything else.
    pub fn absorbs(&self, work: &str, e: &StoreError) -> bool {
        if !e.is_storage_failure() {
            return false;
        }
        let now = Instant::now();
        let mut logged = self.state.lock().expect("failure log lock");
        if logged.at.is_some_and(|at| now.duration_since(at) < EVERY) {
            logged.since += 1;
            return true;
        }
        let also = std::mem::take(&mut logged.since);
        logged.at = Some(now);
        tracing::error!(
            error = %e,
            work,
            failed_since_last_report = also,
            "background work failed on the store and is retried; further failures are logged at most once a minute"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_absorbed_and_other_errors_are_not() {
        let log = FailureLog::new();
        let full = StoreError::Unavailable {
            path: "db".into(),
            detail: "No space left on device".into(),
        };
        assert!(log.absorbs("a timer", &full));
        assert!(log.absorbs("a timer", &full));
        assert_eq!(log.state.lock().unwrap().since, 1);
        let conflict = StoreError::Conflict {
            case_id: uuid::Uuid::nil(),
            expected: 1,
        };
        assert!(!log.absorbs("a timer", &conflict));
    }
}
