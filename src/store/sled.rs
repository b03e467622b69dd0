//! The embedded backend on sled: one tree per table, one sled transaction per commit, and a
//! group-commit flusher so that concurrent commits share one disk sync.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use tokio::sync::{mpsc, oneshot};

use super::{FORMAT_VERSION, Order, Page, Store, StoreError, Transaction};
use crate::case::{CallbackTarget, Case, CaseId, Event, IdempotencyRecord, IndexEntry, Timer};

const TREES: [&str; 7] = [
    "cases",
    "events",
    "timers",
    "timer_ids",
    "index",
    "tokens",
    "idempotency",
];
const CASES: usize = 0;
const EVENTS: usize = 1;
const TIMERS: usize = 2;
const TIMER_IDS: usize = 3;
const INDEX: usize = 4;
const TOKENS: usize = 5;
const IDEMPOTENCY: usize = 6;

/// A commit waiting for its sync. It carries the database handle so that the flusher holds none
/// between syncs, and dropping the store closes the database at once.
type FlushWaiter = (sled::Db, oneshot::Sender<Result<(), String>>);

struct Inner {
    path: PathBuf,
    db: sled::Db,
    trees: Vec<Tree>,
    flush: mpsc::UnboundedSender<FlushWaiter>,
    /// Held for the life of the store: a second server on the same directory cannot take it.
    _lock: File,
}

/// A sled store in a data directory. Cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. Must be called inside a Tokio runtime, which runs
    /// the group-commit flusher.
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
        let db = sled::Config::new()
            .path(&db_path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|e| sled_error(&db_path, e))?;
        check_format(&db, dir)?;
        let trees = TREES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| sled_error(&db_path, e))?;
        let (flush, waiters) = mpsc::unbounded_channel();
        tokio::spawn(flusher(waiters));
        Ok(SledStore {
            inner: Arc::new(Inner {
                path: db_path,
                db,
                trees,
                flush,
                _lock: lock,
            }),
        })
    }

    fn tree(&self, i: usize) -> &Tree {
        &self.inner.trees[i]
    }

    fn err(&self, e: sled::Error) -> StoreError {
        sled_error(&self.inner.path, e)
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, StoreError> {
        decode(&self.inner.path, what, bytes)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let closed = || StoreError::Io {
            path: self.inner.path.display().to_string(),
            detail: "the store is shutting down".to_owned(),
        };
        self.inner
            .flush
            .send((self.inner.db.clone(), tx))
            .map_err(|_| closed())?;
        rx.await
            .map_err(|_| closed())?
            .map_err(|detail| StoreError::Io {
                path: self.inner.path.display().to_string(),
                detail,
            })
    }
}

/// Collects flush requests and serves all that arrived while the previous sync ran with one
/// sync: group commit.
async fn flusher(mut waiters: mpsc::UnboundedReceiver<FlushWaiter>) {
    while let Some((db, first)) = waiters.recv().await {
        let mut batch = vec![first];
        while let Ok((_, w)) = waiters.try_recv() {
            batch.push(w);
        }
        let result = match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the flush task failed: {e}")),
        };
        for w in batch {
            let _ = w.send(result.clone());
        }
    }
}

fn check_format(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    let path = dir.display().to_string();
    let db_path = dir.join("db");
    let found = db.get("format").map_err(|e| sled_error(&db_path, e))?;
    match found {
        None => {
            let has_data = db
                .tree_names()
                .iter()
                .any(|n| TREES.iter().any(|t| t.as_bytes() == n.as_ref()));
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
            Ok(())
        }
        Some(v) if v.as_ref() == FORMAT_VERSION.to_string().as_bytes() => Ok(()),
        Some(v) => Err(StoreError::Incompatible {
            path,
            found: String::from_utf8_lossy(&v).into_owned(),
            expected: FORMAT_VERSION,
        }),
    }
}

fn sled_error(path: &Path, e: sled::Error) -> StoreError {
    let path = path.display().to_string();
    match e {
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path,
            detail: match at {
                Some(at) => format!("a damaged record at offset {at:?}"),
                None => "a damaged record".to_owned(),
            },
        },
        sled::Error::Unsupported(detail) | sled::Error::ReportableBug(detail) => {
            StoreError::Corrupt { path, detail }
        }
        other => StoreError::Io {
            path,
            detail: other.to_string(),
        },
    }
}

fn decode<T: DeserializeOwned>(path: &Path, what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        path: path.display().to_string(),
        detail: format!("{what} cannot be read: {e}"),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records are plain data and always serialize")
}

fn event_key(case: CaseId, seq: u64) -> Vec<u8> {
    let mut k = case.as_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn timer_key(due: Timestamp, case: CaseId, id: &str) -> Vec<u8> {
    let mut k = (due.as_millisecond().max(0) as u64).to_be_bytes().to_vec();
    k.extend_from_slice(case.as_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn timer_id_key(case: CaseId, id: &str) -> Vec<u8> {
    let mut k = case.as_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn index_prefix(name: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + value.len() + 18);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

fn index_key(entry: &IndexEntry, case: CaseId) -> Vec<u8> {
    let mut k = index_prefix(entry.name, &entry.value);
    k.extend_from_slice(case.as_bytes());
    k
}

fn case_id_at_end(key: &[u8]) -> Option<CaseId> {
    let start = key.len().checked_sub(16)?;
    CaseId::from_slice(&key[start..]).ok()
}

type Abort = ConflictableTransactionError<StoreError>;

fn apply(path: &Path, t: &[TransactionalTree], tx: &Transaction) -> Result<(), Abort> {
    for write in &tx.cases {
        let id = write.case.id;
        let old: Option<Case> = match t[CASES].get(id.as_bytes())? {
            Some(bytes) => Some(decode(path, "a case record", &bytes).map_err(Abort::Abort)?),
            None => None,
        };
        let mut case = write.case.clone();
        match (&old, write.expected_rev) {
            (None, None) => case.rev = 1,
            (Some(_), None) => return Err(Abort::Abort(StoreError::Exists { case_id: id })),
            (Some(o), Some(expected)) if o.rev == expected => case.rev = expected + 1,
            (_, Some(expected)) => {
                return Err(Abort::Abort(StoreError::Conflict {
                    case_id: id,
                    expected,
                }));
            }
        }
        let before = old.map(|o| o.index_entries()).unwrap_or_default();
        let after = case.index_entries();
        for gone in before.iter().filter(|e| !after.contains(e)) {
            t[INDEX].remove(index_key(gone, id))?;
        }
        for new in after.iter().filter(|e| !before.contains(e)) {
            t[INDEX].insert(index_key(new, id), &[])?;
        }
        t[CASES].insert(id.as_bytes(), encode(&case))?;
    }
    for (case, event) in &tx.events {
        t[EVENTS].insert(event_key(*case, event.seq), encode(event))?;
    }
    for (case, kind) in &tx.clear_timers {
        let id_key = timer_id_key(*case, &kind.id());
        if let Some(old) = t[TIMER_IDS].remove(id_key)? {
            t[TIMERS].remove(old)?;
        }
    }
    for timer in &tx.set_timers {
        let id = timer.kind.id();
        let id_key = timer_id_key(timer.case_id, &id);
        if let Some(old) = t[TIMER_IDS].get(&id_key)? {
            t[TIMERS].remove(old)?;
        }
        let key = timer_key(timer.due_at, timer.case_id, &id);
        t[TIMERS].insert(key.clone(), encode(timer))?;
        t[TIMER_IDS].insert(id_key, key)?;
    }
    for (token, target) in &tx.put_tokens {
        t[TOKENS].insert(token.as_bytes(), encode(target))?;
    }
    for token in &tx.delete_tokens {
        t[TOKENS].remove(token.as_bytes())?;
    }
    for (key, record) in &tx.put_idempotency {
        if t[IDEMPOTENCY].get(key.as_bytes())?.is_some() {
            return Err(Abort::Abort(StoreError::KeyTaken { key: key.clone() }));
        }
        t[IDEMPOTENCY].insert(key.as_bytes(), encode(record))?;
    }
    Ok(())
}

impl Store for SledStore {
    async fn commit(&self, tx: Transaction) -> Result<(), StoreError> {
        if tx.is_empty() {
            return Ok(());
        }
        let path = self.inner.path.clone();
        let result = self
            .inner
            .trees
            .as_slice()
            .transaction(|t| apply(&path, t, &tx));
        match result {
            Ok(()) => self.flush().await,
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(self.err(e)),
        }
    }

    async fn case(&self, id: CaseId) -> Result<Option<Case>, StoreError> {
        match self
            .tree(CASES)
            .get(id.as_bytes())
            .map_err(|e| self.err(e))?
        {
            Some(bytes) => Ok(Some(self.decode("a case record", &bytes)?)),
            None => Ok(None),
        }
    }

    async fn history(&self, id: CaseId, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let start = event_key(id, from);
        let end = event_key(id, u64::MAX);
        self.tree(EVENTS)
            .range(start..=end)
            .take(limit)
            .map(|r| {
                let (_, v) = r.map_err(|e| self.err(e))?;
                self.decode("a history event", &v)
            })
            .collect()
    }

    async fn due_timers(&self, until: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let end = (until.as_millisecond().max(0) as u64 + 1).to_be_bytes();
        self.tree(TIMERS)
            .range(..end.as_slice())
            .take(limit)
            .map(|r| {
                let (_, v) = r.map_err(|e| self.err(e))?;
                self.decode("a timer", &v)
            })
            .collect()
    }

    async fn cases_by(
        &self,
        name: &str,
        value: &str,
        cursor: Option<CaseId>,
        order: Order,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let prefix = index_prefix(name, value);
        let mut low = prefix.clone();
        let mut high = prefix.clone();
        high.extend_from_slice(&[0xff; 17]);
        if let Some(c) = cursor {
            match order {
                Order::Ascending => {
                    low.extend_from_slice(c.as_bytes());
                    low.push(0);
                }
                Order::Descending => {
                    high = prefix.clone();
                    high.extend_from_slice(c.as_bytes());
                }
            }
        }
        let range = self.tree(INDEX).range(low..high);
        let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match order {
            Order::Ascending => Box::new(range),
            Order::Descending => Box::new(range.rev()),
        };
        let mut ids = Vec::new();
        for r in keys.take(limit) {
            let (k, _) = r.map_err(|e| self.err(e))?;
            ids.extend(case_id_at_end(&k));
        }
        let next = if ids.len() == limit {
            ids.last().copied()
        } else {
            None
        };
        Ok(Page { ids, next })
    }

    async fn index_range(
        &self,
        name: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, CaseId)>, StoreError> {
        let mut low = name.as_bytes().to_vec();
        low.push(0);
        let mut high = low.clone();
        low.extend_from_slice(from.as_bytes());
        high.extend_from_slice(to.as_bytes());
        let skip = name.len() + 1;
        let mut out = Vec::new();
        for r in self.tree(INDEX).range(low..high).take(limit) {
            let (k, _) = r.map_err(|e| self.err(e))?;
            let Some(id) = case_id_at_end(&k) else {
                continue;
            };
            let value = &k[skip..k.len() - 17];
            out.push((String::from_utf8_lossy(value).into_owned(), id));
        }
        Ok(out)
    }

    async fn token(&self, token: &str) -> Result<Option<CallbackTarget>, StoreError> {
        match self
            .tree(TOKENS)
            .get(token.as_bytes())
            .map_err(|e| self.err(e))?
        {
            Some(v) => Ok(Some(self.decode("a callback token", &v)?)),
            None => Ok(None),
        }
    }

    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self
            .tree(IDEMPOTENCY)
            .get(key.as_bytes())
            .map_err(|e| self.err(e))?
        {
            Some(v) => Ok(Some(self.decode("an idempotency record", &v)?)),
            None => Ok(None),
        }
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SledStore({})", self.inner.path.display())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.db.flush();
    }
}
