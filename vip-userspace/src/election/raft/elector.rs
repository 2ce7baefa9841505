//! The handle the daemon holds on a running election: leadership to watch, the dead-man
//! hand-over, status, and an orderly stop. Built by `start.rs`; everything here is called
//! from the daemon's threads and must never wait on the election thread.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{
    check_in::CheckIn,
    fence::Fence,
    sched::Obtained,
    status::{Rejected, Snapshot},
    RaftStatus, StatusSource,
};
use crate::dataplane::maps::DeadMan;

pub struct RaftElector {
    pub(super) id: u64,
    pub(super) authenticated: bool,
    pub(super) rejected: Arc<Rejected>,
    pub(super) heartbeat: Duration,
    pub(super) fence: Arc<Fence>,
    pub(super) rx: watch::Receiver<bool>,
    pub(super) snapshot: Arc<Mutex<Snapshot>>,
    pub(super) check_in: Arc<CheckIn>,
    pub(super) sched: Obtained,
    pub(super) stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    /// Test hook: make the I/O loop block for a while (`stall_io`).
    pub(super) stall_tx: tokio::sync::mpsc::UnboundedSender<Duration>,
    /// The I/O thread, and a signal it sends as it ends.
    pub(super) io: Option<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Receiver<()>,
    )>,
    pub(super) watchdog_stop: Arc<AtomicBool>,
    pub(super) watchdog: Option<std::thread::JoinHandle<()>>,
}

impl RaftElector {
    /// For tests of a hung election: the I/O loop blocks its thread for `d` (as a stuck
    /// loop would), while the watchdog keeps running.
    #[doc(hidden)]
    pub fn stall_io(&self, d: Duration) {
        let _ = self.stall_tx.send(d);
    }

    /// What the I/O thread's scheduling is (`sched.rs`).
    pub fn sched(&self) -> Obtained {
        self.sched
    }

    /// Check in with the data plane's dead-man from the election thread from now on: at
    /// every lease change it writes `min(lease, last main-loop tick + grace)` through `dm`
    /// (grace zero: the lease alone). The main loop calls this when the data plane comes up.
    pub fn check_in_through(&self, dm: DeadMan, grace: Duration) {
        self.check_in.attach(dm, grace);
        // The lease may not change for a heartbeat: push now (off the I/O thread; the
        // handle is ours for the moment, the I/O thread skips and retries).
        self.check_in.push(self.fence.until());
    }

    /// Stop checking in (the data plane is going down, or the main loop writes the final
    /// deadline itself). Waits for a write in progress, so none lands after this returns.
    pub fn stop_checking_in(&self) {
        self.check_in.detach();
    }

    /// The main loop ticked: the election thread's check-ins are good for `grace` more.
    /// One atomic store. False while the election thread does not check in (no handle):
    /// the main loop must then write the deadline itself.
    pub fn main_loop_alive(&self) -> bool {
        self.check_in.alive()
    }

    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Fenced leadership: true only while a majority acknowledged us within `lease`.
    pub fn leader(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Until when the current lease runs (None when not leading): for a data-plane
    /// dead-man deadline that silences the VIP even if this process stalls.
    pub fn lease_deadline(&self) -> Option<Instant> {
        self.fence.until()
    }

    /// `lease_deadline` as it changes (every quorum-acknowledged heartbeat while leading).
    pub fn lease_watch(&self) -> watch::Receiver<Option<Instant>> {
        self.fence.lease_tx.subscribe()
    }

    pub fn status(&self) -> RaftStatus {
        self.status_source().get()
    }

    /// A handle that reads the status later (metrics at scrape time).
    pub fn status_source(&self) -> StatusSource {
        StatusSource {
            id: self.id,
            authenticated: self.authenticated,
            sched: self.sched,
            snapshot: self.snapshot.clone(),
            rejected: self.rejected.clone(),
            rx: self.rx.clone(),
        }
    }

    /// Step down (publish `false`) first; a leader then asks its most recently answering
    /// follower to campaign at once (TimeoutNow), so failover takes one round trip instead
    /// of an election timeout. Then stop.
    pub async fn stop(mut self) {
        self.fence.close();
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some((thread, done)) = self.io.take() {
            if tokio::time::timeout(Duration::from_secs(2), done)
                .await
                .is_err()
            {
                tracing::warn!(id = self.id, "raft: I/O loop did not stop in time");
            } else {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
        self.watchdog_stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watchdog.take() {
            // The watchdog sleeps at most 10 ms; join it off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        tracing::info!(id = self.id, "raft: stopped");
    }
}

impl Drop for RaftElector {
    fn drop(&mut self) {
        // Dropped without stop(): go silent, then stop everything without waiting.
        self.fence.close();
        self.watchdog_stop.store(true, Ordering::Relaxed);
        // Dropping the sender ends the I/O loop (its stop branch sees the channel close).
        self.stop_tx.take();
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, net::SocketAddr};

    use super::*;
    use crate::election::raft::{
        test_support::{cfg, tempdir},
        RaftConfig, RaftRole,
    };

    #[tokio::test]
    async fn single_member_leads_and_stop_publishes_false_first() {
        let d = tempdir("single");
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cfg = RaftConfig {
            peers: BTreeMap::from([(1, addr)]),
            listen: addr,
            ..cfg(&d)
        };
        let e = RaftElector::start(cfg).await.unwrap();
        let mut rx = e.leader();
        tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|l| *l))
            .await
            .unwrap()
            .unwrap();
        let s = e.status();
        assert_eq!((s.role, s.leader, s.term), (RaftRole::Leader, Some(1), 1));
        e.stop().await;
        assert!(!*rx.borrow());
        let _ = std::fs::remove_dir_all(&d);
    }
}
