//! `adapters test`: one request built from a manifest and sent to the agency (or a sandbox),
//! with its answer classified as a step would see it, and no case touched.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::Engine;
use super::exchanges::Exchanged;
use crate::adapters::http::{self, Metadata, Outcome, Sender, build};
use crate::store::{Store, StoreError};
use crate::workflow::definition::{Adapter, SchemaViolation};
use crate::workflow::expr::Input;

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("the sample input does not match the adapter's input schema")]
    InvalidInput(Vec<SchemaViolation>),
    #[error("agency `{0}` has no base URL here; give `base_url` (a sandbox, say)")]
    NoBaseUrl(String),
    #[error("the request cannot be built: {0}")]
    Request(String),
    #[error("the exchange could not be logged: {0}")]
    Store(#[from] StoreError),
}

impl<S: Store + Clone> Engine<S> {
    /// Sends `adapter`'s request for `input` to `base_url` (default: the agency's configured
    /// URL) and classifies the answer. The idempotency key is fresh, so a real agency acts:
    /// point it at a sandbox for anything but a read.
    pub async fn try_adapter(
        &self,
        adapter: &Adapter,
        input: &Value,
        base_url: Option<&str>,
    ) -> Result<Value, TrialError> {
        let violations = adapter.input.violations(input);
        if !violations.is_empty() {
            return Err(TrialError::InvalidInput(violations));
        }
        let base = match base_url {
            Some(b) => b.to_owned(),
            None => self
                .config
                .agencies
                .get(&adapter.agency)
                .cloned()
                .ok_or_else(|| TrialError::NoBaseUrl(adapter.agency.clone()))?,
        };
        let trial = uuid::Uuid::now_v7();
        let key = format!("trial:{trial}");
        let now = Timestamp::now();
        let ctx = json!({
            "input": input,
            "case": {
                "id": trial.to_string(),
                "workflow": "adapter-trial",
                "version": 0,
                "started_on": now.to_zoned(crate::calendar::vietnam_time()).date().to_string(),
                "started_at": now.to_string(),
            },
            "step": {"id": "trial", "attempt": 1, "idempotency_key": key},
            "callback": {"url": format!("{}/v1/callbacks/trial-{trial}", self.config.public_url)},
        });
        let request = build(adapter, &base, &Input::new(&ctx)).map_err(TrialError::Request)?;
        let sender = Sender {
            client: &self.config.xroad_client,
            adapter: &adapter.reference,
            user: None,
        };
        let meta = Metadata::new(trial, key, uuid::Uuid::new_v4().to_string(), sender);
        let sent = http::send(
            &self.http,
            adapter.method,
            &request.url,
            &request.headers,
            request.body.as_ref(),
            &meta,
            adapter.timeout,
        )
        .await;
        let reply = &sent.reply;
        let classified = http::classify(&adapter.reply, &adapter.output, reply);
        let call =
            super::exchanges::named(&meta, trial, "trial", 1, false, sent.request_hash.clone());
        let exchanged = Exchanged { call, sent: &sent };
        self.log_exchange(exchanged, classified.class()).await?;
        let outcome = match classified {
            Outcome::Success(output) => json!({"outcome": "success", "output": output}),
            Outcome::Rejected {
                reason_code,
                message,
            } => json!({"outcome": "rejected", "reason_code": reason_code, "message": message}),
            Outcome::Pending => json!({
                "outcome": "pending",
                "message": match adapter.mode {
                    crate::workflow::spec::Mode::Poll => "accepted; a case would poll the status URL",
                    _ => "accepted; a case would wait for the agency's callback",
                },
            }),
            Outcome::NeedsSupplement(missing) => {
                json!({"outcome": "needs_supplement", "missing": missing})
            }
            Outcome::Retryable { error, .. } => json!({"outcome": "retryable", "error": error}),
            Outcome::Unexpected(error) => json!({"outcome": "unexpected", "error": error}),
            Outcome::RequestHashMismatch(error) => {
                json!({"outcome": "request_hash_mismatch", "error": error})
            }
        };
        let mut out = outcome;
        out["request"] = json!({
            "method": adapter.method.as_str(),
            "url": request.url,
            "body": request.body,
            "request_hash": sent.request_hash,
        });
        out["reply"] = reply.context().clone();
        Ok(out)
    }
}
