//! The one packet builder of vip's tests and bench: Ethernet, 802.1Q, ARP, IPv4, IPv6 (with
//! extension headers), UDP, TCP, ICMP and ICMPv6 (with NDP's solicitations, advertisements and options), layer by layer, with the lengths and checksums filled in by [`Packet::build`].
//!
//! ```text
//! use testkit::packet::Packet;
//! let syn = Packet::eth([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
//!     .ipv4([192, 0, 2, 10], [192, 0, 2, 100])
//!     .dont_fragment()
//!     .tcp(40000, 80, 0x02)
//!     .seq(1)
//!     .build();
//! assert_eq!(syn.len(), 14 + 20 + 20);
//! ```
//!
//! Each layer is written when it is added, with the defaults below; the modifiers after it
//! (`ttl`, `seq`, `no_l4_checksum`…) change the most recent layer of their kind. What a layer
//! cannot know when it is added — the EtherType or IP protocol of what follows, the IPv4
//! total length, the UDP length, the IPv6 payload length, every checksum — is filled in by
//! `build`, innermost layer first, over the bytes up to the end of the last layer (not over
//! [`Packet::pad_to`]'s padding, which stands for the Ethernet trailer). A test that needs a
//! wrong value says so (`ip_total_len`, `no_ip_checksum`) or edits the built bytes.
//!
//! Defaults: IPv4 without options, id 0, no flags, TTL 64, header checksum computed; IPv6
//! hop limit 64 (255 after `ns`/`na`, as RFC 4861 requires); TCP data offset 5, seq 0, ack 0,
//! window 65535, urgent 0; UDP, TCP, ICMP and ICMPv6 checksums computed (over the IPv4 or
//! IPv6 pseudo-header; a UDP checksum of 0 is sent as 0xffff, RFC 768).
//!
//! ```text
//! let ns = Packet::eth([0x33, 0x33, 0xff, 0, 0, 0x64], CLIENT_MAC)
//!     .ipv6(CLIENT6, solicited_node(VIP6), 0)
//!     .ns(VIP6)
//!     .slla(CLIENT_MAC)
//!     .build();
//! ```

use std::net::Ipv4Addr;

/// A frame under construction. See the module documentation.
#[derive(Debug, Clone)]
#[must_use]
pub struct Packet {
    buf: Vec<u8>,
    layers: Vec<Layer>,
    /// Where the EtherType of the next layer goes (after the MACs or a VLAN tag), while it
    /// is still to be written.
    ethertype_at: Option<usize>,
    pad_to: usize,
}

#[derive(Debug, Clone, Copy)]
enum Layer {
    Ipv4 {
        at: usize,
        total_len: Option<u16>,
        checksum: bool,
        proto_set: bool,
    },
    Ipv6 {
        at: usize,
    },
    /// An IPv6 extension header: its first byte is the next header.
    Ext6 {
        at: usize,
    },
    Udp {
        at: usize,
        checksum: bool,
    },
    Tcp {
        at: usize,
        checksum: bool,
    },
    Icmp {
        at: usize,
        checksum: bool,
    },
    Icmp6 {
        at: usize,
        checksum: bool,
    },
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

/// NDP message types and option types (RFC 4861 4.3, 4.4, 4.6).
pub const ND_NS: u8 = 135;
pub const ND_NA: u8 = 136;
pub const ND_OPT_SLLA: u8 = 1;
pub const ND_OPT_TLLA: u8 = 2;
/// The first byte of an NA's flags.
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// The solicited-node multicast group of `addr` (ff02::1:ffXX:XXXX, RFC 4291 2.7.1).
pub fn solicited_node(addr: [u8; 16]) -> [u8; 16] {
    let mut g = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    g[13..].copy_from_slice(&addr[13..]);
    g
}

/// The Ethernet group an IPv6 multicast address maps to (33:33 and its last 32 bits).
pub fn multicast_mac(group: [u8; 16]) -> [u8; 6] {
    [0x33, 0x33, group[12], group[13], group[14], group[15]]
}

impl Packet {
    /// An Ethernet header from `src` to `dst`; its EtherType is the next layer's.
    pub fn eth(dst: [u8; 6], src: [u8; 6]) -> Packet {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&dst);
        buf.extend_from_slice(&src);
        buf.extend_from_slice(&[0, 0]);
        Packet {
            buf,
            layers: Vec::new(),
            ethertype_at: Some(12),
            pad_to: 0,
        }
    }

    /// An 802.1Q tag (priority 0) with VLAN `tci`; the EtherType after it is the next layer's.
    pub fn vlan(mut self, tci: u16) -> Packet {
        self.set_ethertype(ETH_P_8021Q);
        self.buf.extend_from_slice(&tci.to_be_bytes());
        self.ethertype_at = Some(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self
    }

    /// The EtherType, for a payload that is no layer of this builder.
    pub fn ethertype(mut self, t: u16) -> Packet {
        self.set_ethertype(t);
        self
    }

    /// ARP for IPv4 over Ethernet (RFC 826): operation `oper` (1 request, 2 reply), sender
    /// `sha`/`spa`, target `tha`/`tpa`.
    pub fn arp(
        mut self,
        oper: u16,
        sha: [u8; 6],
        spa: [u8; 4],
        tha: [u8; 6],
        tpa: [u8; 4],
    ) -> Packet {
        self.set_next_ethertype(ETH_P_ARP);
        self.buf.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
        self.buf.extend_from_slice(&oper.to_be_bytes());
        self.buf.extend_from_slice(&sha);
        self.buf.extend_from_slice(&spa);
        self.buf.extend_from_slice(&tha);
        self.buf.extend_from_slice(&tpa);
        self
    }

    /// An IPv4 header from `src` to `dst`. After an ICMP error it is the quoted header: give
    /// its protocol with [`Packet::proto`].
    pub fn ipv4(mut self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Packet {
        self.set_next_ethertype(ETH_P_IP);
        let at = self.buf.len();
        self.buf
            .extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0]);
        self.buf.extend_from_slice(&src.into().octets());
        self.buf.extend_from_slice(&dst.into().octets());
        self.layers.push(Layer::Ipv4 {
            at,
            total_len: None,
            checksum: true,
            proto_set: false,
        });
        self
    }

    /// The last IPv4 header's identification.
    pub fn ip_id(mut self, id: u16) -> Packet {
        let at = self.ipv4_at();
        self.buf[at + 4..at + 6].copy_from_slice(&id.to_be_bytes());
        self
    }

    /// The last IPv4 header's DF flag.
    pub fn dont_fragment(mut self) -> Packet {
        let at = self.ipv4_at();
        self.buf[at + 6] |= 0x40;
        self
    }

    /// The last IPv4 header's TTL.
    pub fn ttl(mut self, ttl: u8) -> Packet {
        let at = self.ipv4_at();
        self.buf[at + 8] = ttl;
        self
    }

    /// The last IPv4 header's protocol, when what follows is not a layer of this builder.
    pub fn proto(mut self, proto: u8) -> Packet {
        let at = self.ipv4_at();
        self.buf[at + 9] = proto;
        if let Some(Layer::Ipv4 { proto_set, .. }) = self.last_ipv4() {
            *proto_set = true;
        }
        self
    }

    /// The last IPv4 header's total length as given, not as measured (a quoted header, a
    /// lying one).
    pub fn ip_total_len(mut self, len: u16) -> Packet {
        if let Some(Layer::Ipv4 { total_len, .. }) = self.last_ipv4() {
            *total_len = Some(len);
        }
        self
    }

    /// The last IPv4 header's checksum left 0.
    pub fn no_ip_checksum(mut self) -> Packet {
        if let Some(Layer::Ipv4 { checksum, .. }) = self.last_ipv4() {
            *checksum = false;
        }
        self
    }

    /// An IPv6 header from `src` to `dst` with next header `next` (59: none).
    pub fn ipv6(mut self, src: [u8; 16], dst: [u8; 16], next: u8) -> Packet {
        self.set_next_ethertype(ETH_P_IPV6);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, next, 64]);
        self.buf.extend_from_slice(&src);
        self.buf.extend_from_slice(&dst);
        self.layers.push(Layer::Ipv6 { at });
        self
    }

    /// An 8-byte IPv6 extension header of type `typ` (0 hop-by-hop, 43 routing, 44 fragment,
    /// 60 destination options…) after the last IPv6 header or extension, which names it as
    /// its next header: its own next header (filled by the layer after it), length 0 (one
    /// unit), then `rest`.
    pub fn ext6(mut self, typ: u8, rest: [u8; 6]) -> Packet {
        self.set_proto(typ);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[59, 0]);
        self.buf.extend_from_slice(&rest);
        self.layers.push(Layer::Ext6 { at });
        self
    }

    /// A fragment header (RFC 8200 4.5): fragment `offset` in 8-byte units, the M flag
    /// `more`, identification `id`.
    pub fn fragment6(self, offset: u16, more: bool, id: u32) -> Packet {
        let om = (offset << 3) | more as u16;
        let o = om.to_be_bytes();
        let i = id.to_be_bytes();
        self.ext6(44, [o[0], o[1], i[0], i[1], i[2], i[3]])
    }

    /// The last IPv6 header's hop limit.
    pub fn hop_limit(mut self, h: u8) -> Packet {
        let at = self.ipv6_at();
        self.buf[at + 7] = h;
        self
    }

    /// An ICMPv6 header: `typ`, `code` and the four bytes after the checksum.
    pub fn icmpv6(mut self, typ: u8, code: u8, rest: [u8; 4]) -> Packet {
        self.set_proto(IPPROTO_ICMPV6);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[typ, code, 0, 0]);
        self.buf.extend_from_slice(&rest);
        self.layers.push(Layer::Icmp6 { at, checksum: true });
        self
    }

    /// A Neighbor Solicitation for `target` (RFC 4861 4.3); the enclosing IPv6 header's hop
    /// limit becomes 255. Options follow with [`Packet::slla`], [`Packet::nd_option`].
    pub fn ns(self, target: [u8; 16]) -> Packet {
        self.hop_limit(255)
            .icmpv6(ND_NS, 0, [0; 4])
            .payload(&target)
    }

    /// A Neighbor Advertisement for `target` with `flags` (`NA_SOLICITED | NA_OVERRIDE`…,
    /// RFC 4861 4.4); hop limit 255.
    pub fn na(self, flags: u8, target: [u8; 16]) -> Packet {
        self.hop_limit(255)
            .icmpv6(ND_NA, 0, [flags, 0, 0, 0])
            .payload(&target)
    }

    /// An NDP option: `typ`, its length in 8-byte units, `data`, zeros to the unit.
    pub fn nd_option(mut self, typ: u8, data: &[u8]) -> Packet {
        let units = (2 + data.len()).div_ceil(8);
        self.buf.extend_from_slice(&[typ, units as u8]);
        self.buf.extend_from_slice(data);
        self.buf
            .resize(self.buf.len() + units * 8 - 2 - data.len(), 0);
        self
    }

    /// The source link-layer address option.
    pub fn slla(self, mac: [u8; 6]) -> Packet {
        self.nd_option(ND_OPT_SLLA, &mac)
    }

    /// The target link-layer address option.
    pub fn tlla(self, mac: [u8; 6]) -> Packet {
        self.nd_option(ND_OPT_TLLA, &mac)
    }

    /// A UDP header from `sport` to `dport`.
    pub fn udp(mut self, sport: u16, dport: u16) -> Packet {
        self.set_proto(IPPROTO_UDP);
        let at = self.buf.len();
        self.buf.extend_from_slice(&sport.to_be_bytes());
        self.buf.extend_from_slice(&dport.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        self.layers.push(Layer::Udp { at, checksum: true });
        self
    }

    /// A TCP header from `sport` to `dport` with `flags` (0x02 SYN, 0x10 ACK, …).
    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Packet {
        self.set_proto(IPPROTO_TCP);
        let at = self.buf.len();
        self.buf.extend_from_slice(&sport.to_be_bytes());
        self.buf.extend_from_slice(&dport.to_be_bytes());
        self.buf
            .extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        self.layers.push(Layer::Tcp { at, checksum: true });
        self
    }

    /// The last TCP header's sequence number.
    pub fn seq(mut self, seq: u32) -> Packet {
        let at = self.tcp_at();
        self.buf[at + 4..at + 8].copy_from_slice(&seq.to_be_bytes());
        self
    }

    /// The last TCP header's acknowledgement number.
    pub fn ack(mut self, ack: u32) -> Packet {
        let at = self.tcp_at();
        self.buf[at + 8..at + 12].copy_from_slice(&ack.to_be_bytes());
        self
    }

    /// The last TCP header's window.
    pub fn window(mut self, window: u16) -> Packet {
        let at = self.tcp_at();
        self.buf[at + 14..at + 16].copy_from_slice(&window.to_be_bytes());
        self
    }

    /// An ICMP header: `typ`, `code` and the four bytes after the checksum (`rest`: the
    /// next-hop MTU of a "fragmentation needed", an echo's id and sequence). What an error
    /// quotes follows as layers: `.ipv4(…).proto(…).payload(…)`.
    pub fn icmp(mut self, typ: u8, code: u8, rest: [u8; 4]) -> Packet {
        self.set_proto(IPPROTO_ICMP);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[typ, code, 0, 0]);
        self.buf.extend_from_slice(&rest);
        self.layers.push(Layer::Icmp { at, checksum: true });
        self
    }

    /// The last UDP, TCP, ICMP or ICMPv6 header's checksum left 0 (for UDP: no checksum).
    pub fn no_l4_checksum(mut self) -> Packet {
        match self.layers.iter_mut().rev().find_map(|l| match l {
            Layer::Udp { checksum, .. }
            | Layer::Tcp { checksum, .. }
            | Layer::Icmp { checksum, .. }
            | Layer::Icmp6 { checksum, .. } => Some(checksum),
            _ => None,
        }) {
            Some(c) => *c = false,
            None => panic!("no_l4_checksum: no UDP, TCP or ICMP header yet"),
        }
        self
    }

    /// Bytes after the last header, counted in every length.
    pub fn payload(mut self, data: &[u8]) -> Packet {
        self.buf.extend_from_slice(data);
        self
    }

    /// Zeros after the frame up to `len` bytes (the Ethernet trailer of a short frame):
    /// counted in no length or checksum.
    pub fn pad_to(mut self, len: usize) -> Packet {
        self.pad_to = len;
        self
    }

    /// The frame's bytes, lengths and checksums filled in.
    pub fn build(self) -> Vec<u8> {
        let Packet {
            mut buf,
            layers,
            pad_to,
            ..
        } = self;
        let end = buf.len();
        for (i, layer) in layers.iter().enumerate().rev() {
            match *layer {
                Layer::Ipv4 {
                    at,
                    total_len,
                    checksum: c,
                    ..
                } => {
                    let len = total_len.unwrap_or((end - at) as u16);
                    buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
                    if c {
                        let sum = checksum(&buf[at..at + 20]);
                        buf[at + 10..at + 12].copy_from_slice(&sum.to_be_bytes());
                    }
                }
                Layer::Ipv6 { at } => {
                    let len = (end - at - 40) as u16;
                    buf[at + 4..at + 6].copy_from_slice(&len.to_be_bytes());
                }
                Layer::Ext6 { .. } => {}
                Layer::Udp { at, checksum: c } => {
                    let len = (end - at) as u16;
                    buf[at + 4..at + 6].copy_from_slice(&len.to_be_bytes());
                    if c {
                        let sum = match l4_checksum(&buf, &layers[..i], at, end, IPPROTO_UDP) {
                            0 => 0xffff,
                            s => s,
                        };
                        buf[at + 6..at + 8].copy_from_slice(&sum.to_be_bytes());
                    }
                }
                Layer::Tcp { at, checksum: c } => {
                    if c {
                        let sum = l4_checksum(&buf, &layers[..i], at, end, IPPROTO_TCP);
                        buf[at + 16..at + 18].copy_from_slice(&sum.to_be_bytes());
                    }
                }
                Layer::Icmp { at, checksum: c } => {
                    if c {
                        let sum = checksum(&buf[at..end]);
                        buf[at + 2..at + 4].copy_from_slice(&sum.to_be_bytes());
                    }
                }
                Layer::Icmp6 { at, checksum: c } => {
                    if c {
                        let sum = l4_checksum(&buf, &layers[..i], at, end, IPPROTO_ICMPV6);
                        buf[at + 2..at + 4].copy_from_slice(&sum.to_be_bytes());
                    }
                }
            }
        }
        if buf.len() < pad_to {
            buf.resize(pad_to, 0);
        }
        buf
    }

    fn set_ethertype(&mut self, t: u16) {
        let at = self
            .ethertype_at
            .take()
            .expect("an EtherType goes right after the Ethernet header or a VLAN tag");
        self.buf[at..at + 2].copy_from_slice(&t.to_be_bytes());
    }

    /// The EtherType of a layer right after Ethernet or a VLAN tag; deeper (the header an
    /// ICMP error quotes) there is none to set.
    fn set_next_ethertype(&mut self, t: u16) {
        if self.ethertype_at.is_some() {
            self.set_ethertype(t);
        }
    }

    /// The enclosing IP header's protocol, unless given already.
    fn set_proto(&mut self, proto: u8) {
        let buf = &mut self.buf;
        match self.layers.last_mut() {
            Some(Layer::Ipv4 { at, proto_set, .. }) if !*proto_set => {
                buf[*at + 9] = proto;
                *proto_set = true;
            }
            Some(Layer::Ipv6 { at }) => buf[*at + 6] = proto,
            Some(Layer::Ext6 { at }) => buf[*at] = proto,
            _ => {}
        }
    }

    fn last_ipv4(&mut self) -> Option<&mut Layer> {
        let l = self
            .layers
            .iter_mut()
            .rev()
            .find(|l| matches!(l, Layer::Ipv4 { .. }));
        assert!(l.is_some(), "no IPv4 header yet");
        l
    }

    fn ipv4_at(&mut self) -> usize {
        match self.last_ipv4() {
            Some(Layer::Ipv4 { at, .. }) => *at,
            _ => unreachable!(),
        }
    }

    fn ipv6_at(&self) -> usize {
        self.layers
            .iter()
            .rev()
            .find_map(|l| match l {
                Layer::Ipv6 { at } => Some(*at),
                _ => None,
            })
            .expect("no IPv6 header yet")
    }

    fn tcp_at(&self) -> usize {
        self.layers
            .iter()
            .rev()
            .find_map(|l| match l {
                Layer::Tcp { at, .. } => Some(*at),
                _ => None,
            })
            .expect("no TCP header yet")
    }
}

/// The UDP, TCP or ICMPv6 checksum of the segment `at..end` under the nearest IP header in
/// `outer` (pseudo header: addresses, protocol, segment length; RFC 768 for IPv4, RFC 8200
/// 8.1 for IPv6).
fn l4_checksum(buf: &[u8], outer: &[Layer], at: usize, end: usize, proto: u8) -> u16 {
    let len = end - at;
    let mut pseudo = Vec::with_capacity(40);
    match outer.iter().rev().find_map(|l| match l {
        Layer::Ipv4 { at, .. } => Some((*at, 4)),
        Layer::Ipv6 { at } => Some((*at, 6)),
        _ => None,
    }) {
        Some((ip, 4)) => {
            pseudo.extend_from_slice(&buf[ip + 12..ip + 20]);
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        }
        Some((ip, _)) => {
            pseudo.extend_from_slice(&buf[ip + 8..ip + 40]);
            pseudo.extend_from_slice(&(len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
        }
        None => panic!("a UDP, TCP or ICMPv6 checksum needs an IP header (or no_l4_checksum)"),
    }
    fold(ones_sum(&buf[at..end], ones_sum(&pseudo, 0)))
}

/// The Internet checksum (RFC 1071) of `data`; an odd last byte is padded with zero. Over a
/// header that carries its checksum, 0 means the checksum is right.
pub fn checksum(data: &[u8]) -> u16 {
    fold(ones_sum(data, 0))
}

/// Whether the upper-layer checksum (TCP, UDP or ICMPv6) of the untagged IPv6 frame `f`
/// (no extension headers, nothing after the payload) is right, summed from scratch over the
/// pseudo-header (RFC 8200 8.1) and the payload: a second reading of what a program wrote.
pub fn l4_checksum_ok6(f: &[u8]) -> bool {
    if f.len() < 54 {
        return false;
    }
    let plen = u16::from_be_bytes([f[18], f[19]]) as usize;
    let Some(payload) = f.get(54..54 + plen) else {
        return false;
    };
    let mut v = Vec::with_capacity(40 + plen);
    v.extend_from_slice(&f[22..54]);
    v.extend_from_slice(&(plen as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, f[20]]);
    v.extend_from_slice(payload);
    checksum(&v) == 0
}

fn ones_sum(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    acc
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    const B: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

    /// The TCP checksum over the IPv6 pseudo-header, summed here by hand.
    fn tcp6_sum_ok(f: &[u8], l4: usize) -> bool {
        let mut v = Vec::new();
        v.extend_from_slice(&f[22..54]);
        v.extend_from_slice(&((f.len() - l4) as u32).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 6]);
        v.extend_from_slice(&f[l4..]);
        checksum(&v) == 0
    }

    #[test]
    fn ipv6_tcp_lengths_and_checksum() {
        let f = Packet::eth([2; 6], [4; 6])
            .ipv6(A, B, 0)
            .tcp(40000, 80, 0x02)
            .payload(b"data")
            .build();
        assert_eq!(f.len(), 14 + 40 + 20 + 4);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 24, "payload length");
        assert_eq!(f[20], 6, "next header");
        assert!(tcp6_sum_ok(&f, 54));
    }

    #[test]
    fn fragment_header_sits_between_ipv6_and_tcp() {
        let f = Packet::eth([2; 6], [4; 6])
            .ipv6(A, B, 0)
            .fragment6(3, true, 0x0102_0304)
            .tcp(40000, 80, 0x10)
            .build();
        assert_eq!(f[20], 44, "IPv6 next header: fragment");
        assert_eq!(&f[54..62], &[6, 0, 0, 3 << 3 | 1, 1, 2, 3, 4]);
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 8 + 20);
        assert!(tcp6_sum_ok(&f, 62), "checksum over the TCP segment only");
    }

    #[test]
    fn l4_checksum_ok6_reads_tcp_udp_icmpv6_and_a_trailer() {
        let tcp = Packet::eth([2; 6], [4; 6])
            .ipv6(A, B, 0)
            .tcp(40000, 80, 0x02)
            .build();
        let ns = Packet::eth([2; 6], [4; 6])
            .ipv6(A, solicited_node(B), 0)
            .ns(B)
            .slla([4; 6])
            .pad_to(100)
            .build();
        let udp = Packet::eth([2; 6], [4; 6]).ipv6(A, B, 0).udp(1, 2).build();
        for f in [&tcp, &ns, &udp] {
            assert!(l4_checksum_ok6(f));
            let mut bad = f.clone();
            bad[54] ^= 1;
            assert!(!l4_checksum_ok6(&bad));
        }
        assert!(!l4_checksum_ok6(&tcp[..60]), "truncated");
    }
}
