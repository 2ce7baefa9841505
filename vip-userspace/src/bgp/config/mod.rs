//! The `bgp:` section: the local speaker and its peers, kube-vip's peer string form, and
//! validation whose errors name the field (`bgp.peers[1].remote_as`).
//!
//! This file holds the shape of the section (what serde reads); the community syntax is in
//! `community.rs`, the checks in `validate.rs`, and kube-vip's `bgp_peers` string in
//! `kube_vip.rs`, so each changes without touching the others.
mod community;
mod kube_vip;
mod validate;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

pub use community::{parse_communities, Community, RoutePolicy};
pub use kube_vip::{parse_kube_vip_peers, KUBE_VIP_MULTIHOP_TTL};

/// A configuration problem, naming the field as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: field `{field}`: {message}")]
pub struct BgpConfigError {
    pub field: String,
    pub message: String,
}

impl BgpConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Default hold time: short enough that a dead peer without BFD goes within ~10 s, long
/// enough (keepalive every 3 s) that a loaded node does not flap. bird and FRR accept it.
pub const DEFAULT_HOLD_TIME_S: u16 = 9;
pub const DEFAULT_PORT: u16 = 179;
/// Restart time advertised in the graceful-restart capability: how long peers keep our
/// routes as stale after the TCP session drops without a NOTIFICATION. A daemon restart
/// takes a few seconds; two minutes covers an image pull on upgrade.
pub const DEFAULT_RESTART_TIME_S: u16 = 120;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BgpConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    #[serde(default = "default_hold")]
    pub hold_time_s: u16,
    /// Next hop for IPv4 routes; default: the local address of each IPv4 session.
    #[serde(default)]
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop for IPv6 routes; default: the local address of each IPv6 session (an
    /// IPv4 session announces IPv6 routes only when this is set).
    #[serde(default)]
    pub next_hop_v6: Option<Ipv6Addr>,
    // Community has its own Deserialize (a string or a number): the schema needs only the field.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub communities: Vec<Community>,
    /// LOCAL_PREF on announcements to iBGP peers (eBGP peers never see it).
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub graceful_restart: Option<GrConfig>,
    #[serde(default)]
    pub announce: AnnounceConfig,
    /// Also answer ARP for the VIPs this node owns, as in L2 mode (default). `false` when
    /// only routers need to reach the VIPs: no node answers ARP or sends gratuitous ARP for
    /// them, which `election: single` on several nodes (each owning every VIP) requires.
    #[serde(default = "default_true")]
    pub arp: bool,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

fn default_true() -> bool {
    true
}

fn default_hold() -> u16 {
    DEFAULT_HOLD_TIME_S
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_restart_time() -> u16 {
    DEFAULT_RESTART_TIME_S
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrConfig {
    #[serde(default = "default_restart_time")]
    pub restart_time_s: u16,
}

impl Default for GrConfig {
    fn default() -> Self {
        Self {
            restart_time_s: DEFAULT_RESTART_TIME_S,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub remote_as: u32,
    /// The session's TCP port: we connect to it, or listen on it when `passive`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// TCP MD5 signature key (RFC 2385), at most 80 bytes.
    #[serde(default)]
    pub password: Option<String>,
    /// TTL of our packets for a peer more than one hop away. Unset: 1 for eBGP (what a
    /// router expects of a directly connected eBGP neighbour), 64 for iBGP.
    #[serde(default)]
    pub multihop_ttl: Option<u8>,
    /// Overrides the speaker's hold time for this peer.
    #[serde(default)]
    pub hold_time_s: Option<u16>,
    #[serde(default)]
    pub bfd: Option<BfdConfig>,
    /// Wait for the peer to connect instead of connecting.
    #[serde(default)]
    pub passive: bool,
}

impl PeerConfig {
    pub fn new(address: IpAddr, remote_as: u32) -> Self {
        Self {
            address,
            remote_as,
            port: DEFAULT_PORT,
            password: None,
            multihop_ttl: None,
            hold_time_s: None,
            bfd: None,
            passive: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BfdConfig {
    #[serde(default = "default_bfd_interval")]
    pub min_tx_ms: u32,
    #[serde(default = "default_bfd_interval")]
    pub min_rx_ms: u32,
    #[serde(default = "default_bfd_multiplier")]
    pub multiplier: u8,
}

fn default_bfd_interval() -> u32 {
    300
}

fn default_bfd_multiplier() -> u8 {
    3
}

impl Default for BfdConfig {
    fn default() -> Self {
        Self {
            min_tx_ms: default_bfd_interval(),
            min_rx_ms: default_bfd_interval(),
            multiplier: default_bfd_multiplier(),
        }
    }
}

/// Which nodes announce a VIP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnnounceMode {
    /// Only the node that owns the VIP (the election's choice), as in ARP mode.
    #[default]
    Owner,
    /// Every node that can serve it; the router spreads flows over them (ECMP).
    Ecmp,
}

/// `bgp.announce`: who announces the control-plane VIP (the file's `vips`) and the
/// Services' VIPs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnounceConfig {
    /// `ecmp`: every node whose control plane is healthy (lease election with
    /// `readyz_gate`: its API server answers /readyz; otherwise: the daemon is up).
    #[serde(default)]
    pub control_plane: AnnounceMode,
    /// `ecmp`: for `externalTrafficPolicy: Local`, every node with a ready local endpoint;
    /// for `Cluster` Services balanced in XDP (dsr/nat), every node. Others: the owner.
    #[serde(default)]
    pub services: AnnounceMode,
}

impl BgpConfig {
    pub fn new(local_as: u32, router_id: Ipv4Addr, peers: Vec<PeerConfig>) -> Self {
        Self {
            local_as,
            router_id,
            hold_time_s: DEFAULT_HOLD_TIME_S,
            next_hop_v4: None,
            next_hop_v6: None,
            communities: Vec::new(),
            local_pref: None,
            graceful_restart: None,
            announce: AnnounceConfig::default(),
            arp: true,
            peers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_validation() {
        let y = r#"
local_as: 65001
router_id: 10.0.0.2
communities: ["65001:100", 42]
announce: { control_plane: ecmp }
graceful_restart: {}
peers:
  - address: 10.0.0.1
    remote_as: 65000
    bfd: { min_tx_ms: 100, min_rx_ms: 100 }
  - address: 10.0.0.3
    remote_as: 0
"#;
        let c: BgpConfig = serde_saphyr::from_str(y).unwrap();
        assert_eq!(c.hold_time_s, DEFAULT_HOLD_TIME_S);
        assert_eq!(
            c.communities,
            vec![Community::new(65001, 100), Community::Standard(42)]
        );
        assert_eq!(c.graceful_restart.unwrap().restart_time_s, 120);
        assert_eq!(c.announce.control_plane, AnnounceMode::Ecmp);
        assert_eq!(c.announce.services, AnnounceMode::Owner);
        assert_eq!(c.peers[0].bfd.unwrap().multiplier, 3);
        assert_eq!(c.validate().unwrap_err().field, "bgp.peers[1].remote_as");
        let bad: Result<BgpConfig, _> =
            serde_saphyr::from_str("local_as: 1\nrouter_id: 1.1.1.1\nholdtime: 3\n");
        assert!(bad.is_err(), "unknown fields are rejected");
        let mut c = BgpConfig::new(1, Ipv4Addr::new(1, 1, 1, 1), vec![]);
        assert_eq!(c.validate().unwrap_err().field, "bgp.peers");
        c.hold_time_s = 2;
        assert_eq!(c.validate().unwrap_err().field, "bgp.hold_time_s");
    }
}
