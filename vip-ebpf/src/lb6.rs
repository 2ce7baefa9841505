//! The IPv6 load balancer: TCP/UDP right after the fixed IPv6 header, to a service, pinned to
//! a backend (`CT6`, else the service's Maglev ring into `BACKENDS6`) and forwarded by the
//! service's mode, as `lb` does for IPv4. Extension headers (fragments among them) are never
//! walked: those packets go to the stack, counted when they are for a VIP.
//!
//! Two calls, `place` then `forward`, made one after the other by `ipv6` in main.rs, with
//! the choice between them in `SCRATCH6`: each has its own stack frame, and neither frame
//! alone, nor the caller's with the deeper of the two, passes BPF's 512 bytes (one call
//! doing both did).
//!
//! The hop limit is left as it is, as `lb` leaves the IPv4 TTL: the balancer is not a router
//! hop (dsr rewrites MACs only, nat the destination).
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use vip_common::{
    Flow6Key, LbStats, Rev6Value, Service6Key, MODE_DSR, MODE_LOCAL, MODE_NAT, PROTO_TCP, PROTO_UDP,
};

use crate::{
    conntrack,
    fwd::{self, NoNeigh},
    maglev,
    maps::{self, Scratch6, REVNAT6, SCRATCH6},
    parse::{ptr_at, EtherFrame, Ipv6, ETH_HLEN, IP6_HLEN},
    rewrite, stats,
};

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// `place`'s answers besides a verdict: not service traffic (the caller goes on), or
/// `SCRATCH6` holds a backend for `forward`.
pub const NOT_SERVICE: u32 = u32::MAX;
pub const FORWARD: u32 = u32::MAX - 1;

/// The IPv6 extension headers (IANA's list, RFC 8200 4 and later): hop-by-hop, routing,
/// fragment, ESP, AH, destination options, mobility, HIP, shim6 and the two experimental.
#[inline(always)]
fn is_extension(next: u8) -> bool {
    matches!(
        next,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch6> {
    // SAFETY: this CPU's only slot; nothing else touches it while the program runs here.
    SCRATCH6.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Find the backend of a service packet: a verdict, `NOT_SERVICE`, or `FORWARD` with the
/// flow and its backend in `SCRATCH6`.
#[inline(never)]
pub fn place(ctx: &XdpContext, frame: &EtherFrame, ip: &Ipv6) -> u32 {
    if ip.next != PROTO_TCP && ip.next != PROTO_UDP {
        // The ports may lie behind any number of extension headers, or (a non-first
        // fragment) nowhere: the stack parses them, and reassembles.
        if is_extension(ip.next) && maps::vip6(&ip.dst).is_some() {
            stats::bump(|s| s.lb6_ext_header += 1);
        }
        return NOT_SERVICE;
    }
    let Some(s) = scratch() else {
        return NOT_SERVICE;
    };
    let Some(syn) = flow_of(ctx, frame, ip, &mut s.flow) else {
        return NOT_SERVICE;
    };
    let plain = frame.l3_off == ETH_HLEN;
    if plain && !syn {
        if let Some((id, backend)) = conntrack::lookup6(&s.flow) {
            stats::bump(|s| s.ct_hit += 1);
            s.id = id;
            s.backend = backend;
            s.new_flow = 0;
            return FORWARD;
        }
    }
    let Some(svc) = maps::service6(&Service6Key {
        addr_be: ip.dst,
        port_be: s.flow.dport_be,
        proto: ip.next,
        _pad: 0,
    }) else {
        return NOT_SERVICE;
    };
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
        return xdp_action::XDP_PASS;
    }
    // VLAN-tagged frames need the tag's route: to the kernel, counted, as for IPv4.
    if !plain {
        stats::bump(|s| s.lb_ip_options += 1);
        return xdp_action::XDP_PASS;
    }
    let Some((id, backend)) = maglev::pick6(&s.flow, &svc) else {
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
    conntrack::record6(&s.flow, id, &backend);
    stats::bump(|s| s.ct_new += 1);
    let placed = LbStats {
        new_flows: 1,
        ..LbStats::default()
    };
    stats::service(svc.id, placed);
    stats::backend(id, placed);
    s.id = id;
    s.backend = backend;
    s.new_flow = 1;
    FORWARD
}

/// The flow's 5-tuple into `flow`, and whether it is a bare SYN; `None` for a truncated L4
/// header (the stack drops it with the right counters).
#[inline(always)]
fn flow_of(ctx: &XdpContext, frame: &EtherFrame, ip: &Ipv6, flow: &mut Flow6Key) -> Option<bool> {
    let l4 = frame.l3_off + IP6_HLEN;
    let syn = if ip.next == PROTO_TCP {
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
    flow.src_be = ip.src;
    flow.dst_be = ip.dst;
    flow.sport_be = [ports[0], ports[1]];
    flow.dport_be = [ports[2], ports[3]];
    flow.proto = ip.next;
    flow._pad = [0; 3];
    Some(syn)
}

/// Send the packet `place` (or, `icmp`, the Packet Too Big path) chose a backend for. One
/// call of `send6` for every mode: each inlined copy of the FIB lookup takes its own stack.
#[inline(never)]
pub fn forward(ctx: &XdpContext, frame: &EtherFrame, ip: &Ipv6, icmp: bool) -> u32 {
    let Some(s) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    let no_neigh = if icmp {
        NoNeigh::Drop
    } else {
        let len = (ctx.data_end() - ctx.data()) as u64;
        let sent = LbStats {
            packets: 1,
            bytes: len,
            ..LbStats::default()
        };
        stats::service(s.backend.svc, sent);
        stats::backend(s.id, sent);
        match s.backend.mode {
            MODE_DSR => NoNeigh::Drop,
            MODE_NAT => {
                if !nat(ctx, frame.l3_off, ip, s) {
                    return xdp_action::XDP_PASS;
                }
                NoNeigh::Pass
            }
            _ => return xdp_action::XDP_PASS,
        }
    };
    fwd::send6(
        ctx, &ip.src, s.id, &s.backend, ip.next, ip.tot_len, no_neigh,
    )
}

/// DNAT to the backend and, for a new flow, the reverse entry; false: frame untouched.
#[inline(always)]
fn nat(ctx: &XdpContext, l3: usize, ip: &Ipv6, s: &mut Scratch6) -> bool {
    let b = &s.backend;
    if rewrite::dnat6(ctx, l3, ip.next, &b.addr_be, b.port_be).is_none() {
        return false;
    }
    // The reply comes from [backend]:port to [client]:port; tc egress turns it back into
    // [VIP]:port. Written when the flow is placed, as for IPv4; built in the scratch, for
    // the stack.
    if s.new_flow != 0 {
        s.rev = Flow6Key {
            src_be: b.addr_be,
            dst_be: s.flow.src_be,
            sport_be: b.port_be,
            dport_be: s.flow.sport_be,
            proto: s.flow.proto,
            _pad: [0; 3],
        };
        s.rev_to = Rev6Value {
            vip_be: s.flow.dst_be,
            vport_be: s.flow.dport_be,
            _pad: [0; 2],
        };
        // By reference: the helper then reads the scratch, with no copy on the stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = REVNAT6.insert(&s.rev, &s.rev_to, 0);
    }
    true
}
