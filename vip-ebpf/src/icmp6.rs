//! ICMPv6 Packet Too Big about IPv6 service flows, the twin of `icmp` for IPv4's
//! "fragmentation needed": a router between a `dsr` backend and the client reports to the
//! reply's source, the VIP, so the report arrives here and belongs to the backend that sent
//! the packet, found from the quoted header (VIP:port -> client:port, the client's flow
//! reversed) by `CT6`, else by the same Maglev slot. IPv6 routers never fragment, so without
//! this path MTU discovery breaks for every flow through the VIP.
//!
//! `nat` services pass (the quoted packet carries the VIP, as for IPv4), and so do the other
//! ICMPv6 errors, a tagged frame, and a quote that is not TCP/UDP right after its fixed header.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use vip_common::{Service6Key, MODE_DSR, PROTO_TCP, PROTO_UDP};

use crate::{
    conntrack, lb6, maglev, maps,
    parse::{ptr_at, EtherFrame, ETH_HLEN, IP6_HLEN},
    stats,
};

const ICMP6_PACKET_TOO_BIG: u8 = 2;

/// ICMPv6 header (8) + quoted IPv6 header (40) + the first 8 bytes of its L4 header.
const NEED: usize = 8 + 40 + 8;

/// `lb6::NOT_SERVICE`: not such a report, the caller goes on; `lb6::FORWARD`: the flow's
/// backend is in `SCRATCH6` for `lb6::forward`; else the verdict. A call of its own, for
/// BPF's stack limit (see `lb6`).
#[inline(never)]
pub fn handle(ctx: &XdpContext, frame: &EtherFrame) -> u32 {
    find(ctx, frame).unwrap_or(lb6::NOT_SERVICE)
}

#[inline(always)]
fn find(ctx: &XdpContext, frame: &EtherFrame) -> Option<u32> {
    if frame.l3_off != ETH_HLEN {
        return None;
    }
    let body: *const [u8; NEED] = ptr_at(ctx, ETH_HLEN + IP6_HLEN)?;
    // SAFETY: bounds-checked by ptr_at; read in place (a copy would cost stack).
    let b = unsafe { &*body };
    if b[0] != ICMP6_PACKET_TOO_BIG {
        return None;
    }
    let q = 8;
    let proto = b[q + 6];
    if b[q] >> 4 != 6 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let l4 = q + 40;
    let s = lb6::scratch()?;
    // The client's flow: client:port -> VIP:port, the quoted reply reversed.
    let f = &mut s.flow;
    f.src_be.copy_from_slice(&b[q + 24..q + 40]);
    f.dst_be.copy_from_slice(&b[q + 8..q + 24]);
    f.sport_be = [b[l4 + 2], b[l4 + 3]];
    f.dport_be = [b[l4], b[l4 + 1]];
    f.proto = proto;
    f._pad = [0; 3];
    let svc = maps::service6(&Service6Key {
        addr_be: f.dst_be,
        port_be: f.dport_be,
        proto,
        _pad: 0,
    })?;
    if svc.mode != MODE_DSR {
        return None;
    }
    let Some((id, backend)) = conntrack::lookup6(&s.flow).or_else(|| maglev::pick6(&s.flow, &svc))
    else {
        return Some(xdp_action::XDP_PASS);
    };
    stats::bump(|s| s.icmp6_to_backend += 1);
    s.id = id;
    s.backend = backend;
    s.new_flow = 0;
    Some(lb6::FORWARD)
}
