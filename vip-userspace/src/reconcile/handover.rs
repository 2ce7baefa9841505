//! The daemon's start and end: VIPs a previous run left adopted or pruned, everything left
//! in place for a planned restart, or released at shutdown. Apart from the pass because
//! these run once, read what the pinned maps hold rather than the claims alone, and reset
//! `settled`.
use std::{collections::BTreeSet, net::IpAddr};

use super::{Backend, Claims, ReconcileError, Reconciler};

impl Reconciler {
    /// Take over the VIPs a previous run left answering in the (pinned) data plane that are
    /// still owned: they stay in the map untouched (no silence, no re-add, counters go on),
    /// their local binding is checked, and one gratuitous ARP goes out instead of a burst,
    /// since neighbours never stopped getting answers. Returns the adopted VIPs.
    pub async fn adopt(&mut self, owned: &BTreeSet<IpAddr>) -> Result<Vec<IpAddr>, ReconcileError> {
        self.settled = None;
        let (left, local_index) = match &self.backend {
            Backend::Xdp {
                maps,
                uplink_index,
                local_index,
                ..
            } => (maps.owned_on(*uplink_index), *local_index),
            Backend::Kernel { .. } => return Ok(Vec::new()),
        };
        let mut adopted = Vec::new();
        for ip in left.into_iter().filter(|ip| owned.contains(ip)) {
            if self.applied.contains_key(&ip) {
                continue;
            }
            self.bind(ip, local_index).await?;
            let one = self.announce_n(ip, 1);
            self.applied.insert(ip, one);
            tracing::info!(vip = %ip, "adopted VIP from the previous run");
            adopted.push(ip);
        }
        self.publish();
        Ok(adopted)
    }

    /// Planned restart: leave everything in place for the next daemon (map entries,
    /// services, bindings, neighbour entries, interface settings) and push the dead-man deadline to
    /// cover the gap, so ARP keeps being answered while no daemon runs. Only the pending
    /// gratuitous ARPs stop.
    pub fn hand_over(&mut self, dead_man: std::time::Duration, grace: std::time::Duration) {
        self.settled = None;
        for burst in self.applied.values_mut() {
            if let Some(b) = burst.take() {
                b.abort();
            }
        }
        // Zero dead-man: the program answers without a deadline anyway.
        if !dead_man.is_zero() {
            self.check_in(grace.max(dead_man));
        }
    }

    /// Drop data-plane entries a previous run left for VIPs no longer wanted (kept pins).
    pub fn prune_stale(&mut self, claims: &Claims) -> Result<(), ReconcileError> {
        self.settled = None;
        let wanted = claims.all();
        if let Backend::Xdp { maps, .. } = &mut self.backend {
            for ip in maps.vips() {
                if !wanted.contains(&ip) {
                    tracing::info!(vip = %ip, "removing VIP left in the map by an earlier run");
                    maps.forget(ip)?;
                }
            }
        }
        Ok(())
    }

    /// Release everything (shutdown). Keeps going past errors so as much as possible is
    /// cleaned; returns the first error. VIPs always go (the node stops answering); with
    /// `keep_services` the services, backends and rings stay in the (kept) maps, inert once
    /// the program is detached, for `vip status` and the next run.
    pub async fn release_all(&mut self, keep_services: bool) -> Result<(), ReconcileError> {
        self.settled = None;
        let mut first = None;
        for ip in self.applied().into_iter().chain(self.routed()) {
            if let Err(e) = self.release(ip).await {
                tracing::error!(vip = %ip, error = %crate::Chain(&e), "release failed");
                first.get_or_insert(e);
            }
        }
        self.publish();
        if let Backend::Xdp {
            maps,
            uplink_index,
            lb,
            ..
        } = &mut self.backend
        {
            if !keep_services {
                if let Err(e) = lb.sync.apply(&[]) {
                    first.get_or_insert(e.into());
                }
            }
            lb.release(&self.handle).await;
            if let Err(e) = maps.remove_iface(*uplink_index) {
                first.get_or_insert(e.into());
            }
        }
        first.map_or(Ok(()), Err)
    }
}
