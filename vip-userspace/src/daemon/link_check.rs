//! The periodic tick (`Event::LinkCheck`): BGP status, the next-hop epoch, repairs, foreign
//! ARP claims, and following the uplink when it vanishes or is replaced. Separate from the
//! loop in `mod.rs` because it is the one handler that brings the data plane down and up.
use crate::net::link::{self, Link, LinkError};

use super::{
    lifecycle::{bring_down, bring_up, claimed_rows, no_neigh_moved, Running},
    Daemon, DaemonError,
};

/// How often the uplink is checked. A vanished or replaced uplink (new ifindex or MAC) tears
/// the data plane down and brings it up again on the new device.
pub(super) const LINK_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Link checks per next-hop epoch: cached backend next hops are refreshed about every second.
const EPOCH_TICKS: u64 = 2;

/// Link checks per repair of what the node may have lost around the services (interface
/// settings, flushed neighbour entries): about every 10 s, besides every ownership change.
const RECHECK_TICKS: u64 = 20;

/// The least time between two repairs prompted by unresolved next hops (a backend that is
/// really gone keeps them coming).
const REPAIR_SOON: std::time::Duration = std::time::Duration::from_secs(2);

impl Daemon {
    /// Every `LINK_CHECK`: BGP status, the next-hop epoch, foreign ARP claims, and the
    /// uplink (gone or replaced: the data plane comes down, and up again on the new one).
    pub(super) async fn link_check(&mut self) {
        self.link_checks += 1;
        if let Some(sp) = &self.speaker {
            if let Ok(mut b) = self.state.bgp.lock() {
                *b = sp.status();
            }
        }
        self.maintain().await;
        let current = match link::get(&self.handle, &self.cfg.interface).await {
            Ok(l) => Some(l),
            Err(LinkError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(error = %crate::Chain(&e), "checking the uplink failed");
                return;
            }
        };
        let changed = match (&self.running, &current) {
            (Some(r), Some(c)) => r.uplink != *c,
            (Some(_), None) | (None, Some(_)) => true,
            (None, None) => false,
        };
        if !changed {
            return;
        }
        if let Some(r) = self.running.take() {
            self.release_uplink(r, current.as_ref()).await;
        }
        if let Some(c) = current {
            self.reacquire(c).await;
        }
    }

    /// The data plane's upkeep while it runs: the next-hop epoch, repairs, foreign claims.
    async fn maintain(&mut self) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let state = &self.state;
        if self.link_checks.is_multiple_of(EPOCH_TICKS) {
            r.rec.tick_epoch();
        }
        // Periodically, and soon after forwarding met a next hop without a MAC (a dsr
        // packet is dropped then), at most every REPAIR_SOON.
        let soon = no_neigh_moved(state) && self.last_repair.elapsed() >= REPAIR_SOON;
        if self.link_checks.is_multiple_of(RECHECK_TICKS) || soon {
            self.last_repair = std::time::Instant::now();
            r.rec.repair().await;
        }
        r.rec.check_conflicts(&claimed_rows(state));
    }

    /// The uplink went (`current` None) or was replaced: release what ran on the old one.
    async fn release_uplink(&self, r: Running, current: Option<&Link>) {
        let (cfg, state, own) = (&self.cfg, &self.state, &self.ownership);
        match current {
            None => {
                tracing::error!(iface = %cfg.interface, "uplink disappeared; VIPs released until it returns")
            }
            Some(c) => {
                tracing::warn!(iface = %cfg.interface, old = r.uplink.index, new = c.index, "uplink replaced; re-attaching")
            }
        }
        state.uplink_present.set(0);
        own.raft_check_in_stop();
        if let Err(e) = bring_down(r, cfg, state, self.keep_pinned, false).await {
            // The device took most state with it; what is left is retried by bring_up.
            tracing::warn!(error = %crate::Chain(&e), "releasing after uplink loss was incomplete");
        }
        // Silent now; let another node take over at once rather than after expiry.
        own.able.send_replace(current.is_some());
    }

    /// Bring the data plane up on the uplink that is (back) there.
    async fn reacquire(&mut self, c: Link) {
        let (cfg, state, own) = (&self.cfg, &self.state, &self.ownership);
        state.dataplane_restarts.inc();
        match bring_up(cfg, &self.handle, state, c, own).await {
            Ok(r) => {
                tracing::info!(iface = %cfg.interface, "uplink back; VIPs re-acquired");
                self.running = Some(r);
                state.fence_ready.set(1);
                own.able.send_replace(true);
            }
            // Retried on the next check: the device may still be settling. Meanwhile
            // nothing is served here, so the leases go to nodes that can.
            Err(e) => {
                if matches!(e, DaemonError::Fence(_)) {
                    state.fence_ready.set(0);
                }
                own.able.send_replace(false);
                tracing::error!(error = %crate::Chain(&e), "bringing the data plane up failed; retrying")
            }
        }
    }
}
