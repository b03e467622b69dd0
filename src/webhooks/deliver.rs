//! The deliverer: one loop that posts each webhook what lies after its cursor, in order, and
//! moves the cursor when the receiver acknowledges. Each webhook's turn runs in its own task, so
//! a slow or unreachable receiver holds back only its own notifications.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::{Webhook, signature};
use crate::store::{Store, StoreError, Transaction};

/// The longest wait between two tries of a failing receiver.
const RETRY_CAP: Duration = Duration::from_secs(300);
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Notifications posted to one webhook per turn.
const BATCH: usize = 100;
/// How often the feed is looked at for a webhook that had nothing to deliver.
const IDLE: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Deliverer<S> {
    store: S,
    http: reqwest::Client,
    /// Webhook id → when it may be served again: after a failure, its backoff; after a turn
    /// with nothing to send, the idle interval. In memory only: after a restart every receiver
    /// is tried at once, which is what an operator restarting expects.
    not_before: HashMap<String, Instant>,
    /// The turns running now, one per webhook at most (`busy`), so each receiver gets its
    /// notifications in order.
    turns: JoinSet<Turn>,
    busy: HashSet<String>,
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
            turns: JoinSet::new(),
            busy: HashSet::new(),
            trimmed: 0,
        }
    }

    /// Delivers until the task is aborted (which aborts the turns running with it).
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.start_turns().await {
                    tracing::error!(error = %e, "webhook delivery cannot read the store");
                }
                // Until a turn ends (its webhook may have more) or the idle interval passes.
                tokio::select! {
                    Some(ended) = self.turns.join_next() => self.ended(ended),
                    () = tokio::time::sleep(IDLE) => {}
                }
            }
        })
    }

    /// Starts a turn for every webhook that is not in one, nor waiting; then trims what every
    /// webhook has from the feed.
    async fn start_turns(&mut self) -> Result<(), StoreError> {
        let hooks = self.store.webhooks().await?;
        let now = Instant::now();
        for hook in &hooks {
            let waiting = self.not_before.get(&hook.id).is_some_and(|t| *t > now);
            if waiting || !self.busy.insert(hook.id.clone()) {
                continue;
            }
            let (store, http) = (self.store.clone(), self.http.clone());
            self.turns.spawn(turn(store, http, hook.clone()));
        }
        self.not_before
            .retain(|id, _| hooks.iter().any(|h| h.id == *id));
        // The stored cursors lag behind a turn in progress, never ahead: trimming below the
        // smallest loses nothing a webhook still needs.
        let upto = match hooks.iter().map(|h| h.cursor).min() {
            Some(c) => c,
            None => self.store.feed_end().await?,
        };
        if upto > self.trimmed {
            self.store.trim_feed(upto).await?;
            self.trimmed = upto;
        }
        Ok(())
    }

    fn ended(&mut self, ended: Result<Turn, JoinError>) {
        let Turn { id, next } = ended.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.busy.remove(&id);
        let next = next.unwrap_or_else(|e| {
            tracing::error!(webhook = %id, error = %e, "webhook delivery cannot use the store");
            Some(Instant::now() + IDLE)
        });
        match next {
            Some(at) => self.not_before.insert(id, at),
            None => self.not_before.remove(&id),
        };
    }
}

/// How one webhook's turn ended: when the webhook may be served again (`None`: at once, as
/// it may have more to send).
struct Turn {
    id: String,
    next: Result<Option<Instant>, StoreError>,
}

async fn turn<S: Store>(store: S, http: reqwest::Client, hook: Webhook) -> Turn {
    Turn {
        id: hook.id.clone(),
        next: deliver(&store, &http, hook).await,
    }
}

/// Posts the next notifications of one webhook, in order, up to the first failure, and
/// records how far it got.
async fn deliver<S: Store>(
    store: &S,
    http: &reqwest::Client,
    mut hook: Webhook,
) -> Result<Option<Instant>, StoreError> {
    let entries = store.feed(hook.cursor, BATCH).await?;
    if entries.is_empty() {
        return Ok(Some(Instant::now() + IDLE));
    }
    let mut next = None;
    for (seq, notification) in entries {
        let mut body = json!(notification);
        body["id"] = json!(seq.to_string());
        let body = body.to_string();
        let t = Timestamp::now().as_second();
        let sent = http
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
                next = Some(Instant::now() + backoff(hook.failures));
                break;
            }
        }
    }
    let tx = Transaction {
        update_webhooks: vec![hook],
        ..Transaction::default()
    };
    store.commit(&tx).await?;
    Ok(next)
}

/// Exponential backoff, capped, with jitter (half to all of the step) so that many failing
/// receivers do not retry in step.
fn backoff(failures: u32) -> Duration {
    let ceiling = FIRST_RETRY
        .saturating_mul(1 << failures.min(16))
        .min(RETRY_CAP);
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}
