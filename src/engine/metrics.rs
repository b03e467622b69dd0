//! What the engine itself costs, apart from waiting on agencies.
//!
//! A step's overhead is measured per exchange with its agency: the time from the trigger (a case
//! start, the previous step's answer, a timer) to the request leaving, plus the time from the
//! answer arriving to its outcome being durable and the next requests leaving. A callback counts
//! from its arrival to its acknowledgement being durable. A transition that records one step's
//! answer and starts the next counts for both, so the figure errs on the high side.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

pub struct Metrics {
    step_overhead: Mutex<Histogram<u64>>,
}

/// Percentiles of the step overhead since the last reset, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overhead {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        // 1 µs to 1 h at three significant digits: about 30 KiB, fixed.
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("the bounds are valid constants");
        Metrics {
            step_overhead: Mutex::new(histogram),
        }
    }
}

impl Metrics {
    pub(super) fn record_step_overhead(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.step_overhead
            .lock()
            .expect("not poisoned")
            .saturating_record(micros.max(1));
    }

    pub fn step_overhead(&self) -> Overhead {
        let h = self.step_overhead.lock().expect("not poisoned");
        Overhead {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }

    /// Forgets what was recorded, e.g. after a warm-up.
    pub fn reset(&self) {
        self.step_overhead.lock().expect("not poisoned").reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let metrics = Metrics::default();
        for ms in 1..=100 {
            metrics.record_step_overhead(Duration::from_millis(ms));
        }
        let o = metrics.step_overhead();
        assert_eq!(o.count, 100);
        assert!((49_900..=50_100).contains(&o.p50_us), "{o:?}");
        assert!((98_900..=99_100).contains(&o.p99_us), "{o:?}");
        metrics.reset();
        assert_eq!(metrics.step_overhead().count, 0);
    }
}
