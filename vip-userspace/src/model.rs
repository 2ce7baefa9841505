//! The domain: services, backends, forwarding modes and protocols, and the desired state
//! that both front-ends (the YAML file, `config`; the API server, `k8s`) produce and the
//! reconciler applies. Each name (`dsr`, `tcp`, …) is spelled here once.
use std::{collections::BTreeSet, net::IpAddr};

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
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
}

/// A service's backends, shared: the Kubernetes view, the plan and the reconciler's record of
/// what is applied hold the same list, so a pass over 10,000 services copies pointers, and
/// comparing an unchanged service's backends is one pointer comparison.
pub type Backends = std::sync::Arc<[Backend]>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: Proto,
    pub mode: LbMode,
    pub backends: Backends,
}

/// Where a service sits in the data plane: (VIP, port, protocol). The order of these keys is
/// the order of the data plane's own keys (big-endian address and port, then protocol
/// number), so a list sorted by it can be diffed against the applied state in one walk.
pub type ServiceId = (IpAddr, u16, Proto);

impl Service {
    pub fn id(&self) -> ServiceId {
        (self.vip, self.port, self.proto)
    }
}

/// Whether `services` is sorted by [`ServiceId`] with no id twice.
pub fn sorted_unique(services: &[Service]) -> bool {
    services.windows(2).all(|w| w[0].id() < w[1].id())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub vips: BTreeSet<IpAddr>,
    /// Sorted by [`ServiceId`], one service per id.
    pub services: std::sync::Arc<[Service]>,
}

impl Default for Desired {
    fn default() -> Self {
        Self {
            vips: BTreeSet::new(),
            services: Vec::new().into(),
        }
    }
}

impl Desired {
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::from_sources(cfg, &Vec::new().into())
    }

    /// The file's VIPs and services plus those coming from Kubernetes Services. The file's
    /// entry wins over a Service's on the same id, and an earlier Service's over a later
    /// one's. Kubernetes services as the view publishes them (sorted, unique) and no file
    /// services, the common case, are shared as they are: no copy per pass.
    pub fn from_sources(cfg: &crate::config::Config, k8s: &std::sync::Arc<[Service]>) -> Self {
        // Built in bulk from the (sorted) list, then the file's few added: not 10,000 inserts.
        let mut vips: BTreeSet<IpAddr> = k8s.iter().map(|s| s.vip).collect();
        vips.extend(cfg.vips.iter().copied());
        if cfg.services.is_empty() && sorted_unique(k8s) {
            return Self {
                vips,
                services: k8s.clone(),
            };
        }
        let mut by_id: std::collections::BTreeMap<ServiceId, &Service> =
            std::collections::BTreeMap::new();
        for s in cfg.services.iter().chain(k8s.iter()) {
            by_id.entry(s.id()).or_insert(s);
        }
        Self {
            vips,
            services: by_id.into_values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(vip: &str, port: u16, mode: LbMode, backend: &str) -> Service {
        Service {
            vip: vip.parse().unwrap(),
            port,
            proto: Proto::Tcp,
            mode,
            backends: vec![Backend {
                addr: backend.parse().unwrap(),
                port: 80,
                weight: 1,
            }]
            .into(),
        }
    }

    fn cfg(yaml: &str) -> crate::config::Config {
        crate::config::resolve(crate::config::parse_file(yaml).unwrap(), Default::default())
            .unwrap()
    }

    #[test]
    fn kubernetes_services_as_published_are_shared_not_copied() {
        let c = cfg("interface: eth0\nvips: [192.0.2.1]\n");
        let k8s: std::sync::Arc<[Service]> = vec![
            svc("192.0.2.10", 80, LbMode::Dsr, "10.0.0.1"),
            svc("192.0.2.10", 443, LbMode::Dsr, "10.0.0.1"),
            svc("192.0.2.11", 80, LbMode::Nat, "10.0.0.2"),
        ]
        .into();
        let d = Desired::from_sources(&c, &k8s);
        assert!(std::sync::Arc::ptr_eq(&d.services, &k8s));
        assert_eq!(
            d.vips,
            ["192.0.2.1", "192.0.2.10", "192.0.2.11"]
                .iter()
                .map(|v| v.parse().unwrap())
                .collect()
        );
    }

    #[test]
    fn the_files_service_wins_then_the_earlier_one_and_the_result_is_sorted() {
        let c = cfg("interface: eth0\nservices:\n  - {vip: 192.0.2.10, port: 80, mode: local}\n");
        let k8s: std::sync::Arc<[Service]> = vec![
            svc("192.0.2.11", 80, LbMode::Nat, "10.0.0.2"),
            svc("192.0.2.10", 80, LbMode::Dsr, "10.0.0.1"),
            svc("192.0.2.11", 80, LbMode::Dsr, "10.0.0.3"),
        ]
        .into();
        let d = Desired::from_sources(&c, &k8s);
        assert!(sorted_unique(&d.services));
        let got: Vec<(ServiceId, LbMode)> = d.services.iter().map(|s| (s.id(), s.mode)).collect();
        assert_eq!(
            got,
            vec![
                (
                    ("192.0.2.10".parse().unwrap(), 80, Proto::Tcp),
                    LbMode::Local
                ),
                (("192.0.2.11".parse().unwrap(), 80, Proto::Tcp), LbMode::Nat),
            ]
        );
    }
}
