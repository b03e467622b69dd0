//! Personal data erased (Law 91/2025/QH15; Decree 356/2025/ND-CP): when a case ends, the commit
//! that ends it sets the time its workflow's retention is up and a timer for it; the timer,
//! fired under its claim, erases the case in one commit: its record, its whole history, its
//! notifications still on the webhook feed, and the idempotency records whose key names a
//! person. A data subject's request (`DELETE /v1/subjects/{id}`) does the same early for each
//! ended case under the person's business keys, and says why it leaves the others. Cases that
//! ended before their workflow had a retention get their timer from a pass over the ended cases
//! when a node starts.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::case::{Case, CaseId, CaseStatus, EventKind, Made, TimerKind, index};
use crate::personal_data::erasure::erase_case;
use crate::store::{Order, Store, StoreError, Transaction};
use crate::workflow::definition::Workflow;
use crate::workflow::triggers::On;

use super::Engine;
use super::change::Change;
use super::drive::lost_race;
use super::start::start_record_key;

/// Notifications read from the feed at once while looking for an erased case's.
const FEED_PAGE: usize = 1000;
/// Start keys of a trigger tried per business key: one per case started under it before.
const START_KEYS: u32 = 16;
/// Ended cases read at once by the pass that schedules old cases' erasure.
const PASS_PAGE: usize = 500;
/// How soon an erasure that failed is tried again.
const RETRY: SignedDuration = SignedDuration::from_hours(1);

/// The statuses of an ended case.
const ENDED: [CaseStatus; 4] = [
    CaseStatus::Completed,
    CaseStatus::PartiallyCompleted,
    CaseStatus::Rejected,
    CaseStatus::Cancelled,
];

/// What a data subject's erasure request did to one case.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Erased {
    pub case_id: String,
    pub workflow: String,
    /// `erased`, `already_erased`, or `kept`.
    pub outcome: &'static str,
    /// Why a case was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl<S: Store + Clone> Engine<S> {
    /// In the commit that ends a case: when its personal data is erased, and the timer.
    pub(super) fn mark_retention(&self, change: &mut Change) {
        let ended = change
            .tx
            .events
            .iter()
            .any(|(_, e)| matches!(e.kind, EventKind::CaseFinished { .. }));
        if !ended || change.case.retention.erased_at.is_some() {
            return;
        }
        let Some(wf) = self
            .definitions()
            .workflow(&change.case.workflow, Some(change.case.version))
        else {
            return;
        };
        if let Some(at) = erase_at(&wf, change.case.finished_at.unwrap_or(change.now)) {
            change.case.retention.erase_at = Some(at);
            change.set_timer(TimerKind::Erasure, at);
        }
    }

    /// The erasure timer fired: the case erased, unless it runs again (an operator re-ran a
    /// refused step: it is erased when it ends anew). A failed erasure is tried again later.
    pub(super) async fn erase_on_timer(
        &self,
        change: &mut Change,
        wf: &Workflow,
    ) -> Result<(), StoreError> {
        if change.case.status == CaseStatus::Running || change.case.retention.erased_at.is_some() {
            return Ok(());
        }
        let why = wf.retention.as_ref().map_or_else(
            || "its retention ended".to_owned(),
            |r| format!("its retention of {} days ended: {}", r.days, r.legal_basis),
        );
        if let Err(e) = self
            .erase(change, wf, "retention", "civicflow", Some(why))
            .await
        {
            tracing::error!(case_id = %change.case.id, trace_id = %change.case.id.simple(), error = %e, "a case's personal data could not be erased; trying again in an hour");
            change.set_timer(TimerKind::Erasure, change.now + RETRY);
        }
        Ok(())
    }

    /// Erases the case of `change` in it: its record now, and into its transaction its
    /// history, its notifications on the feed and its idempotency records naming a person.
    async fn erase(
        &self,
        change: &mut Change,
        wf: &Workflow,
        why: &str,
        by: &str,
        reason: Option<String>,
    ) -> Result<(), EraseError> {
        let id = change.case.id;
        let keys = self.start_keys(wf, &change.case).await?;
        let history = self.store.history(id, 0, usize::MAX).await?;
        let mut feed = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.feed(after, FEED_PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            feed.extend(page.into_iter().filter(|(_, n)| n.case_id == id));
        }
        let mut eraser = erase_case(&self.config.pseudonyms, wf, &mut change.case);
        let history = eraser
            .history(wf, &history)
            .map_err(EraseError::Unreadable)?;
        change.tx.rewrite_events = history.into_iter().map(|e| (id, e)).collect();
        change.tx.rewrite_notifications = feed
            .iter()
            .map(|(pos, n)| (*pos, eraser.notification(wf, n)))
            .collect();
        change.tx.delete_idempotency = keys;
        change.case.retention.erased_at = Some(change.now);
        change.clear_timer(TimerKind::Erasure);
        change.event(EventKind::PersonalDataErased {
            why: why.to_owned(),
            by: by.to_owned(),
            reason,
        });
        Ok(())
    }

    /// The keys of the idempotency records that started this case from an event under a
    /// business key (`start:trigger:<workflow>:<key>=<value>:<n>`): they name the person.
    async fn start_keys(&self, wf: &Workflow, case: &Case) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        for trigger in &wf.triggers {
            let On::Event(on) = &trigger.on else { continue };
            let Some(name) = &on.key else { continue };
            let Some(value) = case.business_keys.get(name) else {
                continue;
            };
            for n in 0..START_KEYS {
                let key = start_record_key(&format!("trigger:{}:{name}={value}:{n}", wf.name));
                if let Some(record) = self.store.idempotency(&key).await?
                    && matches!(record.made, Made::Case { case_id } if case_id == case.id)
                {
                    found.push(key);
                }
            }
        }
        Ok(found)
    }

    /// A data subject's request: every ended case under one of the person's business keys is
    /// erased now; a running one is kept (its procedure still needs the data, under the law
    /// that allows it), and erased when its retention is up after it ends.
    pub async fn erase_subject(
        self: &Arc<Self>,
        personal_id: &str,
        by: &str,
        reason: &str,
    ) -> Result<Vec<Erased>, StoreError> {
        let defs = self.definitions();
        let names: std::collections::BTreeSet<&str> = defs
            .workflows()
            .flat_map(|wf| wf.business_keys.iter().map(|(k, _)| k.as_str()))
            .collect();
        let pseudonym = self.pseudonym(personal_id);
        // The request itself is logged first, whatever it finds to erase.
        let request = Transaction {
            audit: vec![crate::audit::Record::Erasure {
                case_id: None,
                subject: Some(pseudonym.clone()),
                why: "request".to_owned(),
                by: by.to_owned(),
                reason_hash: Some(crate::audit::entry::text_hash(reason)),
            }],
            ..Transaction::default()
        };
        self.store.commit(&request).await?;
        let mut ids = std::collections::BTreeSet::new();
        for name in names {
            for value in [personal_id, pseudonym.as_str()] {
                let entry = format!("{name}={value}");
                let mut cursor = None;
                loop {
                    let page = self
                        .store
                        .cases_by(index::KEY, &entry, cursor, Order::Ascending, PASS_PAGE)
                        .await?;
                    ids.extend(page.ids);
                    match page.next {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
            }
        }
        let mut report = Vec::new();
        for id in ids {
            if let Some(done) = self.erase_on_request(id, by, reason).await? {
                report.push(done);
            }
        }
        Ok(report)
    }

    async fn erase_on_request(
        self: &Arc<Self>,
        id: CaseId,
        by: &str,
        reason: &str,
    ) -> Result<Option<Erased>, StoreError> {
        let began = std::time::Instant::now();
        let mut lock = self.locks.lock(id).await;
        let mut round = 0;
        loop {
            round += 1;
            let Some(case) = lock.load(&self.store).await? else {
                return Ok(None);
            };
            let outcome = |outcome, why: Option<String>| Erased {
                case_id: case.id.to_string(),
                workflow: case.workflow.clone(),
                outcome,
                why,
            };
            if case.retention.erased_at.is_some() {
                return Ok(Some(outcome("already_erased", None)));
            }
            if case.status == CaseStatus::Running {
                let why = "it is running: its procedure needs the data under the law it is processed by; it is erased when its retention is up after it ends";
                return Ok(Some(outcome("kept", Some(why.to_owned()))));
            }
            let wf = match self.workflow_for(&case).await {
                Ok(wf) => wf,
                Err(e) => return Ok(Some(outcome("kept", Some(e.to_string())))),
            };
            let done = outcome("erased", None);
            let rev = case.rev;
            let mut change = Change::new(case, Some(rev), self.config.clock.now(), began);
            match self
                .erase(&mut change, &wf, "request", by, Some(reason.to_owned()))
                .await
            {
                Ok(()) => {}
                Err(EraseError::Store(e)) => return Err(e),
                Err(EraseError::Unreadable(why)) => {
                    return Ok(Some(Erased {
                        outcome: "kept",
                        why: Some(why),
                        ..done
                    }));
                }
            }
            match self.commit(change).await {
                Err(e) if lost_race(&e, round) => continue,
                Err(e) => return Err(e),
                Ok(_) => return Ok(Some(done)),
            }
        }
    }

    /// When a node starts: every ended case whose workflow has a retention and that has no
    /// erasure time yet (it ended before the retention existed) gets one, and its timer; one
    /// whose time is past is erased at once by it.
    pub async fn schedule_old_erasures(self: &Arc<Self>) -> Result<u64, StoreError> {
        let mut scheduled = 0;
        for status in ENDED {
            let mut cursor = None;
            loop {
                if self.stopping() {
                    return Ok(scheduled);
                }
                let page = self
                    .store
                    .cases_by(
                        index::STATUS,
                        status.as_str(),
                        cursor,
                        Order::Ascending,
                        PASS_PAGE,
                    )
                    .await?;
                for id in page.ids {
                    if self.schedule_erasure(id).await? {
                        scheduled += 1;
                    }
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok(scheduled)
    }

    async fn schedule_erasure(self: &Arc<Self>, id: CaseId) -> Result<bool, StoreError> {
        let began = std::time::Instant::now();
        let mut lock = self.locks.lock(id).await;
        let mut round = 0;
        loop {
            round += 1;
            let Some(case) = lock.load(&self.store).await? else {
                return Ok(false);
            };
            if case.status == CaseStatus::Running
                || case.retention.erase_at.is_some()
                || case.retention.erased_at.is_some()
            {
                return Ok(false);
            }
            let Ok(wf) = self.workflow_of(&case) else {
                return Ok(false);
            };
            let Some(at) = erase_at(&wf, case.finished_at.unwrap_or(case.started_at)) else {
                return Ok(false);
            };
            let rev = case.rev;
            let mut change = Change::new(case, Some(rev), self.config.clock.now(), began);
            change.case.retention.erase_at = Some(at);
            change.set_timer(TimerKind::Erasure, at);
            match self.commit(change).await {
                Err(e) if lost_race(&e, round) => continue,
                Err(e) => return Err(e),
                Ok(_) => return Ok(true),
            }
        }
    }
}

/// When the personal data of a case of `wf` that ended at `ended` is erased; `None` if the
/// workflow keeps it.
fn erase_at(wf: &Workflow, ended: Timestamp) -> Option<Timestamp> {
    let days = wf.retention.as_ref()?.days;
    ended
        .checked_add(SignedDuration::from_hours(24 * i64::from(days)))
        .ok()
}

#[derive(Debug, thiserror::Error)]
enum EraseError {
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
