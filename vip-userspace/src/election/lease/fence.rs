//! The fence of a lease holder: when it last renewed, whether that still makes it leader,
//! and the watchdog that publishes leadership the instant the fence closes, independently
//! of API calls in flight. Shared (by `Arc`) with the rendezvous elector's tasks.
use std::time::{Duration, Instant};

/// When we last renewed successfully while holding the lease; shared with the watchdog that
/// publishes leadership, so the fence closes on time even while an API call hangs.
#[derive(Debug)]
pub struct Fence {
    /// The last successful renewal, and the current session (see `session`).
    renewed: std::sync::Mutex<(Option<Instant>, u64)>,
    deadline: Duration,
    /// Woken on every renewal or loss, so the watchdog sleeps until the fence closes
    /// instead of polling.
    changed: tokio::sync::Notify,
}

impl Fence {
    pub(super) fn new(deadline: Duration) -> Fence {
        Fence {
            renewed: std::sync::Mutex::new((None, 0)),
            deadline,
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.session().is_some()
    }

    /// When leadership ends unless renewed (None: not leading).
    fn closes(&self) -> Option<Instant> {
        self.renewed
            .lock()
            .ok()
            .and_then(|r| r.0)
            .map(|t| t + self.deadline)
    }

    /// While leading: a number that changes whenever leadership was interrupted (released,
    /// lost, or not renewed within the deadline) and won again. Whatever was decided under
    /// an earlier session must be re-checked: others may have acted on the gap.
    pub fn session(&self) -> Option<u64> {
        self.renewed
            .lock()
            .ok()
            .filter(|r| r.0.is_some_and(|t| t.elapsed() < self.deadline))
            .map(|r| r.1)
    }

    pub(super) fn set(&self, v: Option<Instant>) -> bool {
        let had = match self.renewed.lock() {
            Ok(mut r) => {
                let had = r.0.is_some();
                if let Some(t) = v {
                    let continuing =
                        r.0.is_some_and(|old| t.saturating_duration_since(old) < self.deadline);
                    if !continuing {
                        r.1 += 1;
                    }
                }
                r.0 = v;
                had
            }
            Err(_) => false,
        };
        self.changed.notify_one();
        had
    }

    /// Publish leadership whenever it changes: at each renewal or loss, and at the instant
    /// the fence closes (a renewal hanging in an API call cannot hold it open).
    pub(super) async fn watch(&self, tx: &tokio::sync::watch::Sender<bool>) {
        loop {
            publish(tx, self.is_leader());
            match self.closes().filter(|&t| Instant::now() < t) {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t.into()) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

pub(super) fn publish(tx: &tokio::sync::watch::Sender<bool>, leader: bool) {
    tx.send_if_modified(|v| {
        let changed = *v != leader;
        *v = leader;
        changed
    });
}
