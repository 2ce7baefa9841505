//! Claims applied: the difference between the VIPs applied and the ones owned or routed
//! now, losses first, then gains (answer and announce before the slower address binding).
//! Apart from the single-VIP transitions (`transitions`) because this holds the order
//! across all VIPs of a pass, and what a failure of one VIP does to the rest.
use std::{collections::BTreeSet, net::IpAddr};

use super::{Backend, Claims, ReconcileError, Reconciler};

impl Reconciler {
    pub async fn apply(&mut self, claims: &Claims) -> Result<(), ReconcileError> {
        // The claims of the last pass that applied completely: nothing to do (a pass for a
        // changed service leaves 10,000 VIPs as they are without looking at each).
        if self.settled.as_ref() == Some(claims) {
            return Ok(());
        }
        self.settled = None;
        let r = self.apply_claims(claims).await;
        if r.is_ok() && self.unbound.is_empty() && self.complete {
            self.settled = Some(claims.clone());
        }
        r
    }

    async fn apply_claims(&mut self, claims: &Claims) -> Result<(), ReconcileError> {
        let owned = &claims.owned;
        let routed: BTreeSet<IpAddr> = claims.routed.difference(owned).copied().collect();
        if let Err(e) = self.drop_lost(owned, &routed).await {
            self.publish();
            return Err(e);
        }
        let mut gained = self.promote_or_gain(owned).await?;
        if matches!(self.backend, Backend::Xdp { .. }) {
            self.take_over_all(&mut gained);
        }
        let mut first_err = None;
        self.bind_owned(owned, gained, &mut first_err).await;
        for ip in &routed {
            if !self.routed.contains(ip) {
                if let Err(e) = self.acquire_routed(*ip).await {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.publish();
        first_err.map_or(Ok(()), Err)
    }

    /// Loss first: owned VIPs no longer owned are demoted (still routed here) or released,
    /// then routed ones no longer routed nor owned are released. Stops at the first error
    /// (the caller publishes what was done).
    async fn drop_lost(
        &mut self,
        owned: &BTreeSet<IpAddr>,
        routed: &BTreeSet<IpAddr>,
    ) -> Result<(), ReconcileError> {
        let lost: Vec<IpAddr> = self
            .applied
            .keys()
            .filter(|ip| !owned.contains(ip))
            .copied()
            .collect();
        for ip in lost {
            if routed.contains(&ip) {
                self.demote(ip).await?;
            } else {
                self.release(ip).await?;
            }
        }
        let unrouted: Vec<IpAddr> = self
            .routed
            .iter()
            .filter(|ip| !routed.contains(ip) && !owned.contains(ip))
            .copied()
            .collect();
        for ip in unrouted {
            self.release(ip).await?;
        }
        Ok(())
    }

    /// Owned VIPs not applied yet: those served routed already are promoted; the others are
    /// returned, to be taken over and bound.
    async fn promote_or_gain(
        &mut self,
        owned: &BTreeSet<IpAddr>,
    ) -> Result<Vec<IpAddr>, ReconcileError> {
        let mut gained: Vec<IpAddr> = Vec::new();
        for ip in owned {
            if self.applied.contains_key(ip) {
                continue;
            }
            if self.routed.contains(ip) {
                // Already served and bound: only the ARP flag flips.
                self.promote(*ip).await?;
            } else {
                gained.push(*ip);
            }
        }
        Ok(gained)
    }

    /// XDP: every gained VIP answers and is announced before any (slower, netlink) address
    /// binding: with many VIPs the last one's first GARP would otherwise wait for all the
    /// binds before it. A VIP the map cannot take (full: max_vips) fails alone, is left out
    /// of `gained` and is tried again on the next pass; the others are applied.
    fn take_over_all(&mut self, gained: &mut Vec<IpAddr>) {
        // Not an error of the pass (that would stop a starting daemon): logged once per
        // pass with the first cause, counted.
        let mut failed: Vec<(IpAddr, ReconcileError)> = Vec::new();
        gained.retain(|ip| match self.take_over(*ip) {
            Ok(()) => true,
            Err(e) => {
                failed.push((*ip, e));
                false
            }
        });
        self.complete = failed.is_empty();
        if let Some((first, e)) = failed.first() {
            self.state.reconcile_errors.inc();
            tracing::error!(count = failed.len(), first = %first, error = %crate::Chain(e), "VIPs not applied, the others are (VIP map full? raise max_vips); retried next pass");
        }
    }

    /// The address bindings of the gained VIPs and of owned ones whose binding failed
    /// before; the first error into `first_err`.
    async fn bind_owned(
        &mut self,
        owned: &BTreeSet<IpAddr>,
        gained: Vec<IpAddr>,
        first_err: &mut Option<ReconcileError>,
    ) {
        // A failed binding is retried on the next pass (the VIP already answers in XDP mode).
        let retry: Vec<IpAddr> = self.unbound.intersection(owned).copied().collect();
        self.unbound.retain(|ip| owned.contains(ip));
        for ip in retry.into_iter().chain(gained) {
            match self.acquire(ip).await {
                Ok(()) => {
                    self.unbound.remove(&ip);
                }
                Err(e) => {
                    if matches!(self.backend, Backend::Xdp { .. }) {
                        self.unbound.insert(ip);
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
    }

    /// XDP only: the map entry (XDP answers ARP from now on), then the first gratuitous ARP.
    fn take_over(&mut self, ip: IpAddr) -> Result<(), ReconcileError> {
        if let Backend::Xdp {
            maps, uplink_index, ..
        } = &mut self.backend
        {
            if self.arp {
                maps.own(ip, *uplink_index)?;
                let burst = self.announce(ip);
                self.applied.insert(ip, burst);
            } else {
                // BGP only: served, silent for ARP, no gratuitous ARP.
                maps.route(ip, *uplink_index)?;
                self.applied.insert(ip, None);
            }
        }
        Ok(())
    }
}
