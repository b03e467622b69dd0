//! Agency exchanges in the audit log: each call's X-Road ids, the hashes of its request and
//! reply, its times and what the reply meant, logged in the commit that records the reply (so
//! no answer the case acted on is missing from the log), or on its own when the reply came
//! too late to be used.

use jiff::Timestamp;

use super::Engine;
use crate::adapters::http::{Metadata, Sent};
use crate::audit::Record;
use crate::audit::entry::Call;
use crate::case::CaseId;
use crate::store::{Store, StoreError, Transaction};

/// A call as the audit log names it: the X-Road ids `meta` sends it with, and the hash of its
/// request.
pub(super) fn named(
    meta: &Metadata,
    case_id: CaseId,
    step: &str,
    attempt: u32,
    poll: bool,
    request_hash: String,
) -> Call {
    Call {
        case_id,
        step: step.to_owned(),
        attempt,
        poll,
        client: meta.client.clone(),
        service: meta.service.clone(),
        message_id: meta.message_id.clone(),
        user: meta.user.clone(),
        request_hash,
    }
}

/// One call and what came back.
pub(super) struct Exchanged<'a> {
    pub call: Call,
    pub sent: &'a Sent,
}

impl Exchanged<'_> {
    /// The log's record of it, `outcome` being what the reply meant.
    pub fn record(&self, outcome: &str, answered_at: Timestamp) -> Record {
        Record::Exchange {
            call: self.call.clone(),
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
