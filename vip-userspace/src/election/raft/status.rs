//! What the election reports (`vip status`, metrics), read without holding the elector:
//! the I/O thread leaves a copy here each turn and readers at normal priority take copies,
//! so a scrape never waits on, or delays, the election.
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use tokio::sync::watch;

use super::{sched::Obtained, RaftRole, Reject};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    pub role: RaftRole,
    /// What `leader()` says: leader with a fresh quorum acknowledgement.
    pub fenced_leader: bool,
    /// Since the send time of the newest heartbeat a majority acknowledged (leaders only).
    pub millis_since_quorum_ack: Option<u64>,
    /// Other members heard from within the maximum election timeout.
    pub reachable: Vec<u64>,
    /// False with `insecure: true`.
    pub authenticated: bool,
    /// Datagrams dropped since start, per reason (every reason, in `Reject::ALL` order).
    pub rejected: Vec<(Reject, u64)>,
    /// The scheduling the I/O thread obtained (`sched.rs`).
    pub sched: Obtained,
}

/// Dropped datagrams per reason, shared by the I/O loop and the status readers.
#[derive(Debug, Default)]
pub(super) struct Rejected([AtomicU64; Reject::ALL.len()]);

impl Rejected {
    pub(super) fn count(&self, r: Reject) {
        self.0[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn rows(&self) -> Vec<(Reject, u64)> {
        Reject::ALL
            .iter()
            .map(|r| (*r, self.0[r.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) term: u64,
    pub(super) leader: Option<u64>,
    pub(super) role: RaftRole,
    pub(super) quorum_ack: Option<Instant>,
    pub(super) reachable: Vec<u64>,
}

impl Snapshot {
    /// Before the first turn: a follower that knows no leader.
    pub(super) fn initial(term: u64) -> Snapshot {
        Snapshot {
            term,
            leader: None,
            role: RaftRole::Follower,
            quorum_ack: None,
            reachable: Vec::new(),
        }
    }
}

/// Reads an elector's status without holding the elector.
#[derive(Clone)]
pub struct StatusSource {
    pub(super) id: u64,
    pub(super) authenticated: bool,
    pub(super) sched: Obtained,
    pub(super) snapshot: Arc<Mutex<Snapshot>>,
    pub(super) rejected: Arc<Rejected>,
    pub(super) rx: watch::Receiver<bool>,
}

impl StatusSource {
    pub fn get(&self) -> RaftStatus {
        let s = self.snapshot.lock().map(|s| s.clone()).ok();
        let fenced_leader = *self.rx.borrow();
        let (authenticated, rejected, sched) =
            (self.authenticated, self.rejected.rows(), self.sched);
        match s {
            Some(s) => RaftStatus {
                id: self.id,
                term: s.term,
                leader: s.leader,
                role: s.role,
                fenced_leader,
                millis_since_quorum_ack: s.quorum_ack.map(|t| t.elapsed().as_millis() as u64),
                reachable: s.reachable,
                authenticated,
                rejected,
                sched,
            },
            None => RaftStatus {
                id: self.id,
                term: 0,
                leader: None,
                role: RaftRole::Follower,
                fenced_leader,
                millis_since_quorum_ack: None,
                reachable: Vec::new(),
                authenticated,
                rejected,
                sched,
            },
        }
    }
}

impl std::fmt::Debug for StatusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusSource")
            .field("id", &self.id)
            .finish()
    }
}
