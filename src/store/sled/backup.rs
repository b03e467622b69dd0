//! A consistent copy of a store that is serving, and a store built from one.
//!
//! The copy is the store as it stood when the backup began, read in key order while commits go
//! on: the writer, before it writes a group, keeps the value each key of the group had (its
//! *preimage*) if the backup has not copied that key yet, and the backup copies the preimage
//! instead of what it finds. The writer holds the backup's lock while it writes a group and the
//! backup holds it while it reads a chunk of keys, so a chunk never sees half a group and no
//! commit waits longer than one chunk's read.
//!
//! The file: `CIVICFLOW-BACKUP\n`, the format version (u32 LE), then records `1 [key length:
//! u32 LE][key][value length: u32 LE][value]`, then `0 [record count: u64 LE][SHA-256 of every
//! byte before it]`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use sled::{IVec, Tree};

use super::SledStore;
use super::counters;
use super::encoding::sled_error;
use super::journal::{JOURNAL, Write as GroupWrite};
use super::keys::{TIMERS, timer_value_of_json};
use crate::store::{Copied, FORMAT_VERSION, StoreError, UPGRADES_FROM};

const MAGIC: &[u8] = b"CIVICFLOW-BACKUP\n";
/// Keys copied per read of the tree.
const CHUNK: usize = 1024;
/// The largest key or value a backup may hold: far above any record civicflow writes, so that a
/// damaged length is an error, not an allocation of gigabytes.
const MAX_PART: u32 = 64 << 20;

/// The most bytes of preimages a backup may hold. A backup whose reader stalls (a client that
/// stopped reading the stream) would otherwise keep every value the writer changes: past this,
/// the backup is broken off and its memory let go.
const MAX_PREIMAGE_BYTES: usize = 256 << 20;

/// What a running backup has copied so far, and the values it must copy instead of the tree's.
pub(super) struct Snapshot {
    /// The last key copied; `None` before the first chunk.
    copied: Option<Vec<u8>>,
    /// Key → its value when the backup began (`None`: it did not exist), for keys written since
    /// and not copied yet.
    preimages: BTreeMap<Vec<u8>, Option<IVec>>,
    /// Why the backup cannot go on, which then ends with an error: the store stopped writing
    /// (it may have copied writes that did not reach the disk), or it fell too far behind.
    broken_off: Option<String>,
    /// The bytes of the preimages kept, and the most it may keep.
    kept: usize,
    most: usize,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            copied: None,
            preimages: BTreeMap::new(),
            broken_off: None,
            kept: 0,
            most: MAX_PREIMAGE_BYTES,
        }
    }
}

/// Keys and values, in key order, as the backup copies them.
type Chunk = Vec<(Vec<u8>, IVec)>;

/// The running backup, if any: shared by the writer and the backup.
pub(super) type Backups = Mutex<Option<Snapshot>>;

impl Snapshot {
    pub(super) fn break_off(&mut self, cause: &str) {
        self.broken_off.get_or_insert_with(|| cause.to_owned());
    }

    /// Keeps the value every key of `writes` has now, before the writer changes it, unless the
    /// backup copied that key already or kept its value before.
    /// Past [`MAX_PREIMAGE_BYTES`], the backup is broken off instead, and what it kept let go.
    pub(super) fn keep(&mut self, data: &Tree, writes: &[GroupWrite]) -> sled::Result<()> {
        if self.broken_off.is_some() {
            return Ok(());
        }
        for (key, _) in writes {
            let copied = self.copied.as_deref().is_some_and(|c| key.as_slice() <= c);
            if copied || self.preimages.contains_key(key) {
                continue;
            }
            let before = data.get(key)?;
            self.kept += key.len() + before.as_ref().map_or(0, |v| v.len());
            self.preimages.insert(key.clone(), before);
        }
        if self.kept > self.most {
            self.break_off(&format!(
                "it fell behind the writes by more than {} MiB (is its reader still reading?)",
                self.most >> 20
            ));
            self.preimages = BTreeMap::new();
        }
        Ok(())
    }
}

/// Counts and hashes what goes through it.
struct Hashed<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Ends the backup (the writer stops keeping preimages) however it ends.
struct Running<'a>(&'a Backups);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        *self.0.lock().expect("backup lock") = None;
    }
}

impl SledStore {
    /// Writes a consistent copy of the store to `out` while it serves. One backup at a time.
    pub fn copy_to(&self, out: impl Write) -> Result<Copied, StoreError> {
        let path = &self.inner.path;
        let io = |e: std::io::Error| StoreError::Io {
            path: "the backup".to_owned(),
            detail: e.to_string(),
        };
        let backups = &self.inner.backups;
        // A store that takes no writes may hold in memory writes that never reach the disk.
        self.inner.writes.check()?;
        {
            let mut running = backups.lock().expect("backup lock");
            if running.is_some() {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    detail: "a backup of this store is already running; try again when it ends"
                        .to_owned(),
                });
            }
            *running = Some(Snapshot::default());
        }
        let _running = Running(backups);
        let mut out = Hashed {
            inner: out,
            hash: Sha256::new(),
            bytes: 0,
        };
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
        let mut records: u64 = 0;
        loop {
            let (chunk, done) = self.next_chunk()?;
            for (key, value) in &chunk {
                out.write_all(&[1]).map_err(io)?;
                write_part(&mut out, key).map_err(io)?;
                write_part(&mut out, value).map_err(io)?;
                records += 1;
            }
            if done {
                break;
            }
        }
        // Finished only if the store wrote throughout: a stop at the last moment is caught
        // here, not only at the next chunk.
        self.inner.writes.check()?;
        out.write_all(&[0]).map_err(io)?;
        out.write_all(&records.to_le_bytes()).map_err(io)?;
        let digest = out.hash.clone().finalize();
        out.inner.write_all(&digest).map_err(io)?;
        out.flush().map_err(io)?;
        Ok(Copied {
            records,
            bytes: out.bytes + digest.len() as u64,
        })
    }

    /// The next keys in order, each with its value when the backup began; whether that was the
    /// last of them.
    fn next_chunk(&self) -> Result<(Chunk, bool), StoreError> {
        let data = self.data()?;
        let mut guard = self.inner.backups.lock().expect("backup lock");
        let snapshot = guard.get_or_insert_with(Snapshot::default);
        if let Some(cause) = &snapshot.broken_off {
            return Err(StoreError::Unavailable {
                path: self.inner.path.display().to_string(),
                detail: format!(
                    "the store stopped writing during the backup, which is abandoned: {cause}"
                ),
            });
        }
        let from = match &snapshot.copied {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let found: Vec<(IVec, IVec)> = data
            .range::<Vec<u8>, _>((from.clone(), Bound::Unbounded))
            .take(CHUNK)
            .collect::<sled::Result<_>>()
            .map_err(|e| self.err(e))?;
        let done = found.len() < CHUNK;
        let until = match (done, found.last()) {
            (false, Some((k, _))) => Bound::Included(k.to_vec()),
            _ => Bound::Unbounded,
        };
        let mut merged: BTreeMap<Vec<u8>, Option<IVec>> = found
            .into_iter()
            .map(|(k, v)| (k.to_vec(), Some(v)))
            .collect();
        for (k, before) in snapshot
            .preimages
            .range::<Vec<u8>, _>((from, until.clone()))
        {
            merged.insert(k.clone(), before.clone());
        }
        snapshot.copied = match until {
            Bound::Included(k) => Some(k),
            _ => merged
                .keys()
                .next_back()
                .cloned()
                .or(snapshot.copied.take()),
        };
        if let Some(copied) = &snapshot.copied {
            let rest = snapshot.preimages.split_off(copied);
            snapshot.preimages = rest;
            snapshot.preimages.remove(copied);
        }
        // Unfinished groups are never seen (the writer holds the lock while it writes one), so
        // no journal entry is copied; a key that did not exist when the backup began is not.
        let chunk = merged
            .into_iter()
            .filter(|(k, _)| k.first() != Some(&JOURNAL))
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Ok((chunk, done))
    }

    /// Builds a store in `dir` from a backup read from `input`, checking its format version and
    /// checksum; refuses a `dir` that holds anything. On any failure nothing is left in `dir`.
    pub fn restore_from(input: impl Read, dir: &Path) -> Result<Copied, StoreError> {
        let path = dir.display().to_string();
        if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(StoreError::Io {
                path,
                detail: "the directory is not empty: restore into a new one (a backup never overwrites a store)".to_owned(),
            });
        }
        let restored = SledStore::restore_into(input, dir);
        if restored.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        restored
    }

    fn restore_into(input: impl Read, dir: &Path) -> Result<Copied, StoreError> {
        let store = SledStore::open(dir, 16 << 20)?;
        let data = store.data()?;
        let mut failed = None;
        let copied = read_backup(input, |key, value| {
            // A backup of format version 5 holds its timers' records as JSON.
            let value = match key.first() {
                Some(&TIMERS) => timer_value_of_json(&value).unwrap_or(value),
                _ => value,
            };
            if failed.is_none()
                && let Err(e) = data.insert(key, value)
            {
                failed = Some(sled_error(&store.inner.path, e));
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        // Nothing is served from the store yet: the counters' changes the backup holds unfolded
        // are folded now, before the writer writes a record of its own over theirs.
        counters::fold_left_over(&data, &store.inner.path)?;
        store.flush()?;
        tracing::info!(store = %dir.display(), records = copied.records, "store restored from a backup");
        Ok(copied)
    }
}

/// Reads a backup through, checking it whole (the format version, every record, the
/// checksum), and hands each record to `record`.
pub fn read_backup(
    input: impl Read,
    mut record: impl FnMut(Vec<u8>, Vec<u8>),
) -> Result<Copied, StoreError> {
    let damaged = |detail: String| StoreError::Corrupt {
        path: "the backup".to_owned(),
        detail,
    };
    let mut input = HashingReader {
        inner: input,
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut magic = [0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| damaged("it is too short to be a civicflow backup".to_owned()))?;
    if magic != MAGIC {
        return Err(damaged("it is not a civicflow backup".to_owned()));
    }
    let version = u32::from_le_bytes(read_array(&mut input).map_err(|e| damaged(e.to_string()))?);
    if version != FORMAT_VERSION && !UPGRADES_FROM.contains(&version) {
        return Err(StoreError::Incompatible {
            path: "the backup".to_owned(),
            found: version.to_string(),
            expected: FORMAT_VERSION,
        });
    }
    let mut records: u64 = 0;
    loop {
        let [tag] = read_array(&mut input).map_err(|e| damaged(e.to_string()))?;
        match tag {
            1 => {
                let key = read_part(&mut input).map_err(|e| damaged(e.to_string()))?;
                let value = read_part(&mut input).map_err(|e| damaged(e.to_string()))?;
                record(key, value);
                records += 1;
            }
            0 => break,
            other => return Err(damaged(format!("an unknown record tag {other}"))),
        }
    }
    let count = u64::from_le_bytes(read_array(&mut input).map_err(|e| damaged(e.to_string()))?);
    let computed = input.hash.clone().finalize();
    let mut stored = [0u8; 32];
    input
        .inner
        .read_exact(&mut stored)
        .map_err(|_| damaged("its checksum is missing: the file was cut short".to_owned()))?;
    if stored.as_slice() != computed.as_slice() || count != records {
        return Err(damaged(
            "its checksum does not match its contents: the file is damaged".to_owned(),
        ));
    }
    Ok(Copied {
        records,
        bytes: input.bytes + 32,
    })
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn write_part(out: &mut impl Write, part: &[u8]) -> std::io::Result<()> {
    let len =
        u32::try_from(part.len()).map_err(|_| std::io::Error::other("a record over 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(part)
}

fn read_array<const N: usize>(input: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes).map_err(|_| {
        std::io::Error::other("it ends in the middle of a record: the file was cut short")
    })?;
    Ok(bytes)
}

fn read_part(input: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let len = u32::from_le_bytes(read_array(input)?);
    if len > MAX_PART {
        return Err(std::io::Error::other(format!(
            "a record claims {len} bytes: its length is damaged"
        )));
    }
    let mut part = vec![0u8; len as usize];
    input.read_exact(&mut part).map_err(|_| {
        std::io::Error::other("it ends in the middle of a record: the file was cut short")
    })?;
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SledStore {
        let dir = std::env::temp_dir().join(format!("civicflow-bk-{}", uuid::Uuid::new_v4()));
        SledStore::open(&dir, 1 << 20).unwrap()
    }

    /// Issue 33: a backup neither starts nor finishes while the store takes no writes (after a
    /// full disk): what it would copy may never reach the disk.
    #[test]
    fn no_backup_is_made_of_a_store_that_takes_no_writes() {
        let store = store();
        store.inner.writes.stop("No space left on device");
        let err = store.copy_to(Vec::new()).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(store.inner.backups.lock().unwrap().is_none());
        store.inner.writes.resume();
        assert!(store.copy_to(Vec::new()).is_ok());
    }

    /// Issue 33: a backup whose reader stalls is broken off once its preimages pass their
    /// bound, instead of keeping every value the writer changes.
    #[test]
    fn a_backup_that_falls_too_far_behind_is_broken_off_and_lets_go() {
        let (db, data) = {
            let db = sled::Config::new().temporary(true).open().unwrap();
            let data = db.open_tree("data").unwrap();
            (db, data)
        };
        for i in 0..10u8 {
            data.insert([b'c', i], vec![i; 100]).unwrap();
        }
        let mut snapshot = Snapshot {
            most: 500,
            ..Snapshot::default()
        };
        let write = |i: u8| vec![(vec![b'c', i], Some(vec![0u8; 100]))];
        for i in 0..4 {
            snapshot.keep(&data, &write(i)).unwrap();
        }
        assert!(snapshot.broken_off.is_none());
        assert_eq!(snapshot.preimages.len(), 4);
        for i in 4..6 {
            snapshot.keep(&data, &write(i)).unwrap();
        }
        let why = snapshot
            .broken_off
            .clone()
            .expect("the backup was broken off");
        assert!(why.contains("fell behind"), "{why}");
        assert!(snapshot.preimages.is_empty());
        snapshot.keep(&data, &write(7)).unwrap();
        assert!(snapshot.preimages.is_empty());
        drop(db);
    }
}
