//! A reference model of the XDP program: given the same map contents and the same FIB, it
//! takes the same decision and produces the same bytes for any frame. The fuzz test runs
//! frames through the kernel (BPF_PROG_TEST_RUN) and through this model and requires exact
//! agreement, so every branch of the program has a second, independent reading here.
use std::collections::HashMap;

use vip_common::{
    csum_replace2, csum_replace4, ct6_set_index, ct_set_index, flow6_hash, flow_hash,
    Backend6Value, BackendValue, Config, Ct6Entry, Ct6Set, CtEntry, CtSet, Flow6Key, FlowKey,
    IfaceValue, Rev6Value, RevValue, Service6Key, ServiceKey, ServiceValue, VipValue,
    BACKEND_F_ACTIVE, MODE_DSR, MODE_LOCAL, MODE_NAT, PROTO_TCP, PROTO_UDP, RING_EMPTY,
    VIP_F_OWNED,
};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// What the kernel's FIB answers for a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fib {
    Success {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// Route found, no neighbour entry.
    NoNeigh,
    /// No route, forwarding disabled, or the packet is larger than the route's MTU.
    Fail,
}

/// The FIB as the model sees it: per destination, plus the MTU the kernel checks first.
#[derive(Debug, Clone, Default)]
pub struct FibTable {
    pub routes: HashMap<[u8; 4], Fib>,
    /// IPv6 next hops, under the same MTU (checked against header plus payload).
    pub routes6: HashMap<[u8; 16], Fib>,
    pub mtu: u16,
}

impl FibTable {
    fn lookup(&self, dst: [u8; 4], tot_len: u16) -> Fib {
        Self::answer(self.routes.get(&dst), tot_len, self.mtu)
    }

    fn lookup6(&self, dst: [u8; 16], tot_len: u16) -> Fib {
        Self::answer(self.routes6.get(&dst), tot_len, self.mtu)
    }

    fn answer(route: Option<&Fib>, tot_len: u16, mtu: u16) -> Fib {
        match route {
            None | Some(Fib::Fail) => Fib::Fail,
            // The kernel checks the MTU once the route is known, before the neighbour.
            Some(_) if tot_len > mtu => Fib::Fail,
            Some(f) => *f,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub vips: HashMap<[u8; 4], VipValue>,
    /// `VIPS6`.
    pub vips6: HashMap<[u8; 16], VipValue>,
    pub ifaces: HashMap<u32, IfaceValue>,
    pub config: Config,
    /// `DEADMAN` (0: off).
    pub deadline_ns: u64,
    pub services: HashMap<ServiceKey, ServiceValue>,
    /// Slot -> value for every slot the model may read; unknown slots read as 0 (array maps
    /// start zeroed). `rings_len` is the map's size: reads beyond it fail.
    pub rings: HashMap<u32, u32>,
    pub rings_len: u32,
    pub backends: Vec<BackendValue>,
    /// Conntrack sets by index (one CPU's table: the fuzz test pins its thread).
    pub conntrack: HashMap<u32, CtSet>,
    /// Sets of that table (the `CONNTRACK` map's entries); 0: the object's `CT_SETS`.
    pub ct_sets: u32,
    pub revnat: HashMap<FlowKey, RevValue>,
    pub fib: FibTable,
    /// The VIP prefilter bitmap (`VIP_FILTER`).
    pub vip_filter: Vec<u64>,
    /// `SERVICES6`, `BACKENDS6` (by id), `CT6` (one CPU's sets; `ct6_sets` 0: the object's
    /// `CT6_SETS`) and `REVNAT6`.
    pub services6: HashMap<Service6Key, ServiceValue>,
    pub backends6: HashMap<u32, Backend6Value>,
    pub conntrack6: HashMap<u32, Ct6Set>,
    pub ct6_sets: u32,
    pub revnat6: HashMap<Flow6Key, Rev6Value>,
}

fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

fn a4(f: &[u8], off: usize) -> [u8; 4] {
    [f[off], f[off + 1], f[off + 2], f[off + 3]]
}

fn a16(f: &[u8], off: usize) -> [u8; 16] {
    f[off..off + 16].try_into().unwrap_or_default()
}

/// IPv6 DNAT of the packet at `l3` (L4 at `l3 + 40`): destination address and port, the
/// TCP/UDP checksum updated a 16-bit word at a time (RFC 1624, `csum_replace2` per word, not
/// the program's one-sum form). false, frame untouched: a UDP checksum of 0, which IPv6
/// forbids.
fn dnat6(f: &mut [u8], l3: usize, proto: u8, addr: [u8; 16], port: [u8; 2]) -> bool {
    let l4 = l3 + 40;
    let csum_off = if proto == PROTO_TCP { l4 + 16 } else { l4 + 6 };
    let old = be16(f, csum_off);
    if proto != PROTO_TCP && old == 0 {
        return false;
    }
    let mut c = old;
    for i in (0..16).step_by(2) {
        c = csum_replace2(
            c,
            be16(f, l3 + 24 + i),
            u16::from_be_bytes([addr[i], addr[i + 1]]),
        );
    }
    c = csum_replace2(c, be16(f, l4 + 2), u16::from_be_bytes(port));
    if proto != PROTO_TCP && c == 0 {
        c = 0xffff;
    }
    f[l3 + 24..l3 + 40].copy_from_slice(&addr);
    f[l4 + 2..l4 + 4].copy_from_slice(&port);
    f[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

impl Model {
    /// Run one frame arriving on `ingress`; the frame is rewritten in place (and resized, as
    /// `bpf_xdp_adjust_tail` does, for a Neighbor Advertisement).
    pub fn run(&mut self, f: &mut Vec<u8>, ingress: u32) -> u32 {
        if f.len() < 14 {
            return XDP_PASS;
        }
        let mut et = be16(f, 12);
        let mut l3 = 14;
        if et == 0x8100 || et == 0x88a8 {
            if f.len() < 18 {
                return XDP_PASS;
            }
            et = be16(f, 16);
            l3 = 18;
        }
        match et {
            0x0806 => self.arp(f, l3, ingress),
            0x0800 => self.ipv4(f, l3, ingress),
            0x86dd => self.ipv6(f, l3, ingress),
            _ => XDP_PASS,
        }
    }

    fn arp(&mut self, f: &mut [u8], l3: usize, ingress: u32) -> u32 {
        if f.len() < l3 + 28 {
            return XDP_PASS;
        }
        if be16(f, l3) != 1 || be16(f, l3 + 2) != 0x0800 || f[l3 + 4] != 6 || f[l3 + 5] != 4 {
            return XDP_PASS;
        }
        let sha: [u8; 6] = f[l3 + 8..l3 + 14].try_into().unwrap_or_default();
        let spa = a4(f, l3 + 14);
        let tpa = a4(f, l3 + 24);
        if be16(f, l3 + 6) != 1 || spa == tpa {
            return XDP_PASS;
        }
        let iface = match self.answerable(self.vips.get(&tpa), ingress) {
            Ok(i) => i,
            Err(v) => return v,
        };
        let src: [u8; 6] = f[6..12].try_into().unwrap_or_default();
        f[0..6].copy_from_slice(&src);
        f[6..12].copy_from_slice(&iface.mac);
        f[l3 + 6..l3 + 8].copy_from_slice(&2u16.to_be_bytes());
        f[l3 + 8..l3 + 14].copy_from_slice(&iface.mac);
        f[l3 + 14..l3 + 18].copy_from_slice(&tpa);
        f[l3 + 18..l3 + 24].copy_from_slice(&sha);
        f[l3 + 24..l3 + 28].copy_from_slice(&spa);
        XDP_TX
    }

    /// Whether this node answers for `v` on `ingress` now (`Ok`), or the verdict (`Err`):
    /// the gates ARP and NDP share.
    fn answerable(&self, v: Option<&VipValue>, ingress: u32) -> Result<IfaceValue, u32> {
        let Some(vip) = v else {
            return Err(XDP_PASS);
        };
        let owned = vip.flags & VIP_F_OWNED != 0 && (vip.ifindex == 0 || vip.ifindex == ingress);
        if !owned {
            return Err(XDP_DROP);
        }
        let d = self.deadline_ns;
        if d != 0 && vip_userspace::dataplane::maps::monotonic_ns() > d {
            return Err(XDP_DROP);
        }
        self.ifaces.get(&ingress).copied().ok_or(XDP_PASS)
    }

    /// NDP (RFC 4861): see `ndp::check` for what a valid message is. A valid NS for an owned
    /// VIP becomes the NA; an NA passes (a conflict is only counted).
    fn ndp(&mut self, f: &mut Vec<u8>, l3: usize, ingress: u32) -> u32 {
        let Some(m) = ndp::check(f, l3) else {
            return XDP_PASS;
        };
        if m.typ != ndp::NS {
            return XDP_PASS;
        }
        let iface = match self.answerable(self.vips6.get(&m.target), ingress) {
            Ok(i) => i,
            Err(v) => return v,
        };
        let dad = m.src == [0; 16];
        let (eth_dst, ip_dst, flags) = if dad {
            ([0x33, 0x33, 0, 0, 0, 1], ndp::ALL_NODES, 0x20)
        } else {
            (m.mac, m.src, 0x60)
        };
        let mut out = Vec::with_capacity(l3 + 72);
        out.extend_from_slice(&eth_dst);
        out.extend_from_slice(&iface.mac);
        out.extend_from_slice(&f[12..l3]);
        out.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
        out.extend_from_slice(&m.target);
        out.extend_from_slice(&ip_dst);
        out.extend_from_slice(&[136, 0, 0, 0, flags, 0, 0, 0]);
        out.extend_from_slice(&m.target);
        out.extend_from_slice(&[2, 1]);
        out.extend_from_slice(&iface.mac);
        let c = ndp::checksum(&out[l3..]);
        out[l3 + 42..l3 + 44].copy_from_slice(&c.to_be_bytes());
        *f = out;
        XDP_TX
    }

    /// IPv6: NS and NA to the NDP responder, whatever their address; then the prefilter,
    /// Packet Too Big, and TCP/UDP right after the fixed header to a service. Every other
    /// next header (extension headers, fragments) passes.
    fn ipv6(&mut self, f: &mut Vec<u8>, l3: usize, ingress: u32) -> u32 {
        if f.len() < l3 + 40 || f[l3] >> 4 != 6 {
            return XDP_PASS;
        }
        let next = f[l3 + 6];
        if next == 58 {
            match f.get(l3 + 40) {
                None => return XDP_PASS,
                Some(&t) if t == ndp::NS || t == ndp::NA => return self.ndp(f, l3, ingress),
                Some(_) => {}
            }
        }
        let src = a16(f, l3 + 8);
        let dst = a16(f, l3 + 24);
        let (w, mask) = vip_common::vip6_filter_slot(dst);
        if self.vip_filter.get(w as usize).copied().unwrap_or(0) & mask == 0 {
            return XDP_PASS;
        }
        let tot_len = be16(f, l3 + 4).saturating_add(40);
        if next == 58 {
            return self.packet_too_big(f, l3, tot_len, ingress);
        }
        if next != PROTO_TCP && next != PROTO_UDP {
            return XDP_PASS;
        }
        let l4 = l3 + 40;
        let need = if next == PROTO_TCP { 20 } else { 8 };
        if f.len() < l4 + need {
            return XDP_PASS;
        }
        let syn = next == PROTO_TCP && f[l4 + 13] & 0x12 == 0x02;
        let flow = Flow6Key {
            src_be: src,
            dst_be: dst,
            sport_be: [f[l4], f[l4 + 1]],
            dport_be: [f[l4 + 2], f[l4 + 3]],
            proto: next,
            _pad: [0; 3],
        };
        let plain = l3 == 14;
        if plain && !syn {
            if let Some(b) = self.conntracked6(&flow) {
                return self.forward6(f, &flow, &b, tot_len, ingress, false);
            }
        }
        let key = Service6Key {
            addr_be: dst,
            port_be: flow.dport_be,
            proto: next,
            _pad: 0,
        };
        let Some(svc) = self.services6.get(&key).copied() else {
            return XDP_PASS;
        };
        if svc.mode == MODE_LOCAL || !plain {
            return XDP_PASS;
        }
        let Some((id, b)) = self.maglev6(&flow, &svc) else {
            return XDP_DROP;
        };
        self.record6(&flow, id, b.gen);
        self.forward6(f, &flow, &b, tot_len, ingress, true)
    }

    fn forward6(
        &mut self,
        f: &mut [u8],
        flow: &Flow6Key,
        b: &Backend6Value,
        tot_len: u16,
        ingress: u32,
        new_flow: bool,
    ) -> u32 {
        match b.mode {
            MODE_DSR => self.send6(f, b.addr_be, tot_len, ingress, false),
            MODE_NAT => {
                if !dnat6(f, 14, flow.proto, b.addr_be, b.port_be) {
                    return XDP_PASS;
                }
                if new_flow {
                    let rev = Flow6Key {
                        src_be: b.addr_be,
                        dst_be: flow.src_be,
                        sport_be: b.port_be,
                        dport_be: flow.sport_be,
                        proto: flow.proto,
                        _pad: [0; 3],
                    };
                    self.revnat6.insert(
                        rev,
                        Rev6Value {
                            vip_be: flow.dst_be,
                            vport_be: flow.dport_be,
                            _pad: [0; 2],
                        },
                    );
                }
                self.send6(f, b.addr_be, tot_len, ingress, true)
            }
            _ => XDP_PASS,
        }
    }

    /// ICMPv6 Packet Too Big quoting a dsr service's reply goes to that flow's backend.
    fn packet_too_big(&mut self, f: &mut [u8], l3: usize, tot_len: u16, ingress: u32) -> u32 {
        if l3 != 14 || f.len() < 54 + 56 {
            return XDP_PASS;
        }
        let b = &f[54..54 + 56];
        let proto = b[8 + 6];
        if b[0] != 2 || b[8] >> 4 != 6 || (proto != PROTO_TCP && proto != PROTO_UDP) {
            return XDP_PASS;
        }
        let key = Service6Key {
            addr_be: a16(b, 8 + 8),
            port_be: [b[48], b[49]],
            proto,
            _pad: 0,
        };
        let flow = Flow6Key {
            src_be: a16(b, 8 + 24),
            dst_be: key.addr_be,
            sport_be: [b[50], b[51]],
            dport_be: key.port_be,
            proto,
            _pad: [0; 3],
        };
        let Some(svc) = self.services6.get(&key).copied() else {
            return XDP_PASS;
        };
        if svc.mode != MODE_DSR {
            return XDP_PASS;
        }
        let Some(backend) = self
            .conntracked6(&flow)
            .or_else(|| self.maglev6(&flow, &svc).map(|(_, b)| b))
        else {
            return XDP_PASS;
        };
        self.send6(f, backend.addr_be, tot_len, ingress, false)
    }

    fn ct6_mask(&self) -> u32 {
        match self.ct6_sets {
            0 => vip_common::CT6_SETS - 1,
            n => n - 1,
        }
    }

    fn conntracked6(&mut self, flow: &Flow6Key) -> Option<Backend6Value> {
        let idx = ct6_set_index(flow, self.ct6_mask());
        let set = self.conntrack6.get(&idx).copied().unwrap_or_default();
        let way = (0..2).find(|&w| set.ways[w].gen != 0 && set.ways[w].key == *flow)?;
        let e = set.ways[way];
        let b = self.backends6.get(&e.backend).copied().unwrap_or_default();
        if b.flags & BACKEND_F_ACTIVE == 0 || b.gen != e.gen {
            return None;
        }
        self.conntrack6.entry(idx).or_default().mru = way as u32;
        Some(b)
    }

    fn record6(&mut self, flow: &Flow6Key, id: u32, gen: u32) {
        let idx = ct6_set_index(flow, self.ct6_mask());
        let set = self.conntrack6.entry(idx).or_default();
        let way = (0..2)
            .find(|&w| set.ways[w].gen != 0 && set.ways[w].key == *flow)
            .unwrap_or((1 - set.mru.min(1)) as usize);
        set.ways[way] = Ct6Entry {
            key: *flow,
            backend: id,
            gen,
        };
        set.mru = way as u32;
    }

    fn maglev6(&self, flow: &Flow6Key, svc: &ServiceValue) -> Option<(u32, Backend6Value)> {
        if svc.ring_size == 0 {
            return None;
        }
        let h = flow6_hash(
            flow.src_be,
            flow.sport_be,
            flow.dport_be,
            flow.proto,
            self.config.hash_seed,
        );
        let idx = svc.ring_slot(h)?;
        if idx >= self.rings_len {
            return None;
        }
        let id = self.rings.get(&idx).copied().unwrap_or(0);
        if id == RING_EMPTY {
            return None;
        }
        let b = self.backends6.get(&id).copied().unwrap_or_default();
        (b.flags & BACKEND_F_ACTIVE != 0 && b.svc == svc.id).then_some((id, b))
    }

    fn send6(
        &self,
        f: &mut [u8],
        next: [u8; 16],
        tot_len: u16,
        ingress: u32,
        pass_no_neigh: bool,
    ) -> u32 {
        let fib = self.fib.lookup6(next, tot_len);
        Self::deliver(f, fib, ingress, pass_no_neigh)
    }

    fn ipv4(&mut self, f: &mut [u8], l3: usize, ingress: u32) -> u32 {
        if f.len() < l3 + 20 || f[l3] >> 4 != 4 || f[l3] & 0x0f < 5 {
            return XDP_PASS;
        }
        let (w, mask) = vip_common::vip_filter_slot(a4(f, l3 + 16));
        if self.vip_filter.get(w as usize).copied().unwrap_or(0) & mask == 0 {
            return XDP_PASS;
        }
        let proto = f[l3 + 9];
        let ihl = (f[l3] & 0x0f) as usize * 4;
        let fragment = be16(f, l3 + 6) & 0x3fff != 0;
        let tot_len = be16(f, l3 + 2);
        let src = a4(f, l3 + 12);
        let dst = a4(f, l3 + 16);
        if proto == 1 && !fragment {
            return self.icmp(f, l3, ihl, tot_len, ingress);
        }
        if proto != PROTO_TCP && proto != PROTO_UDP || fragment {
            return XDP_PASS;
        }
        let l4 = l3 + ihl;
        let need = if proto == PROTO_TCP { 20 } else { 8 };
        if f.len() < l4 + need {
            return XDP_PASS;
        }
        let syn = proto == PROTO_TCP && f[l4 + 13] & 0x12 == 0x02;
        let flow = FlowKey {
            src_be: src,
            dst_be: dst,
            sport_be: [f[l4], f[l4 + 1]],
            dport_be: [f[l4 + 2], f[l4 + 3]],
            proto,
            _pad: [0; 3],
        };
        let plain = ihl == 20 && l3 == 14;
        if plain && !syn {
            if let Some(b) = self.conntracked(&flow) {
                return self.forward(f, &flow, &b, tot_len, ingress, false);
            }
        }
        let key = ServiceKey {
            addr_be: dst,
            port_be: flow.dport_be,
            proto,
            _pad: 0,
        };
        let Some(svc) = self.services.get(&key).copied() else {
            return XDP_PASS;
        };
        if svc.mode == MODE_LOCAL || !plain {
            return XDP_PASS;
        }
        let Some((id, b)) = self.maglev_id(&flow, &svc) else {
            return XDP_DROP;
        };
        self.record(&flow, id, b.gen);
        self.forward(f, &flow, &b, tot_len, ingress, true)
    }

    /// Forward a placed flow's packet (plain frames only: untagged, no IP options).
    fn forward(
        &mut self,
        f: &mut [u8],
        flow: &FlowKey,
        b: &BackendValue,
        tot_len: u16,
        ingress: u32,
        new_flow: bool,
    ) -> u32 {
        match b.mode {
            MODE_DSR => self.send(f, b.addr_be, tot_len, ingress, false),
            MODE_NAT => {
                self.dnat(f, 14, flow.proto, b.addr_be, b.port_be);
                let rev = FlowKey {
                    src_be: b.addr_be,
                    dst_be: flow.src_be,
                    sport_be: b.port_be,
                    dport_be: flow.sport_be,
                    proto: flow.proto,
                    _pad: [0; 3],
                };
                if new_flow {
                    self.revnat.insert(
                        rev,
                        RevValue {
                            vip_be: flow.dst_be,
                            vport_be: flow.dport_be,
                            _pad: [0; 2],
                        },
                    );
                }
                self.send(f, b.addr_be, tot_len, ingress, true)
            }
            _ => XDP_PASS,
        }
    }

    /// ICMP errors quoting a dsr service's reply go to that flow's backend.
    fn icmp(&mut self, f: &mut [u8], l3: usize, ihl: usize, tot_len: u16, ingress: u32) -> u32 {
        if ihl != 20 || l3 != 14 || f.len() < 34 + 36 {
            return XDP_PASS;
        }
        let b = &f[34..34 + 36];
        if ![3u8, 11, 12].contains(&b[0]) {
            return XDP_PASS;
        }
        let proto = b[8 + 9];
        if b[8] != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
            return XDP_PASS;
        }
        let qsrc = a4(b, 8 + 12);
        let qdst = a4(b, 8 + 16);
        let qsport = [b[28], b[29]];
        let qdport = [b[30], b[31]];
        let key = ServiceKey {
            addr_be: qsrc,
            port_be: qsport,
            proto,
            _pad: 0,
        };
        let Some(svc) = self.services.get(&key).copied() else {
            return XDP_PASS;
        };
        if svc.mode != MODE_DSR {
            return XDP_PASS;
        }
        let flow = FlowKey {
            src_be: qdst,
            dst_be: qsrc,
            sport_be: qdport,
            dport_be: qsport,
            proto,
            _pad: [0; 3],
        };
        let Some(backend) = self.conntracked(&flow).or_else(|| self.maglev(&flow, &svc)) else {
            return XDP_PASS;
        };
        self.send(f, backend.addr_be, tot_len, ingress, false)
    }

    /// The program's `CT_SET_MASK`.
    fn ct_mask(&self) -> u32 {
        match self.ct_sets {
            0 => vip_common::CT_SETS - 1,
            n => n - 1,
        }
    }

    fn conntracked(&mut self, flow: &FlowKey) -> Option<BackendValue> {
        let idx = ct_set_index(flow, self.ct_mask());
        let set = self.conntrack.get(&idx).copied().unwrap_or_default();
        let way = (0..2).find(|&w| set.ways[w].gen != 0 && set.ways[w].key.same(flow))?;
        let e = set.ways[way];
        let b = self.backend(e.backend)?;
        if b.flags & BACKEND_F_ACTIVE == 0 || b.gen != e.gen {
            return None;
        }
        self.conntrack.entry(idx).or_default().mru = way as u32;
        Some(b)
    }

    fn record(&mut self, flow: &FlowKey, id: u32, gen: u32) {
        let idx = ct_set_index(flow, self.ct_mask());
        let set = self.conntrack.entry(idx).or_default();
        let way = (0..2)
            .find(|&w| set.ways[w].gen != 0 && set.ways[w].key.same(flow))
            .unwrap_or((1 - set.mru.min(1)) as usize);
        set.ways[way] = CtEntry {
            key: *flow,
            backend: id,
            gen,
        };
        set.mru = way as u32;
    }

    fn maglev(&self, flow: &FlowKey, svc: &ServiceValue) -> Option<BackendValue> {
        self.maglev_id(flow, svc).map(|(_, b)| b)
    }

    fn maglev_id(&self, flow: &FlowKey, svc: &ServiceValue) -> Option<(u32, BackendValue)> {
        if svc.ring_size == 0 {
            return None;
        }
        let h = flow_hash(
            flow.src_be,
            flow.sport_be,
            flow.dport_be,
            flow.proto,
            self.config.hash_seed,
        );
        let idx = svc.ring_slot(h)?;
        if idx >= self.rings_len {
            return None;
        }
        let id = self.rings.get(&idx).copied().unwrap_or(0);
        if id == RING_EMPTY {
            return None;
        }
        let b = self.backend(id)?;
        (b.flags & BACKEND_F_ACTIVE != 0 && b.svc == svc.id).then_some((id, b))
    }

    fn backend(&self, id: u32) -> Option<BackendValue> {
        self.backends.get(id as usize).copied()
    }

    fn dnat(&self, f: &mut [u8], l3: usize, proto: u8, addr: [u8; 4], port: [u8; 2]) {
        let l4 = l3 + 20;
        let csum_off = if proto == PROTO_TCP { l4 + 16 } else { l4 + 6 };
        let old_addr = a4(f, l3 + 16);
        let ipc = csum_replace4(be16(f, l3 + 10), old_addr, addr);
        f[l3 + 10..l3 + 12].copy_from_slice(&ipc.to_be_bytes());
        f[l3 + 16..l3 + 20].copy_from_slice(&addr);
        let old_port = be16(f, l4 + 2);
        f[l4 + 2..l4 + 4].copy_from_slice(&port);
        let old = be16(f, csum_off);
        let mut c = csum_replace4(old, old_addr, addr);
        c = csum_replace2(c, old_port, u16::from_be_bytes(port));
        if proto != PROTO_TCP {
            c = if old == 0 {
                0
            } else if c == 0 {
                0xffff
            } else {
                c
            };
        }
        f[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn send(
        &self,
        f: &mut [u8],
        next: [u8; 4],
        tot_len: u16,
        ingress: u32,
        pass_no_neigh: bool,
    ) -> u32 {
        let fib = self.fib.lookup(next, tot_len);
        Self::deliver(f, fib, ingress, pass_no_neigh)
    }

    /// The FIB's answer applied: new MACs and XDP_TX / redirect, or the failure's verdict.
    fn deliver(f: &mut [u8], fib: Fib, ingress: u32, pass_no_neigh: bool) -> u32 {
        match fib {
            Fib::Fail => XDP_DROP,
            Fib::NoNeigh => {
                if pass_no_neigh {
                    XDP_PASS
                } else {
                    XDP_DROP
                }
            }
            Fib::Success {
                ifindex,
                smac,
                dmac,
            } => {
                f[0..6].copy_from_slice(&dmac);
                f[6..12].copy_from_slice(&smac);
                if ifindex == ingress {
                    XDP_TX
                } else {
                    XDP_REDIRECT
                }
            }
        }
    }
}

/// Fill a model from the maps pinned under `pin_dir` (rings: only the live ring of each
/// service, the only slots the program can read).
pub fn from_pins(
    pin_dir: &std::path::Path,
    fib: FibTable,
) -> Result<Model, vip_userspace::dataplane::DataplaneError> {
    use aya::maps::{Array, HashMap as BpfHash, Map, MapData};
    use vip_common::{pin_names, VipKey};
    let open = |n: &str| MapData::from_pin(pin_dir.join(n));
    let vips: BpfHash<_, VipKey, VipValue> =
        BpfHash::try_from(Map::HashMap(open(pin_names::VIPS)?))?;
    let ifaces: BpfHash<_, u32, IfaceValue> =
        BpfHash::try_from(Map::HashMap(open(pin_names::IFACES)?))?;
    let config: Array<_, Config> = Array::try_from(Map::Array(open(pin_names::CONFIG)?))?;
    let services: BpfHash<_, ServiceKey, ServiceValue> =
        BpfHash::try_from(Map::HashMap(open(pin_names::SERVICES)?))?;
    let backends: Array<_, BackendValue> = Array::try_from(Map::Array(open(pin_names::BACKENDS)?))?;
    let rings: Array<_, u32> = Array::try_from(Map::Array(open(pin_names::RINGS)?))?;
    let conntrack = open(pin_names::CONNTRACK)?;
    let deadman: Array<_, u64> = Array::try_from(Map::Array(open(pin_names::DEADMAN)?))?;
    let mut m = Model {
        config: config.get(&0, 0)?,
        deadline_ns: deadman.get(&0, 0)?,
        rings_len: rings.len(),
        ct_sets: conntrack.info().map_or(0, |i| i.max_entries()),
        fib,
        ..Default::default()
    };
    for e in vips.iter() {
        let (k, v) = e?;
        m.vips.insert(k.addr_be, v);
    }
    let vips6: BpfHash<_, vip_common::Vip6Key, VipValue> =
        BpfHash::try_from(Map::HashMap(open(pin_names::VIPS6)?))?;
    for e in vips6.iter() {
        let (k, v) = e?;
        m.vips6.insert(k.addr_be, v);
    }
    let filter: Array<_, u64> = Array::try_from(Map::Array(open(pin_names::VIP_FILTER)?))?;
    for i in 0..filter.len() {
        m.vip_filter.push(filter.get(&i, 0)?);
    }
    for e in ifaces.iter() {
        let (k, v) = e?;
        m.ifaces.insert(k, v);
    }
    for i in 0..backends.len() {
        m.backends.push(backends.get(&i, 0)?);
    }
    for e in services.iter() {
        let (k, v) = e?;
        for s in 0..v.ring_size {
            let idx = v.ring_off.wrapping_add(s);
            if idx < m.rings_len {
                m.rings.insert(idx, rings.get(&idx, 0)?);
            }
        }
        m.services.insert(k, v);
    }
    Ok(m)
}

/// Add the IPv6 load balancer's maps to `m`: `SERVICES6` and `BACKENDS6` from the loaded
/// object `ebpf` (the daemon does not pin them yet), the live rings of those services from
/// the `RINGS` pinned under `pin_dir` (the IPv4 services' are read by `from_pins`).
pub fn add_ipv6(
    m: &mut Model,
    ebpf: &aya::Ebpf,
    pin_dir: &std::path::Path,
) -> Result<(), vip_userspace::dataplane::DataplaneError> {
    use aya::maps::{Array, HashMap as BpfHash, Map, MapData};
    use vip_common::{map_names, pin_names};
    let missing = vip_userspace::dataplane::DataplaneError::MissingMap;
    // The object's maps, or their pins once the daemon's `LbMaps::take` took them.
    let services: BpfHash<_, Service6Key, ServiceValue> = match ebpf.map(map_names::SERVICES6) {
        Some(m) => BpfHash::try_from(Map::HashMap(MapData::from_id(match m {
            Map::HashMap(d) => d.info()?.id(),
            _ => return Err(missing(map_names::SERVICES6)),
        })?))?,
        None => BpfHash::try_from(Map::HashMap(MapData::from_pin(
            pin_dir.join(pin_names::SERVICES6),
        )?))?,
    };
    let backends: Array<_, Backend6Value> = match ebpf.map(map_names::BACKENDS6) {
        Some(m) => Array::try_from(Map::Array(MapData::from_id(match m {
            Map::Array(d) => d.info()?.id(),
            _ => return Err(missing(map_names::BACKENDS6)),
        })?))?,
        None => Array::try_from(Map::Array(MapData::from_pin(
            pin_dir.join(pin_names::BACKENDS6),
        )?))?,
    };
    let rings: Array<_, u32> = Array::try_from(Map::Array(MapData::from_pin(
        pin_dir.join(pin_names::RINGS),
    )?))?;
    for i in 0..backends.len() {
        let b = backends.get(&i, 0)?;
        if b != Backend6Value::default() {
            m.backends6.insert(i, b);
        }
    }
    for e in services.iter() {
        let (k, v) = e?;
        for s in 0..v.ring_size {
            let idx = v.ring_off.wrapping_add(s);
            if idx < m.rings_len {
                m.rings.insert(idx, rings.get(&idx, 0)?);
            }
        }
        m.services6.insert(k, v);
    }
    Ok(())
}

/// RFC 4861's validity rules for NS and NA, read from the RFC rather than from the program.
mod ndp {
    pub const NS: u8 = 135;
    pub const NA: u8 = 136;
    pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    /// Option bytes the program reads; a longer message is not answered.
    const MAX_OPTIONS: usize = 64;

    pub struct Msg {
        pub typ: u8,
        pub src: [u8; 16],
        pub target: [u8; 16],
        /// Ethernet source.
        pub mac: [u8; 6],
    }

    fn a16(f: &[u8], off: usize) -> [u8; 16] {
        f[off..off + 16].try_into().unwrap_or_default()
    }

    /// The ICMPv6 checksum of the IPv6 packet `p` (header and message, checksum field 0).
    pub fn checksum(p: &[u8]) -> u16 {
        let mut v = Vec::with_capacity(p.len());
        v.extend_from_slice(&p[8..40]);
        v.extend_from_slice(&((p.len() - 40) as u32).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 58]);
        v.extend_from_slice(&p[40..]);
        crate::packet::checksum(&v)
    }

    /// Some(the message) when the IPv6 packet at `l3` is an NS or NA that every rule allows.
    pub fn check(f: &[u8], l3: usize) -> Option<Msg> {
        let ip = f.get(l3..l3 + 40)?;
        if ip[0] >> 4 != 6 || ip[6] != 58 {
            return None;
        }
        let typ = *f.get(l3 + 40)?;
        if typ != NS && typ != NA {
            return None;
        }
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        if ip[7] != 255 || plen < 24 || plen - 24 > MAX_OPTIONS || f.len() < l3 + 40 + plen {
            return None;
        }
        let msg = &f[l3 + 40..l3 + 40 + plen];
        let (src, dst, target) = (a16(ip, 8), a16(ip, 24), a16(msg, 8));
        if msg[1] != 0 || src[0] == 0xff || target[0] == 0xff {
            return None;
        }
        // Options: each a non-zero number of 8-byte units, all inside the message.
        let mut off = 24;
        let mut slla = false;
        while off < plen {
            let units = *msg.get(off + 1)? as usize;
            if units == 0 || off + units * 8 > plen {
                return None;
            }
            slla |= msg[off] == 1;
            off += units * 8;
        }
        if checksum(&f[l3..l3 + 40 + plen]) != 0 {
            return None;
        }
        let group = crate::packet::solicited_node(target);
        let ok = if typ == NA {
            dst[0] != 0xff || msg[4] & 0x40 == 0
        } else if src == [0; 16] {
            dst == group && !slla
        } else {
            dst == group || dst == target
        };
        ok.then(|| Msg {
            typ,
            src,
            target,
            mac: f[6..12].try_into().unwrap_or_default(),
        })
    }
}
