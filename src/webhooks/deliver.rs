//! The deliverer: one loop that posts each webhook what lies after its cursor, in order, and
//! moves the cursor when the receiver acknowledges. Each webhook's turn runs in its own task, so
//! a slow or unreachable receiver holds back only its own notifications.
//!
//! With several nodes on one store, every node runs a deliverer, and a webhook's delivery is
//! claimed: one node at a time posts to it, under a lease it renews each turn, and moves the
//! cursor only under its claim. A node that stalls loses the webhook to another after the lease,
//! and its late cursor update is refused.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::{PublicOnly, Targets, Webhook, WebhookFormat, signature};
use crate::metrics::Metrics;
use crate::store::{FailureLog, Fence, Store, StoreError, Transaction, Work};

/// The longest wait between two tries of a failing receiver.
const RETRY_CAP: Duration = Duration::from_secs(300);
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Notifications posted to one webhook per turn.
const BATCH: usize = 100;
/// How often the feed is looked at for a webhook that had nothing to deliver.
const IDLE: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node waits before asking again for a webhook another node delivers.
const HELD_ELSEWHERE: Duration = Duration::from_secs(1);

pub struct Deliverer<S> {
    store: S,
    /// The node this deliverer claims webhooks for, and for how long.
    node: String,
    lease: Duration,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    targets: Targets,
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
    store_failures: FailureLog,
}

impl<S: Store + Clone> Deliverer<S> {
    /// A deliverer for `node`, whose claims on a webhook last `lease` without renewal. A turn
    /// posts no new notification after a third of the lease, so its cursor is committed well
    /// inside it.
    pub fn new(
        store: S,
        node: &str,
        lease: Duration,
        metrics: Arc<Metrics>,
        targets: Targets,
    ) -> Deliverer<S> {
        // No redirects: a receiver's redirect could point the POST at an address a
        // registration is refused (loopback, the metadata service), past the resolver's check;
        // a 3xx is a failure of the receiver like any other non-2xx.
        let mut http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if !targets.allow_internal {
            http = http.dns_resolver(Arc::new(PublicOnly));
        }
        Deliverer {
            store,
            metrics,
            targets,
            node: node.to_owned(),
            lease,
            http: http
                .build()
                .expect("the HTTP client builds with default TLS-less settings"),
            not_before: HashMap::new(),
            turns: JoinSet::new(),
            busy: HashSet::new(),
            trimmed: 0,
            store_failures: FailureLog::new(),
        }
    }

    /// Delivers until the task is aborted (which aborts the turns running with it).
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.start_turns().await
                    && !self.store_failures.absorbs("webhook delivery", &e)
                {
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
            let (store, http, metrics) =
                (self.store.clone(), self.http.clone(), self.metrics.clone());
            let targets = self.targets;
            let claim = Claim {
                node: self.node.clone(),
                lease: self.lease,
            };
            self.turns.spawn(turn(
                store,
                (http, metrics, targets),
                claim,
                hook.id.clone(),
            ));
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
        let Turn { id, next } = match ended {
            Ok(turn) => turn,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down, and this loop with it.
            Err(_) => return,
        };
        self.busy.remove(&id);
        let next = next.unwrap_or_else(|e| {
            if !self.store_failures.absorbs("webhook delivery", &e) {
                tracing::error!(webhook = %id, error = %e, "webhook delivery cannot use the store");
            }
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

/// Who claims a webhook's delivery, and for how long.
struct Claim {
    node: String,
    lease: Duration,
}

async fn turn<S: Store>(
    store: S,
    (http, metrics, targets): (reqwest::Client, Arc<Metrics>, Targets),
    claim: Claim,
    id: String,
) -> Turn {
    Turn {
        next: claimed_turn(&store, (&http, &metrics, targets), &claim, &id).await,
        id,
    }
}

/// Claims the webhook's delivery (or renews this node's claim) and delivers under it.
async fn claimed_turn<S: Store>(
    store: &S,
    http: (&reqwest::Client, &Metrics, Targets),
    claim: &Claim,
    id: &str,
) -> Result<Option<Instant>, StoreError> {
    let Some(epoch) = store.claim_webhook(&claim.node, id, claim.lease).await? else {
        return Ok(Some(Instant::now() + HELD_ELSEWHERE));
    };
    // Read after the claim: the cursor is where the previous holder left it.
    let Some(hook) = store.webhooks().await?.into_iter().find(|h| h.id == id) else {
        return Ok(None);
    };
    let fence = Fence {
        work: Work::Webhook(id.to_owned()),
        epoch,
    };
    match deliver(store, http, hook, fence, claim.lease / 3).await {
        Err(StoreError::Fenced { .. }) => Ok(Some(Instant::now() + HELD_ELSEWHERE)),
        next => next,
    }
}

/// Posts the next notifications of one webhook, in order, up to the first failure or the end
/// of the turn, and records how far it got under the claim `fence`.
async fn deliver<S: Store>(
    store: &S,
    (http, metrics, targets): (&reqwest::Client, &Metrics, Targets),
    mut hook: Webhook,
    fence: Fence,
    turn: Duration,
) -> Result<Option<Instant>, StoreError> {
    let entries = store.feed(hook.cursor, BATCH).await?;
    if entries.is_empty() {
        return Ok(Some(Instant::now() + IDLE));
    }
    // Checked once a turn: a URL written as an internal address is never posted to.
    let allowed = reqwest::Url::parse(&hook.url)
        .map_err(|e| e.to_string())
        .and_then(|u| targets.check_literal(&u).map_err(|e| e.to_string()));
    let began = Instant::now();
    let mut next = None;
    for (seq, notification) in entries {
        if began.elapsed() > turn {
            break;
        }
        let (body, media) = match hook.format {
            WebhookFormat::Civicflow if notification.kind == super::STARTED => {
                // Not part of civicflow's own shape: passed over.
                hook.cursor = seq;
                continue;
            }
            WebhookFormat::Civicflow => {
                let mut n = notification.clone();
                (n.event_seq, n.correlation_id, n.causation_id) = (None, None, None);
                let mut body = json!(n);
                body["id"] = json!(seq.to_string());
                (body.to_string(), "application/json")
            }
            WebhookFormat::Cloudevents => (
                super::cloud_event(&notification, seq).to_string(),
                "application/cloudevents+json",
            ),
        };
        let t = Timestamp::now().as_second();
        if let Err(e) = &allowed {
            hook.failures += 1;
            hook.last_error = Some(e.clone());
            next = Some(Instant::now() + backoff(hook.failures));
            break;
        }
        let sent = http
            .post(&hook.url)
            .header("content-type", media)
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
            Err(e) => Some(format!(
                "the receiver cannot be reached: {}",
                e.without_url()
            )),
        };
        match error {
            None => {
                let lag = Timestamp::now().duration_since(notification.at);
                metrics.webhook_delivered(lag.max(SignedDuration::ZERO).unsigned_abs());
                hook.cursor = seq;
                hook.failures = 0;
                hook.last_error = None;
                hook.last_delivered_at = Some(Timestamp::now());
            }
            Some(e) => {
                hook.failures += 1;
                // Not the URL: it may hold a secret of the portal's.
                tracing::warn!(webhook = %hook.id, error = %e, failures = hook.failures, "a notification was not acknowledged; it will be sent again");
                hook.last_error = Some(e);
                next = Some(Instant::now() + backoff(hook.failures));
                break;
            }
        }
    }
    let tx = Transaction {
        update_webhooks: vec![hook],
        fences: vec![fence],
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
