//! How a group of commits reaches the tree atomically without a sled batch.
//!
//! A sled batch takes sled's process-wide lock exclusively: while it is applied every reader of
//! the store (the API, the engine's tasks, the timer loop) blocks, Tokio workers included, and
//! it seals a log buffer of its own. Under load that lock, not the disk, limited the engine.
//! Single-key writes take no lock, so a group is written as:
//!
//! 1. its whole list of writes under one journal key (one insert: atomic on its own);
//! 2. each write, in order;
//! 3. the removal of the journal key.
//!
//! sled recovers a prefix of its log. If any write of step 2 survived a crash, the journal
//! entry before it survived too; if the removal did not, nothing written after it did either.
//! So at start-up an entry still in the journal is replayed (its writes are plain puts and
//! removals: doing them again gives the same state) and removed, and the tree holds every group
//! whole or not at all. Readers may see a group half applied for the moment it takes; the
//! engine never depends on that, since each case is changed under its own lock and a case's
//! record is written before anything that points to it (see `Prepared::check_into`).

use std::path::Path;

use sled::Tree;

use super::encoding::{corrupt, sled_error, u32_len};
use super::keys::keyed;
use crate::store::StoreError;

/// Key prefix of the journal.
pub(super) const JOURNAL: u8 = b'j';

/// One write of a group: a value to put under a key, or `None` to remove the key.
pub(super) type Write = (Vec<u8>, Option<Vec<u8>>);

/// Applies `writes` in order, atomically across a crash; `seq` names the group's journal entry
/// (unique among entries present at once, which are at most one).
pub(super) fn apply(data: &Tree, writes: Vec<Write>, seq: u64) -> sled::Result<()> {
    let entry = (writes.len() > 1).then(|| keyed(JOURNAL, &seq.to_be_bytes()));
    if let Some(key) = &entry {
        data.insert(key.as_slice(), encode(&writes))?;
    }
    write_each(data, writes)?;
    if let Some(key) = entry {
        data.remove(key)?;
    }
    Ok(())
}

fn write_each(data: &Tree, writes: Vec<Write>) -> sled::Result<()> {
    for (key, value) in writes {
        match value {
            Some(v) => data.insert(key, v)?,
            None => data.remove(key)?,
        };
    }
    Ok(())
}

/// Completes every group a crash interrupted, oldest first, and forgets it. Returns how many.
pub(super) fn recover(data: &Tree, path: &Path) -> Result<usize, StoreError> {
    let entries: Vec<_> = data
        .scan_prefix([JOURNAL])
        .collect::<Result<_, _>>()
        .map_err(|e| sled_error(path, e))?;
    for (key, value) in &entries {
        let writes = decode(value).ok_or_else(|| {
            corrupt(
                path,
                format!("the journal entry {key:?} cannot be read; it holds an unfinished write"),
            )
        })?;
        // The entry itself stays until its writes are done: a crash now replays it again.
        write_each(data, writes).map_err(|e| sled_error(path, e))?;
        data.remove(key).map_err(|e| sled_error(path, e))?;
    }
    Ok(entries.len())
}

/// `[key length: u32 LE][key][0 | 1][value length: u32 LE][value]` per write, the value part
/// only after a 1.
fn encode(writes: &[Write]) -> Vec<u8> {
    let size = writes
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let mut out = Vec::with_capacity(size);
    for (key, value) in writes {
        out.extend_from_slice(&u32_len(key.len()).to_le_bytes());
        out.extend_from_slice(key);
        match value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&u32_len(v.len()).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Option<Vec<Write>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    fn len(bytes: &mut &[u8]) -> Option<usize> {
        let raw = take(bytes, 4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    }
    let mut writes = Vec::new();
    while !bytes.is_empty() {
        let n = len(&mut bytes)?;
        let key = take(&mut bytes, n)?.to_vec();
        let value = match take(&mut bytes, 1)? {
            [0] => None,
            [1] => {
                let n = len(&mut bytes)?;
                Some(take(&mut bytes, n)?.to_vec())
            }
            _ => return None,
        };
        writes.push((key, value));
    }
    Some(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (sled::Db, Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("data").unwrap();
        (db, tree)
    }

    #[test]
    fn writes_round_trip_through_the_encoding() {
        let writes = vec![
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"b".to_vec(), None),
            (Vec::new(), Some(Vec::new())),
        ];
        assert_eq!(decode(&encode(&writes)), Some(writes));
    }

    #[test]
    fn a_damaged_entry_is_refused() {
        let encoded = encode(&[(b"key".to_vec(), Some(b"value".to_vec()))]);
        assert_eq!(decode(&encoded[..encoded.len() - 1]), None);
        let mut bad_tag = encoded.clone();
        bad_tag[7] = 7;
        assert_eq!(decode(&bad_tag), None);
    }

    #[test]
    fn a_group_is_applied_in_order_and_leaves_no_entry() {
        let (_db, data) = tree();
        data.insert("gone", "x").unwrap();
        let writes = vec![
            (b"gone".to_vec(), None),
            (b"k".to_vec(), Some(b"1".to_vec())),
            (b"k".to_vec(), Some(b"2".to_vec())),
        ];
        apply(&data, writes, 7).unwrap();
        assert_eq!(data.get("gone").unwrap(), None);
        assert_eq!(data.get("k").unwrap().unwrap(), b"2".as_slice());
        assert_eq!(data.scan_prefix([JOURNAL]).count(), 0);
    }

    #[test]
    fn an_interrupted_group_is_completed_at_recovery() {
        let (_db, data) = tree();
        data.insert("old", "x").unwrap();
        let writes = vec![
            (b"old".to_vec(), None),
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"b".to_vec(), Some(b"2".to_vec())),
        ];
        // The crash came after the journal entry and the first write only.
        data.insert(keyed(JOURNAL, &3u64.to_be_bytes()), encode(&writes))
            .unwrap();
        data.remove("old").unwrap();
        let recovered = recover(&data, Path::new("db")).unwrap();
        assert_eq!(recovered, 1);
        assert_eq!(data.get("old").unwrap(), None);
        assert_eq!(data.get("a").unwrap().unwrap(), b"1".as_slice());
        assert_eq!(data.get("b").unwrap().unwrap(), b"2".as_slice());
        assert_eq!(data.scan_prefix([JOURNAL]).count(), 0);
    }

    #[test]
    fn a_garbled_entry_is_a_clear_error_naming_the_store() {
        let (_db, data) = tree();
        data.insert(keyed(JOURNAL, &1u64.to_be_bytes()), vec![9, 9])
            .unwrap();
        let e = recover(&data, Path::new("/srv/civicflow/db")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/srv/civicflow/db"), "{text}");
        assert!(text.contains("journal entry"), "{text}");
    }
}
