//! Group commit on this side of the connection: commits that arrive together share one
//! PostgreSQL transaction (and so one round trip, one commit record and one WAL flush), as
//! the embedded store's writer groups its commits.
//!
//! As many workers as the pool has connections take the commits waiting, up to [`MAX_BATCH`]
//! at a time (one, when only one waits: no commit waits for others to come), and apply them
//! together. A configuration change goes alone, and two commits that depend on the same case,
//! key or claim go to different batches. If one commit of a batch fails its check, it alone is
//! answered with the error and the others are applied again without it; if the database fails
//! a batch for another reason, each commit is tried alone, so one bad commit fails only itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::commit::{Encoded, Failed, apply};
use super::open::{Counters, Place};
use crate::store::{Grouping, StoreError};

/// The most commits one transaction carries.
const MAX_BATCH: usize = 64;
/// The most commits waiting for a worker; more wait to be queued.
pub(super) const QUEUE: usize = 4096;

/// A commit waiting for a worker, and where its outcome goes.
pub(super) type Pending = (Encoded, oneshot::Sender<Result<(), StoreError>>);

/// What the workers share: the connections, and what to count.
#[derive(Clone)]
pub(super) struct Workers {
    pub(super) pool: deadpool_postgres::Pool,
    pub(super) place: Place,
    pub(super) counters: Arc<Counters>,
}

impl Workers {
    /// Starts `n` workers on the queue; they stop when every sender is gone.
    pub(super) fn start(self, n: usize) -> mpsc::Sender<Pending> {
        let (sender, queue) = mpsc::channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..n.max(1) {
            let (workers, queue) = (self.clone(), queue.clone());
            tokio::spawn(async move { workers.work(&queue).await });
        }
        sender
    }

    async fn work(&self, queue: &Mutex<mpsc::Receiver<Pending>>) {
        let mut carried: Option<Pending> = None;
        loop {
            let (batch, next) = match carried.take() {
                // A commit left over from the last batch does not wait for the queue: another
                // worker may hold it, waiting for commits that are not coming.
                Some(first) => match queue.try_lock() {
                    Ok(mut queue) => gather(first, &mut queue),
                    Err(_) => (vec![first], None),
                },
                None => {
                    let mut queue = queue.lock().await;
                    let Some(first) = queue.recv().await else {
                        return;
                    };
                    gather(first, &mut queue)
                }
            };
            carried = next;
            self.run(batch).await;
        }
    }

    /// Applies `batch`, answering every commit of it.
    async fn run(&self, mut batch: Vec<Pending>) {
        while !batch.is_empty() {
            let mut client = match self.pool.get().await {
                Ok(c) => c,
                Err(e) => {
                    let e = self.place.pool_error(e);
                    for (_, answer) in batch {
                        let _ = answer.send(Err(copy(&e)));
                    }
                    return;
                }
            };
            self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
            self.counters.transactions.fetch_add(1, Ordering::Relaxed);
            let encoded: Vec<&Encoded> = batch.iter().map(|(e, _)| e).collect();
            match apply(&mut client, &self.place, &encoded).await {
                Ok(()) => {
                    self.counters.groups.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .committed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for (_, answer) in batch {
                        let _ = answer.send(Ok(()));
                    }
                    return;
                }
                Err(Failed::Check(at, e)) => {
                    let (_, answer) = batch.remove(at);
                    let _ = answer.send(Err(e));
                }
                // Never applied again: the batch may be in the database already.
                Err(Failed::Unknown(e)) => {
                    for (_, answer) in batch {
                        let _ = answer.send(Err(copy(&e)));
                    }
                    return;
                }
                Err(Failed::Other(e)) if batch.len() == 1 => {
                    let (_, answer) = batch.remove(0);
                    let _ = answer.send(Err(e));
                }
                Err(Failed::Other(_)) => {
                    drop(client);
                    for pending in batch {
                        Box::pin(self.run(vec![pending])).await;
                    }
                    return;
                }
            }
        }
    }
}

/// A batch starting with `first`, and the commits waiting that may join it: up to the first
/// that may not (returned apart, for the next batch).
fn gather(first: Pending, queue: &mut mpsc::Receiver<Pending>) -> (Vec<Pending>, Option<Pending>) {
    let alone = first.0.alone();
    let mut grouping = Grouping::default();
    grouping.join(&first.0.checked);
    let mut batch = vec![first];
    while !alone && batch.len() < MAX_BATCH {
        let Ok(next) = queue.try_recv() else { break };
        if next.0.alone() || !grouping.join(&next.0.checked) {
            return (batch, Some(next));
        }
        batch.push(next);
    }
    (batch, None)
}

/// The same error again, for another commit of the batch.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io { path, detail } => StoreError::Io {
            path: path.clone(),
            detail: detail.clone(),
        },
        StoreError::Unavailable { path, detail } => StoreError::Unavailable {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => StoreError::Io {
            path: "the database".to_owned(),
            detail: other.to_string(),
        },
    }
}
