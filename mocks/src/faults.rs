//! Fault injection: the bad days of a government system. Latency, error replies, lost replies,
//! garbled bodies and outage windows, drawn from a seeded generator so a run can be replayed.
//!
//! Faults that a real network loses *after* the agency acted (a timeout, a reset connection, a
//! garbled reply) are applied after the effect: that is exactly the case idempotency keys exist
//! for. Faults a real gateway returns before the request reaches the system (503, 500, 429, an
//! outage) are applied before it and create nothing.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    pub latency: Latency,
    pub rates: Rates,
    /// Seconds announced in `Retry-After` on 429 and 503 replies.
    pub retry_after_secs: u64,
    /// How long a `timeout` fault holds the reply before sending it (longer than any sane client
    /// timeout).
    pub timeout_hold_ms: u64,
    pub outages: Vec<Outage>,
}

/// Probability, between 0 and 1, of each fault on each procedure call; they are drawn from one
/// uniform number, so their sum must not exceed 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rates {
    pub unavailable: f64,
    pub internal_error: f64,
    pub too_many_requests: f64,
    pub reset: f64,
    pub timeout: f64,
    pub garbled: f64,
    /// The reply carries another request's `X-Road-Request-Hash` (a proxy that mixed up two
    /// exchanges, or a request changed on the way).
    pub wrong_request_hash: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    #[default]
    None,
    Fixed {
        ms: u64,
    },
    Uniform {
        min_ms: u64,
        max_ms: u64,
    },
    Exponential {
        mean_ms: u64,
    },
}

/// A window during which every procedure answers 503.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    pub from: Timestamp,
    pub until: Timestamp,
}

/// What the fault generator decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Outage,
    Unavailable,
    InternalError,
    TooManyRequests,
    Reset,
    Timeout,
    Garbled,
    WrongRequestHash,
}

impl Fault {
    /// Faults that stop the request before it reaches the agency's system.
    pub fn is_before_effect(self) -> bool {
        matches!(
            self,
            Fault::Outage | Fault::Unavailable | Fault::InternalError | Fault::TooManyRequests
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidFaults {
    #[error(
        "fault rates must each be between 0 and 1 and add up to at most 1 (they add up to {0})"
    )]
    Rates(f64),
    #[error("latency: min_ms ({min}) is greater than max_ms ({max})")]
    Latency { min: u64, max: u64 },
    #[error("outage from {from} ends before it starts ({until})")]
    Outage { from: Timestamp, until: Timestamp },
}

impl Faults {
    pub fn validate(&self) -> Result<(), InvalidFaults> {
        let r = self.rates;
        let all = [
            r.unavailable,
            r.internal_error,
            r.too_many_requests,
            r.reset,
            r.timeout,
            r.garbled,
            r.wrong_request_hash,
        ];
        let sum: f64 = all.iter().sum();
        if all.iter().any(|p| !(0.0..=1.0).contains(p)) || sum > 1.0 + 1e-9 {
            return Err(InvalidFaults::Rates(sum));
        }
        if let Latency::Uniform { min_ms, max_ms } = self.latency
            && min_ms > max_ms
        {
            return Err(InvalidFaults::Latency {
                min: min_ms,
                max: max_ms,
            });
        }
        for outage in &self.outages {
            if outage.until < outage.from {
                return Err(InvalidFaults::Outage {
                    from: outage.from,
                    until: outage.until,
                });
            }
        }
        Ok(())
    }

    pub fn retry_after(&self) -> u64 {
        self.retry_after_secs.max(1)
    }

    pub fn timeout_hold(&self) -> Duration {
        Duration::from_millis(if self.timeout_hold_ms == 0 {
            60_000
        } else {
            self.timeout_hold_ms
        })
    }
}

/// The live fault state of one agency: its configuration and its seeded generator.
#[derive(Debug)]
pub struct Injector {
    pub faults: Faults,
    rng: fastrand::Rng,
}

impl Injector {
    pub fn new(faults: Faults, seed: u64) -> Injector {
        Injector {
            faults,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn replace(&mut self, faults: Faults, seed: Option<u64>) {
        self.faults = faults;
        if let Some(seed) = seed {
            self.rng.seed(seed);
        }
    }

    /// Draws the latency and the fault for one request.
    pub fn draw(&mut self, now: Timestamp) -> (Duration, Fault) {
        let latency = match self.faults.latency {
            Latency::None => 0,
            Latency::Fixed { ms } => ms,
            Latency::Uniform { min_ms, max_ms } => self.rng.u64(min_ms..=max_ms),
            Latency::Exponential { mean_ms } => {
                let u = 1.0 - self.rng.f64();
                (-(mean_ms as f64) * u.ln()) as u64
            }
        };
        if self
            .faults
            .outages
            .iter()
            .any(|o| o.from <= now && now < o.until)
        {
            return (Duration::from_millis(latency), Fault::Outage);
        }
        let r = self.faults.rates;
        let u = self.rng.f64();
        let ladder = [
            (r.unavailable, Fault::Unavailable),
            (r.internal_error, Fault::InternalError),
            (r.too_many_requests, Fault::TooManyRequests),
            (r.reset, Fault::Reset),
            (r.timeout, Fault::Timeout),
            (r.garbled, Fault::Garbled),
            (r.wrong_request_hash, Fault::WrongRequestHash),
        ];
        let mut edge = 0.0;
        for (p, fault) in ladder {
            edge += p;
            if u < edge {
                return (Duration::from_millis(latency), fault);
            }
        }
        (Duration::from_millis(latency), Fault::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let faults = Faults {
            rates: Rates {
                unavailable: 0.3,
                garbled: 0.2,
                ..Rates::default()
            },
            latency: Latency::Uniform {
                min_ms: 1,
                max_ms: 50,
            },
            ..Faults::default()
        };
        let now = Timestamp::now();
        let run = |seed| {
            let mut injector = Injector::new(faults.clone(), seed);
            (0..100).map(|_| injector.draw(now)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let unavailable = run(7)
            .iter()
            .filter(|(_, f)| *f == Fault::Unavailable)
            .count();
        assert!((15..=45).contains(&unavailable), "{unavailable}");
    }

    #[test]
    fn rejects_rates_above_one() {
        let faults = Faults {
            rates: Rates {
                unavailable: 0.7,
                timeout: 0.5,
                ..Rates::default()
            },
            ..Faults::default()
        };
        assert!(faults.validate().is_err());
    }
}
