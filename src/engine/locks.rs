//! Per-case mutual exclusion in one process: a fixed table of async mutexes, a case hashed to
//! one. Memory stays constant however many cases exist; two cases rarely share a slot, and
//! when they do they merely wait for each other.

use tokio::sync::{Mutex, MutexGuard};

use crate::case::CaseId;

pub struct Locks {
    slots: Vec<Mutex<()>>,
}

impl Locks {
    pub fn new(n: usize) -> Locks {
        Locks {
            slots: (0..n).map(|_| Mutex::new(())).collect(),
        }
    }

    pub async fn lock(&self, id: CaseId) -> MutexGuard<'_, ()> {
        let (hi, lo) = id.as_u64_pair();
        let slot = ((hi ^ lo) % self.slots.len() as u64) as usize;
        self.slots[slot].lock().await
    }
}
