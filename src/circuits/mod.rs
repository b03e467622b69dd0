//! Agency health, learnt from the calls themselves. A run of retryable failures (no answer,
//! 429, 5xx) from one agency opens its circuit: the steps that would call it are held instead
//! of burning their retry budgets against a system known to be down, one probe at a time tests
//! it with a growing interval, and the first answer closes it. Business refusals and replies
//! civicflow cannot read say the agency is up: they end a run of failures and never open one.
//!
//! The circuit is a store record ([`Circuit`]) every node follows, written by version so that
//! two nodes cannot both open it or both take its probe. The runs of failures are counted by
//! each node over its own calls: an opening needs only that one node saw enough of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

pub use crate::store::{Circuit, CircuitChange, CircuitState};
use crate::store::{Store, StoreError, Transaction};

/// Who writes a circuit change that no person made.
pub const CIVICFLOW: &str = "civicflow";

/// The counter of `agency`'s outage open now: an open-incident counter (`kpi::INCIDENTS`) of
/// reason `agency_outage` and no workflow (`*`), which `/metrics` reports with the others.
fn outage_counter(agency: &str) -> String {
    format!("{}agency_outage/*/{agency}", crate::kpi::INCIDENTS)
}

/// How many times a circuit change is read and tried again after another writer's.
const REWRITES: u32 = 8;

/// When a circuit opens, how held steps are released when it closes, and how it is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Retryable failures in a row, on one node, that open the circuit.
    pub threshold: u32,
    /// The wait before the first probe; each failed probe doubles it, up to `probe_max`.
    pub probe_min: Duration,
    pub probe_max: Duration,
    /// Held steps released per second once the circuit closes, per node.
    pub release_rate: u64,
    /// Released steps whose calls may be in flight at once, per node.
    pub release_concurrency: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            threshold: 5,
            probe_min: Duration::from_secs(1),
            probe_max: Duration::from_secs(4),
            release_rate: 200,
            release_concurrency: 32,
        }
    }
}

impl Policy {
    /// Reads `THRESHOLD[,RATE[,CONCURRENCY]]` over this policy, as `serve --circuit` takes it.
    pub fn with(mut self, text: &str) -> Result<Policy, String> {
        let mut parts = text.split(',').map(str::trim);
        let mut next = |what: &str| -> Result<Option<u64>, String> {
            match parts.next() {
                None | Some("") => Ok(None),
                Some(p) => match p.parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(format!("the {what} `{p}` is not a whole number above 0")),
                },
            }
        };
        if let Some(n) = next("threshold")? {
            self.threshold = u32::try_from(n).map_err(|_| format!("threshold {n} is too large"))?;
        }
        if let Some(n) = next("release rate")? {
            self.release_rate = n;
        }
        if let Some(n) = next("release concurrency")? {
            self.release_concurrency =
                usize::try_from(n).map_err(|_| format!("concurrency {n} is too large"))?;
        }
        if parts.next().is_some() {
            return Err("expected THRESHOLD[,RATE[,CONCURRENCY]]".to_owned());
        }
        Ok(self)
    }

    /// The wait before the next probe after `failed` failed probes.
    pub fn probe_wait(&self, failed: u32) -> Duration {
        let doubled = self.probe_min.saturating_mul(1 << failed.min(16));
        doubled.min(self.probe_max)
    }
}

/// The policies of a node: one for every agency, and some agencies' own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub default: Policy,
    pub agencies: BTreeMap<String, Policy>,
}

/// What a call to an agency showed of its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No answer, 429 or 5xx: the agency may be down.
    Failure(String),
    /// Any other answer, a refusal or a reply that cannot be read included: it is up.
    Answer,
}

/// The circuits as this node last read or wrote them, and the runs of failures it counts.
pub struct Circuits {
    settings: Settings,
    known: RwLock<BTreeMap<String, Circuit>>,
    /// Agency → retryable failures in a row seen by this node, and the last one.
    runs: Mutex<HashMap<String, (u32, String)>>,
}

/// A circuit as it was read, or closed and at version 0 if it was never written.
fn closed(agency: &str) -> Circuit {
    Circuit {
        agency: agency.to_owned(),
        version: 0,
        state: CircuitState::Closed,
        since: Timestamp::UNIX_EPOCH,
        opened_by: None,
        reason: None,
        last_error: None,
        failed_probes: 0,
        probe_at: None,
        changes: Vec::new(),
    }
}

impl Circuits {
    pub fn new(settings: Settings) -> Circuits {
        Circuits {
            settings,
            known: RwLock::new(BTreeMap::new()),
            runs: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self, agency: &str) -> Policy {
        let s = &self.settings;
        s.agencies.get(agency).copied().unwrap_or(s.default)
    }

    /// Whether calls to `agency` are held, as this node last saw its circuit.
    pub fn is_open(&self, agency: &str) -> bool {
        self.known
            .read()
            .expect("circuits lock")
            .get(agency)
            .is_some_and(|c| c.state == CircuitState::Open)
    }

    /// `agency`'s circuit as this node last saw it (closed if never written).
    pub fn get(&self, agency: &str) -> Circuit {
        let known = self.known.read().expect("circuits lock");
        known.get(agency).cloned().unwrap_or_else(|| closed(agency))
    }

    /// Counts what a call showed; the last error, when this failure completes a run long
    /// enough to open a circuit that is closed.
    pub fn observe(&self, agency: &str, seen: Seen) -> Option<String> {
        let mut runs = self.runs.lock().expect("runs lock");
        match seen {
            Seen::Answer => {
                runs.remove(agency);
                None
            }
            Seen::Failure(error) => {
                let run = runs.entry(agency.to_owned()).or_insert((0, String::new()));
                run.0 += 1;
                run.1 = error;
                if run.0 < self.policy(agency).threshold || self.is_open(agency) {
                    return None;
                }
                // One opening per run: the failures that follow count towards the next.
                run.0 = 0;
                Some(run.1.clone())
            }
        }
    }

    /// Takes the circuits as read from the store; the agencies whose circuit closed since this
    /// node last saw it.
    pub fn follow(&self, stored: Vec<Circuit>) -> Vec<String> {
        let mut known = self.known.write().expect("circuits lock");
        let mut closed_now = Vec::new();
        for circuit in stored {
            let before = known.get(&circuit.agency);
            if before.is_some_and(|b| b.version >= circuit.version) {
                continue;
            }
            if before.is_some_and(|b| b.state == CircuitState::Open)
                && circuit.state == CircuitState::Closed
            {
                closed_now.push(circuit.agency.clone());
            }
            known.insert(circuit.agency.clone(), circuit);
        }
        closed_now
    }

    /// Writes a change to `agency`'s circuit: `change` edits the circuit as stored and says
    /// whether there is anything to write; read again and retried if another writer got there
    /// first. The circuit written, or `None` if there was nothing to write.
    pub async fn change<S: Store>(
        &self,
        store: &S,
        agency: &str,
        change: impl Fn(&mut Circuit) -> bool,
    ) -> Result<Option<Circuit>, StoreError> {
        let mut round = 0;
        loop {
            round += 1;
            let stored = store.circuits().await?;
            let was = stored
                .iter()
                .find(|c| c.agency == agency)
                .cloned()
                .unwrap_or_else(|| closed(agency));
            self.follow(stored);
            let mut next = was.clone();
            if !change(&mut next) {
                return Ok(None);
            }
            next.version = was.version + 1;
            if next.changes.len() > Circuit::CHANGES_KEPT {
                let extra = next.changes.len() - Circuit::CHANGES_KEPT;
                next.changes.drain(..extra);
            }
            let outage = match (was.state, next.state) {
                (CircuitState::Closed, CircuitState::Open) => 1,
                (CircuitState::Open, CircuitState::Closed) => -1,
                _ => 0,
            };
            let mut tx = Transaction {
                put_circuits: vec![next.clone()],
                ..Transaction::default()
            };
            if outage != 0 {
                tx.counts.push((outage_counter(agency), outage));
            }
            match store.commit(&tx).await {
                Ok(()) => {
                    if outage != 0 {
                        self.runs.lock().expect("runs lock").remove(agency);
                    }
                    self.follow(vec![next.clone()]);
                    return Ok(Some(next));
                }
                Err(StoreError::CircuitChanged { .. }) if round < REWRITES => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Opens a closed circuit: the calls' failures decided it.
pub fn open_on_failures(
    policy: Policy,
    last_error: String,
    now: Timestamp,
) -> impl Fn(&mut Circuit) -> bool {
    move |c| {
        if c.state == CircuitState::Open {
            return false;
        }
        let reason = format!(
            "{} calls in a row failed; the last: {last_error}",
            policy.threshold
        );
        open(c, now, None, reason.clone());
        c.last_error = Some(last_error.clone());
        c.probe_at = Some(now + signed(policy.probe_wait(0)));
        true
    }
}

/// Opens a circuit by hand (a planned maintenance): held until someone closes it, no probes.
pub fn open_by_hand(by: String, reason: String, now: Timestamp) -> impl Fn(&mut Circuit) -> bool {
    move |c| {
        if c.state == CircuitState::Open && c.opened_by.is_some() {
            return false;
        }
        open(c, now, Some(by.clone()), reason.clone());
        c.probe_at = None;
        true
    }
}

fn open(c: &mut Circuit, now: Timestamp, by: Option<String>, reason: String) {
    if c.state != CircuitState::Open {
        c.since = now;
        c.failed_probes = 0;
    }
    c.state = CircuitState::Open;
    c.changes.push(CircuitChange {
        at: now,
        state: CircuitState::Open,
        by: by.clone().unwrap_or_else(|| CIVICFLOW.to_owned()),
        reason: reason.clone(),
    });
    c.opened_by = by;
    c.reason = Some(reason);
}

/// Closes an open circuit: a probe was answered, or someone closed it.
pub fn close(by: String, reason: String, now: Timestamp) -> impl Fn(&mut Circuit) -> bool {
    move |c| {
        if c.state == CircuitState::Closed {
            return false;
        }
        c.state = CircuitState::Closed;
        c.since = now;
        c.opened_by = None;
        c.probe_at = None;
        c.failed_probes = 0;
        c.reason = Some(reason.clone());
        c.changes.push(CircuitChange {
            at: now,
            state: CircuitState::Closed,
            by: by.clone(),
            reason: reason.clone(),
        });
        true
    }
}

/// A probe was answered: closes the circuit, unless someone opened it by hand while the probe
/// was out (a maintenance announced meanwhile outranks what one call showed).
pub fn probe_answered(now: Timestamp) -> impl Fn(&mut Circuit) -> bool {
    let close = close(
        CIVICFLOW.to_owned(),
        "a probe call was answered".to_owned(),
        now,
    );
    move |c| c.opened_by.is_none() && close(c)
}

/// Takes the turn to probe an open circuit whose probe is due, for `lease` (a node that dies
/// mid-probe gives the turn up when it lapses).
pub fn take_probe(now: Timestamp, lease: Duration) -> impl Fn(&mut Circuit) -> bool {
    move |c| {
        let due = c.probe_at.is_some_and(|at| at <= now);
        if c.state != CircuitState::Open || c.opened_by.is_some() || !due {
            return false;
        }
        c.probe_at = Some(now + signed(lease));
        true
    }
}

/// A probe failed (or found nothing to send): the next waits longer.
pub fn probe_failed(
    policy: Policy,
    error: Option<String>,
    now: Timestamp,
) -> impl Fn(&mut Circuit) -> bool {
    move |c| {
        if c.state != CircuitState::Open || c.opened_by.is_some() {
            return false;
        }
        if let Some(e) = &error {
            c.failed_probes += 1;
            c.last_error = Some(e.clone());
        }
        c.probe_at = Some(now + signed(policy.probe_wait(c.failed_probes)));
        true
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + s).unwrap()
    }

    #[test]
    fn a_run_of_failures_opens_and_any_answer_ends_the_run() {
        let circuits = Circuits::new(Settings::default());
        let fail = || Seen::Failure("503".into());
        for _ in 0..4 {
            assert_eq!(circuits.observe("police", fail()), None);
        }
        // A refusal in between: the agency answers, the run starts again.
        assert_eq!(circuits.observe("police", Seen::Answer), None);
        for _ in 0..4 {
            assert_eq!(circuits.observe("police", fail()), None);
        }
        assert_eq!(circuits.observe("police", fail()), Some("503".into()));
        // One opening per run, not one per failure after it.
        assert_eq!(circuits.observe("police", fail()), None);
        // Another agency's failures are its own.
        assert_eq!(circuits.observe("civil-status", fail()), None);
    }

    #[test]
    fn a_policy_reads_threshold_rate_and_concurrency() {
        let p = Policy::default().with("3,50").unwrap();
        assert_eq!((p.threshold, p.release_rate), (3, 50));
        assert_eq!(p.release_concurrency, Policy::default().release_concurrency);
        assert!(Policy::default().with("0").is_err());
        assert!(Policy::default().with("3,x").is_err());
        assert!(Policy::default().with("1,2,3,4").is_err());
    }

    #[test]
    fn probes_wait_longer_after_each_failure_up_to_the_cap() {
        let p = Policy::default();
        let waits: Vec<u64> = (0..5).map(|n| p.probe_wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 4, 4]);
    }

    #[test]
    fn a_hand_opened_circuit_is_not_probed_and_closing_is_recorded() {
        let mut c = closed("police");
        assert!(open_by_hand("alice".into(), "upgrade".into(), at(0))(
            &mut c
        ));
        assert!(!take_probe(at(100), Duration::from_secs(10))(&mut c));
        assert!(close("bob".into(), "upgrade done".into(), at(200))(&mut c));
        assert!(!close("bob".into(), "again".into(), at(201))(&mut c));
        let trail: Vec<(&str, CircuitState)> = c
            .changes
            .iter()
            .map(|ch| (ch.by.as_str(), ch.state))
            .collect();
        assert_eq!(
            trail,
            [("alice", CircuitState::Open), ("bob", CircuitState::Closed)]
        );
    }

    /// Issue 33: an operator opens the circuit by hand while a probe is out; the probe's
    /// answer leaves it open.
    #[test]
    fn a_probe_answer_does_not_close_a_circuit_opened_by_hand_meanwhile() {
        let mut c = closed("police");
        assert!(open_on_failures(Policy::default(), "503".into(), at(0))(
            &mut c
        ));
        assert!(take_probe(at(1), Duration::from_secs(10))(&mut c));
        assert!(open_by_hand("alice".into(), "maintenance".into(), at(2))(
            &mut c
        ));
        assert!(!probe_answered(at(3))(&mut c));
        assert_eq!(c.state, CircuitState::Open);
        assert_eq!(c.opened_by.as_deref(), Some("alice"));
        // Without a hand on it, the answer closes it.
        let mut c = closed("police");
        assert!(open_on_failures(Policy::default(), "503".into(), at(0))(
            &mut c
        ));
        assert!(probe_answered(at(3))(&mut c));
        assert_eq!(c.state, CircuitState::Closed);
    }

    #[test]
    fn one_probe_at_a_time_until_its_lease_lapses() {
        let mut c = closed("police");
        assert!(open_on_failures(Policy::default(), "503".into(), at(0))(
            &mut c
        ));
        assert!(!take_probe(at(0), Duration::from_secs(10))(&mut c));
        assert!(take_probe(at(1), Duration::from_secs(10))(&mut c));
        assert!(!take_probe(at(5), Duration::from_secs(10))(&mut c));
        assert!(take_probe(at(11), Duration::from_secs(10))(&mut c));
        assert!(probe_failed(
            Policy::default(),
            Some("timeout".into()),
            at(12)
        )(&mut c));
        assert_eq!(c.probe_at, Some(at(14)));
        assert_eq!(c.last_error.as_deref(), Some("timeout"));
    }
}
