//! A case being changed: the new state, its events and timer changes, and the calls to send,
//! gathered under the case's lock and committed (with every hook's writes) before any call
//! leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;

use super::Overhead;
use crate::adapters::http::Metadata;
use crate::calendar::CalendarError;
use crate::case::{
    Case, Event, EventKind, Incident, IncidentReason, RequestState, StepState, Timer, TimerKind,
};
use crate::metrics::Metrics;
use crate::store::{CaseWrite, Committed, Fence, Hook, Preparing, Store, StoreError, Transaction};
use crate::workflow::spec::Method;

/// A request to send once the change that decided it is durable.
#[derive(Debug, Clone)]
pub struct Call {
    pub case_id: crate::case::CaseId,
    /// The agency the step is at, and the adapter (`agency/name@version`): for the metrics
    /// and the traces.
    pub agency: String,
    pub adapter: String,
    pub step: String,
    pub revision: u32,
    pub attempt: u32,
    pub poll: bool,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub meta: Metadata,
    pub timeout: Duration,
    /// When the trigger that decided this call arrived: the start of its step overhead.
    pub ready_at: Instant,
}

impl Call {
    /// The call as the audit log names it, the hash of its request being `request_hash`.
    pub fn named(&self, request_hash: String) -> crate::audit::entry::Call {
        super::exchanges::named(
            &self.meta,
            self.case_id,
            &self.step,
            self.attempt,
            self.poll,
            request_hash,
        )
    }

    /// Queues the call in `change`, its request logged in the same commit.
    pub fn queue(self, change: &mut Change) {
        let hash = crate::adapters::http::request_hash(
            self.method,
            &self.url,
            &self.meta.message_id,
            self.body.as_ref(),
        );
        change
            .tx
            .audit
            .push(crate::audit::Record::Request(self.named(hash)));
        change.calls.push(self);
    }
}

/// A case being changed: its new state, the events and timer changes that go with it, and the
/// calls to send after commit.
pub struct Change {
    pub case: Case,
    expected_rev: Option<u64>,
    pub tx: Transaction,
    pub calls: Vec<Call>,
    pub now: Timestamp,
    /// When the trigger of this change arrived (a request, an answer, a timer).
    pub began: Instant,
    /// The claim this change is decided under (a timer that came due), if any.
    pub fence: Option<Fence>,
}

impl Change {
    pub fn new(case: Case, expected_rev: Option<u64>, now: Timestamp, began: Instant) -> Change {
        Change {
            case,
            expected_rev,
            tx: Transaction::default(),
            calls: Vec::new(),
            now,
            began,
            fence: None,
        }
    }

    pub fn event(&mut self, kind: EventKind) {
        let seq = self.case.next_seq;
        self.case.next_seq += 1;
        self.tx.events.push((
            self.case.id,
            Event {
                seq,
                at: self.now,
                kind,
            },
        ));
    }

    /// Sets the case's timer of this kind, replacing the one it had.
    pub fn set_timer(&mut self, kind: TimerKind, due_at: Timestamp) {
        self.clear_timer(kind.clone());
        self.case.timers.insert(kind.id(), due_at);
        self.tx.set_timers.push(Timer {
            case_id: self.case.id,
            due_at,
            kind,
        });
    }

    pub fn step_mut(&mut self, id: &str) -> &mut StepState {
        self.case
            .steps
            .get_mut(id)
            .expect("step ids come from the case's own workflow version")
    }

    /// Ends a step's time at the agency: its timers go, and so do its open incidents and any
    /// request to the citizen it still waits on.
    pub(super) fn close_step(&mut self, step: &str) {
        self.step_mut(step).finished_at = Some(self.now);
        for kind in step_timers(step) {
            self.clear_timer(kind);
        }
        self.close_incidents(|i| i.step.as_deref() == Some(step));
        let now = self.now;
        self.case
            .deadlines
            .settle_open_request(step, RequestState::Closed, now);
    }

    /// Makes a step new again, under `revision`: what an operator's re-run and a supplement
    /// start from.
    pub(super) fn reset_step(&mut self, id: &str, revision: u32) {
        let s = self.step_mut(id);
        let (adapter, agency) = (s.adapter.clone(), s.agency.clone());
        *s = StepState::new(&adapter, &agency);
        s.revision = revision;
    }

    /// Closes the open incidents of a step whose reason passes `which`.
    pub(super) fn clear_incidents_of(
        &mut self,
        step: &str,
        which: impl Fn(IncidentReason) -> bool,
    ) {
        self.close_incidents(|i| i.step.as_deref() == Some(step) && which(i.reason));
    }

    /// Closes every open incident that `which` picks, each with an event in the history.
    pub(super) fn close_incidents(&mut self, which: impl Fn(&Incident) -> bool) {
        let (closed, open): (Vec<Incident>, Vec<Incident>) =
            std::mem::take(&mut self.case.incidents)
                .into_iter()
                .partition(|i| which(i));
        self.case.incidents = open;
        for i in closed {
            self.event(EventKind::IncidentClosed {
                step: i.step,
                reason: i.reason,
            });
        }
    }

    /// Clears the case's timer of this kind, if it has one: one set earlier in this change is
    /// simply not written, one already stored is removed.
    pub fn clear_timer(&mut self, kind: TimerKind) {
        let Some(due_at) = self.case.timers.remove(&kind.id()) else {
            return;
        };
        match self.tx.set_timers.iter().position(|t| t.kind == kind) {
            Some(unwritten) => {
                self.tx.set_timers.remove(unwritten);
            }
            None => self.tx.clear_timers.push(Timer {
                case_id: self.case.id,
                due_at,
                kind,
            }),
        }
    }

    /// Clears a timer that came due: the one the store holds, whatever the case records.
    pub(super) fn clear_fired(&mut self, timer: &Timer) {
        let id = timer.kind.id();
        if self.case.timers.get(&id) == Some(&timer.due_at) {
            self.case.timers.remove(&id);
        }
        self.tx.clear_timers.push(timer.clone());
    }

    pub fn open_incident(&mut self, step: Option<&str>, reason: IncidentReason, message: String) {
        self.case.incidents.push(Incident {
            step: step.map(str::to_owned),
            reason,
            message: message.clone(),
            opened_at: self.now,
        });
        self.event(EventKind::IncidentOpened {
            step: step.map(str::to_owned),
            reason,
            message,
        });
    }

    pub fn note_calendar_error(&mut self, step: Option<&str>, e: &CalendarError) {
        self.open_incident(
            step,
            IncidentReason::InvalidData,
            format!("the statutory due time cannot be computed: {e}"),
        );
    }

    /// Commits the change with every hook's own writes, under its claim if it has one; once
    /// durable, tells the hooks. The committed case and the calls to send.
    pub async fn commit<S: Store>(
        mut self,
        store: &S,
        (overhead, metrics): (&Overhead, &Metrics),
        hooks: &[Arc<dyn Hook>],
    ) -> Result<(Case, Vec<Call>), StoreError> {
        let events = std::mem::take(&mut self.tx.events);
        let mut tallies = std::mem::take(&mut self.case.tallies);
        let mut change = Preparing {
            case: &self.case,
            events: &events,
            tallies: &mut tallies,
        };
        for hook in hooks {
            hook.prepare(&mut change, &mut self.tx);
        }
        self.case.tallies = tallies;
        self.tx.events = events;
        self.tx.fences.extend(self.fence);
        self.tx.cases.push(CaseWrite {
            case: self.case,
            expected_rev: self.expected_rev,
        });
        let handed = Instant::now();
        store.commit(&self.tx).await?;
        let took = handed.elapsed();
        overhead.record_commit(took);
        metrics.commit(took);
        let mut case = self.tx.cases.pop().expect("pushed above").case;
        case.rev = self.expected_rev.map_or(1, |r| r + 1);
        // An incident is what an operator must see: logged, with what finds the case and its
        // trace, never its message (an agency's words may hold personal data).
        for (_, event) in &self.tx.events {
            if let EventKind::IncidentOpened { step, reason, .. } = &event.kind {
                tracing::warn!(
                    case_id = %case.id,
                    trace_id = %case.id.simple(),
                    step = step.as_deref().unwrap_or("-"),
                    workflow = %case.workflow,
                    reason = reason.as_str(),
                    "an incident was opened"
                );
            }
        }
        let change = Committed {
            case: &case,
            events: &self.tx.events,
        };
        for hook in hooks {
            hook.committed(&change);
        }
        Ok((case, self.calls))
    }
}

pub(super) fn step_timers(step: &str) -> [TimerKind; 5] {
    [
        TimerKind::Retry { step: step.into() },
        TimerKind::Poll { step: step.into() },
        TimerKind::StepDeadline { step: step.into() },
        TimerKind::Reminder { step: step.into() },
        TimerKind::SupplementDue { step: step.into() },
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::case::CaseStatus;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn change(timers: &[(TimerKind, i64)]) -> Change {
        let case = Case {
            id: crate::case::CaseId::now_v7(),
            workflow: "w".into(),
            version: 1,
            status: CaseStatus::Running,
            input: Value::Null,
            business_keys: BTreeMap::new(),
            started_at: at(0),
            started_on: "2027-01-15".parse().unwrap(),
            due_at: None,
            finished_at: None,
            reason: None,
            steps: BTreeMap::new(),
            incidents: Vec::new(),
            timers: timers.iter().map(|(k, due)| (k.id(), at(*due))).collect(),
            next_seq: 0,
            tallies: Vec::new(),
            deadlines: Default::default(),
            origin: None,
            inbox: Default::default(),
            consents: Default::default(),
            retention: Default::default(),
            traceparent: None,
            rev: 1,
        };
        Change::new(case, Some(1), at(0), Instant::now())
    }

    fn dues(timers: &[Timer]) -> Vec<(String, i64)> {
        timers
            .iter()
            .map(|t| (t.kind.id(), t.due_at.as_second() - at(0).as_second()))
            .collect()
    }

    fn retry() -> TimerKind {
        TimerKind::Retry { step: "s".into() }
    }

    #[test]
    fn moving_a_stored_timer_clears_it_where_it_was() {
        let mut c = change(&[(retry(), 10)]);
        c.set_timer(retry(), at(20));
        assert_eq!(dues(&c.tx.clear_timers), [("retry/s".to_owned(), 10)]);
        assert_eq!(dues(&c.tx.set_timers), [("retry/s".to_owned(), 20)]);
        c.set_timer(retry(), at(30));
        assert_eq!(dues(&c.tx.clear_timers), [("retry/s".to_owned(), 10)]);
        assert_eq!(dues(&c.tx.set_timers), [("retry/s".to_owned(), 30)]);
        assert_eq!(c.case.timers.get("retry/s"), Some(&at(30)));
    }

    #[test]
    fn clearing_writes_only_what_the_store_holds() {
        let mut c = change(&[]);
        c.clear_timer(retry());
        assert!(c.tx.clear_timers.is_empty());
        c.set_timer(retry(), at(5));
        c.clear_timer(retry());
        assert!(c.tx.set_timers.is_empty() && c.tx.clear_timers.is_empty());
        assert!(c.case.timers.is_empty());

        let mut c = change(&[(retry(), 10), (TimerKind::CaseDeadline, 99)]);
        c.clear_timer(retry());
        assert_eq!(dues(&c.tx.clear_timers), [("retry/s".to_owned(), 10)]);
        assert_eq!(c.case.timers.len(), 1);
    }

    #[test]
    fn a_fired_timer_is_cleared_as_stored_even_if_the_case_disagrees() {
        let fired = |due: i64| Timer {
            case_id: crate::case::CaseId::nil(),
            due_at: at(due),
            kind: retry(),
        };
        let mut c = change(&[(retry(), 10)]);
        c.clear_fired(&fired(10));
        c.set_timer(retry(), at(40));
        assert_eq!(dues(&c.tx.clear_timers), [("retry/s".to_owned(), 10)]);
        assert_eq!(dues(&c.tx.set_timers), [("retry/s".to_owned(), 40)]);

        let mut c = change(&[(retry(), 50)]);
        c.clear_fired(&fired(10));
        assert_eq!(c.case.timers.get("retry/s"), Some(&at(50)));
        c.clear_timer(retry());
        assert_eq!(
            dues(&c.tx.clear_timers),
            [("retry/s".to_owned(), 10), ("retry/s".to_owned(), 50)]
        );
    }
}
