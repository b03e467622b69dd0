//! The writer and syncer threads: group commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::backup::Backups;
use super::claim_table::Claims;
use super::commit::{Numbers, Prepared, Tally};
use super::counters;
use super::journal;
use super::keys::TIMERS;
use super::open::{Live, Opened};
use super::write_stop::{WriteStop, probe};
use crate::store::{Grouping, StoreError};

/// A commit on its way to the writer, and where its outcome goes.
pub(super) type Pending = (Prepared, oneshot::Sender<Result<(), StoreError>>);

/// At most this many commits share one group and sync, so that a busy queue still gets answers.
const GROUP_MAX: usize = 1024;
/// How often a store whose writes stopped tries to write again.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How long an idle writer waits before it looks whether the syncer stopped writes.
const IDLE_LOOK: Duration = Duration::from_millis(100);
/// How long the old database may take to be let go of before it is opened again.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
const CLOSE_POLL: Duration = Duration::from_millis(50);

/// Answers waiting for the sync that makes their commits durable.
pub(super) type Answers = Vec<oneshot::Sender<Result<(), StoreError>>>;

/// The writer. It checks every waiting commit against the stored state and writes all that pass
/// as one group (see [`journal`]), then hands their answers to the syncer and goes on with the
/// next group while the disk syncs. A commit that depends on a case or key an earlier waiting
/// commit writes starts the next group instead, so that it is checked against that write.
///
/// A group that fails half-way, or a sync that fails, stops writes ([`write_stop`]): the
/// writer refuses every commit until a probe write succeeds, then opens the database again,
/// which completes the group from its journal entry if that reached the disk, or drops it whole.
pub(super) struct Writer {
    /// The data directory, where the probe file is written.
    pub(super) dir: PathBuf,
    /// The database in it.
    pub(super) path: PathBuf,
    pub(super) cache_bytes: u64,
    pub(super) live: Arc<RwLock<Option<Live>>>,
    pub(super) claims: Arc<Claims>,
    pub(super) backups: Arc<Backups>,
    pub(super) writes: Arc<WriteStop>,
    pub(super) durable: Arc<Durable>,
    pub(super) to_sync: mpsc::Sender<ToSync>,
    pub(super) tally: Tally,
}

/// Groups written, for the syncer: their answers, the numbering after them, and the database
/// to sync (the one they were written to).
pub(super) type ToSync = (Answers, Numbers, sled::Db);

impl Writer {
    pub(super) fn run(mut self, queue: &mpsc::Receiver<Pending>) {
        let mut carried: Option<Pending> = None;
        let mut group: u64 = 0;
        loop {
            if self.writes.is_down() {
                if let Some((_, answer)) = carried.take() {
                    let _ = answer.send(Err(self.writes.refuse()));
                }
                if !self.until_writable(queue) {
                    return;
                }
                continue;
            }
            // Waits a bounded time: a failed sync stops writes from the syncer's thread, and the
            // writer must then open the database again soon, even with no commit coming.
            let first = match carried.take() {
                Some(p) => p,
                None => match queue.recv_timeout(IDLE_LOOK) {
                    Ok(p) => p,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
            };
            let Some(live) = self.live.read().expect("live lock").clone() else {
                // Only while the database is opened again, which this thread does.
                let _ = first.1.send(Err(self.writes.refuse()));
                continue;
            };
            let waiting = std::iter::once(first).chain(queue.try_iter().take(GROUP_MAX - 1));
            let data = &live.data;
            let path = self.path.as_path();
            let mut writes = Vec::new();
            let mut counts = BTreeMap::new();
            let mut grouping = Grouping::default();
            let mut passed = Vec::new();
            for (prepared, answer) in waiting {
                if !grouping.join(&prepared.checked) {
                    carried = Some((prepared, answer));
                    break;
                }
                let tally = &mut self.tally;
                match prepared.check_into(data, path, &self.claims, &mut writes, &mut counts, tally)
                {
                    Ok(()) => passed.push(answer),
                    Err(e) => {
                        let _ = answer.send(Err(e));
                    }
                }
            }
            group += 1;
            // The claims on the timers the group clears end with them, once they are gone from
            // the tree: released earlier, a timer still in the tree would look due and free to
            // the timer loop, and be claimed and fired again.
            let cleared: Vec<Vec<u8>> = writes
                .iter()
                .filter(|(key, value)| value.is_none() && key.first() == Some(&TIMERS))
                .map(|(key, _)| key.clone())
                .collect();
            let planned = counters::plan(
                &counters::lock(&live.pending),
                counts,
                data,
                path,
                &mut writes,
            );
            let applied = planned.map_err(|e| e.to_string()).and_then(|planned| {
                counters::with_group(&live.pending, planned, || {
                    // Held while the group is written: a backup reading meanwhile sees it whole
                    // or not at all, and keeps what the group replaces if it has not copied it.
                    let mut backup = self.backups.lock().expect("backup lock");
                    if let Some(snapshot) = backup.as_mut() {
                        snapshot.keep(data, &writes).map_err(|e| e.to_string())?;
                    }
                    journal::apply(data, writes, group).map_err(|e| e.to_string())
                })
            });
            match applied {
                Ok(()) => {
                    self.claims.release(cleared.iter().map(Vec::as_slice));
                    let sync = (passed, self.tally.numbers, live.db);
                    if let Err(mpsc::SendError((answers, ..))) = self.to_sync.send(sync) {
                        fail_all(answers, path, "the store's syncer has stopped");
                    }
                }
                Err(e) => {
                    let cause = format!("a write failed: {e}");
                    stop_writes(&self.writes, &self.backups, &cause);
                    fail_all(passed, path, &cause);
                }
            }
        }
    }

    /// While writes are stopped: refuses every commit, and every [`RETRY_EVERY`] tries a probe
    /// write; once one succeeds, opens the database again and takes writes. Reads go on from
    /// the open database meanwhile (sled cannot open a store on a full disk: it writes as it
    /// recovers), so they may see writes that never reach the disk: whatever tells a client
    /// that something is already done syncs first ([`crate::store::Store::settle`]), which
    /// fails here. Returns `false` when the store is closing.
    fn until_writable(&mut self, queue: &mpsc::Receiver<Pending>) -> bool {
        let mut next_try = Instant::now() + RETRY_EVERY;
        loop {
            let now = Instant::now();
            if now >= next_try {
                let tried = probe(&self.dir)
                    .map_err(|e| format!("a probe write failed: {e}"))
                    .and_then(|()| self.reopen());
                match tried {
                    Ok(()) => {
                        self.writes.resume();
                        return true;
                    }
                    Err(tried) => self.writes.remind(&tried),
                }
                next_try = Instant::now() + RETRY_EVERY;
                continue;
            }
            match queue.recv_timeout(next_try - now) {
                Ok((_, answer)) => {
                    let _ = answer.send(Err(self.writes.refuse()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Closes the database and opens it again: sled answers its first I/O error to every later
    /// write of the same open database, and its memory may hold writes that never reached the
    /// disk. Until it is open again (moments), reads are refused too.
    fn reopen(&mut self) -> Result<(), String> {
        drop(self.live.write().expect("live lock").take());
        // Readers still reading, and the syncer answering its last groups, hold the old
        // database for a moment: it can be opened again once they let it go.
        let deadline = Instant::now() + CLOSE_WAIT;
        let opened = loop {
            match Opened::open(&self.dir, &self.path, self.cache_bytes) {
                Ok(opened) => break opened,
                Err(_) if Instant::now() < deadline => std::thread::sleep(CLOSE_POLL),
                Err(e) => return Err(format!("the store could not be opened again: {e}")),
            }
        };
        let durable = &self.durable;
        durable.feed.fetch_max(opened.last_feed, Ordering::SeqCst);
        durable.config.fetch_max(opened.config, Ordering::SeqCst);
        durable
            .audit
            .fetch_max(opened.tally.numbers.audit.size, Ordering::SeqCst);
        self.tally = opened.tally;
        *self.live.write().expect("live lock") = Some(opened.live);
        Ok(())
    }
}

/// Writes stop, and a running backup ends with an error: it may have copied writes that will
/// not reach the disk.
fn stop_writes(writes: &WriteStop, backups: &Backups, cause: &str) {
    writes.stop(cause);
    if let Some(snapshot) = backups.lock().expect("backup lock").as_mut() {
        snapshot.break_off(cause);
    }
}

/// The syncer: one disk sync for every group written since the last one (group commit), then
/// the answers. Everything applied before a sync starts is durable when it returns.
pub(super) fn sync_loop(
    path: &Path,
    syncs: &mpsc::Receiver<ToSync>,
    durable: &Durable,
    (writes, backups): (&WriteStop, &Backups),
) {
    while let Ok((first, mut numbers, mut db)) = syncs.recv() {
        let mut answers = first;
        for (more, n, d) in syncs.try_iter() {
            answers.extend(more);
            numbers = n;
            db = d;
        }
        match db.flush() {
            Ok(_) => {
                durable.groups.fetch_add(1, Ordering::Relaxed);
                durable
                    .commits
                    .fetch_add(answers.len() as u64, Ordering::Relaxed);
                durable
                    .feed
                    .fetch_max(numbers.next_feed - 1, Ordering::SeqCst);
                durable.config.fetch_max(numbers.config, Ordering::SeqCst);
                durable
                    .audit
                    .fetch_max(numbers.audit.size, Ordering::SeqCst);
                for answer in answers {
                    let _ = answer.send(Ok(()));
                }
            }
            Err(e) => {
                let cause = format!("a disk sync failed: {e}");
                stop_writes(writes, backups, &cause);
                fail_all(answers, path, &cause);
            }
        }
    }
}

/// What readers may see: the last feed position and the configuration version durable on disk;
/// and how many commits were made durable, in how many syncs.
#[derive(Default)]
pub(super) struct Durable {
    pub(super) feed: AtomicU64,
    /// The audit log's size.
    pub(super) audit: AtomicU64,
    pub(super) config: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) groups: AtomicU64,
}

fn fail_all(answers: Answers, path: &Path, detail: &str) {
    for answer in answers {
        let _ = answer.send(Err(StoreError::Io {
            path: path.display().to_string(),
            detail: detail.to_owned(),
        }));
    }
}
