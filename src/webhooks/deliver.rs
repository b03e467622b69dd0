//! The deliverer: one loop that posts each webhook what lies after its cursor, in order, and
//! moves the cursor when the receiver acknowledges.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio::time::Instant;

use super::{Webhook, signature};
use crate::store::{Store, StoreError, Transaction};

/// The longest wait between two tries of a failing receiver.
const RETRY_CAP: Duration = Duration::from_secs(300);
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Notifications posted to one webhook per round.
const BATCH: usize = 100;
/// How often the feed is looked at when there was nothing to deliver.
const IDLE: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Deliverer<S> {
    store: S,
    http: reqwest::Client,
    /// Webhook id → when its receiver may be tried again. In memory only: after a restart
    /// every receiver is tried at once, which is what an operator restarting expects.
    not_before: HashMap<String, Instant>,
    /// The feed is trimmed up to here already: it is trimmed again only when this moves.
    trimmed: u64,
}

impl<S: Store + Clone> Deliverer<S> {
    pub fn new(store: S) -> Deliverer<S> {
        Deliverer {
            store,
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .expect("the HTTP client builds with default TLS-less settings"),
            not_before: HashMap::new(),
            trimmed: 0,
        }
    }

    /// Delivers until the task is aborted.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.round().await {
                    Ok(true) => {}
                    Ok(false) => tokio::time::sleep(IDLE).await,
                    Err(e) => {
                        tracing::error!(error = %e, "webhook delivery cannot read the store");
                        tokio::time::sleep(IDLE).await;
                    }
                }
            }
        })
    }

    /// One pass over every webhook; whether anything was delivered.
    async fn round(&mut self) -> Result<bool, StoreError> {
        let hooks = self.store.webhooks().await?;
        let mut delivered = false;
        let now = Instant::now();
        for hook in &hooks {
            if self.not_before.get(&hook.id).is_some_and(|t| *t > now) {
                continue;
            }
            delivered |= self.deliver(hook.clone()).await?;
        }
        self.not_before
            .retain(|id, _| hooks.iter().any(|h| h.id == *id));
        // What every webhook has is no longer needed.
        let upto = match hooks.iter().map(|h| h.cursor).min() {
            Some(c) => c,
            None => self.store.feed_end().await?,
        };
        if upto > self.trimmed {
            self.store.trim_feed(upto).await?;
            self.trimmed = upto;
        }
        Ok(delivered)
    }

    /// Posts the next notifications of one webhook, in order, up to the first failure.
    async fn deliver(&mut self, mut hook: Webhook) -> Result<bool, StoreError> {
        let entries = self.store.feed(hook.cursor, BATCH).await?;
        if entries.is_empty() {
            return Ok(false);
        }
        let before = hook.cursor;
        for (seq, notification) in entries {
            let mut body = json!(notification);
            body["id"] = json!(seq.to_string());
            let body = body.to_string();
            let t = Timestamp::now().as_second();
            let sent = self
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("civicflow-event-id", seq.to_string())
                .header(
                    "civicflow-signature",
                    signature(&hook.secret, t, body.as_bytes()),
                )
                .body(body)
                .send()
                .await;
            let error = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("the receiver answered {}", r.status())),
                Err(e) => Some(format!("the receiver cannot be reached: {e}")),
            };
            match error {
                None => {
                    hook.cursor = seq;
                    hook.failures = 0;
                    hook.last_error = None;
                    hook.last_delivered_at = Some(Timestamp::now());
                }
                Some(e) => {
                    hook.failures += 1;
                    tracing::warn!(webhook = %hook.id, url = %hook.url, error = %e, failures = hook.failures, "a notification was not acknowledged; it will be sent again");
                    hook.last_error = Some(e);
                    self.not_before
                        .insert(hook.id.clone(), Instant::now() + backoff(hook.failures));
                    break;
                }
            }
        }
        let delivered = hook.cursor > before;
        let tx = Transaction {
            update_webhooks: vec![hook],
            ..Transaction::default()
        };
        self.store.commit(&tx).await?;
        Ok(delivered)
    }
}

/// Exponential backoff, capped, with jitter (half to all of the step) so that many failing
/// receivers do not retry in step.
fn backoff(failures: u32) -> Duration {
    let ceiling = FIRST_RETRY
        .saturating_mul(1 << failures.min(16))
        .min(RETRY_CAP);
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}
