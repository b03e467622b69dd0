//! What the engine itself costs, apart from waiting on agencies.
//!
//! A step's overhead is measured per exchange with its agency: the time from the trigger (a case
//! start, the previous step's answer, a timer) to the request leaving, plus the time from the
//! answer arriving to its outcome being durable and the next requests leaving. A callback counts
//! from its arrival to its acknowledgement being durable. A transition that records one step's
//! answer and starts the next counts for both, so the figure errs on the high side.
//!
//! The durable commit of a case change (from handing it to the store to the store answering that
//! it is on disk) is measured on its own: it is the part of the overhead that queues behind other
//! cases' writes and the disk, so it tells a slow store from a slow engine.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

pub struct Overhead {
    step_overhead: Mutex<Histogram<u64>>,
    commit: Mutex<Histogram<u64>>,
}

/// Percentiles of a latency since the last reset, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Default for Overhead {
    fn default() -> Overhead {
        Overhead {
            step_overhead: Mutex::new(histogram()),
            commit: Mutex::new(histogram()),
        }
    }
}

/// 1 µs to 1 h at three significant digits: about 30 KiB, fixed.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("the bounds are valid constants")
}

fn record(h: &Mutex<Histogram<u64>>, took: Duration) {
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    h.lock()
        .expect("not poisoned")
        .saturating_record(micros.max(1));
}

fn percentiles(h: &Mutex<Histogram<u64>>) -> Percentiles {
    let h = h.lock().expect("not poisoned");
    Percentiles {
        count: h.len(),
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

impl Overhead {
    pub(super) fn record_step_overhead(&self, took: Duration) {
        record(&self.step_overhead, took);
    }

    pub(super) fn record_commit(&self, took: Duration) {
        record(&self.commit, took);
    }

    pub fn step_overhead(&self) -> Percentiles {
        percentiles(&self.step_overhead)
    }

    /// How long a case change took to become durable once handed to the store.
    pub fn commit_latency(&self) -> Percentiles {
        percentiles(&self.commit)
    }

    /// Forgets what was recorded, e.g. after a warm-up.
    pub fn reset(&self) {
        self.step_overhead.lock().expect("not poisoned").reset();
        self.commit.lock().expect("not poisoned").reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let metrics = Overhead::default();
        for ms in 1..=100 {
            metrics.record_step_overhead(Duration::from_millis(ms));
        }
        metrics.record_commit(Duration::from_micros(300));
        let o = metrics.step_overhead();
        assert_eq!(o.count, 100);
        assert!((49_900..=50_100).contains(&o.p50_us), "{o:?}");
        assert!((98_900..=99_100).contains(&o.p99_us), "{o:?}");
        let c = metrics.commit_latency();
        assert_eq!((c.count, c.p50_us, c.max_us), (1, 300, 300));
        metrics.reset();
        assert_eq!(metrics.step_overhead().count, 0);
        assert_eq!(metrics.commit_latency().count, 0);
    }
}
