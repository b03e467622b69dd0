//! Agency exchanges in the audit log: each call's X-Road ids, the hashes of its request and
//! reply, its times and what the reply meant, logged in the commit that records the reply (so
//! no answer the case acted on is missing from the log), or on its own when the reply came
//! too late to be used.

use jiff::Timestamp;

use super::Engine;
use crate::adapters::http::{Metadata, Sent};
use crate::audit::Record;
use crate::case::CaseId;
use crate::store::{Store, StoreError, Transaction};

/// One call and what came back.
pub(super) struct Exchanged<'a> {
    pub case_id: CaseId,
    pub step: &'a str,
    pub attempt: u32,
    pub poll: bool,
    pub meta: &'a Metadata,
    pub sent: &'a Sent,
}

impl Exchanged<'_> {
    /// The log's record of it, `outcome` being what the reply meant.
    pub fn record(&self, outcome: &str, answered_at: Timestamp) -> Record {
        Record::Exchange {
            case_id: self.case_id,
            step: self.step.to_owned(),
            attempt: self.attempt,
            poll: self.poll,
            client: self.meta.client.clone(),
            service: self.meta.service.clone(),
            message_id: self.meta.message_id.clone(),
            user: self.meta.user.clone(),
            request_hash: self.sent.request_hash.clone(),
            echoed_request_hash: self.sent.reply.echoed().map(str::to_owned),
            reply_hash: self.sent.reply_hash.clone(),
            status: self.sent.reply.status(),
            outcome: outcome.to_owned(),
            sent_at: self.sent.sent_at,
            answered_at,
        }
    }
}

impl<S: Store + Clone> Engine<S> {
    /// Logs an exchange no case change records: a reply the step had moved on from, a trial.
    pub(super) async fn log_exchange(
        &self,
        exchanged: Exchanged<'_>,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let tx = Transaction {
            audit: vec![exchanged.record(outcome, Timestamp::now())],
            ..Transaction::default()
        };
        self.store.commit(&tx).await
    }
}
