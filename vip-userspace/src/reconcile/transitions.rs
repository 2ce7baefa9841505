//! One VIP's transitions: acquired (owned), served routed, demoted, promoted, released,
//! each in the order that keeps "never answer for an IP we shouldn't" for the data plane in
//! use. Apart from the claims walk because these are per address and know the XDP and
//! kernel backends' differences; the walk only decides which to call.
use std::net::IpAddr;

use super::{Backend, ReconcileError, Reconciler};
use crate::net::addr;

impl Reconciler {
    /// Serve `ip` without owning it: in the LB, silent for ARP, bound locally so the
    /// `local` forwarding mode (and the node's own sockets) accept its traffic.
    pub(super) async fn acquire_routed(&mut self, ip: IpAddr) -> Result<(), ReconcileError> {
        let bind_index = match &mut self.backend {
            Backend::Xdp {
                maps,
                uplink_index,
                local_index,
                ..
            } => {
                maps.route(ip, *uplink_index)?;
                *local_index
            }
            // On lo: with the uplink's arp_ignore=1 (set by the daemon when BGP is on) the
            // kernel does not answer ARP for it, as several nodes may serve it at once.
            Backend::Kernel { .. } => loopback(),
        };
        self.bind(ip, bind_index).await?;
        tracing::info!(vip = %ip, "serving VIP routed here (not owner)");
        self.routed.insert(ip);
        Ok(())
    }

    /// Owned → routed: stop answering ARP, keep serving.
    pub(super) async fn demote(&mut self, ip: IpAddr) -> Result<(), ReconcileError> {
        if let Some(Some(burst)) = self.applied.remove(&ip) {
            burst.abort();
        }
        match &mut self.backend {
            Backend::Xdp {
                maps, uplink_index, ..
            } => maps.route(ip, *uplink_index)?,
            // The uplink binding is what answers ARP: off it first, then onto lo.
            Backend::Kernel { uplink_index } if self.arp => {
                let uplink = *uplink_index;
                addr::unbind(&self.handle, uplink, ip)
                    .await
                    .map_err(|source| ReconcileError::Addr { ip, source })?;
                self.bind(ip, loopback()).await?;
            }
            Backend::Kernel { .. } => {}
        }
        self.routed.insert(ip);
        tracing::info!(vip = %ip, "no longer owner; still serving the VIP routed here");
        Ok(())
    }

    /// Routed → owned: answer ARP and announce (XDP: the binding is already in place).
    pub(super) async fn promote(&mut self, ip: IpAddr) -> Result<(), ReconcileError> {
        match &mut self.backend {
            Backend::Xdp {
                maps, uplink_index, ..
            } => {
                if self.arp {
                    maps.own(ip, *uplink_index)?;
                }
            }
            Backend::Kernel { uplink_index } if self.arp => {
                let uplink = *uplink_index;
                self.bind(ip, uplink).await?;
                addr::unbind(&self.handle, loopback(), ip)
                    .await
                    .map_err(|source| ReconcileError::Addr { ip, source })?;
            }
            Backend::Kernel { .. } => {}
        }
        self.routed.remove(&ip);
        let burst = if self.arp { self.announce(ip) } else { None };
        self.applied.insert(ip, burst);
        tracing::info!(vip = %ip, "acquired VIP (was serving it routed)");
        Ok(())
    }

    /// The address binding; in XDP mode after `take_over` (the map entry already answers, so
    /// the announcement went first), in kernel mode the binding is what answers, so it goes
    /// before the announcement.
    pub(super) async fn acquire(&mut self, ip: IpAddr) -> Result<(), ReconcileError> {
        match &self.backend {
            Backend::Xdp { local_index, .. } => {
                let index = *local_index;
                self.bind(ip, index).await?;
            }
            Backend::Kernel { uplink_index } if self.arp => {
                let index = *uplink_index;
                self.bind(ip, index).await?;
                let burst = self.announce(ip);
                self.applied.insert(ip, burst);
            }
            // No ARP: on lo like a routed VIP (see `acquire_routed`), not announced.
            Backend::Kernel { .. } => {
                self.bind(ip, loopback()).await?;
                self.applied.insert(ip, None);
            }
        }
        tracing::info!(vip = %ip, "acquired VIP");
        Ok(())
    }

    pub(super) async fn bind(&self, ip: IpAddr, index: u32) -> Result<(), ReconcileError> {
        match addr::bind(&self.handle, index, ip).await {
            Ok(addr::Bound::Added) => Ok(()),
            Ok(addr::Bound::AlreadyPresent) => {
                tracing::info!(vip = %ip, "address already bound (left by an earlier run?), adopted");
                Ok(())
            }
            Err(source) => Err(ReconcileError::Addr { ip, source }),
        }
    }

    pub(super) async fn release(&mut self, ip: IpAddr) -> Result<(), ReconcileError> {
        if let Some(Some(burst)) = self.applied.remove(&ip) {
            burst.abort();
        }
        let was_routed = self.routed.remove(&ip);
        let index = match &mut self.backend {
            Backend::Xdp {
                maps, local_index, ..
            } => {
                maps.forget(ip)?;
                *local_index
            }
            Backend::Kernel { .. } if was_routed || !self.arp => loopback(),
            Backend::Kernel { uplink_index } => *uplink_index,
        };
        addr::unbind(&self.handle, index, ip)
            .await
            .map_err(|source| ReconcileError::Addr { ip, source })?;
        tracing::info!(vip = %ip, "released VIP");
        // The caller publishes once for all it released: publishing here costs O(VIPs)
        // each (10,000 VIPs released one by one took seconds).
        Ok(())
    }
}

/// The loopback device (ifindex 1 in every network namespace).
fn loopback() -> u32 {
    crate::net::link::index("lo").unwrap_or(1)
}
