//! Work that one node at a time may do, claimed under a lease and fenced by an epoch.
//!
//! Several engines (nodes) may share a store. Work that must be done once (a due timer fired,
//! a webhook's notifications posted in order) is *claimed*: the store hands it to one node for
//! a lease, with an *epoch* that grows every time the work changes hands. Every commit the node
//! makes under the claim carries the epoch as a [`Fence`]; the store refuses it once another
//! node has taken the work over (after the lease lapsed) or the work is gone. A node that stalls
//! past its lease (a pause, a frozen VM) therefore commits nothing it decided under the old
//! claim, and a node that dies has its work taken over when its lease runs out.

use std::fmt;

use crate::case::Timer;

/// The name of one engine among those sharing a store; claims are held by a node.
pub type NodeId = str;

/// A piece of work a node claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Firing one due timer.
    Timer(Timer),
    /// Posting one webhook's notifications, in order.
    Webhook(String),
}

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Work::Timer(t) => write!(
                f,
                "timer {} of case {} due at {}",
                t.kind.id(),
                t.case_id,
                t.due_at
            ),
            Work::Webhook(id) => write!(f, "delivery to webhook {id}"),
        }
    }
}

/// A claim that a commit is made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub work: Work,
    pub epoch: u64,
}

/// A due timer claimed by a node, and the epoch its commits carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub timer: Timer,
    pub epoch: u64,
}

impl Claimed {
    /// The fence a commit made under this claim carries.
    pub fn fence(&self) -> Fence {
        Fence {
            work: Work::Timer(self.timer.clone()),
            epoch: self.epoch,
        }
    }
}
