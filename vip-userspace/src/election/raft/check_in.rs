//! The data plane's dead-man as the election thread writes it. Here, next to nothing else,
//! because it is a safety property with one owner: the deadline XDP answers ARP/NDP by is
//! moved only by the lease (and bounded by the main loop's liveness), never by the load
//! balancer or a busy main loop.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use crate::dataplane::maps::{monotonic_ns, DeadMan};

/// The data plane's dead-man, checked in from the I/O thread at every lease change, so a
/// busy main loop cannot make the leader's ARP lapse. Bounded by the main loop's own
/// liveness: while it has not ticked for `grace`, the deadline stops moving and XDP goes
/// silent at `last tick + grace` even though the election thread is fine (a node whose
/// main loop hangs serves nothing it can keep consistent: uplink changes, services).
pub(super) struct CheckIn {
    /// The handle on `DEADMAN`, from the main loop once the data plane is up; `None`
    /// before that, after it went down, and once the main loop took over for good (a
    /// planned restart writes its own final deadline).
    target: Mutex<Option<DeadMan>>,
    /// When the main loop last ticked (CLOCK_MONOTONIC ns).
    alive_ns: AtomicU64,
    /// How long a tick counts (ns); 0: no bound (`dead_man_ms: 0`).
    grace_ns: AtomicU64,
    /// Whether `target` holds a handle (read by the main loop without the lock).
    attached: AtomicBool,
}

impl CheckIn {
    /// No handle yet, no grace, the main loop alive as of now.
    pub(super) fn new() -> CheckIn {
        CheckIn {
            target: Mutex::new(None),
            alive_ns: AtomicU64::new(monotonic_ns()),
            grace_ns: AtomicU64::new(0),
            attached: AtomicBool::new(false),
        }
    }

    /// Write through `dm` from now on, each tick good for `grace` (zero: the lease alone).
    pub(super) fn attach(&self, dm: DeadMan, grace: Duration) {
        self.grace_ns
            .store(grace.as_nanos() as u64, Ordering::Relaxed);
        let _ = self.alive();
        if let Ok(mut t) = self.target.lock() {
            *t = Some(dm);
            self.attached.store(true, Ordering::Relaxed);
        }
    }

    /// Stop writing. Takes the lock, so a write in progress ends before this returns.
    pub(super) fn detach(&self) {
        if let Ok(mut t) = self.target.lock() {
            *t = None;
        }
        self.attached.store(false, Ordering::Relaxed);
    }

    /// The main loop ticked; whether the election thread writes the deadline.
    pub(super) fn alive(&self) -> bool {
        self.alive_ns.store(monotonic_ns(), Ordering::Relaxed);
        self.attached.load(Ordering::Relaxed)
    }

    /// The deadline for `lease` (CLOCK_MONOTONIC ns; 1, already past, when not leading;
    /// never 0, which would mean "off").
    fn deadline(&self, lease: Option<Instant>) -> u64 {
        let Some(until) = lease else {
            return 1;
        };
        let now = Instant::now();
        let mut d = monotonic_ns() + until.saturating_duration_since(now).as_nanos() as u64;
        let grace = self.grace_ns.load(Ordering::Relaxed);
        if grace != 0 {
            d = d.min(self.alive_ns.load(Ordering::Relaxed).saturating_add(grace));
        }
        d.max(1)
    }

    /// Write the deadline for `lease`. Never waits: when the main loop is swapping the
    /// handle this one is skipped (false), and the caller pushes again on its next turn.
    pub(super) fn push(&self, lease: Option<Instant>) -> bool {
        let Ok(mut t) = self.target.try_lock() else {
            return false;
        };
        if let Some(dm) = t.as_mut() {
            if let Err(e) = dm.set(self.deadline(lease)) {
                tracing::warn!(error = %crate::Chain(&e), "raft: dead-man deadline not pushed");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_in_follows_the_lease_and_the_main_loops_last_tick() {
        let c = CheckIn {
            target: Mutex::new(None),
            alive_ns: AtomicU64::new(monotonic_ns()),
            grace_ns: AtomicU64::new(0),
            attached: AtomicBool::new(false),
        };
        // Not leading: already past, never 0 ("off").
        assert_eq!(c.deadline(None), 1);
        let now = monotonic_ns();
        let lease = Instant::now() + Duration::from_secs(1);
        let d = c.deadline(Some(lease));
        assert!(
            d > now + 900_000_000 && d <= monotonic_ns() + 1_000_000_000,
            "{d} vs {now}"
        );
        // A main loop that last ticked 200 ms ago with a 100 ms grace: already past.
        c.grace_ns.store(100_000_000, Ordering::Relaxed);
        c.alive_ns.store(now - 200_000_000, Ordering::Relaxed);
        assert!(c.deadline(Some(lease)) < monotonic_ns());
        // Ticked just now: the grace bounds it, not the lease.
        c.alive_ns.store(monotonic_ns(), Ordering::Relaxed);
        assert!(c.deadline(Some(lease)) <= monotonic_ns() + 100_000_000);
        // No handle: a push is a no-op that succeeds.
        assert!(c.push(Some(lease)));
    }
}
