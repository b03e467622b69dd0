//! Claims and leases, in memory. Every claim gets an epoch from one counter, so a later claim
//! always has a larger epoch than any before it in this process; the process that owns the store
//! is the only one that can hold a claim on it, so nothing needs to outlive it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::keys::{WEBHOOKS, keyed, timer_key};
use crate::store::Work;

struct Held {
    node: String,
    epoch: u64,
    until: Instant,
}

#[derive(Default)]
pub(super) struct Claims {
    /// By the key of the work: a timer's store key, or the webhook's.
    held: Mutex<HashMap<Vec<u8>, Held>>,
    last_epoch: AtomicU64,
}

/// The key a piece of work is claimed under.
pub(super) fn work_key(work: &Work) -> Vec<u8> {
    match work {
        Work::Timer(timer) => timer_key(timer),
        Work::Webhook(id) => keyed(WEBHOOKS, id.as_bytes()),
    }
}

impl Claims {
    /// Claims each item of `items` whose key no one holds under a live lease, until `limit`
    /// are claimed (or an item is an error): the items claimed, each with its epoch.
    pub(super) fn claim_free<K: AsRef<[u8]>, T, E>(
        &self,
        node: &str,
        lease: Duration,
        limit: usize,
        items: impl Iterator<Item = Result<(K, T), E>>,
    ) -> Result<Vec<(T, u64)>, E> {
        let now = Instant::now();
        let mut held = self.held.lock().expect("not poisoned");
        let mut claimed = Vec::new();
        for item in items {
            if claimed.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let key = key.as_ref();
            if held.get(key).is_some_and(|h| h.until > now) {
                continue;
            }
            let epoch = self.next_epoch();
            held.insert(key.to_vec(), Held::new(node, epoch, now + lease));
            claimed.push((value, epoch));
        }
        Ok(claimed)
    }

    /// Claims `key` for `node`: a new epoch if it is free or its lease lapsed, the same epoch
    /// renewed if `node` holds it already, `None` while another node does.
    pub(super) fn claim_or_renew(&self, key: &[u8], node: &str, lease: Duration) -> Option<u64> {
        let now = Instant::now();
        let mut held = self.held.lock().expect("not poisoned");
        match held.get_mut(key) {
            Some(h) if h.until > now && h.node == node => {
                h.until = now + lease;
                Some(h.epoch)
            }
            Some(h) if h.until > now => None,
            _ => {
                let epoch = self.next_epoch();
                held.insert(key.to_vec(), Held::new(node, epoch, now + lease));
                Some(epoch)
            }
        }
    }

    /// Whether `key` is held under `epoch` (its lease may have lapsed, as long as no one has
    /// claimed it since).
    pub(super) fn holds(&self, key: &[u8], epoch: u64) -> bool {
        let held = self.held.lock().expect("not poisoned");
        held.get(key).is_some_and(|h| h.epoch == epoch)
    }

    /// Forgets the claims on `keys` (their work is done: a timer cleared).
    pub(super) fn release<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        let mut held = self.held.lock().expect("not poisoned");
        if held.is_empty() {
            return;
        }
        for key in keys {
            held.remove(key);
        }
    }

    fn next_epoch(&self) -> u64 {
        self.last_epoch.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl Held {
    fn new(node: &str, epoch: u64, until: Instant) -> Held {
        Held {
            node: node.to_owned(),
            epoch,
            until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn a_live_claim_is_not_claimed_again_and_every_claim_has_a_larger_epoch() {
        let claims = Claims::default();
        let keys = || [b"a", b"b"].into_iter().map(|k| Ok::<_, ()>((k, k[0])));
        let first = claims.claim_free("n1", LEASE, 10, keys());
        assert_eq!(first, Ok(vec![(b'a', 1), (b'b', 2)]));
        assert_eq!(claims.claim_free("n2", LEASE, 10, keys()), Ok(vec![]));
        assert!(claims.holds(b"a", 1) && !claims.holds(b"a", 2));
        claims.release([b"a".as_slice()].into_iter());
        assert_eq!(
            claims.claim_free("n2", LEASE, 1, keys()),
            Ok(vec![(b'a', 3)])
        );
        assert!(!claims.holds(b"a", 1) && claims.holds(b"a", 3));
    }

    #[test]
    fn a_lapsed_lease_is_taken_over_under_a_new_epoch() {
        let claims = Claims::default();
        assert_eq!(claims.claim_or_renew(b"w", "n1", Duration::ZERO), Some(1));
        assert!(claims.holds(b"w", 1), "a lapsed claim holds until taken");
        assert_eq!(claims.claim_or_renew(b"w", "n2", LEASE), Some(2));
        assert_eq!(claims.claim_or_renew(b"w", "n1", LEASE), None);
        assert_eq!(claims.claim_or_renew(b"w", "n2", LEASE), Some(2));
        assert!(!claims.holds(b"w", 1));
    }
}
