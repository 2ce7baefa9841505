//! The fence: the leadership the daemon acts on, and the watchdog that closes it on time.
//! Apart from the I/O loop because its whole point is to be right when that loop is not
//! running: a stalled or stuck loop must not keep a lapsed lease published.
//!
//! The node is leader for VIP purposes only while `now < lease_until`, where `lease_until` is
//! the send time of the newest heartbeat a majority (itself included) acknowledged in its
//! current term plus `lease`. A watchdog thread (not a tokio task, so a stalled runtime
//! can't hold it) re-evaluates at least every 10 ms, and exactly at `lease_until`, and
//! publishes on a `watch::Sender<bool>`; stepping down publishes `false` at once.
//! Bounds (monotonic clocks at the same rate):
//! - a partitioned leader publishes `false` at most `lease + 10 ms` after the send time of
//!   its last quorum-acknowledged heartbeat (typically ~1 ms late, the watchdog wakes at the
//!   deadline);
//! - no other node can become leader before `election_timeout.0` after the followers last
//!   heard from it; `validate` requires `lease + 10 ms < election_timeout.0`, so the two
//!   never overlap. Whoever consumes `leader()` (the data plane) must act within the rest of
//!   that margin.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::WATCHDOG_PERIOD;

/// The published leadership and the lease behind it, shared by the I/O loop and the
/// watchdog. Evaluation and publication happen under one lock, so a stale `true` can never
/// overwrite a `false` published by a step-down.
pub(super) struct Fence {
    inner: Mutex<FenceInner>,
    tx: watch::Sender<bool>,
    /// `until` as it changes: the daemon pushes it to the data plane's dead-man at once.
    pub(super) lease_tx: watch::Sender<Option<Instant>>,
}

struct FenceInner {
    until: Option<Instant>,
    /// Set by stop/drop: nothing may publish `true` again.
    closed: bool,
}

impl Fence {
    /// Open, not leading, publishing on `tx` and `lease_tx`.
    pub(super) fn new(tx: watch::Sender<bool>, lease_tx: watch::Sender<Option<Instant>>) -> Fence {
        Fence {
            inner: Mutex::new(FenceInner {
                until: None,
                closed: false,
            }),
            tx,
            lease_tx,
        }
    }

    fn publish(&self, inner: &FenceInner) {
        let leader = !inner.closed && inner.until.is_some_and(|u| Instant::now() < u);
        self.tx.send_if_modified(|v| {
            let changed = *v != leader;
            *v = leader;
            changed
        });
    }

    pub(super) fn set(&self, until: Option<Instant>) {
        if let Ok(mut i) = self.inner.lock() {
            if !i.closed {
                i.until = until;
            }
            // The lease before the flag: a consumer woken by `true` already finds the
            // deadline that bounds it.
            let u = i.until;
            self.lease_tx.send_if_modified(|v| {
                let changed = *v != u;
                *v = u;
                changed
            });
            self.publish(&i);
        }
    }

    pub(super) fn close(&self) {
        match self.inner.lock() {
            Ok(mut i) => {
                i.closed = true;
                i.until = None;
                self.lease_tx.send_replace(None);
                self.publish(&i);
            }
            // A poisoned lock: still go silent.
            Err(_) => {
                self.lease_tx.send_replace(None);
                self.tx.send_replace(false);
            }
        }
    }

    pub(super) fn until(&self) -> Option<Instant> {
        self.inner.lock().ok().and_then(|i| i.until)
    }

    /// Re-evaluate; how long the watchdog may sleep before the next look.
    fn check(&self) -> Duration {
        let Ok(i) = self.inner.lock() else {
            self.tx.send_replace(false);
            return WATCHDOG_PERIOD;
        };
        self.publish(&i);
        let now = Instant::now();
        match i.until {
            // Wake right at the deadline (a little after, to be past it).
            Some(u) if u > now => (u - now + Duration::from_micros(100)).min(WATCHDOG_PERIOD),
            _ => WATCHDOG_PERIOD,
        }
    }

    /// The watchdog thread's body: re-evaluate until `stop` is set.
    pub(super) fn watch_until(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let d = self.check();
            std::thread::sleep(d);
        }
    }
}
