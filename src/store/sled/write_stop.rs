//! A store that cannot write: a full disk, a failing device.
//!
//! sled keeps the first I/O error of a database and answers it to every later write, even once
//! the disk has room again, and its memory may hold writes that never reached the disk: a
//! store that hit one must be closed and opened again, which sled cannot do on a full disk (it
//! writes as it recovers). The writer thread ([`super::writer`]) stops writes when a group or a
//! sync fails: each commit is refused with [`StoreError::Unavailable`] (the API answers 503
//! `storage_unavailable`, `/v1/ready` says not ready) while reads go on from the open database.
//! Every two seconds it writes and syncs a probe file beside the store; once one is written, it
//! opens the database again (sled recovers what reached the disk, the journal completes or
//! drops an interrupted group whole) and takes writes again.
//!
//! Reads meanwhile may see writes that never reach the disk. Whatever tells a client that its
//! request is already done from a read (an idempotency record, a callback already taken) syncs
//! first ([`crate::store::Store::settle`]); on this database the sync fails, and the client is
//! told to retry.
//!
//! A commit refused while writes are stopped wrote nothing. A commit answered with the error
//! that stopped them may have reached the disk or not, as after a crash: the engine reads the
//! case again before it acts, and a client retries with its idempotency key.
//!
//! The condition is logged once when it starts, at most once a minute while it lasts (with how
//! many writes were refused meanwhile) and once when it ends: the log must not be what fills a
//! full disk further.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::store::StoreError;

/// How often the condition is logged again while it lasts.
const REMIND_EVERY: Duration = Duration::from_secs(60);
/// The size of the probe file: room for sled to open the store again and write a little.
const PROBE_BYTES: usize = 1 << 20;
const PROBE_FILE: &str = "write-probe";

/// Whether the store takes writes, and since when it has not.
pub(super) struct WriteStop {
    path: String,
    down: Mutex<Option<Down>>,
    /// `down.is_some()`, read without the lock on every commit.
    is_down: AtomicBool,
}

struct Down {
    since: Timestamp,
    started: Instant,
    cause: String,
    refused: u64,
    told_at: Instant,
    refused_when_told: u64,
}

impl WriteStop {
    pub(super) fn new(path: &Path) -> WriteStop {
        WriteStop {
            path: path.display().to_string(),
            down: Mutex::new(None),
            is_down: AtomicBool::new(false),
        }
    }

    pub(super) fn is_down(&self) -> bool {
        self.is_down.load(Ordering::Acquire)
    }

    /// Writes stop because of `cause`. The first cause is kept and logged; a later one while
    /// they are stopped is the same condition seen again.
    pub(super) fn stop(&self, cause: &str) {
        let mut down = self.down.lock().expect("write stop lock");
        if down.is_some() {
            return;
        }
        tracing::error!(
            store = %self.path,
            cause,
            "the store cannot write: writes are refused (503 storage_unavailable, /v1/ready not ready) until a write succeeds again; reads go on; see docs/operations.md, \"A full disk\""
        );
        let now = Instant::now();
        *down = Some(Down {
            since: Timestamp::now(),
            started: now,
            cause: cause.to_owned(),
            refused: 0,
            told_at: now,
            refused_when_told: 0,
        });
        self.is_down.store(true, Ordering::Release);
    }

    /// A write refused while writes are stopped: counted, and the error its committer gets.
    pub(super) fn refuse(&self) -> StoreError {
        let mut down = self.down.lock().expect("write stop lock");
        if let Some(d) = down.as_mut() {
            d.refused += 1;
        }
        self.error(down.as_ref())
    }

    /// `Err` while writes are stopped, with the condition.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        if !self.is_down() {
            return Ok(());
        }
        let down = self.down.lock().expect("write stop lock");
        match down.as_ref() {
            Some(_) => Err(self.error(down.as_ref())),
            None => Ok(()),
        }
    }

    /// Logs the condition again if it has lasted a minute since it was last logged; `tried`
    /// is why the last attempt to write again failed.
    pub(super) fn remind(&self, tried: &str) {
        let mut down = self.down.lock().expect("write stop lock");
        let Some(d) = down.as_mut() else { return };
        if d.told_at.elapsed() < REMIND_EVERY {
            return;
        }
        tracing::error!(
            store = %self.path,
            cause = %d.cause,
            tried,
            for_seconds = d.started.elapsed().as_secs(),
            refused = d.refused - d.refused_when_told,
            "the store still cannot write; writes refused since the last report"
        );
        d.told_at = Instant::now();
        d.refused_when_told = d.refused;
    }

    /// Writes succeed again.
    pub(super) fn resume(&self) {
        let mut down = self.down.lock().expect("write stop lock");
        if let Some(d) = down.take() {
            tracing::warn!(
                store = %self.path,
                after_seconds = d.started.elapsed().as_secs(),
                refused = d.refused,
                "the store writes again; the writes refused meanwhile were answered 503 and are retried by their senders"
            );
        }
        self.is_down.store(false, Ordering::Release);
    }

    fn error(&self, down: Option<&Down>) -> StoreError {
        let detail = match down {
            Some(d) => format!("writes failed at {} ({})", d.since, d.cause),
            None => "writes are starting again".to_owned(),
        };
        StoreError::Unavailable {
            path: self.path.clone(),
            detail,
        }
    }
}

/// Writes a file of [`PROBE_BYTES`] in `dir`, syncs it and removes it: whether the disk takes
/// writes again.
pub(super) fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let written = File::create(&path).and_then(|mut file| {
        file.write_all(&[0; PROBE_BYTES])?;
        file.sync_all()
    });
    let removed = std::fs::remove_file(&path);
    written?;
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_with_the_cause_until_they_resume() {
        let writes = WriteStop::new(Path::new("/srv/civicflow/db"));
        assert!(writes.check().is_ok());
        writes.stop("No space left on device");
        writes.stop("a second failure of the same condition");
        let refused = writes.refuse().to_string();
        assert!(refused.contains("No space left on device"), "{refused}");
        assert!(refused.contains("/srv/civicflow/db"), "{refused}");
        assert!(matches!(
            writes.check(),
            Err(StoreError::Unavailable { .. })
        ));
        writes.resume();
        assert!(!writes.is_down());
        assert!(writes.check().is_ok());
    }

    #[test]
    fn a_probe_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("civicflow-probe-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        probe(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(probe(&dir.join("missing")).is_err());
        std::fs::remove_dir(&dir).unwrap();
    }
}
