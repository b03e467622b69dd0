//! The named counters (the on-time figures, agencies' outages): their changes written as one
//! record per group, folded into the counters now and then.
//!
//! A counter moves at nearly every commit (each step's open and done counts, by day, workflow,
//! agency and step): added to the stored counters group by group, every counter a group moved
//! was a sled read and a sled write (about five per birth case on the benchmark's groups under
//! callgrind, beside some thirty other writes). Instead, each group writes one record under
//! [`PENDING`]: the sum of
//! every change since the counters were last folded. Every [`FOLD_EVERY`] groups (or sooner,
//! once the record names [`FOLD_NAMES`] counters) a group adds that sum to the counters and
//! removes the record, in the same group. Either way the change is in the group that made it,
//! so it is as durable, and as atomic across a crash, as the commit it belongs to; opening a
//! store folds a record left over.
//!
//! The writer keeps the sum in memory as well ([`Pending`]), so that a reader adds it to the
//! stored counters without reading the record. A reader never holds the writer back while it
//! reads (a year's on-time table is thousands of counters): it copies the sum, reads the stored
//! counters, and reads again if a group folded meanwhile, which each fold announces by moving
//! a number before and after it is written ([`with_group`], [`read`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sled::Tree;

use super::encoding::sled_error;
use super::journal;
use super::keys::PENDING;
use crate::store::StoreError;

/// Groups between folds, at most.
const FOLD_EVERY: u32 = 128;
/// A record naming this many counters is folded at once: each group rewrites it whole.
const FOLD_NAMES: usize = 128;

/// The changes not yet folded into the counters: counter key → amount, and how many groups
/// wrote them. Shared by the writer and the readers of the store it belongs to.
#[derive(Default)]
pub(super) struct Pending {
    sums: BTreeMap<Vec<u8>, i64>,
    groups: u32,
}

/// The sum, and how many times a fold started or ended: odd while a fold is being written.
#[derive(Default)]
pub(super) struct Counted {
    pending: Mutex<Pending>,
    folds: AtomicU64,
}

pub(super) type Shared = Arc<Counted>;

pub(super) fn lock(shared: &Shared) -> MutexGuard<'_, Pending> {
    // A panic while locked leaves a sum no worse than a figure: read on.
    shared.pending.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many times a reader reads again after folds before it reads under the writer's lock.
const READ_TRIES: u32 = 4;

/// The counters whose keys are in `low..high`: what `stored` reads from the tree, plus the sum
/// not yet folded, as of one moment. The writer is not held back while `stored` reads, unless
/// folds kept coming through [`READ_TRIES`] reads.
pub(super) fn read<E>(
    shared: &Shared,
    low: &[u8],
    high: &[u8],
    mut stored: impl FnMut() -> Result<BTreeMap<Vec<u8>, i64>, E>,
) -> Result<BTreeMap<Vec<u8>, i64>, E> {
    let add = |mut sums: BTreeMap<Vec<u8>, i64>, pending: Vec<(Vec<u8>, i64)>| {
        for (k, n) in pending {
            *sums.entry(k).or_default() += n;
        }
        sums
    };
    let copy = |pending: &Pending| -> Vec<(Vec<u8>, i64)> {
        pending
            .in_range(low, high)
            .map(|(k, n)| (k.to_vec(), n))
            .collect()
    };
    for _ in 0..READ_TRIES {
        let before = shared.folds.load(Ordering::SeqCst);
        if before % 2 == 1 {
            // A fold is being written: its lock is held until it is done.
            drop(lock(shared));
            continue;
        }
        let pending = copy(&lock(shared));
        let sums = stored()?;
        if shared.folds.load(Ordering::SeqCst) == before {
            return Ok(add(sums, pending));
        }
    }
    let pending = lock(shared);
    let sums = stored()?;
    Ok(add(sums, copy(&pending)))
}

impl Pending {
    /// The amounts to add to the stored counters whose keys are in `low..high`.
    pub(super) fn in_range<'a>(
        &'a self,
        low: &'a [u8],
        high: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], i64)> + 'a {
        self.sums
            .range::<[u8], _>((
                std::ops::Bound::Included(low),
                std::ops::Bound::Excluded(high),
            ))
            .map(|(k, n)| (k.as_slice(), *n))
    }
}

/// What a group does with its counts: the writes it adds, and the sum once it is written.
pub(super) struct Planned {
    sums: BTreeMap<Vec<u8>, i64>,
    folded: bool,
}

/// Adds a group's `counts` to the pending sum, as writes of the group: the sum's record
/// rewritten, or, when it is time, the sum added to the stored counters and the record removed.
/// `None` when the group changes no counter.
pub(super) fn plan(
    pending: &Pending,
    counts: BTreeMap<Vec<u8>, i64>,
    data: &Tree,
    path: &Path,
    writes: &mut Vec<journal::Write>,
) -> Result<Option<Planned>, StoreError> {
    if counts.values().all(|n| *n == 0) {
        return Ok(None);
    }
    let mut sums = pending.sums.clone();
    for (key, n) in counts {
        match sums.get(&key).copied().unwrap_or(0) + n {
            0 => sums.remove(&key),
            sum => sums.insert(key, sum),
        };
    }
    let folded = pending.groups + 1 >= FOLD_EVERY || sums.len() >= FOLD_NAMES;
    if folded {
        add_to_counters(data, path, &sums, writes)?;
        writes.push((PENDING.to_vec(), None));
    } else {
        writes.push((PENDING.to_vec(), Some(encode(&sums))));
    }
    Ok(Some(Planned { sums, folded }))
}

/// Writes a group (`apply`), then makes its `planned` sum the one readers add. A group that
/// folds changes the stored counters, so readers wait from before it is written until the sum
/// it folded is gone from memory too, and never count it twice; other groups leave the stored
/// counters alone, and readers wait only for the sum to be replaced.
pub(super) fn with_group<E>(
    shared: &Shared,
    planned: Option<Planned>,
    apply: impl FnOnce() -> Result<(), E>,
) -> Result<(), E> {
    let Some(planned) = planned else {
        return apply();
    };
    if planned.folded {
        let mut pending = lock(shared);
        shared.folds.fetch_add(1, Ordering::SeqCst);
        let applied = apply();
        if applied.is_ok() {
            written(&mut pending, planned);
        }
        shared.folds.fetch_add(1, Ordering::SeqCst);
        applied?;
    } else {
        apply()?;
        written(&mut lock(shared), planned);
    }
    Ok(())
}

/// After the group is written: the sum as it now is.
fn written(pending: &mut Pending, planned: Planned) {
    if planned.folded {
        *pending = Pending::default();
    } else {
        pending.sums = planned.sums;
        pending.groups += 1;
    }
}

/// Folds a record a previous run left into the counters, as one group; returns whether there
/// was one. A record that cannot be read is dropped, with an error logged: a figure is not
/// worth refusing to open the store.
pub(super) fn fold_left_over(data: &Tree, path: &Path) -> Result<bool, StoreError> {
    let Some(record) = data.get(PENDING).map_err(|e| sled_error(path, e))? else {
        return Ok(false);
    };
    let mut writes = Vec::new();
    match decode(&record) {
        Some(sums) => add_to_counters(data, path, &sums, &mut writes)?,
        None => tracing::error!(
            store = %path.display(),
            "the counters' unfolded changes cannot be read; they are dropped"
        ),
    }
    writes.push((PENDING.to_vec(), None));
    journal::apply(data, writes, 0).map_err(|e| sled_error(path, e))?;
    Ok(true)
}

/// Adds `sums` to the stored counters, as writes. The writer is the only one to write counters,
/// so what the tree holds is every earlier fold's sum. A damaged counter starts again from 0,
/// with an error logged.
fn add_to_counters(
    data: &Tree,
    path: &Path,
    sums: &BTreeMap<Vec<u8>, i64>,
    writes: &mut Vec<journal::Write>,
) -> Result<(), StoreError> {
    for (key, n) in sums {
        let stored = data.get(key).map_err(|e| sled_error(path, e))?;
        let before = match stored.as_deref().map(<[u8; 8]>::try_from) {
            None => 0,
            Some(Ok(bytes)) => i64::from_be_bytes(bytes),
            Some(Err(_)) => {
                tracing::error!(
                    counter = %String::from_utf8_lossy(&key[1..]),
                    store = %path.display(),
                    "a damaged counter starts again from 0"
                );
                0
            }
        };
        writes.push((key.clone(), Some((before + n).to_be_bytes().to_vec())));
    }
    Ok(())
}

/// `[key length: u32 LE][key][amount: i64 LE]` per counter.
fn encode(sums: &BTreeMap<Vec<u8>, i64>) -> Vec<u8> {
    let size = sums.keys().map(|k| k.len() + 12).sum();
    let mut out = Vec::with_capacity(size);
    for (key, n) in sums {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&n.to_le_bytes());
    }
    out
}

/// The sums of a record, or `None` if it is damaged.
pub(super) fn decode(mut bytes: &[u8]) -> Option<BTreeMap<Vec<u8>, i64>> {
    let mut sums = BTreeMap::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let key = bytes.get(4..4 + len)?.to_vec();
        let n = i64::from_le_bytes(bytes.get(4 + len..12 + len)?.try_into().ok()?);
        sums.insert(key, n);
        bytes = &bytes[12 + len..];
    }
    Some(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, i64)]) -> BTreeMap<Vec<u8>, i64> {
        pairs
            .iter()
            .map(|(k, n)| (format!("n{k}").into_bytes(), *n))
            .collect()
    }

    fn tree() -> (sled::Db, Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("data").unwrap();
        (db, tree)
    }

    fn stored(data: &Tree, name: &str) -> Option<i64> {
        let v = data.get(format!("n{name}")).unwrap()?;
        Some(i64::from_be_bytes(v.as_ref().try_into().unwrap()))
    }

    fn run(data: &Tree, pending: &mut Pending, pairs: &[(&str, i64)]) -> bool {
        let mut writes = Vec::new();
        let path = Path::new("test");
        let Some(planned) = plan(pending, counts(pairs), data, path, &mut writes).unwrap() else {
            return false;
        };
        journal::apply(data, writes, 1).unwrap();
        written(pending, planned);
        true
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let sums = counts(&[("kpi/open/a", 3), ("kpi/done/b", -2), ("", 0)]);
        assert_eq!(decode(&encode(&sums)), Some(sums));
        assert_eq!(decode(&[]), Some(BTreeMap::new()));
        assert_eq!(decode(&[9, 0, 0, 0, b'n']), None);
    }

    #[test]
    fn groups_write_one_record_until_the_fold_adds_it_to_the_counters() {
        let (_db, data) = tree();
        let mut pending = Pending::default();
        assert!(!run(&data, &mut pending, &[]));
        assert!(!run(&data, &mut pending, &[("a", 0)]));
        assert!(data.get(PENDING).unwrap().is_none());
        let mut a = 0;
        while pending.groups < FOLD_EVERY - 1 {
            let b = if pending.groups % 2 == 0 { 1 } else { -1 };
            assert!(run(&data, &mut pending, &[("a", 1), ("b", b)]));
            a += 1;
        }
        // Each group rewrote the record; no counter was written, and b's changes cancelled out.
        assert_eq!(stored(&data, "a"), None);
        let record = decode(&data.get(PENDING).unwrap().unwrap()).unwrap();
        assert_eq!(record, pending.sums);
        assert_eq!(pending.sums, counts(&[("a", a), ("b", 1)]));
        // The group that makes FOLD_EVERY folds.
        run(&data, &mut pending, &[("c", 5)]);
        assert_eq!(stored(&data, "a"), Some(a));
        assert_eq!(stored(&data, "b"), Some(1));
        assert_eq!(stored(&data, "c"), Some(5));
        assert!(data.get(PENDING).unwrap().is_none());
        assert!(pending.sums.is_empty() && pending.groups == 0);
        run(&data, &mut pending, &[("c", -5)]);
        assert_eq!(pending.sums, counts(&[("c", -5)]));
    }

    #[test]
    fn a_record_naming_many_counters_is_folded_at_once() {
        let (_db, data) = tree();
        let mut pending = Pending::default();
        let names: Vec<String> = (0..FOLD_NAMES).map(|i| format!("k{i:03}")).collect();
        let pairs: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 2)).collect();
        run(&data, &mut pending, &pairs[..FOLD_NAMES - 1]);
        assert_eq!(stored(&data, "k000"), None);
        run(&data, &mut pending, &pairs[FOLD_NAMES - 1..]);
        assert_eq!(stored(&data, "k000"), Some(2));
        assert!(pending.sums.is_empty());
    }

    /// Issue 33: a reader of the counters (the on-time table, `/metrics`) does not hold the
    /// writer back while it reads; a fold written meanwhile is read again, never counted twice.
    #[test]
    fn a_reader_does_not_hold_the_writer_back_and_a_fold_meanwhile_is_read_again() {
        let (_db, data) = tree();
        let shared = Shared::default();
        run(&data, &mut lock(&shared), &[("a", 10)]);
        let (low, high) = (b"n".to_vec(), b"o".to_vec());
        let scan = |data: &Tree| -> Result<BTreeMap<Vec<u8>, i64>, sled::Error> {
            data.range(low.as_slice()..high.as_slice())
                .map(|r| {
                    let (k, v) = r?;
                    Ok((
                        k.to_vec(),
                        i64::from_be_bytes(v.as_ref().try_into().unwrap()),
                    ))
                })
                .collect()
        };
        let mut scans = 0;
        let read = read(&shared, &low, &high, || {
            scans += 1;
            if scans == 1 {
                // A group that folds, written by another thread while this read goes on.
                let (shared, data) = (shared.clone(), data.clone());
                let (done, wait) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    lock(&shared).groups = FOLD_EVERY - 1;
                    let mut writes = Vec::new();
                    let counts = counts(&[("a", 1)]);
                    let planned =
                        plan(&lock(&shared), counts, &data, Path::new("t"), &mut writes).unwrap();
                    with_group(&shared, planned, || journal::apply(&data, writes, 2)).unwrap();
                    done.send(()).unwrap();
                });
                wait.recv_timeout(std::time::Duration::from_secs(10))
                    .expect("the writer waited for a reader");
            }
            scan(&data)
        })
        .unwrap();
        assert_eq!(read, counts(&[("a", 11)]));
        assert_eq!(scans, 2, "the fold made the reader read again");
    }

    #[test]
    fn a_record_left_over_is_folded_at_open_and_a_damaged_one_dropped() {
        let (_db, data) = tree();
        let mut pending = Pending::default();
        run(&data, &mut pending, &[("a", 4)]);
        run(&data, &mut pending, &[("a", 1), ("b", -1)]);
        assert!(fold_left_over(&data, Path::new("test")).unwrap());
        assert_eq!(
            (stored(&data, "a"), stored(&data, "b")),
            (Some(5), Some(-1))
        );
        assert!(!fold_left_over(&data, Path::new("test")).unwrap());

        data.insert(PENDING, &[7u8, 0][..]).unwrap();
        assert!(fold_left_over(&data, Path::new("test")).unwrap());
        assert!(data.get(PENDING).unwrap().is_none());
        assert_eq!(stored(&data, "a"), Some(5));
    }
}
