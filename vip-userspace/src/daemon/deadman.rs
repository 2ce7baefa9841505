//! The dead-man, userspace side: the deadline the data plane answers ARP until (XDP stops
//! answering when it passes, even if this process is late or gone), how often it is renewed,
//! and, with Raft, the hand-off of the renewal to the election thread. The kernel side is the
//! ARP stage (`vip-ebpf/src/arp.rs`).
use std::time::{Duration, Instant};

use crate::{config::Config, dataplane::maps::monotonic_ns};

use super::ownership::Ownership;

impl Ownership {
    /// The data plane's dead-man deadline (CLOCK_MONOTONIC ns, 0: off): `dead_man` from now,
    /// and with Raft never past the lease, so XDP goes silent when the lease runs out even if
    /// this process is late or gone. Not leading: already past.
    pub(super) fn deadline_ns(&self, dead_man: Duration) -> u64 {
        let now = Instant::now();
        let mut until = (!dead_man.is_zero()).then(|| now + dead_man);
        if let Some(r) = &self.raft {
            let lease = r.lease_deadline().unwrap_or(now);
            until = Some(until.map_or(lease, |u| u.min(lease)));
        }
        match until {
            None => 0,
            // Instant is CLOCK_MONOTONIC on Linux, the clock of bpf_ktime_get_ns; 0 would
            // mean "off", so a deadline in the past is never written as 0.
            Some(u) => (monotonic_ns() + u.saturating_duration_since(now).as_nanos() as u64).max(1),
        }
    }

    /// How often to check in: a quarter of the dead-man, and with Raft every heartbeat.
    /// With Raft the election thread writes the deadline at every lease extension itself and
    /// this tick only tells it that the main loop is alive (`main_loop_alive`, an atomic
    /// store); it writes the deadline only if the election thread has no handle.
    pub(super) fn check_in_period(&self, dead_man: Duration) -> Duration {
        let base = (dead_man / 4).max(Duration::from_millis(5));
        match &self.raft {
            Some(r) if dead_man.is_zero() => r.heartbeat(),
            Some(r) => base.min(r.heartbeat()),
            None => base,
        }
    }

    /// Raft: the election thread checks in from now on, through a handle of its own, and
    /// only while the main loop keeps ticking (within `dead_man`).
    pub(super) fn raft_check_in(&self, cfg: &Config) {
        let Some(r) = &self.raft else {
            return;
        };
        match crate::dataplane::maps::DeadMan::open(&cfg.pin_dir) {
            Ok(dm) => r.check_in_through(dm, cfg.dead_man),
            Err(e) => {
                tracing::warn!(error = %crate::Chain(&e), "raft: dead-man handle not opened; the main loop checks in instead")
            }
        }
    }

    /// Raft: the election thread stops checking in (before the data plane goes down, or
    /// the main loop writes the last deadline).
    pub(super) fn raft_check_in_stop(&self) {
        if let Some(r) = &self.raft {
            r.stop_checking_in();
        }
    }
}
