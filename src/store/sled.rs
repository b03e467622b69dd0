//! The embedded backend on sled.
//!
//! Everything lives in one sled tree, each table under its own key prefix, so that a group of
//! commits is one list of writes, made atomic across crashes by the [`journal`].
//!
//! Commits are encoded on the caller's task (the costly part, in parallel), then handed to one
//! writer thread. The writer takes every commit waiting, checks each (a case's revision, an
//! idempotency key's absence) and writes those that pass as one group; a syncer thread then syncs
//! the disk once for all the groups written meanwhile (group commit), and only then are they
//! answered. sled may block while its log buffers drain; that happens on these threads, never on
//! the async runtime.
//!
//! A case record starts with its revision and its index keys, so a commit checks the revision
//! and maintains the indexes without decoding the previous JSON.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::{IVec, Tree};
use tokio::sync::oneshot;

mod journal;

use super::{FORMAT_VERSION, IndexRange, Order, Page, Position, Store, StoreError, Transaction};
use crate::auth::ApiToken;
use crate::case::{CallbackTarget, Case, CaseId, Event, IdempotencyRecord, IndexEntry, Timer};
use crate::registry::{Change, Kind, Published};
use crate::webhooks::{Notification, Webhook};

/// The page cache `civicflow serve` gives sled unless told otherwise, in MiB. sled counts it in
/// on-disk bytes and uses several times that in memory: 16 keeps 100,000 waiting cases well under
/// 300 MB (docs/performance.md), and halving it makes the writer read nodes back from disk.
pub const DEFAULT_CACHE_MIB: u64 = 16;

/// The tree that holds every table.
const DATA_TREE: &str = "data";

/// Key prefixes, one per table.
const CASES: u8 = b'c';
const EVENTS: u8 = b'e';
const TIMERS: u8 = b't';
const INDEX: u8 = b'x';
const TOKENS: u8 = b'k';
const IDEMPOTENCY: u8 = b'i';
const API_TOKENS: u8 = b'a';
const FEED: u8 = b'f';
const WEBHOOKS: u8 = b'w';
const DEFINITIONS: u8 = b'd';
const REGISTRY_CHANGES: u8 = b'r';

/// A commit on its way to the writer, and where its outcome goes.
type Pending = (Prepared, oneshot::Sender<Result<(), StoreError>>);

struct Inner {
    path: PathBuf,
    db: sled::Db,
    data: Tree,
    /// `None` once the store is being dropped: the writer then finishes and exits.
    writer: Option<mpsc::Sender<Pending>>,
    /// The sequence number of the last notification durable on disk: readers of the feed see
    /// nothing beyond it.
    durable_feed: Arc<AtomicU64>,
    /// The writer, then the syncer it feeds: joined in that order on drop.
    threads: Vec<JoinHandle<()>>,
    /// Held for the life of the store: a second server on the same directory cannot take it.
    _lock: File,
}

/// A sled store in a data directory. Cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
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
        let db = sled::Config::new()
            .path(&db_path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()
            .map_err(|e| sled_error(&db_path, e))?;
        check_format(&db, dir)?;
        let data = db
            .open_tree(DATA_TREE)
            .map_err(|e| sled_error(&db_path, e))?;
        if journal::recover(&data, &db_path)? > 0 {
            db.flush().map_err(|e| sled_error(&db_path, e))?;
        }
        let last_feed = match data.scan_prefix([FEED]).next_back() {
            Some(entry) => {
                let (k, _) = entry.map_err(|e| sled_error(&db_path, e))?;
                feed_seq(&k).ok_or_else(|| corrupt(&db_path, "a damaged feed key".to_owned()))?
            }
            None => 0,
        };
        let durable_feed = Arc::new(AtomicU64::new(last_feed));
        let (writer, queue) = mpsc::channel();
        let (to_sync, syncs) = mpsc::channel();
        let syncer = std::thread::Builder::new()
            .name("civicflow-store-sync".to_owned())
            .spawn({
                let (db, path, durable) = (db.clone(), db_path.clone(), durable_feed.clone());
                move || sync_loop(&db, &path, &syncs, &durable)
            })
            .map_err(io)?;
        let writer_thread = std::thread::Builder::new()
            .name("civicflow-store-writer".to_owned())
            .spawn({
                let (data, path) = (data.clone(), db_path.clone());
                move || write_loop(&data, &path, &queue, &to_sync, last_feed + 1)
            })
            .map_err(io)?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                path: db_path,
                db,
                data,
                writer: Some(writer),
                durable_feed,
                threads: vec![writer_thread, syncer],
                _lock: lock,
            }),
        })
    }

    fn data(&self) -> &Tree {
        &self.inner.data
    }

    fn err(&self, e: sled::Error) -> StoreError {
        sled_error(&self.inner.path, e)
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, StoreError> {
        decode(&self.inner.path, what, bytes)
    }

    fn decompress(&self, what: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        lz4_flex::block::decompress_size_prepended(bytes)
            .map_err(|e| self.corrupt(format!("{what} cannot be read: {e}")))
    }

    fn get(&self, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.data().get(key).map_err(|e| self.err(e))
    }

    /// Every record of a small table (webhooks, tokens, definitions), in key order.
    fn all<T: DeserializeOwned>(&self, table: u8, what: &str) -> Result<Vec<T>, StoreError> {
        self.data()
            .scan_prefix([table])
            .map(|r| {
                let (_, v) = r.map_err(|e| self.err(e))?;
                self.decode(what, &v)
            })
            .collect()
    }

    fn corrupt(&self, detail: String) -> StoreError {
        corrupt(&self.inner.path, detail)
    }
}

/// A commit encoded and ready for the writer: everything but the checks, which need the
/// stored state at the moment of writing.
#[derive(Default)]
struct Prepared {
    cases: Vec<PreparedCase>,
    /// Unconditional writes (events, tokens, timers) and removals (tokens, timers).
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    removes: Vec<Vec<u8>>,
    /// (key as given, stored key, record): inserted only if absent.
    idempotency: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// Notifications, encoded; their sequence numbers are given by the writer.
    feed: Vec<Vec<u8>>,
    /// (key, record) of webhooks written only if still registered.
    webhook_updates: Vec<(Vec<u8>, Vec<u8>)>,
}

struct PreparedCase {
    id: CaseId,
    expected_rev: Option<u64>,
    index_keys: Vec<Vec<u8>>,
    json: Vec<u8>,
}

impl Prepared {
    fn new(tx: &Transaction) -> Prepared {
        let mut p = Prepared::default();
        for write in &tx.cases {
            let id = write.case.id;
            p.cases.push(PreparedCase {
                id,
                expected_rev: write.expected_rev,
                index_keys: write
                    .case
                    .index_entries()
                    .iter()
                    .map(|e| index_key(e, id))
                    .collect(),
                json: compress(&encode(&write.case)),
            });
        }
        for (case, run) in event_runs(&tx.events) {
            p.puts.push((event_key(case, run[0].seq), encode(&run)));
        }
        for (token, target) in &tx.put_tokens {
            p.puts
                .push((keyed(TOKENS, token.as_bytes()), encode(target)));
        }
        for hook in &tx.put_webhooks {
            p.puts
                .push((keyed(WEBHOOKS, hook.id.as_bytes()), encode(hook)));
        }
        for hook in &tx.update_webhooks {
            p.webhook_updates
                .push((keyed(WEBHOOKS, hook.id.as_bytes()), encode(hook)));
        }
        for id in &tx.delete_webhooks {
            p.removes.push(keyed(WEBHOOKS, id.as_bytes()));
        }
        p.feed = tx.notify.iter().map(encode).collect();
        for def in &tx.put_definitions {
            p.puts.push((definition_key(def), encode(def)));
        }
        for change in &tx.registry_changes {
            let id = uuid::Uuid::now_v7();
            p.puts
                .push((keyed(REGISTRY_CHANGES, id.as_bytes()), encode(change)));
        }
        for token in &tx.put_api_tokens {
            p.puts
                .push((keyed(API_TOKENS, token.digest.as_bytes()), encode(token)));
        }
        for token in &tx.delete_tokens {
            p.removes.push(keyed(TOKENS, token.as_bytes()));
        }
        for timer in &tx.clear_timers {
            p.removes.push(timer_key(timer));
        }
        for timer in &tx.set_timers {
            p.puts.push((timer_key(timer), encode(timer)));
        }
        for (key, record) in &tx.put_idempotency {
            p.idempotency.push((
                key.clone(),
                keyed(IDEMPOTENCY, key.as_bytes()),
                encode(record),
            ));
        }
        p
    }

    /// The case ids and idempotency keys this commit's checks depend on: two commits that share
    /// none can be checked against the same stored state and written in one batch.
    fn claims(&self) -> impl Iterator<Item = &[u8]> {
        let cases = self.cases.iter().map(|c| c.id.as_bytes().as_slice());
        cases.chain(self.idempotency.iter().map(|(_, key, _)| key.as_slice()))
    }

    /// Checks this commit against the stored state and adds its writes to `writes`, its
    /// notifications under the sequence numbers from `next_feed` on; on a failed check, adds
    /// nothing. A case's record comes before anything that points to it (index entries aside,
    /// which are only hints to read the record), so no reader finds a token, timer or
    /// idempotency record whose case is not there yet.
    fn check_into(
        self,
        data: &Tree,
        path: &Path,
        writes: &mut Vec<journal::Write>,
        next_feed: &mut u64,
    ) -> Result<(), StoreError> {
        let get = |key: &[u8]| data.get(key).map_err(|e| sled_error(path, e));
        let mut inserts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut removes: Vec<Vec<u8>> = self.removes;
        for case in self.cases {
            let key = keyed(CASES, case.id.as_bytes());
            let old = match get(&key)? {
                Some(bytes) => Some(CaseHead::read(&bytes).ok_or_else(|| {
                    corrupt(path, format!("the record of case {} is damaged", case.id))
                })?),
                None => None,
            };
            let rev = match (&old, case.expected_rev) {
                (None, None) => 1,
                (Some(_), None) => return Err(StoreError::Exists { case_id: case.id }),
                (Some(o), Some(expected)) if o.rev == expected => expected + 1,
                (_, Some(expected)) => {
                    return Err(StoreError::Conflict {
                        case_id: case.id,
                        expected,
                    });
                }
            };
            let before = old.map(|o| o.index_keys).unwrap_or_default();
            for gone in before.iter().filter(|k| !case.index_keys.contains(k)) {
                removes.push(gone.clone());
            }
            for new in case.index_keys.iter().filter(|k| !before.contains(k)) {
                inserts.push((new.clone(), Vec::new()));
            }
            inserts.push((key, CaseHead::write(rev, &case.index_keys, &case.json)));
        }
        for (given, key, record) in self.idempotency {
            if get(&key)?.is_some() {
                return Err(StoreError::KeyTaken { key: given });
            }
            inserts.push((key, record));
        }
        for (key, hook) in self.webhook_updates {
            if get(&key)?.is_some() {
                inserts.push((key, hook));
            }
        }
        inserts.extend(self.puts);
        for notification in self.feed {
            inserts.push((keyed(FEED, &next_feed.to_be_bytes()), notification));
            *next_feed += 1;
        }
        // Removals first: a timer replaced by one at the same key must stay.
        writes.extend(removes.into_iter().map(|key| (key, None)));
        writes.extend(inserts.into_iter().map(|(key, value)| (key, Some(value))));
        Ok(())
    }
}

/// At most this many commits share one group and sync, so that a busy queue still gets answers.
const GROUP_MAX: usize = 1024;

/// Answers waiting for the sync that makes their commits durable.
type Answers = Vec<oneshot::Sender<Result<(), StoreError>>>;

/// The writer. It checks every waiting commit against the stored state and writes all that pass
/// as one group (see [`journal`]), then hands their answers to the syncer and goes on with the
/// next group while the disk syncs. A commit that depends on a case or key an earlier waiting
/// commit writes starts the next group instead, so that it is checked against that write.
///
/// A group that fails half-way leaves its journal entry behind, to be completed at the next
/// start; until then the tree may hold part of it, so every later commit is refused.
fn write_loop(
    data: &Tree,
    path: &Path,
    queue: &mpsc::Receiver<Pending>,
    to_sync: &mpsc::Sender<(Answers, u64)>,
    mut next_feed: u64,
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
        let mut claimed: HashSet<Vec<u8>> = HashSet::new();
        let mut passed = Vec::new();
        for (prepared, answer) in waiting {
            if prepared.claims().any(|c| claimed.contains(c)) {
                carried = Some((prepared, answer));
                break;
            }
            claimed.extend(prepared.claims().map(<[u8]>::to_vec));
            match prepared.check_into(data, path, &mut writes, &mut next_feed) {
                Ok(()) => passed.push(answer),
                Err(e) => {
                    let _ = answer.send(Err(e));
                }
            }
        }
        group += 1;
        match journal::apply(data, writes, group) {
            Ok(()) => {
                if let Err(mpsc::SendError((answers, _))) = to_sync.send((passed, next_feed - 1)) {
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
fn sync_loop(
    db: &sled::Db,
    path: &Path,
    syncs: &mpsc::Receiver<(Answers, u64)>,
    durable_feed: &AtomicU64,
) {
    while let Ok((first, mut feed)) = syncs.recv() {
        let mut answers = first;
        for (more, f) in syncs.try_iter() {
            answers.extend(more);
            feed = feed.max(f);
        }
        match db.flush() {
            Ok(_) => {
                durable_feed.fetch_max(feed, Ordering::SeqCst);
                for answer in answers {
                    let _ = answer.send(Ok(()));
                }
            }
            Err(e) => fail_all(answers, path, &e.to_string()),
        }
    }
}

fn fail_all(answers: Answers, path: &Path, detail: &str) {
    for answer in answers {
        let _ = answer.send(Err(StoreError::Io {
            path: path.display().to_string(),
            detail: detail.to_owned(),
        }));
    }
}

fn check_format(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
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

fn corrupt(path: &Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail,
    }
}

fn decode<T: DeserializeOwned>(path: &Path, what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(path, format!("{what} cannot be read: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records are plain data and always serialize")
}

/// `prefix` followed by `rest`: a key of one table.
fn keyed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

/// Case records are JSON compressed with LZ4: about 40% of the bytes for sled to log, cache and
/// keep, for a few microseconds. Events are not: a commit's few events are a couple of hundred
/// bytes, which LZ4 shrinks by under a tenth.
fn compress(json: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(json)
}

/// A transaction's events as runs of one case with consecutive sequence numbers, in order: each
/// run is stored as one record under its first event's key, so a transition that records three
/// events costs the store one write, not three.
fn event_runs(events: &[(CaseId, Event)]) -> Vec<(CaseId, Vec<&Event>)> {
    let mut runs: Vec<(CaseId, Vec<&Event>)> = Vec::new();
    for (case, event) in events {
        match runs.last_mut() {
            Some((c, run)) if c == case && run.last().is_some_and(|e| e.seq + 1 == event.seq) => {
                run.push(event);
            }
            _ => runs.push((*case, vec![event])),
        }
    }
    runs
}

/// The key of the run of events starting at `seq`.
fn event_key(case: CaseId, seq: u64) -> Vec<u8> {
    let mut k = keyed(EVENTS, case.as_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Due time, case, kind: the timer loop reads them in due order.
fn timer_key(timer: &Timer) -> Vec<u8> {
    let due = timer.due_at.as_millisecond().max(0) as u64;
    let mut k = keyed(TIMERS, &due.to_be_bytes());
    k.extend_from_slice(timer.case_id.as_bytes());
    k.extend_from_slice(timer.kind.id().as_bytes());
    k
}

fn index_prefix(name: &str, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + value.len() + 19);
    k.push(INDEX);
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

/// Definitions sort by kind, id, then version (big-endian, so numerically).
fn definition_key(def: &Published) -> Vec<u8> {
    let kind = match def.kind {
        Kind::Adapter => b'a',
        Kind::Workflow => b'w',
    };
    let mut k = keyed(DEFINITIONS, &[kind]);
    k.extend_from_slice(def.id.as_bytes());
    k.push(0);
    k.extend_from_slice(&def.version.to_be_bytes());
    k
}

fn feed_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

fn case_id_at_end(key: &[u8]) -> Option<CaseId> {
    let start = key.len().checked_sub(16)?;
    CaseId::from_slice(&key[start..]).ok()
}

/// A length as the head stores it. A case record is far below 4 GiB: the request body limit and
/// the business-key limit bound it.
fn u32_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The head of a case record: revision (8 bytes), number of index keys (4 bytes), each index key
/// as length (4 bytes) and bytes; the case's compressed JSON follows.
struct CaseHead {
    rev: u64,
    index_keys: Vec<Vec<u8>>,
}

impl CaseHead {
    fn write(rev: u64, index_keys: &[Vec<u8>], json: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(json.len() + 512);
        out.extend_from_slice(&rev.to_be_bytes());
        out.extend_from_slice(&u32_len(index_keys.len()).to_be_bytes());
        for k in index_keys {
            out.extend_from_slice(&u32_len(k.len()).to_be_bytes());
            out.extend_from_slice(k);
        }
        out.extend_from_slice(json);
        out
    }

    /// The head, or `None` if the bytes are not a case record.
    fn read(bytes: &[u8]) -> Option<CaseHead> {
        CaseHead::split(bytes).map(|(head, _)| head)
    }

    fn split(bytes: &[u8]) -> Option<(CaseHead, &[u8])> {
        let rev = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let count = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        let mut at = 12;
        let mut index_keys = Vec::new();
        for _ in 0..count {
            let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
            let len = usize::try_from(len).ok()?;
            index_keys.push(bytes.get(at + 4..at.checked_add(4 + len)?)?.to_vec());
            at += 4 + len;
        }
        Some((CaseHead { rev, index_keys }, bytes.get(at..)?))
    }
}

impl Store for SledStore {
    async fn commit(&self, tx: &Transaction) -> Result<(), StoreError> {
        if tx.is_empty() {
            return Ok(());
        }
        let closed = || StoreError::Io {
            path: self.inner.path.display().to_string(),
            detail: "the store is shutting down".to_owned(),
        };
        let (answer, outcome) = oneshot::channel();
        self.inner
            .writer
            .as_ref()
            .ok_or_else(closed)?
            .send((Prepared::new(tx), answer))
            .map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    async fn case(&self, id: CaseId) -> Result<Option<Case>, StoreError> {
        let Some(bytes) = self.get(&keyed(CASES, id.as_bytes()))? else {
            return Ok(None);
        };
        let (head, json) = CaseHead::split(&bytes)
            .ok_or_else(|| self.corrupt(format!("a case record cannot be read: case {id}")))?;
        let mut case: Case =
            self.decode("a case record", &self.decompress("a case record", json)?)?;
        case.rev = head.rev;
        Ok(Some(case))
    }

    async fn history(&self, id: CaseId, from: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        // The run holding event `from` may start before it: begin at the last run starting at
        // or before `from`.
        let before = self
            .data()
            .range(event_key(id, 0)..=event_key(id, from))
            .next_back()
            .transpose()
            .map_err(|e| self.err(e))?;
        let start = before.map_or_else(|| event_key(id, from), |(k, _)| k.to_vec());
        let mut events = Vec::new();
        for entry in self.data().range(start..=event_key(id, u64::MAX)) {
            if events.len() >= limit {
                break;
            }
            let (_, v) = entry.map_err(|e| self.err(e))?;
            let run: Vec<Event> = self.decode("a run of history events", &v)?;
            let wanted = limit - events.len();
            events.extend(run.into_iter().filter(|e| e.seq >= from).take(wanted));
        }
        Ok(events)
    }

    async fn due_timers(&self, until: Timestamp, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let start = [TIMERS];
        let end = keyed(
            TIMERS,
            &(until.as_millisecond().max(0) as u64 + 1).to_be_bytes(),
        );
        self.data()
            .range(start.as_slice()..end.as_slice())
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
        let range = self.data().range(low..high);
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
        range: &IndexRange,
    ) -> Result<Vec<Position>, StoreError> {
        let mut low = keyed(INDEX, name.as_bytes());
        low.push(0);
        let mut high = low.clone();
        low.extend_from_slice(range.from.as_bytes());
        high.extend_from_slice(range.to.as_bytes());
        if let Some((value, case)) = &range.after {
            let mut at = index_prefix(name, value);
            at.extend_from_slice(case.as_bytes());
            match range.order {
                Order::Ascending => {
                    at.push(0);
                    low = low.max(at);
                }
                Order::Descending => high = high.min(at),
            }
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let skip = name.len() + 2;
        let entries = self.data().range(low..high);
        let entries: Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>>> = match range.order {
            Order::Ascending => Box::new(entries),
            Order::Descending => Box::new(entries.rev()),
        };
        let mut out = Vec::new();
        for r in entries.take(range.limit) {
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
        match self.get(&keyed(TOKENS, token.as_bytes()))? {
            Some(v) => Ok(Some(self.decode("a callback token", &v)?)),
            None => Ok(None),
        }
    }

    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self.get(&keyed(IDEMPOTENCY, key.as_bytes()))? {
            Some(v) => Ok(Some(self.decode("an idempotency record", &v)?)),
            None => Ok(None),
        }
    }

    async fn api_token(&self, digest: &str) -> Result<Option<ApiToken>, StoreError> {
        match self.get(&keyed(API_TOKENS, digest.as_bytes()))? {
            Some(v) => Ok(Some(self.decode("an API token", &v)?)),
            None => Ok(None),
        }
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<(u64, Notification)>, StoreError> {
        let durable = self.inner.durable_feed.load(Ordering::SeqCst);
        if after >= durable {
            return Ok(Vec::new());
        }
        let low = keyed(FEED, &(after + 1).to_be_bytes());
        let high = keyed(FEED, &(durable + 1).to_be_bytes());
        self.data()
            .range(low..high)
            .take(limit)
            .map(|r| {
                let (k, v) = r.map_err(|e| self.err(e))?;
                let seq = feed_seq(&k).ok_or_else(|| self.corrupt("a damaged feed key".into()))?;
                Ok((seq, self.decode("a notification", &v)?))
            })
            .collect()
    }

    async fn feed_end(&self) -> Result<u64, StoreError> {
        Ok(self.inner.durable_feed.load(Ordering::SeqCst))
    }

    async fn trim_feed(&self, upto: u64) -> Result<(), StoreError> {
        let high = keyed(FEED, &(upto.saturating_add(1)).to_be_bytes());
        let data = self.data();
        // Neither atomic nor synced on its own: an entry that comes back after a crash is
        // trimmed again.
        for r in data.range([FEED].as_slice()..high.as_slice()) {
            let (k, _) = r.map_err(|e| self.err(e))?;
            data.remove(k).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.all(WEBHOOKS, "a webhook")
    }

    async fn definitions(&self) -> Result<Vec<Published>, StoreError> {
        self.all(DEFINITIONS, "a published definition")
    }

    async fn registry_changes(&self) -> Result<Vec<Change>, StoreError> {
        self.all(REGISTRY_CHANGES, "a registry change")
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.all(API_TOKENS, "an API token")
    }
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
        let _ = self.db.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::EventKind;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            at: Timestamp::UNIX_EPOCH,
            kind: EventKind::CallbackReceived {
                step: format!("s{seq}"),
            },
        }
    }

    #[test]
    fn a_transactions_events_are_stored_as_one_run_per_case_and_unbroken_sequence() {
        let (a, b) = (CaseId::now_v7(), CaseId::now_v7());
        let events = vec![
            (a, event(3)),
            (a, event(4)),
            (b, event(0)),
            (a, event(5)),
            (a, event(7)),
        ];
        let runs: Vec<(CaseId, Vec<u64>)> = event_runs(&events)
            .into_iter()
            .map(|(case, run)| (case, run.iter().map(|e| e.seq).collect()))
            .collect();
        assert_eq!(
            runs,
            vec![(a, vec![3, 4]), (b, vec![0]), (a, vec![5]), (a, vec![7])]
        );
        assert!(event_runs(&[]).is_empty());
    }
}
