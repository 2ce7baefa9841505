//! Building BGP messages with netgauze-bgp-pkt: OPEN with our capabilities, UPDATEs for
//! host routes, End-of-RIB, NOTIFICATIONs. Framing is netgauze's `BgpCodec` on a
//! `tokio_util::codec::Framed`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use netgauze_bgp_pkt::{
    capabilities::{
        BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily,
        GracefulRestartCapability, MultiProtocolExtensionsCapability,
    },
    community::{Community as NgCommunity, LargeCommunity},
    nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress},
    notification::{BgpNotificationMessage, CeaseError, HoldTimerExpiredError},
    open::{BgpOpenMessage, BgpOpenMessageParameter},
    path_attribute::{
        As2PathSegment, As4PathSegment, AsPath, AsPathSegmentType, Communities, LargeCommunities,
        LocalPreference, MpReach, MpUnreach, NextHop, Origin, PathAttribute, PathAttributeValue,
    },
    update::BgpUpdateMessage,
    BgpMessage,
};
use netgauze_iana::address_family::AddressType;

use super::config::Community;

/// The 2-byte AS field holds this when our AS needs four bytes (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// NLRI per UPDATE: keeps every message far below the 4096-byte limit (a /32 takes 5
/// bytes, a /128 17, attributes under 100).
const V4_PER_UPDATE: usize = 400;
const V6_PER_UPDATE: usize = 150;

/// What we put in our OPEN.
pub struct OpenParams {
    pub local_as: u32,
    pub hold_time_s: u16,
    pub router_id: Ipv4Addr,
    /// Some(restart time) when graceful restart is on.
    pub gr_restart_time_s: Option<u16>,
    /// The R bit: we restarted and peers should not wait for our End-of-RIB to send theirs.
    pub gr_restarted: bool,
}

pub fn open(p: &OpenParams) -> BgpMessage {
    let my_as = u16::try_from(p.local_as).unwrap_or(AS_TRANS);
    let mut caps = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv6Unicast,
        )),
        BgpCapability::RouteRefresh,
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(p.local_as)),
    ];
    if let Some(t) = p.gr_restart_time_s {
        // Forwarding state is preserved across our restarts: the XDP data plane and its
        // pinned maps keep forwarding while the daemon is down.
        let afs = [AddressType::Ipv4Unicast, AddressType::Ipv6Unicast]
            .map(|at| GracefulRestartAddressFamily::new(true, at));
        caps.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(p.gr_restarted, false, t, afs),
        ));
    }
    BgpMessage::Open(BgpOpenMessage::new(
        my_as,
        p.hold_time_s,
        p.router_id,
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    ))
}

/// What the peer's OPEN told us.
#[derive(Debug, Clone)]
pub struct PeerOpen {
    pub asn: u32,
    pub hold_time_s: u16,
    pub router_id: Ipv4Addr,
    pub asn4: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    pub route_refresh: bool,
    pub graceful_restart: bool,
}

pub fn peer_open(o: &BgpOpenMessage) -> PeerOpen {
    let caps = o.capabilities();
    let mp: Vec<AddressType> = caps
        .iter()
        .filter_map(|c| match c {
            BgpCapability::MultiProtocolExtensions(m) => Some(m.address_type()),
            _ => None,
        })
        .collect();
    PeerOpen {
        asn: o.my_asn4(),
        hold_time_s: o.hold_time(),
        router_id: o.bgp_id(),
        asn4: caps
            .iter()
            .any(|c| matches!(c, BgpCapability::FourOctetAs(_))),
        // RFC 4760: a speaker without any MP capability does IPv4 unicast only.
        ipv4: mp.is_empty() || mp.contains(&AddressType::Ipv4Unicast),
        ipv6: mp.contains(&AddressType::Ipv6Unicast),
        route_refresh: caps.iter().any(|c| {
            matches!(
                c,
                BgpCapability::RouteRefresh | BgpCapability::CiscoRouteRefresh
            )
        }),
        graceful_restart: caps
            .iter()
            .any(|c| matches!(c, BgpCapability::GracefulRestartCapability(_))),
    }
}

/// Path attributes shared by every announcement of one session.
#[derive(Debug, Clone)]
pub struct RouteAttrs {
    pub local_as: u32,
    pub ebgp: bool,
    pub asn4: bool,
    pub local_pref: Option<u32>,
    pub communities: Vec<Community>,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
}

fn attr(
    optional: bool,
    transitive: bool,
    ext: bool,
    v: PathAttributeValue,
) -> Option<PathAttribute> {
    PathAttribute::from(optional, transitive, false, ext, v).ok()
}

impl RouteAttrs {
    /// These attributes with a prefix's own communities added and its LOCAL_PREF (if any)
    /// in place of the speaker-wide one.
    pub fn with_policy(&self, p: &super::config::RoutePolicy) -> RouteAttrs {
        let merged = super::config::RoutePolicy {
            communities: self.communities.clone(),
            local_pref: self.local_pref,
        }
        .merged(p);
        RouteAttrs {
            communities: merged.communities,
            local_pref: merged.local_pref,
            ..self.clone()
        }
    }

    fn common(&self) -> Vec<PathAttribute> {
        let mut out = Vec::new();
        out.extend(attr(
            false,
            true,
            false,
            PathAttributeValue::Origin(Origin::IGP),
        ));
        let as_path = match (self.ebgp, self.asn4) {
            (false, true) => AsPath::As4PathSegments(Box::new([])),
            (false, false) => AsPath::As2PathSegments(Box::new([])),
            (true, true) => AsPath::As4PathSegments(Box::new([As4PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![self.local_as],
            )])),
            // A peer without 4-byte AS support sees AS_TRANS; we do not add AS4_PATH
            // (such peers are rare today, and they only lose the exact origin AS).
            (true, false) => AsPath::As2PathSegments(Box::new([As2PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![u16::try_from(self.local_as).unwrap_or(AS_TRANS)],
            )])),
        };
        out.extend(attr(
            false,
            true,
            false,
            PathAttributeValue::AsPath(as_path),
        ));
        if !self.ebgp {
            if let Some(lp) = self.local_pref {
                out.extend(attr(
                    false,
                    true,
                    false,
                    PathAttributeValue::LocalPreference(LocalPreference::new(lp)),
                ));
            }
        }
        let cs: Vec<NgCommunity> = self
            .communities
            .iter()
            .filter_map(|c| match c {
                Community::Standard(v) => Some(NgCommunity::new(*v)),
                Community::Large(..) => None,
            })
            .collect();
        if !cs.is_empty() {
            out.extend(attr(
                true,
                true,
                cs.len() * 4 > 255,
                PathAttributeValue::Communities(Communities::new(cs)),
            ));
        }
        let large: Vec<LargeCommunity> = self
            .communities
            .iter()
            .filter_map(|c| match c {
                Community::Large(a, b, d) => Some(LargeCommunity::new(*a, *b, *d)),
                Community::Standard(_) => None,
            })
            .collect();
        if !large.is_empty() {
            out.extend(attr(
                true,
                true,
                large.len() * 12 > 255,
                PathAttributeValue::LargeCommunities(LargeCommunities::new(large)),
            ));
        }
        out
    }
}

fn v4_nlri(a: Ipv4Addr) -> Option<Ipv4UnicastAddress> {
    let net = Ipv4Net::new(a, 32).ok()?;
    Ipv4Unicast::from_net(net)
        .ok()
        .map(Ipv4UnicastAddress::new_no_path_id)
}

fn v6_nlri(a: Ipv6Addr) -> Option<Ipv6UnicastAddress> {
    let net = Ipv6Net::new(a, 128).ok()?;
    Ipv6Unicast::from_net(net)
        .ok()
        .map(|n| Ipv6UnicastAddress::new(None, n))
}

/// UPDATEs announcing `v4` (classic NLRI + NEXT_HOP) and `v6` (MP_REACH_NLRI).
pub fn announce(attrs: &RouteAttrs, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Vec<BgpMessage> {
    let mut out = Vec::new();
    if let Some(nh) = attrs.next_hop_v4 {
        for chunk in v4.chunks(V4_PER_UPDATE) {
            let mut pa = attrs.common();
            pa.extend(attr(
                false,
                true,
                false,
                PathAttributeValue::NextHop(NextHop::new(nh)),
            ));
            let nlri: Vec<_> = chunk.iter().filter_map(|a| v4_nlri(*a)).collect();
            out.push(BgpMessage::Update(BgpUpdateMessage::new(vec![], pa, nlri)));
        }
    }
    if let Some(nh) = attrs.next_hop_v6 {
        for chunk in v6.chunks(V6_PER_UPDATE) {
            let nlri: Vec<_> = chunk.iter().filter_map(|a| v6_nlri(*a)).collect();
            let mut pa = attrs.common();
            pa.extend(attr(
                true,
                false,
                true,
                PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                    next_hop_global: nh,
                    next_hop_local: None,
                    nlri: nlri.into(),
                }),
            ));
            out.push(BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                pa,
                vec![],
            )));
        }
    }
    out
}

/// UPDATEs withdrawing `v4` (classic withdrawn routes) and `v6` (MP_UNREACH_NLRI).
pub fn withdraw(v4: &[Ipv4Addr], v6: &[Ipv6Addr]) -> Vec<BgpMessage> {
    let mut out = Vec::new();
    for chunk in v4.chunks(V4_PER_UPDATE) {
        let w: Vec<_> = chunk.iter().filter_map(|a| v4_nlri(*a)).collect();
        out.push(BgpMessage::Update(BgpUpdateMessage::new(w, vec![], vec![])));
    }
    for chunk in v6.chunks(V6_PER_UPDATE) {
        let nlri: Vec<_> = chunk.iter().filter_map(|a| v6_nlri(*a)).collect();
        out.push(mp_unreach_v6(nlri));
    }
    out
}

fn mp_unreach_v6(nlri: Vec<Ipv6UnicastAddress>) -> BgpMessage {
    let pa: Vec<_> = attr(
        true,
        false,
        true,
        PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri: nlri.into() }),
    )
    .into_iter()
    .collect();
    BgpMessage::Update(BgpUpdateMessage::new(vec![], pa, vec![]))
}

/// End-of-RIB (RFC 4724): an empty UPDATE for IPv4, an empty MP_UNREACH for IPv6.
pub fn end_of_rib(v6: bool) -> BgpMessage {
    if v6 {
        mp_unreach_v6(vec![])
    } else {
        BgpMessage::Update(BgpUpdateMessage::new(vec![], vec![], vec![]))
    }
}

pub fn cease_admin_shutdown() -> BgpMessage {
    BgpMessage::Notification(BgpNotificationMessage::CeaseError(
        CeaseError::AdministrativeShutdown {
            value: Box::new([]),
        },
    ))
}

pub fn cease_bfd_down() -> BgpMessage {
    BgpMessage::Notification(BgpNotificationMessage::CeaseError(CeaseError::BfdDown {
        value: Box::new([]),
    }))
}

pub fn hold_timer_expired() -> BgpMessage {
    BgpMessage::Notification(BgpNotificationMessage::HoldTimerExpiredError(
        HoldTimerExpiredError::Unspecific {
            sub_code: 0,
            value: Box::new([]),
        },
    ))
}

/// Split host addresses by family.
pub fn split(addrs: impl IntoIterator<Item = IpAddr>) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for a in addrs {
        match a {
            IpAddr::V4(a) => v4.push(a),
            IpAddr::V6(a) => v6.push(a),
        }
    }
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use netgauze_bgp_pkt::codec::BgpCodec;
    use tokio_util::codec::{Decoder, Encoder};

    fn roundtrip(m: BgpMessage) -> BgpMessage {
        let mut c = BgpCodec::new(true);
        let mut b = BytesMut::new();
        c.encode(m, &mut b).unwrap();
        c.decode(&mut b).unwrap().unwrap().0
    }

    #[test]
    fn open_carries_as_trans_and_caps() {
        let m = open(&OpenParams {
            local_as: 4_200_000_001,
            hold_time_s: 9,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            gr_restart_time_s: Some(30),
            gr_restarted: true,
        });
        let BgpMessage::Open(o) = roundtrip(m) else {
            panic!("not an OPEN")
        };
        assert_eq!(o.my_as(), AS_TRANS);
        let p = peer_open(&o);
        assert_eq!(p.asn, 4_200_000_001);
        assert!(p.asn4 && p.ipv4 && p.ipv6 && p.route_refresh && p.graceful_restart);
    }

    #[test]
    fn updates_and_eor_roundtrip() {
        let attrs = RouteAttrs {
            local_as: 65001,
            ebgp: true,
            asn4: true,
            local_pref: Some(200),
            communities: vec![Community::new(65001, 7), Community::Large(65001, 1, 2)],
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            next_hop_v6: Some("fd00::2".parse().unwrap()),
        };
        let v4: Vec<Ipv4Addr> = (0..1000u32)
            .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
            .collect();
        let v6 = vec!["fd00::10".parse().unwrap()];
        let msgs = announce(&attrs, &v4, &v6);
        assert_eq!(msgs.len(), 4, "1000 /32s in three UPDATEs, the /128 in one");
        for m in msgs.into_iter().chain(withdraw(&v4, &v6)) {
            roundtrip(m);
        }
        let BgpMessage::Update(u) = roundtrip(end_of_rib(true)) else {
            panic!()
        };
        assert_eq!(u.end_of_rib(), Some(AddressType::Ipv6Unicast));
        let BgpMessage::Update(u) = roundtrip(end_of_rib(false)) else {
            panic!()
        };
        assert_eq!(u.end_of_rib(), Some(AddressType::Ipv4Unicast));
    }
}
