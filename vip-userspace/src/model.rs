//! The domain: services, backends, forwarding modes and protocols, and the desired state
//! that both front-ends (the YAML file, `config`; the API server, `k8s`) produce and the
//! reconciler applies. Each name (`dsr`, `tcp`, …) is spelled here once.
use std::{collections::BTreeSet, net::Ipv4Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => vip_common::PROTO_TCP,
            Proto::Udp => vip_common::PROTO_UDP,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    pub const ALL: [Proto; 2] = [Proto::Tcp, Proto::Udp];

    /// `tcp` or `udp`, as the file spells them.
    pub fn parse(s: &str) -> Option<Proto> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// `TCP` or `UDP`, as Kubernetes spells them (`SCTP` and the rest: none).
    pub fn from_kubernetes(s: &str) -> Option<Proto> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().to_ascii_uppercase() == s)
    }

    /// From the data plane's protocol number.
    pub fn from_number(n: u8) -> Option<Proto> {
        Self::ALL.into_iter().find(|p| p.number() == n)
    }

    /// "tcp or udp", for error messages.
    pub fn choices() -> String {
        Self::ALL.map(Proto::as_str).join(" or ")
    }
}

/// How a service's packets reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbMode {
    /// Direct server return: only the destination MAC changes; backends hold the VIP on lo
    /// and answer the client directly.
    Dsr,
    /// Destination NAT to backend:port; replies come back through this node (its address is
    /// the backends' gateway) and tc egress restores VIP:port.
    Nat,
    /// This node serves it: the packet goes to the local stack.
    Local,
}

impl LbMode {
    pub fn code(self) -> u8 {
        match self {
            LbMode::Dsr => vip_common::MODE_DSR,
            LbMode::Nat => vip_common::MODE_NAT,
            LbMode::Local => vip_common::MODE_LOCAL,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LbMode::Dsr => "dsr",
            LbMode::Nat => "nat",
            LbMode::Local => "local",
        }
    }

    pub const ALL: [LbMode; 3] = [LbMode::Dsr, LbMode::Nat, LbMode::Local];

    /// `dsr`, `nat` or `local` (exactly).
    pub fn parse(s: &str) -> Option<LbMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// From the data plane's mode code.
    pub fn from_code(c: u8) -> Option<LbMode> {
        Self::ALL.into_iter().find(|m| m.code() == c)
    }

    /// "dsr, nat, local", for error messages.
    pub fn choices() -> String {
        Self::ALL.map(LbMode::as_str).join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
}

/// A service's backends, shared: the Kubernetes view, the plan and the reconciler's record of
/// what is applied hold the same list, so a pass over 10,000 services copies pointers, and
/// comparing an unchanged service's backends is one pointer comparison.
pub type Backends = std::sync::Arc<[Backend]>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
    pub mode: LbMode,
    pub backends: Backends,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub vips: BTreeSet<Ipv4Addr>,
    pub services: Vec<Service>,
}

impl Desired {
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::from_sources(cfg, &[])
    }

    /// The file's VIPs and services plus those coming from Kubernetes Services.
    pub fn from_sources(cfg: &crate::config::Config, k8s: &[Service]) -> Self {
        let mut vips = cfg.vips.clone();
        vips.extend(k8s.iter().map(|s| s.vip));
        let mut services = cfg.services.clone();
        // The file's entry wins over a Service's on the same (VIP, port, protocol), and the
        // first Service's over a later one's: a set of those taken, not a scan per Service.
        let mut taken: std::collections::HashSet<(std::net::Ipv4Addr, u16, Proto)> =
            services.iter().map(|x| (x.vip, x.port, x.proto)).collect();
        services.reserve(k8s.len());
        for s in k8s {
            if taken.insert((s.vip, s.port, s.proto)) {
                services.push(s.clone());
            }
        }
        Self { vips, services }
    }
}
