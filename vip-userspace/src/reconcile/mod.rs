//! Applies ownership to the node: only the difference between what is applied and what should
//! be. Order matters for "never answer for an IP we shouldn't": on gain the data plane answers
//! first and the first gratuitous ARP leaves at once; on loss the data plane goes silent
//! first, and only then is the address unbound.
//!
//! Two kinds of VIP are applied: *owned* ones (the election's choice: the data plane answers
//! ARP for them, gratuitous ARP on gain) and *routed* ones (announced by BGP from this node
//! although another node owns them on the segment, or none does: their traffic is balanced
//! here, ARP for them is dropped). A VIP moving between the two keeps its address binding
//! and its map entry; only the ARP flag flips.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::Arc,
};

pub mod batch;
pub mod conflict;
pub mod lb;
pub mod services;

use rtnetlink::Handle;
use tokio::task::JoinHandle;

use crate::{
    config::GarpConfig,
    dataplane::{maps::Maps, DataplaneError},
    metrics::State,
    model::{LbMode, Service},
    net::{
        addr::{self, AddrError},
        garp::{self, GarpSocket},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("data plane")]
    Dataplane(#[from] DataplaneError),
    #[error("address {ip}")]
    Addr { ip: Ipv4Addr, source: AddrError },
    #[error("services")]
    Services(#[from] services::ServiceError),
}

/// A service (VIP, port, protocol) the data plane could not take, as logs and Events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unplaced {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: crate::model::Proto,
}

impl Unplaced {
    fn of(k: &vip_common::ServiceKey) -> Self {
        Self {
            vip: Ipv4Addr::from(k.addr_be),
            port: u16::from_be_bytes(k.port_be),
            proto: if k.proto == vip_common::PROTO_UDP {
                crate::model::Proto::Udp
            } else {
                crate::model::Proto::Tcp
            },
        }
    }
}

impl std::fmt::Display for Unplaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto.as_str())
    }
}

/// Where the VIP is made reachable.
pub enum Backend {
    /// XDP answers ARP on the uplink; the VIP is bound on a non-ARP local device.
    Xdp {
        maps: Box<Maps>,
        uplink_index: u32,
        local_index: u32,
        lb: Box<lb::LbSide>,
    },
    /// The kernel answers ARP: the VIP is bound on the uplink.
    Kernel { uplink_index: u32 },
}

/// What this node applies: VIPs it owns, and VIPs it only serves because routers send
/// their traffic here (BGP). Disjoint: `owned` wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub owned: BTreeSet<Ipv4Addr>,
    pub routed: BTreeSet<Ipv4Addr>,
}

impl Claims {
    pub fn owned(owned: BTreeSet<Ipv4Addr>) -> Self {
        Self {
            owned,
            routed: BTreeSet::new(),
        }
    }

    pub fn all(&self) -> BTreeSet<Ipv4Addr> {
        self.owned.union(&self.routed).copied().collect()
    }
}

pub struct Reconciler {
    backend: Backend,
    handle: Handle,
    mac: [u8; 6],
    garp_cfg: GarpConfig,
    garp: Option<Arc<GarpSocket>>,
    state: Arc<State>,
    applied: BTreeMap<Ipv4Addr, Option<JoinHandle<()>>>,
    routed: BTreeSet<Ipv4Addr>,
    /// Whether owned VIPs answer ARP (off: BGP-only, see `bgp.arp`).
    arp: bool,
    /// XDP mode: owned (in the map, announced) but the local address binding failed.
    unbound: BTreeSet<Ipv4Addr>,
    conflicts: conflict::Conflicts,
    /// The claims last applied without any failure (see `apply`); cleared by anything that
    /// changes what is applied outside `apply`.
    settled: Option<Claims>,
    /// The last pass put every gained VIP in the map (none failed alone).
    complete: bool,
}

impl Reconciler {
    pub fn new(
        backend: Backend,
        handle: Handle,
        uplink_index: u32,
        mac: [u8; 6],
        garp_cfg: GarpConfig,
        state: Arc<State>,
    ) -> Self {
        let garp = match GarpSocket::open(uplink_index) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!(error = %crate::Chain(&e), "cannot open raw socket for gratuitous ARP; neighbours learn the VIP only when they ask");
                None
            }
        };
        Self {
            backend,
            handle,
            mac,
            garp_cfg,
            garp,
            state,
            applied: BTreeMap::new(),
            routed: BTreeSet::new(),
            arp: true,
            unbound: BTreeSet::new(),
            conflicts: conflict::Conflicts::default(),
            settled: None,
            complete: true,
        }
    }

    /// `false`: owned VIPs are applied like routed ones (served, bound locally, ARP for
    /// them dropped, no gratuitous ARP), for fabrics where only BGP attracts their traffic.
    pub fn with_arp(mut self, arp: bool) -> Self {
        self.arp = arp;
        self
    }

    /// Services first (the first packet to a newly owned VIP finds its backends), then the
    /// owned and routed VIPs.
    pub async fn converge(
        &mut self,
        services: &[Service],
        claims: &Claims,
    ) -> Result<(), ReconcileError> {
        self.apply_services(services).await?;
        self.apply(claims).await
    }

    /// Services into the data plane (XDP only; the kernel backend cannot balance, so the
    /// VIP's traffic reaches this node's own stack and that is said once in the log).
    pub async fn apply_services(&mut self, services: &[Service]) -> Result<(), ReconcileError> {
        match &mut self.backend {
            Backend::Xdp { lb, .. } => {
                let ch = lb.apply(&self.handle, services).await?;
                if !ch.is_empty() {
                    tracing::info!(
                        added = ch.added,
                        updated = ch.updated,
                        removed = ch.removed,
                        slots = ch.slots_written,
                        failed = ch.failed.len(),
                        "services applied"
                    );
                }
                self.report_unplaced(&ch.failed);
            }
            Backend::Kernel { .. } => {
                if services.iter().any(|s| s.mode != LbMode::Local) {
                    tracing::warn!("kernel data plane: services are not load-balanced; their traffic goes to this node's stack");
                }
            }
        }
        Ok(())
    }

    /// Services that failed alone: logged (each when it starts or stops failing, or its
    /// reason changes), counted, and published for the Kubernetes source to record as
    /// Events on the Services concerned.
    fn report_unplaced(&mut self, failed: &[(vip_common::ServiceKey, services::ServiceError)]) {
        let now: BTreeMap<Unplaced, String> = failed
            .iter()
            .map(|(k, e)| (Unplaced::of(k), crate::Chain(e).to_string()))
            .collect();
        let before = self.state.bus.unplaced.borrow().clone();
        if now == before {
            return;
        }
        for (u, why) in &now {
            if before.get(u) != Some(why) {
                self.state.service_failures.inc();
                tracing::error!(service = %u, error = %why, "service not applied (the others are)");
            }
        }
        for u in before.keys().filter(|u| !now.contains_key(u)) {
            tracing::info!(service = %u, "service applied after an earlier failure");
        }
        self.state.services_unplaced.set(now.len() as i64);
        self.state.bus.unplaced.send_replace(now);
    }

    /// Put back what the node lost around the services (see `LbSide::repair`).
    pub async fn repair(&mut self) {
        if let Backend::Xdp { lb, .. } = &mut self.backend {
            lb.repair(&self.handle).await;
        }
    }

    /// Start a new next-hop epoch (see `ServiceSync::tick_epoch`); failures are logged.
    pub fn tick_epoch(&mut self) {
        if let Backend::Xdp { lb, .. } = &mut self.backend {
            if let Err(e) = lb.sync.tick_epoch() {
                tracing::warn!(error = %crate::Chain(&e), "next-hop epoch not advanced");
            }
        }
    }

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
    pub fn prime_conflicts(&mut self, rows: &[(Ipv4Addr, vip_common::VipStats)]) {
        self.conflicts.prime(rows);
    }

    /// Look at the foreign-claim counters (XDP) and fight back for owned VIPs (see
    /// `conflict`).
    pub fn check_conflicts(&mut self, rows: &[(Ipv4Addr, vip_common::VipStats)]) {
        // No rows: no claim since the last look (the tick costs nothing per VIP).
        if !self.arp || rows.is_empty() {
            return;
        }
        let owned: BTreeSet<Ipv4Addr> = self.applied.keys().copied().collect();
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

    pub fn applied(&self) -> Vec<Ipv4Addr> {
        self.applied.keys().copied().collect()
    }

    /// VIPs served without owning them (see [`Claims`]).
    pub fn routed(&self) -> Vec<Ipv4Addr> {
        self.routed.iter().copied().collect()
    }

    /// Take over the VIPs a previous run left answering in the (pinned) data plane that are
    /// still owned: they stay in the map untouched (no silence, no re-add, counters go on),
    /// their local binding is checked, and one gratuitous ARP goes out instead of a burst,
    /// since neighbours never stopped getting answers. Returns the adopted VIPs.
    pub async fn adopt(
        &mut self,
        owned: &BTreeSet<Ipv4Addr>,
    ) -> Result<Vec<Ipv4Addr>, ReconcileError> {
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
        let routed: BTreeSet<Ipv4Addr> = claims.routed.difference(owned).copied().collect();
        let lost: Vec<Ipv4Addr> = self
            .applied
            .keys()
            .filter(|ip| !owned.contains(ip))
            .copied()
            .collect();
        for ip in lost {
            let r = if routed.contains(&ip) {
                self.demote(ip).await
            } else {
                self.release(ip).await
            };
            if let Err(e) = r {
                self.publish();
                return Err(e);
            }
        }
        let unrouted: Vec<Ipv4Addr> = self
            .routed
            .iter()
            .filter(|ip| !routed.contains(ip) && !owned.contains(ip))
            .copied()
            .collect();
        for ip in unrouted {
            if let Err(e) = self.release(ip).await {
                self.publish();
                return Err(e);
            }
        }
        let mut gained: Vec<Ipv4Addr> = Vec::new();
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
        let mut first_err = None;
        if matches!(self.backend, Backend::Xdp { .. }) {
            // Every gained VIP answers and is announced before any (slower, netlink) address
            // binding: with many VIPs the last one's first GARP would otherwise wait for all
            // the binds before it. A VIP the map cannot take (full: max_vips) fails alone and
            // is tried again on the next pass; the others are applied.
            // Not an error of the pass (that would stop a starting daemon): logged once per
            // pass with the first cause, counted.
            let mut failed: Vec<(Ipv4Addr, ReconcileError)> = Vec::new();
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
        // A failed binding is retried on the next pass (the VIP already answers in XDP mode).
        let retry: Vec<Ipv4Addr> = self.unbound.intersection(owned).copied().collect();
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

    /// XDP only: the map entry (XDP answers ARP from now on), then the first gratuitous ARP.
    fn take_over(&mut self, ip: Ipv4Addr) -> Result<(), ReconcileError> {
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

    fn publish(&self) {
        let now = self.applied();
        self.state.bus.owned.send_if_modified(|o| {
            let changed = *o != now;
            *o = now;
            changed
        });
        let all: Vec<Ipv4Addr> = self
            .applied
            .keys()
            .chain(&self.routed)
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.state.bus.served.send_if_modified(|o| {
            let changed = *o != all;
            *o = all;
            changed
        });
    }

    /// Serve `ip` without owning it: in the LB, silent for ARP, bound locally so the
    /// `local` forwarding mode (and the node's own sockets) accept its traffic.
    async fn acquire_routed(&mut self, ip: Ipv4Addr) -> Result<(), ReconcileError> {
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
    async fn demote(&mut self, ip: Ipv4Addr) -> Result<(), ReconcileError> {
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
    async fn promote(&mut self, ip: Ipv4Addr) -> Result<(), ReconcileError> {
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
    async fn acquire(&mut self, ip: Ipv4Addr) -> Result<(), ReconcileError> {
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

    async fn bind(&self, ip: Ipv4Addr, index: u32) -> Result<(), ReconcileError> {
        match addr::bind(&self.handle, index, ip).await {
            Ok(addr::Bound::Added) => Ok(()),
            Ok(addr::Bound::AlreadyPresent) => {
                tracing::info!(vip = %ip, "address already bound (left by an earlier run?), adopted");
                Ok(())
            }
            Err(source) => Err(ReconcileError::Addr { ip, source }),
        }
    }

    /// First gratuitous ARP now, the rest of the burst in the background.
    fn announce(&self, ip: Ipv4Addr) -> Option<JoinHandle<()>> {
        self.announce_n(ip, self.garp_cfg.count)
    }

    fn announce_n(&self, ip: Ipv4Addr, count: u32) -> Option<JoinHandle<()>> {
        let sock = self.garp.clone()?;
        let frame = garp::frame(self.mac, ip);
        let schedule = garp::schedule(count, self.garp_cfg.window);
        let state = self.state.clone();
        let send = move |sock: &GarpSocket| match sock.send(&frame) {
            Ok(()) => {
                state.garp_sent.inc();
            }
            Err(e) => {
                state.garp_errors.inc();
                tracing::warn!(vip = %ip, error = %crate::Chain(&e), "gratuitous ARP failed");
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

    async fn release(&mut self, ip: Ipv4Addr) -> Result<(), ReconcileError> {
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

/// The loopback device (ifindex 1 in every network namespace).
fn loopback() -> u32 {
    crate::net::link::index("lo").unwrap_or(1)
}
