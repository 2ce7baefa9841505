//! ICMP errors about service flows. A router between a `dsr` backend and the client reports
//! a problem (fragmentation needed, unreachable, TTL exceeded) to the packet's source, the
//! VIP, so the report arrives here. It belongs to the backend that sent the packet: found
//! from the quoted header (the reply's VIP:port -> client:port, i.e. the client's flow
//! reversed), by conntrack, else by the same Maglev slot. Without this, path MTU discovery
//! breaks for every flow through the VIP.
//!
//! `nat` services: the quoted packet carries the VIP, not the backend, and would need both
//! headers rewritten; those reports go to the stack. `local`: the stack owns the flow.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use vip_common::{FlowKey, ServiceKey, MODE_DSR, PROTO_TCP, PROTO_UDP};

use crate::{
    conntrack,
    fwd::{self, NoNeigh},
    maglev, maps,
    parse::{ptr_at, EtherFrame, Ipv4, ETH_HLEN},
    stats,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;

/// ICMP header (8) + quoted IPv4 header (20, no options) + first 8 bytes of its L4 header.
const NEED: usize = 8 + 20 + 8;

#[inline(always)]
pub fn handle(ctx: &XdpContext, frame: &EtherFrame, ip: &Ipv4) -> Option<u32> {
    if ip.ihl_bytes != 20 || frame.l3_off != ETH_HLEN {
        return None;
    }
    let l4 = ETH_HLEN + 20;
    let body: *const [u8; NEED] = ptr_at(ctx, l4)?;
    // SAFETY: bounds-checked by ptr_at.
    let b = unsafe { *body };
    if b[0] != ICMP_DEST_UNREACH && b[0] != ICMP_TIME_EXCEEDED && b[0] != ICMP_PARAMETERPROB {
        return None;
    }
    // Quoted header: version 4, no options, TCP or UDP.
    let q = 8;
    let proto = b[q + 9];
    if b[q] != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let qsrc = [b[q + 12], b[q + 13], b[q + 14], b[q + 15]];
    let qdst = [b[q + 16], b[q + 17], b[q + 18], b[q + 19]];
    let qsport = [b[q + 20], b[q + 21]];
    let qdport = [b[q + 22], b[q + 23]];
    let svc = maps::service(&ServiceKey {
        addr_be: qsrc,
        port_be: qsport,
        proto,
        _pad: 0,
    })?;
    if svc.mode != MODE_DSR {
        return None;
    }
    // The client's flow: client:port -> VIP:port.
    let flow = FlowKey {
        src_be: qdst,
        dst_be: qsrc,
        sport_be: qdport,
        dport_be: qsport,
        proto,
        _pad: [0; 3],
    };
    let Some((id, backend)) = conntrack::lookup(&flow).or_else(|| maglev::pick(&flow, &svc)) else {
        return Some(xdp_action::XDP_PASS);
    };
    stats::bump(|s| s.icmp_to_backend += 1);
    Some(fwd::send(
        ctx,
        ip.src,
        id,
        &backend,
        ip.proto,
        ip.tot_len,
        NoNeigh::Drop,
    ))
}
