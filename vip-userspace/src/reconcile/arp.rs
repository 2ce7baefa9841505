//! What this node says on the segment about the VIPs it owns: gratuitous ARP bursts, the
//! fight back when another host claims one, and the dead-man check-in that bounds how long
//! XDP answers ARP without the daemon. Apart from the claims walk because the conflict check
//! and the check-in run on their own ticks and never change which VIPs are applied, and the
//! burst is shared by every transition that gains a VIP.
use std::{collections::BTreeSet, net::IpAddr};

use tokio::task::JoinHandle;

use super::{Backend, Reconciler};
use crate::net::garp::{self, GarpSocket};

impl Reconciler {
    /// Check in with the data plane's dead-man: ARP for owned VIPs is answered for `grace`
    /// more (zero: no dead-man). Failures are logged; XDP goes silent if they persist.
    pub fn check_in(&mut self, grace: std::time::Duration) {
        let deadline = if grace.is_zero() {
            0
        } else {
            crate::dataplane::maps::monotonic_ns() + grace.as_nanos() as u64
        };
        self.check_in_until(deadline);
    }

    /// Set the dead-man deadline itself (CLOCK_MONOTONIC ns, 0: off), e.g. one bounded by an
    /// election lease.
    pub fn check_in_until(&mut self, deadline_ns: u64) {
        if let Backend::Xdp { maps, .. } = &mut self.backend {
            if let Err(e) = maps.deadman.set(deadline_ns) {
                tracing::warn!(error = %crate::Chain(&e), "dead-man deadline not pushed");
            }
        }
    }

    /// Counters present when the data plane came up (kept pins) are the baseline.
    pub fn prime_conflicts(&mut self, rows: &[(IpAddr, crate::dataplane::maps::VipRow)]) {
        self.conflicts.prime(rows);
    }

    /// Look at the foreign-claim counters (XDP) and fight back for owned VIPs (see
    /// `conflict`).
    pub fn check_conflicts(&mut self, rows: &[(IpAddr, crate::dataplane::maps::VipRow)]) {
        // No rows: no claim since the last look (the tick costs nothing per VIP).
        if !self.arp || rows.is_empty() {
            return;
        }
        let owned: BTreeSet<IpAddr> = self.applied.keys().copied().collect();
        let mut reported = Vec::new();
        for c in self
            .conflicts
            .observe(std::time::Instant::now(), rows, &owned)
        {
            let mac = c.mac.map(|b| format!("{b:02x}")).join(":");
            tracing::warn!(vip = %c.vip, other = %mac, claims = c.new, reannounce = c.reannounce, "another host claims a VIP this node owns");
            if c.reannounce {
                if let Some(Some(old)) = self.applied.get(&c.vip) {
                    old.abort();
                }
                let burst = self.announce(c.vip);
                self.applied.insert(c.vip, burst);
                reported.push((c.vip, c.mac));
            }
        }
        if !reported.is_empty() {
            self.state.bus.conflicts.send_replace(reported);
        }
    }

    /// First announcement (gratuitous ARP, or unsolicited NA for IPv6) now, the rest of the
    /// burst in the background.
    pub(super) fn announce(&self, ip: IpAddr) -> Option<JoinHandle<()>> {
        self.announce_n(ip, self.garp_cfg.count)
    }

    pub(super) fn announce_n(&self, ip: IpAddr, count: u32) -> Option<JoinHandle<()>> {
        let sock = self.garp.clone()?;
        let frame = garp::frame(self.mac, ip);
        let schedule = garp::schedule(count, self.garp_cfg.window);
        let state = self.state.clone();
        let (sent, errors, what) = if ip.is_ipv4() {
            (
                state.garp_sent.clone(),
                state.garp_errors.clone(),
                "gratuitous ARP",
            )
        } else {
            (
                state.na_sent.clone(),
                state.na_errors.clone(),
                "unsolicited NA",
            )
        };
        let send = move |sock: &GarpSocket| match sock.send(&frame) {
            Ok(()) => {
                sent.inc();
            }
            Err(e) => {
                errors.inc();
                tracing::warn!(vip = %ip, error = %crate::Chain(&e), "{what} failed");
            }
        };
        send(&sock);
        let start = tokio::time::Instant::now();
        Some(tokio::spawn(async move {
            for at in schedule.into_iter().skip(1) {
                tokio::time::sleep_until(start + at).await;
                send(&sock);
            }
        }))
    }
}
