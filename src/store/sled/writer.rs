//! The writer and syncer threads: group commit.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use sled::Tree;
use tokio::sync::oneshot;

use super::backup::Backups;
use super::claims::Claims;
use super::commit::{Prepared, Tally, add_counts};
use super::journal;
use crate::store::StoreError;

/// A commit on its way to the writer, and where its outcome goes.
pub(super) type Pending = (Prepared, oneshot::Sender<Result<(), StoreError>>);

/// At most this many commits share one group and sync, so that a busy queue still gets answers.
const GROUP_MAX: usize = 1024;

/// Answers waiting for the sync that makes their commits durable.
pub(super) type Answers = Vec<oneshot::Sender<Result<(), StoreError>>>;

/// The writer. It checks every waiting commit against the stored state and writes all that pass
/// as one group (see [`journal`]), then hands their answers to the syncer and goes on with the
/// next group while the disk syncs. A commit that depends on a case or key an earlier waiting
/// commit writes starts the next group instead, so that it is checked against that write.
///
/// A group that fails half-way leaves its journal entry behind, to be completed at the next
/// start; until then the tree may hold part of it, so every later commit is refused.
pub(super) fn write_loop(
    data: &Tree,
    path: &Path,
    (claims, backups): (&Claims, &Backups),
    queue: &mpsc::Receiver<Pending>,
    to_sync: &mpsc::Sender<(Answers, Tally)>,
    mut tally: Tally,
) {
    let mut carried: Option<Pending> = None;
    let mut broken: Option<String> = None;
    let mut group: u64 = 0;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv() {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let waiting = std::iter::once(first).chain(queue.try_iter().take(GROUP_MAX - 1));
        if let Some(cause) = &broken {
            let answers = waiting.map(|(_, answer)| answer).collect();
            fail_all(answers, path, cause);
            continue;
        }
        let mut writes = Vec::new();
        let mut counts = BTreeMap::new();
        let mut claimed: HashSet<Vec<u8>> = HashSet::new();
        let mut passed = Vec::new();
        for (prepared, answer) in waiting {
            if prepared.depends_on().any(|c| claimed.contains(c)) {
                carried = Some((prepared, answer));
                break;
            }
            claimed.extend(prepared.depends_on().map(<[u8]>::to_vec));
            match prepared.check_into(data, path, claims, &mut writes, &mut counts, &mut tally) {
                Ok(()) => passed.push(answer),
                Err(e) => {
                    let _ = answer.send(Err(e));
                }
            }
        }
        group += 1;
        let applied = add_counts(data, path, counts, &mut writes)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                // Held while the group is written: a backup reading meanwhile sees it whole or
                // not at all, and keeps what the group replaces if it has not copied it yet.
                let mut backup = backups.lock().expect("backup lock");
                if let Some(snapshot) = backup.as_mut() {
                    snapshot.keep(data, &writes).map_err(|e| e.to_string())?;
                }
                journal::apply(data, writes, group).map_err(|e| e.to_string())
            });
        match applied {
            Ok(()) => {
                let written = Tally {
                    next_feed: tally.next_feed,
                    config: tally.config,
                };
                if let Err(mpsc::SendError((answers, _))) = to_sync.send((passed, written)) {
                    fail_all(answers, path, "the store's syncer has stopped");
                }
            }
            Err(e) => {
                let cause = format!(
                    "a write failed ({e}); the store takes no more until civicflow restarts and completes it"
                );
                fail_all(passed, path, &cause);
                broken = Some(cause);
            }
        }
    }
}

/// The syncer: one disk sync for every group written since the last one (group commit), then
/// the answers. Everything applied before a sync starts is durable when it returns.
pub(super) fn sync_loop(
    db: &sled::Db,
    path: &Path,
    syncs: &mpsc::Receiver<(Answers, Tally)>,
    durable: &Durable,
) {
    while let Ok((first, mut tally)) = syncs.recv() {
        let mut answers = first;
        for (more, t) in syncs.try_iter() {
            answers.extend(more);
            tally = t;
        }
        match db.flush() {
            Ok(_) => {
                durable.groups.fetch_add(1, Ordering::Relaxed);
                durable
                    .commits
                    .fetch_add(answers.len() as u64, Ordering::Relaxed);
                durable
                    .feed
                    .fetch_max(tally.next_feed - 1, Ordering::SeqCst);
                durable.config.fetch_max(tally.config, Ordering::SeqCst);
                for answer in answers {
                    let _ = answer.send(Ok(()));
                }
            }
            Err(e) => fail_all(answers, path, &e.to_string()),
        }
    }
}

/// What readers may see: the last feed position and the configuration version durable on disk;
/// and how many commits were made durable, in how many syncs.
#[derive(Default)]
pub(super) struct Durable {
    pub(super) feed: AtomicU64,
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
