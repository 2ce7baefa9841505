//! The load balancer: IPv4 TCP/UDP to a service is pinned to a backend (conntrack, else
//! Maglev) and forwarded by the service's mode.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use vip_common::{
    BackendValue, FlowKey, LbStats, RevValue, ServiceKey, ServiceValue, MODE_DSR, MODE_LOCAL,
    MODE_NAT, PROTO_TCP, PROTO_UDP,
};

use crate::{
    conntrack,
    fwd::{self, NoNeigh},
    icmp, maglev,
    maps::{self, REVNAT},
    parse::{ptr_at, EtherFrame, Ipv4, ETH_HLEN, IPPROTO_ICMP},
    rewrite, stats,
};

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// `None`: not service traffic, the caller goes on. `Some(verdict)`: handled here.
#[inline(always)]
pub fn handle(ctx: &XdpContext, frame: &EtherFrame, ip: &Ipv4) -> Option<u32> {
    if ip.proto == IPPROTO_ICMP && !ip.fragment {
        return icmp::handle(ctx, frame, ip);
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP {
        return None;
    }
    if ip.fragment {
        // Non-first fragments carry no ports, so no service can be found for them; all
        // fragments go to the stack alike so a datagram is never split between paths.
        if maps::vip(&ip.dst).is_some() {
            stats::bump(|s| s.lb_fragment += 1);
        }
        return None;
    }
    let (flow, syn) = flow_of(ctx, frame, ip)?;
    let plain = ip.ihl_bytes == 20 && frame.l3_off == ETH_HLEN;
    // Established flows: the conntrack entry and its backend are all that is needed (the
    // backend carries its service's mode and id), so the service is not looked up.
    if plain && !syn {
        if let Some((id, backend)) = conntrack::lookup(&flow) {
            stats::bump(|s| s.ct_hit += 1);
            return Some(forward(ctx, frame, ip, &flow, id, &backend, false));
        }
    }
    let svc = maps::service(&ServiceKey {
        addr_be: ip.dst,
        port_be: flow.dport_be,
        proto: ip.proto,
        _pad: 0,
    })?;
    if svc.mode == MODE_LOCAL {
        let len = (ctx.data_end() - ctx.data()) as u64;
        stats::bump(|s| s.lb_local += 1);
        stats::service(
            svc.id,
            LbStats {
                packets: 1,
                bytes: len,
                ..LbStats::default()
            },
        );
        return Some(xdp_action::XDP_PASS);
    }
    // Options shift the L4 header and VLAN-tagged frames need the tag's route: both are rare
    // on a LB path and go to the kernel, counted.
    if !plain {
        stats::bump(|s| s.lb_ip_options += 1);
        return Some(xdp_action::XDP_PASS);
    }
    Some(place(ctx, frame, ip, &flow, &svc))
}

/// The flow's 5-tuple and whether it is a bare SYN; `None` for a truncated L4 header, which
/// is malformed: the stack drops it with the right counters. TCP: the flags decide whether
/// conntrack is consulted (a SYN is always placed anew).
#[inline(always)]
fn flow_of(ctx: &XdpContext, frame: &EtherFrame, ip: &Ipv4) -> Option<(FlowKey, bool)> {
    let l4 = frame.l3_off + ip.ihl_bytes;
    let syn = if ip.proto == PROTO_TCP {
        let tcp: *const [u8; 20] = ptr_at(ctx, l4)?;
        // SAFETY: bounds-checked by ptr_at.
        unsafe { (*tcp)[13] & (TCP_SYN | TCP_ACK) == TCP_SYN }
    } else {
        ptr_at::<[u8; 8]>(ctx, l4)?;
        false
    };
    let ports: *const [u8; 4] = ptr_at(ctx, l4)?;
    // SAFETY: bounds-checked by ptr_at.
    let ports = unsafe { *ports };
    let flow = FlowKey {
        src_be: ip.src,
        dst_be: ip.dst,
        sport_be: [ports[0], ports[1]],
        dport_be: [ports[2], ports[3]],
        proto: ip.proto,
        _pad: [0; 3],
    };
    Some((flow, syn))
}

/// A new flow: Maglev picks the backend, conntrack remembers it, then it is forwarded.
#[inline(always)]
fn place(
    ctx: &XdpContext,
    frame: &EtherFrame,
    ip: &Ipv4,
    flow: &FlowKey,
    svc: &ServiceValue,
) -> u32 {
    let Some((id, backend)) = maglev::pick(flow, svc) else {
        stats::bump(|s| s.lb_no_backend += 1);
        stats::service(
            svc.id,
            LbStats {
                drops: 1,
                ..LbStats::default()
            },
        );
        return xdp_action::XDP_DROP;
    };
    conntrack::record(flow, id, &backend);
    stats::bump(|s| s.ct_new += 1);
    let placed = LbStats {
        new_flows: 1,
        ..LbStats::default()
    };
    stats::service(svc.id, placed);
    stats::backend(id, placed);
    forward(ctx, frame, ip, flow, id, &backend, true)
}

#[inline(always)]
fn forward(
    ctx: &XdpContext,
    frame: &EtherFrame,
    ip: &Ipv4,
    flow: &FlowKey,
    id: u32,
    backend: &BackendValue,
    new_flow: bool,
) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let sent = LbStats {
        packets: 1,
        bytes: len,
        ..LbStats::default()
    };
    stats::service(backend.svc, sent);
    stats::backend(id, sent);
    match backend.mode {
        MODE_DSR => fwd::send(
            ctx,
            ip.src,
            id,
            backend,
            ip.proto,
            ip.tot_len,
            NoNeigh::Drop,
        ),
        MODE_NAT => nat(ctx, frame.l3_off, ip, flow, id, backend, new_flow),
        _ => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn nat(
    ctx: &XdpContext,
    l3: usize,
    ip: &Ipv4,
    flow: &FlowKey,
    id: u32,
    b: &BackendValue,
    new_flow: bool,
) -> u32 {
    if rewrite::dnat(ctx, l3, ip.proto, b.addr_be, b.port_be).is_none() {
        return xdp_action::XDP_PASS;
    }
    // The reply comes from backend:port to client:port; tc egress turns it back into
    // VIP:port.
    let rev = FlowKey {
        src_be: b.addr_be,
        dst_be: flow.src_be,
        sport_be: b.port_be,
        dport_be: flow.sport_be,
        proto: flow.proto,
        _pad: [0; 3],
    };
    // Written when the flow is placed; replies keep it fresh in the LRU (tc egress looks it
    // up), so established packets do not pay for a shared-map access.
    if new_flow {
        let _ = REVNAT.insert(
            rev,
            RevValue {
                vip_be: flow.dst_be,
                vport_be: flow.dport_be,
                _pad: [0; 2],
            },
            0,
        );
    }
    fwd::send(ctx, ip.src, id, b, ip.proto, ip.tot_len, NoNeigh::Pass)
}
