//! The `bgp:` section: the local speaker and its peers, kube-vip's peer string form, and
//! validation whose errors name the field (`bgp.peers[1].remote_as`).
use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{de, Deserialize, Deserializer};

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

/// A BGP community: standard (RFC 1997, `"65000:100"` or its 32-bit value) or large
/// (RFC 8092, `"65000:1:2"`, three 32-bit parts, for 4-byte AS numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    Standard(u32),
    Large(u32, u32, u32),
}

impl Community {
    pub fn new(asn: u16, value: u16) -> Self {
        Self::Standard((u32::from(asn) << 16) | u32::from(value))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(v) => write!(f, "{}:{}", v >> 16, v & 0xffff),
            Community::Large(a, b, c) => write!(f, "{a}:{b}:{c}"),
        }
    }
}

impl std::str::FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let parts: Vec<&str> = t.split(':').map(str::trim).collect();
        match parts.as_slice() {
            [a, v] => {
                let p = |x: &str| {
                    x.parse::<u16>()
                        .map_err(|_| format!("`{s}` is not `ASN:VALUE` with both parts 0..=65535"))
                };
                Ok(Community::new(p(a)?, p(v)?))
            }
            [a, b, c] => {
                let p = |x: &str| {
                    x.parse::<u32>().map_err(|_| {
                        format!("`{s}` is not a large community `ASN:DATA1:DATA2` (32-bit parts)")
                    })
                };
                Ok(Community::Large(p(a)?, p(b)?, p(c)?))
            }
            [v] => v.parse::<u32>().map(Community::Standard).map_err(|_| {
                format!("`{s}` is not `ASN:VALUE`, `ASN:DATA1:DATA2` or a 32-bit number")
            }),
            _ => Err(format!(
                "`{s}` is not `ASN:VALUE`, `ASN:DATA1:DATA2` or a 32-bit number"
            )),
        }
    }
}

/// A comma-separated list of communities (annotations, pool keys).
pub fn parse_communities(s: &str) -> Result<Vec<Community>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::parse)
        .collect()
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Community;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a community `ASN:VALUE`, `ASN:DATA1:DATA2` or a 32-bit number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Community, E> {
                u32::try_from(v)
                    .map(Community::Standard)
                    .map_err(|_| E::custom(format!("{v} does not fit in 32 bits")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Community, E> {
                u32::try_from(v)
                    .map(Community::Standard)
                    .map_err(|_| E::custom(format!("{v} does not fit in 32 bits")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Community, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// What goes with one announced prefix besides the session's own attributes: added to
/// `bgp.communities`, and a LOCAL_PREF that replaces `bgp.local_pref`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoutePolicy {
    pub communities: Vec<Community>,
    pub local_pref: Option<u32>,
}

impl RoutePolicy {
    /// `self` refined by `more`: communities added (sorted, no duplicates), `more`'s
    /// LOCAL_PREF winning when it has one.
    pub fn merged(&self, more: &RoutePolicy) -> RoutePolicy {
        let mut communities: Vec<Community> = self
            .communities
            .iter()
            .chain(&more.communities)
            .copied()
            .collect();
        communities.sort();
        communities.dedup();
        RoutePolicy {
            communities,
            local_pref: more.local_pref.or(self.local_pref),
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

    /// Every problem is reported against `bgp.<field>` (or `bgp.peers[i].<field>`).
    pub fn validate(&self) -> Result<(), BgpConfigError> {
        if self.local_as == 0 {
            return Err(BgpConfigError::new("bgp.local_as", "must not be 0"));
        }
        if self.router_id.is_unspecified() {
            return Err(BgpConfigError::new(
                "bgp.router_id",
                "must not be 0.0.0.0 (use one of the node's IPv4 addresses)",
            ));
        }
        check_hold(self.hold_time_s, "bgp.hold_time_s")?;
        if let Some(nh) = self.next_hop_v4 {
            if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                return Err(BgpConfigError::new(
                    "bgp.next_hop_v4",
                    format!("{nh} is not a unicast address"),
                ));
            }
        }
        if let Some(nh) = self.next_hop_v6 {
            if nh.is_unspecified() || nh.is_multicast() {
                return Err(BgpConfigError::new(
                    "bgp.next_hop_v6",
                    format!("{nh} is not a unicast address"),
                ));
            }
        }
        if let Some(gr) = self.graceful_restart {
            // The capability carries the restart time in 12 bits.
            if gr.restart_time_s == 0 || gr.restart_time_s > 4095 {
                return Err(BgpConfigError::new(
                    "bgp.graceful_restart.restart_time_s",
                    format!("{} is not in 1..=4095", gr.restart_time_s),
                ));
            }
        }
        if self.peers.is_empty() {
            return Err(BgpConfigError::new(
                "bgp.peers",
                "at least one peer is needed",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let f = |name: &str| format!("bgp.peers[{i}].{name}");
            let a = p.address;
            if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                return Err(BgpConfigError::new(
                    f("address"),
                    format!("{a} is not a peer's unicast address"),
                ));
            }
            if !seen.insert(a) {
                return Err(BgpConfigError::new(
                    f("address"),
                    format!("{a} is listed twice"),
                ));
            }
            if p.remote_as == 0 {
                return Err(BgpConfigError::new(f("remote_as"), "must not be 0"));
            }
            if p.port == 0 {
                return Err(BgpConfigError::new(f("port"), "must not be 0"));
            }
            if let Some(pw) = &p.password {
                if pw.is_empty() || pw.len() > 80 {
                    return Err(BgpConfigError::new(
                        f("password"),
                        "a TCP MD5 key is 1 to 80 bytes",
                    ));
                }
            }
            if p.multihop_ttl == Some(0) {
                return Err(BgpConfigError::new(f("multihop_ttl"), "must be 1..=255"));
            }
            if let Some(h) = p.hold_time_s {
                check_hold(h, &f("hold_time_s"))?;
            }
            if let Some(b) = p.bfd {
                if b.min_tx_ms == 0 || b.min_tx_ms > 60_000 {
                    return Err(BgpConfigError::new(f("bfd.min_tx_ms"), "must be 1..=60000"));
                }
                if b.min_rx_ms == 0 || b.min_rx_ms > 60_000 {
                    return Err(BgpConfigError::new(f("bfd.min_rx_ms"), "must be 1..=60000"));
                }
                if b.multiplier == 0 {
                    return Err(BgpConfigError::new(f("bfd.multiplier"), "must be 1..=255"));
                }
            }
        }
        Ok(())
    }
}

fn check_hold(h: u16, field: &str) -> Result<(), BgpConfigError> {
    // RFC 4271 4.2: zero (no keepalives) or at least three seconds.
    if h == 1 || h == 2 {
        return Err(BgpConfigError::new(
            field,
            format!("{h} is not allowed: 0 or at least 3 seconds"),
        ));
    }
    Ok(())
}

/// TTL for kube-vip's `multihop=true`: kube-vip leaves it to GoBGP's default for eBGP
/// multihop, which is "any number of hops"; 255 is the closest we can say.
pub const KUBE_VIP_MULTIHOP_TTL: u8 = 255;

/// kube-vip's `bgp_peers`: comma-separated `address:AS[:password[:multihop[:port]]]`, an
/// IPv6 address in brackets (`[fd00::1]:65000`). Errors name the entry (`bgp_peers[1]`).
pub fn parse_kube_vip_peers(s: &str) -> Result<Vec<PeerConfig>, BgpConfigError> {
    let mut out = Vec::new();
    for (i, entry) in s.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let field = |name: &str| format!("bgp_peers[{i}].{name}");
        let (addr_str, rest) = if let Some(after) = entry.strip_prefix('[') {
            let end = after.find(']').ok_or_else(|| {
                BgpConfigError::new(
                    field("address"),
                    format!("`{entry}`: no `]` closing the IPv6 address"),
                )
            })?;
            let rest = &after[end + 1..];
            (&after[..end], rest.strip_prefix(':').unwrap_or(rest))
        } else {
            entry.split_once(':').unwrap_or((entry, ""))
        };
        let address: IpAddr = addr_str.parse().map_err(|_| {
            BgpConfigError::new(
                field("address"),
                format!("`{addr_str}` is not an IP address (IPv6 goes in brackets)"),
            )
        })?;
        let mut parts = rest.split(':');
        let as_str = parts.next().unwrap_or("");
        if as_str.is_empty() {
            return Err(BgpConfigError::new(
                field("remote_as"),
                format!("`{entry}`: expected `address:AS[:password[:multihop[:port]]]`"),
            ));
        }
        let remote_as: u32 = as_str.parse().map_err(|_| {
            BgpConfigError::new(
                field("remote_as"),
                format!("`{as_str}` is not an AS number"),
            )
        })?;
        let mut peer = PeerConfig::new(address, remote_as);
        if let Some(pw) = parts.next() {
            if !pw.is_empty() {
                peer.password = Some(pw.to_string());
            }
        }
        if let Some(mh) = parts.next() {
            match mh {
                "" | "false" => {}
                "true" => peer.multihop_ttl = Some(KUBE_VIP_MULTIHOP_TTL),
                other => {
                    return Err(BgpConfigError::new(
                        field("multihop"),
                        format!("`{other}` is not true or false"),
                    ))
                }
            }
        }
        if let Some(port) = parts.next() {
            if !port.is_empty() {
                peer.port = port.parse().map_err(|_| {
                    BgpConfigError::new(field("port"), format!("`{port}` is not a TCP port"))
                })?;
            }
        }
        if let Some(extra) = parts.next() {
            return Err(BgpConfigError::new(
                field("address"),
                format!("`{entry}`: unexpected `{extra}` after the port"),
            ));
        }
        out.push(peer);
    }
    if out.is_empty() {
        return Err(BgpConfigError::new("bgp_peers", "no peers given"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_vip_peers() {
        let p = parse_kube_vip_peers("192.168.0.2:65000::true,[fd00::1]:65001:secret:false:1179")
            .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].address, "192.168.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(p[0].remote_as, 65000);
        assert_eq!(p[0].password, None);
        assert_eq!(p[0].multihop_ttl, Some(KUBE_VIP_MULTIHOP_TTL));
        assert_eq!(p[1].address, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(p[1].password.as_deref(), Some("secret"));
        assert_eq!(p[1].multihop_ttl, None);
        assert_eq!(p[1].port, 1179);
        let p = parse_kube_vip_peers("10.0.0.1:64512").unwrap();
        assert_eq!((p[0].remote_as, p[0].port), (64512, 179));
    }

    #[test]
    fn kube_vip_peer_errors_name_the_entry() {
        let e = parse_kube_vip_peers("10.0.0.1:1,10.0.0.2:x").unwrap_err();
        assert_eq!(e.field, "bgp_peers[1].remote_as");
        let e = parse_kube_vip_peers("[fd00::1:65000").unwrap_err();
        assert_eq!(e.field, "bgp_peers[0].address");
        let e = parse_kube_vip_peers("10.0.0.1:1:pw:maybe").unwrap_err();
        assert_eq!(e.field, "bgp_peers[0].multihop");
        let e = parse_kube_vip_peers("10.0.0.1").unwrap_err();
        assert_eq!(e.field, "bgp_peers[0].remote_as");
        assert!(parse_kube_vip_peers("").is_err());
    }

    #[test]
    fn communities_standard_and_large() {
        assert_eq!(
            parse_communities("65000:100, 4200000001:7:8,42").unwrap(),
            vec![
                Community::new(65000, 100),
                Community::Large(4_200_000_001, 7, 8),
                Community::Standard(42)
            ]
        );
        assert!(parse_communities("65536:1").is_err());
        assert!(parse_communities("1:2:3:4").is_err());
        assert_eq!(Community::Large(1, 2, 3).to_string(), "1:2:3");
        let base = RoutePolicy {
            communities: vec![Community::new(1, 1)],
            local_pref: Some(100),
        };
        let m = base.merged(&RoutePolicy {
            communities: vec![Community::new(1, 1), Community::new(0, 5)],
            local_pref: None,
        });
        assert_eq!(
            m.communities,
            vec![Community::new(0, 5), Community::new(1, 1)]
        );
        assert_eq!(m.local_pref, Some(100));
    }

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
