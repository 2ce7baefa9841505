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
//!
//! The [`Reconciler`] is declared here with its state; what it does is split by concern:
//! - `converge`: a pass's services side, and the load balancer's periodic upkeep.
//! - `claims`: a pass's VIPs, the claims diff in the order above.
//! - `transitions`: one VIP acquired, routed, demoted, promoted or released.
//! - `arp`: gratuitous ARP, fighting back against conflicting claims, the dead-man.
//! - `handover`: start (adopt, prune) and end (planned restart, shutdown).
//!
//! The services themselves (tables, backends) are `services`, the node's side of them
//! (addresses, neighbours) `lb`.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

pub mod batch;
pub mod conflict;
pub mod lb;
pub mod services;

mod arp;
mod claims;
mod converge;
mod handover;
mod transitions;

use rtnetlink::Handle;
use tokio::task::JoinHandle;

use crate::{
    config::GarpConfig,
    dataplane::{maps::Maps, DataplaneError},
    metrics::State,
    net::{addr::AddrError, garp::GarpSocket},
};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("data plane")]
    Dataplane(#[from] DataplaneError),
    #[error("address {ip}")]
    Addr { ip: IpAddr, source: AddrError },
    #[error("services")]
    Services(#[from] services::ServiceError),
}

/// A service (VIP, port, protocol) the data plane could not take, as logs and Events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unplaced {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: crate::model::Proto,
}

impl Unplaced {
    fn of(k: &services::SvcKey) -> Self {
        Self {
            vip: k.vip(),
            port: k.port(),
            proto: if k.proto() == vip_common::PROTO_UDP {
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
    pub owned: BTreeSet<IpAddr>,
    pub routed: BTreeSet<IpAddr>,
}

impl Claims {
    pub fn owned(owned: BTreeSet<IpAddr>) -> Self {
        Self {
            owned,
            routed: BTreeSet::new(),
        }
    }

    pub fn all(&self) -> BTreeSet<IpAddr> {
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
    applied: BTreeMap<IpAddr, Option<JoinHandle<()>>>,
    routed: BTreeSet<IpAddr>,
    /// Whether owned VIPs answer ARP (off: BGP-only, see `bgp.arp`).
    arp: bool,
    /// XDP mode: owned (in the map, announced) but the local address binding failed.
    unbound: BTreeSet<IpAddr>,
    conflicts: conflict::Conflicts,
    /// The claims last applied without any failure (see `apply`); cleared by anything that
    /// changes what is applied outside `apply`.
    settled: Option<Claims>,
    /// The last pass put every gained VIP in the map (none failed alone).
    complete: bool,
}

impl Reconciler {
    pub fn new(
        mut backend: Backend,
        handle: Handle,
        uplink_index: u32,
        mac: [u8; 6],
        garp_cfg: GarpConfig,
        state: Arc<State>,
    ) -> Self {
        if let Backend::Xdp { lb, .. } = &mut backend {
            lb.count_setting_failures(state.setting_failures.clone());
        }
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

    pub fn applied(&self) -> Vec<IpAddr> {
        self.applied.keys().copied().collect()
    }

    /// VIPs served without owning them (see [`Claims`]).
    pub fn routed(&self) -> Vec<IpAddr> {
        self.routed.iter().copied().collect()
    }

    fn publish(&self) {
        let now = self.applied();
        self.state.bus.owned.send_if_modified(|o| {
            let changed = *o != now;
            *o = now;
            changed
        });
        let all: Vec<IpAddr> = self
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
}
