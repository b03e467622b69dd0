//! Consents and the cases that wait for them. A consent recorded (or withdrawn) through the
//! portal is written first, then brought to every running case that needs it, found through the
//! `consent` index; a new case reads the consents it needs as it starts, and once more after its
//! first commit. Between the two writes (the record, the case's index entry) and the two reads
//! (the index, the record) one of them always sees the other, so no case misses a consent.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;

use crate::case::consents::Held;
use crate::case::{CaseConsents, CaseId, CaseStatus, StepStatus, index};
use crate::personal_data::{ConsentRecord, consent_key};
use crate::store::{Order, Store, StoreError, Transaction};
use crate::workflow::definition::Workflow;
use crate::workflow::expr::{Input, Part};
use crate::workflow::spec::GivenAs;
use crate::workflow::triggers::match_value;

use super::Engine;
use super::change::Change;
use super::drive::lost_race;

/// The most running cases one consent reaches at once; a person's dossiers are few.
const MAX_REACHED: usize = 1000;

/// A consent as the portal records it.
#[derive(Debug, Clone)]
pub struct ConsentGiven {
    /// The personal ID of who consents (kept only as its pseudonym).
    pub personal_id: String,
    pub agreement: String,
    pub given_as: GivenAs,
    pub given_at: Option<Timestamp>,
    pub evidence: Option<String>,
    pub by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("no consent of this person to agreement `{0}` is recorded")]
    NotRecorded(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<S: Store + Clone> Engine<S> {
    /// The pseudonym of a personal ID, as consents and erased cases name people.
    pub fn pseudonym(&self, personal_id: &str) -> String {
        self.config.pseudonyms.pseudonym(personal_id)
    }

    /// The consent records of a person.
    pub async fn consents_of(&self, personal_id: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        self.store.consents_of(&self.pseudonym(personal_id)).await
    }

    /// Records a consent, then brings it to the running cases that wait for it. The same consent
    /// recorded again (same capacity and evidence, the same time or none) is the record kept,
    /// unchanged: a portal's retry records nothing twice.
    pub async fn record_consent(
        self: &Arc<Self>,
        given: ConsentGiven,
    ) -> Result<(ConsentRecord, bool), ConsentError> {
        if self.stopping() {
            return Err(ConsentError::ShuttingDown);
        }
        let subject = self.pseudonym(&given.personal_id);
        let now = self.config.clock.now();
        let kept = self.find(&subject, &given.agreement).await?;
        if let Some(kept) = kept.filter(|k| {
            k.is_given()
                && k.given_as == given.given_as
                && given.given_at.is_none_or(|at| at == k.given_at)
                && k.evidence == given.evidence
        }) {
            self.reach_cases(&kept).await?;
            return Ok((kept, false));
        }
        let record = ConsentRecord {
            id: format!("cns_{}", uuid::Uuid::now_v7().simple()),
            agreement: given.agreement,
            subject,
            given_as: given.given_as,
            given_at: given.given_at.unwrap_or(now),
            recorded_at: now,
            recorded_by: given.by,
            evidence: given.evidence,
            withdrawn_at: None,
            withdrawal_reason: None,
        };
        self.put(&record).await?;
        self.reach_cases(&record).await?;
        Ok((record, true))
    }

    /// Withdraws a person's consent to an agreement: no exchange under it is sent from now on.
    pub async fn withdraw_consent(
        self: &Arc<Self>,
        personal_id: &str,
        agreement: &str,
        reason: String,
    ) -> Result<ConsentRecord, ConsentError> {
        if self.stopping() {
            return Err(ConsentError::ShuttingDown);
        }
        let subject = self.pseudonym(personal_id);
        let mut record = self
            .find(&subject, agreement)
            .await?
            .ok_or_else(|| ConsentError::NotRecorded(agreement.to_owned()))?;
        if record.is_given() {
            record.withdrawn_at = Some(self.config.clock.now());
            record.withdrawal_reason = Some(reason);
            self.put(&record).await?;
        }
        self.reach_cases(&record).await?;
        Ok(record)
    }

    async fn find(
        &self,
        subject: &str,
        agreement: &str,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        Ok(self
            .store
            .consents_of(subject)
            .await?
            .into_iter()
            .find(|r| r.agreement == agreement))
    }

    /// Writes `record`, and logs it given or withdrawn in the audit log.
    async fn put(&self, record: &ConsentRecord) -> Result<(), StoreError> {
        let action = if record.is_given() {
            "given"
        } else {
            "withdrawn"
        };
        let tx = Transaction {
            put_consents: vec![record.clone()],
            audit: vec![crate::audit::Record::Consent {
                action: action.to_owned(),
                subject: record.subject.clone(),
                agreement: record.agreement.clone(),
                consent_id: record.id.clone(),
                by: record.recorded_by.clone(),
            }],
            ..Transaction::default()
        };
        self.store.commit(&tx).await
    }

    /// Brings `record` to every running case that needs it.
    async fn reach_cases(self: &Arc<Self>, record: &ConsentRecord) -> Result<(), StoreError> {
        let page = self
            .store
            .cases_by(
                index::CONSENT,
                &record.key(),
                None,
                Order::Ascending,
                MAX_REACHED,
            )
            .await?;
        for id in page.ids {
            self.deliver_consent(id, record).await?;
        }
        Ok(())
    }

    /// Case `id`'s copy of the consent follows `record`; waiting steps go on.
    pub(super) async fn deliver_consent(
        self: &Arc<Self>,
        id: CaseId,
        record: &ConsentRecord,
    ) -> Result<(), StoreError> {
        let received = std::time::Instant::now();
        let mut lock = self.locks.lock(id).await;
        let mut round = 0;
        loop {
            round += 1;
            let Some(case) = lock.load(&self.store).await? else {
                return Ok(());
            };
            if case.status != CaseStatus::Running {
                return Ok(());
            }
            let Ok(wf) = self.workflow_for(&case).await else {
                return Ok(());
            };
            let rev = case.rev;
            let mut change = Change::new(case, Some(rev), self.config.clock.now(), received);
            if !self.decide.consent_changed(&wf, &mut change, record) {
                return Ok(());
            }
            match self.finish_change(&wf, change, &mut lock).await {
                Err(e) if lost_race(&e, round) => continue,
                done => return done,
            }
        }
    }

    /// The consent check timer fired: the records a waiting step needs, read again and
    /// brought to the case; the timer set again while a step still waits.
    pub(super) async fn recheck_waiting(
        &self,
        wf: &Workflow,
        change: &mut Change,
    ) -> Result<(), StoreError> {
        let waiting = |change: &Change| -> Vec<String> {
            let mut keys: Vec<String> = change
                .case
                .consents
                .needs
                .iter()
                .filter(|(step, _)| {
                    change
                        .case
                        .steps
                        .get(*step)
                        .is_some_and(|s| s.status == StepStatus::AwaitingConsent)
                })
                .map(|(_, key)| key.clone())
                .collect();
            keys.sort();
            keys.dedup();
            keys
        };
        for key in waiting(change) {
            let Some((agreement, subject)) = key.split_once(' ') else {
                continue;
            };
            if let Some(record) = self.find(subject, agreement).await? {
                self.decide.consent_changed(wf, change, &record);
            }
        }
        if !waiting(change).is_empty() {
            change.set_timer(
                crate::case::TimerKind::ConsentCheck,
                change.now + super::decide::CONSENT_RECHECK,
            );
        }
        Ok(())
    }

    /// A new case's consent needs (whose, for which agreement, from its input) and the records
    /// that allow them now.
    pub(super) async fn consents_at_start(
        &self,
        workflow: &Workflow,
        input: &Value,
    ) -> Result<CaseConsents, StoreError> {
        let mut consents = CaseConsents::default();
        {
            let context = Input::of(Part::Object(vec![("input", Part::Borrowed(input))]));
            for step in &workflow.steps {
                let Some(need) = step.exchange.as_ref().and_then(|e| e.consent.as_ref()) else {
                    continue;
                };
                let whose = need.from.eval_in(&context).ok();
                if let Some(personal_id) = whose.as_ref().and_then(match_value) {
                    let key = consent_key(&need.agreement, &self.pseudonym(&personal_id));
                    consents.needs.insert(step.id.clone(), key);
                }
            }
        }
        let keys: std::collections::BTreeSet<String> = consents.needs.values().cloned().collect();
        for key in keys {
            let Some((agreement, subject)) = key.split_once(' ') else {
                continue;
            };
            if let Some(record) = self.find(subject, agreement).await?
                && record.is_given()
            {
                let held = Held {
                    id: record.id,
                    given_as: record.given_as,
                };
                consents.held.insert(key, held);
            }
        }
        Ok(consents)
    }

    /// After a case's first commit: the consents it needs as they are now, brought to it if
    /// one was recorded or withdrawn while it started.
    pub(super) async fn recheck_consents(
        self: &Arc<Self>,
        id: CaseId,
        consents: &CaseConsents,
    ) -> Result<(), StoreError> {
        let mut seen = std::collections::BTreeSet::new();
        for key in consents.needs.values() {
            if !seen.insert(key) {
                continue;
            }
            let Some((agreement, subject)) = key.split_once(' ') else {
                continue;
            };
            let Some(record) = self.find(subject, agreement).await? else {
                continue;
            };
            let held = consents.held.get(key).map(|h| h.id.as_str());
            let current = record.is_given().then_some(record.id.as_str());
            if held != current {
                self.deliver_consent(id, &record).await?;
            }
        }
        Ok(())
    }
}
