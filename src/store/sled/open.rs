//! Opening a store: the data directory and its lock, the format version, recovery of an
//! interrupted group, and the writer and syncer threads.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use sled::{IVec, Tree};

use super::backup::Backups;
use super::claim_table::Claims;
use super::commit::{Numbers, Tally};
use super::counters;
use super::encoding::{corrupt, decode, sled_error};
use super::journal;
use super::keys::{
    AUDIT, CONFIG, FEED, FEED_FLOOR, TIMERS, WEBHOOKS, audit_index, feed_seq, timer_value_of_json,
};
use super::write_stop::WriteStop;
use super::writer::{Durable, Pending, Writer, sync_loop};
use crate::store::{FORMAT_VERSION, StoreError, UPGRADES_FROM, Webhook};

/// The page cache `civicflow serve` gives sled unless told otherwise, in MiB. sled counts it in
/// on-disk bytes and uses several times that in memory: 16 keeps 100,000 waiting cases well under
/// 300 MB (docs/performance.md), and halving it makes the writer read nodes back from disk.
pub const DEFAULT_CACHE_MIB: u64 = 16;

/// The tree that holds every table.
const DATA_TREE: &str = "data";

pub(super) struct Inner {
    pub(super) path: PathBuf,
    /// The open database; `None` only while the writer opens it again after writes failed
    /// ([`super::write_stop`]).
    pub(super) live: Arc<RwLock<Option<Live>>>,
    /// `None` once the store is being dropped: the writer then finishes and exits.
    pub(super) writer: Option<mpsc::Sender<Pending>>,
    /// The last feed position and configuration version durable on disk: readers see nothing
    /// beyond them.
    pub(super) durable: Arc<Durable>,
    pub(super) claims: Arc<Claims>,
    /// The backup running, whose preimages the writer keeps.
    pub(super) backups: Arc<Backups>,
    /// Whether the store takes writes.
    pub(super) writes: Arc<WriteStop>,
    /// The writer, then the syncer it feeds: joined in that order on drop.
    threads: Vec<JoinHandle<()>>,
    /// Held for the life of the store: a second server on the same directory cannot take it.
    _lock: File,
}

/// The handles on the open database.
#[derive(Clone)]
pub(super) struct Live {
    pub(super) db: sled::Db,
    pub(super) data: Tree,
    /// The counters' changes not yet folded, as the writer last wrote them.
    pub(super) pending: counters::Shared,
}

/// A database opened: its handles, what is durable in it, and what the writer goes on from.
pub(super) struct Opened {
    pub(super) live: Live,
    pub(super) last_feed: u64,
    pub(super) config: u64,
    pub(super) tally: Tally,
}

impl Opened {
    /// Opens the database at `db_path` in the data directory `dir`: checks its format and
    /// completes a group a crash interrupted.
    pub(super) fn open(dir: &Path, db_path: &Path, cache_bytes: u64) -> Result<Opened, StoreError> {
        let db = sled::Config::new()
            .path(db_path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|e| sled_error(db_path, e))?;
        let older = check_format(&db, dir)?;
        let data = db
            .open_tree(DATA_TREE)
            .map_err(|e| sled_error(db_path, e))?;
        // An interrupted group is completed as the version that wrote it wrote it, then the
        // store moved on: its writes may hold records of the older format.
        let recovered = journal::recover(&data, db_path)? > 0;
        if let Some(from) = older {
            upgrade(&db, &data, db_path, &from)?;
        }
        if counters::fold_left_over(&data, db_path)? || recovered {
            db.flush().map_err(|e| sled_error(db_path, e))?;
        }
        let eight = |key: &[u8], what: &str| -> Result<u64, StoreError> {
            match data.get(key).map_err(|e| sled_error(db_path, e))? {
                Some(v) => {
                    Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                        corrupt(db_path, format!("{what} is damaged"))
                    })?))
                }
                None => Ok(0),
            }
        };
        let config = eight(CONFIG, "the configuration version")?;
        let last_kept = match data.scan_prefix([FEED]).next_back() {
            Some(entry) => {
                let (k, _) = entry.map_err(|e| sled_error(db_path, e))?;
                feed_seq(&k).ok_or_else(|| corrupt(db_path, "a damaged feed key".to_owned()))?
            }
            None => 0,
        };
        let audit = match data.scan_prefix([AUDIT]).next_back() {
            Some(entry) => {
                let (k, v) = entry.map_err(|e| sled_error(db_path, e))?;
                let index = audit_index(&k)
                    .ok_or_else(|| corrupt(db_path, "a damaged audit key".to_owned()))?;
                crate::audit::Tail::after(index, &v)
            }
            None => crate::audit::Tail::default(),
        };
        let mut webhooks = BTreeSet::new();
        let mut cursors = 0;
        for entry in data.scan_prefix([WEBHOOKS]) {
            let (key, value) = entry.map_err(|e| sled_error(db_path, e))?;
            let hook: Webhook = decode(db_path, "a webhook", &value)?;
            cursors = cursors.max(hook.cursor);
            webhooks.insert(key.to_vec());
        }
        // The feed may be trimmed empty: numbering goes on past what was trimmed, and past every
        // cursor (a store written before the floor was kept has only those to tell).
        let last_feed = last_kept
            .max(eight(FEED_FLOOR, "the feed's trimmed position")?)
            .max(cursors);
        Ok(Opened {
            live: Live {
                db,
                data,
                pending: counters::Shared::default(),
            },
            last_feed,
            config,
            tally: Tally {
                numbers: Numbers {
                    next_feed: last_feed + 1,
                    config,
                    audit,
                },
                webhooks,
            },
        })
    }
}

/// A sled store in a data directory. Cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    pub(super) inner: Arc<Inner>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, and starts its writer thread.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        let path = dir.display().to_string();
        let io = |e: std::io::Error| StoreError::Io {
            path: path.clone(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { path: path.clone() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let db_path = dir.join("db");
        let opened = Opened::open(dir, &db_path, cache_bytes)?;
        let durable = Arc::new(Durable {
            feed: AtomicU64::new(opened.last_feed),
            audit: AtomicU64::new(opened.tally.numbers.audit.size),
            config: AtomicU64::new(opened.config),
            ..Durable::default()
        });
        let live = Arc::new(RwLock::new(Some(opened.live)));
        let claims = Arc::new(Claims::default());
        let backups = Arc::new(Backups::default());
        let writes = Arc::new(WriteStop::new(&db_path));
        let (writer, queue) = mpsc::channel();
        let (to_sync, syncs) = mpsc::channel();
        let syncer = std::thread::Builder::new()
            .name("civicflow-store-sync".to_owned())
            .spawn({
                let (path, durable) = (db_path.clone(), durable.clone());
                let (writes, backups) = (writes.clone(), backups.clone());
                move || sync_loop(&path, &syncs, &durable, (&writes, &backups))
            })
            .map_err(io)?;
        let writer_thread = std::thread::Builder::new()
            .name("civicflow-store-writer".to_owned())
            .spawn({
                let writer = Writer {
                    dir: dir.to_owned(),
                    path: db_path.clone(),
                    cache_bytes,
                    live: live.clone(),
                    claims: claims.clone(),
                    backups: backups.clone(),
                    writes: writes.clone(),
                    durable: durable.clone(),
                    to_sync,
                    tally: opened.tally,
                };
                move || writer.run(&queue)
            })
            .map_err(io)?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                path: db_path,
                live,
                writer: Some(writer),
                durable,
                claims,
                backups,
                writes,
                threads: vec![writer_thread, syncer],
                _lock: lock,
            }),
        })
    }

    /// The tree that holds every table, or `Unavailable` for the moment the database is opened
    /// again after writes failed.
    pub(super) fn data(&self) -> Result<Tree, StoreError> {
        self.live().map(|live| live.data)
    }

    /// The open database's handles, or `Unavailable` as for [`SledStore::data`].
    pub(super) fn live(&self) -> Result<Live, StoreError> {
        match &*self.inner.live.read().expect("live lock") {
            Some(live) => Ok(live.clone()),
            None => {
                Err(self
                    .inner
                    .writes
                    .check()
                    .err()
                    .unwrap_or_else(|| StoreError::Unavailable {
                        path: self.inner.path.display().to_string(),
                        detail: "the store is being opened again".to_owned(),
                    }))
            }
        }
    }

    /// Syncs everything written to the disk; `Unavailable` while the database is opened again
    /// after writes failed (what readers saw before may not be on disk).
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        let db = self.live()?.db;
        db.flush().map(drop).map_err(|e| self.err(e))
    }

    pub(super) fn err(&self, e: sled::Error) -> StoreError {
        sled_error(&self.inner.path, e)
    }

    pub(super) fn decode<T: DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        decode(&self.inner.path, what, bytes)
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.data()?.get(key).map_err(|e| self.err(e))
    }

    /// Every record of a small table (webhooks, tokens, definitions), in key order.
    pub(super) fn all<T: DeserializeOwned>(
        &self,
        table: u8,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.data()?
            .scan_prefix([table])
            .map(|r| {
                let (_, v) = r.map_err(|e| self.err(e))?;
                self.decode(what, &v)
            })
            .collect()
    }

    pub(super) fn corrupt(&self, detail: String) -> StoreError {
        corrupt(&self.inner.path, detail)
    }
}

/// Refuses a store of a format this one does not read; `Some(version)` for one of
/// [`UPGRADES_FROM`], which [`upgrade`] moves on once the data tree is open.
fn check_format(db: &sled::Db, dir: &Path) -> Result<Option<String>, StoreError> {
    let path = dir.display().to_string();
    let db_path = dir.join("db");
    let found = db.get("format").map_err(|e| sled_error(&db_path, e))?;
    match found {
        None => {
            // Only sled's default tree, and it empty: a new store, not one of an older format.
            let has_data = db.tree_names().len() > 1 || !db.is_empty();
            if has_data {
                return Err(StoreError::Incompatible {
                    path,
                    found: "none".to_owned(),
                    expected: FORMAT_VERSION,
                });
            }
            db.insert("format", FORMAT_VERSION.to_string().as_bytes())
                .map_err(|e| sled_error(&db_path, e))?;
            db.flush().map_err(|e| sled_error(&db_path, e))?;
            Ok(None)
        }
        Some(v) if v.as_ref() == FORMAT_VERSION.to_string().as_bytes() => Ok(None),
        Some(v)
            if UPGRADES_FROM
                .iter()
                .any(|o| v.as_ref() == o.to_string().as_bytes()) =>
        {
            Ok(Some(String::from_utf8_lossy(&v).into_owned()))
        }
        Some(v) => Err(StoreError::Incompatible {
            path,
            found: String::from_utf8_lossy(&v).into_owned(),
            expected: FORMAT_VERSION,
        }),
    }
}

/// Moves a store of an older format version on to this one: its timers' records, JSON in
/// version 5, are rewritten as twelve-byte due times (`keys::timer_value`); version 6 also
/// added the counters' record of unfolded changes, which a version-5 store simply does not
/// have, and version 7 the audit log, which an older store starts empty. The
/// version is written last, once every timer is rewritten and synced: a crash before it leaves
/// a store that is upgraded again at the next start, and a record already rewritten is left as
/// it is.
fn upgrade(db: &sled::Db, data: &Tree, db_path: &Path, from: &str) -> Result<(), StoreError> {
    let mut rewritten = 0usize;
    for entry in data.scan_prefix([TIMERS]) {
        let (key, value) = entry.map_err(|e| sled_error(db_path, e))?;
        if let Some(rewritten_value) = timer_value_of_json(&value) {
            data.insert(key, rewritten_value)
                .map_err(|e| sled_error(db_path, e))?;
            rewritten += 1;
        }
    }
    db.flush().map_err(|e| sled_error(db_path, e))?;
    db.insert("format", FORMAT_VERSION.to_string().as_bytes())
        .map_err(|e| sled_error(db_path, e))?;
    db.flush().map_err(|e| sled_error(db_path, e))?;
    tracing::info!(
        store = %db_path.display(),
        from,
        to = FORMAT_VERSION,
        timers = rewritten,
        "the store's format version was moved on"
    );
    Ok(())
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SledStore({})", self.inner.path.display())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer, then the syncer, finish what they hold and exit;
        // joining them releases their handles on the database, so the directory can be opened
        // again at once.
        self.writer.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(live) = &*self.live.read().expect("live lock") {
            let _ = live.db.flush();
        }
    }
}
