//! vip's XDP program. Entry points only; each stage lives in its own module.
#![no_std]
#![no_main]
// `atomic_xadd` for shared counters (see `stats::atomic_add`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod arp;
mod bench;
mod conntrack;
mod csum;
mod fwd;
mod icmp;
mod icmp6;
mod lb;
mod lb6;
mod maglev;
mod maps;
mod ndp;
mod owner;
mod parse;
mod revnat;
mod rewrite;
mod stats;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::parse::{EtherFrame, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IP6_HLEN, IPPROTO_ICMPV6};

/// Attached to each uplink. Answers ARP (IPv4) and Neighbor Solicitations (IPv6) for owned
/// VIPs, drops them for VIPs held elsewhere, balances service traffic, passes everything else
/// untouched.
#[xdp]
pub fn vip_xdp(ctx: XdpContext) -> u32 {
    let action = try_vip_xdp(&ctx);
    stats::verdict(action);
    action
}

#[inline(always)]
fn try_vip_xdp(ctx: &XdpContext) -> u32 {
    stats::bump(|s| s.rx += 1);
    let Some(frame) = parse::ether(ctx) else {
        stats::bump(|s| s.truncated += 1);
        return xdp_action::XDP_PASS;
    };
    match frame.ethertype {
        ETH_P_ARP => arp::handle(ctx, &frame),
        ETH_P_IP => ipv4(ctx, &frame),
        ETH_P_IPV6 => ipv6(ctx, &frame),
        _ => xdp_action::XDP_PASS,
    }
}

/// Benchmark entry (never attached): restores the input frame from `BENCH_FRAME`, then runs
/// the real program. BPF_PROG_TEST_RUN with repeat > 1 reuses the frame the previous run
/// rewrote; restoring it first makes every repeat see the same input, so per-packet cost can
/// be measured with a large repeat count where the kernel's setup is amortized.
#[xdp]
pub fn vip_bench(ctx: XdpContext) -> u32 {
    bench::restore(&ctx);
    try_vip_xdp(&ctx)
}

/// The baseline for `vip_bench`: the same restore, no program.
#[xdp]
pub fn vip_bench_noop(ctx: XdpContext) -> u32 {
    bench::restore(&ctx);
    xdp_action::XDP_PASS
}

/// Attached to tc egress of each uplink: rewrites replies of `nat` flows back to VIP:port.
#[classifier]
pub fn vip_tc_egress(ctx: TcContext) -> i32 {
    revnat::egress(&ctx)
}

/// IPv4: a destination that cannot be a VIP passes at once (one array lookup). Services are
/// load-balanced; other traffic to a VIP is counted per VIP and goes to the stack.
#[inline(never)]
fn ipv4(ctx: &XdpContext, frame: &EtherFrame) -> u32 {
    let Some(ip) = parse::ipv4(ctx, frame.l3_off) else {
        return xdp_action::XDP_PASS;
    };
    if !maps::maybe_vip(&ip.dst) {
        return xdp_action::XDP_PASS;
    }
    if let Some(verdict) = lb::handle(ctx, frame, &ip) {
        return verdict;
    }
    if maps::vip(&ip.dst).is_some() {
        stats::bump(|s| s.ipv4_to_vip += 1);
        stats::bump_vip(&ip.dst, stats::VipCounter::Ipv4);
    }
    xdp_action::XDP_PASS
}

/// IPv6: Neighbor Discovery first (the responder owns NS and NA, whatever their address),
/// then as IPv4: the prefilter, services, traffic to a VIP counted. A function of its own
/// (a BPF-to-BPF call), as `ipv4` is: inlined, the two paths' stacks would add up in one
/// frame past BPF's 512 bytes; called, the verifier counts only the deeper of the two.
#[inline(never)]
fn ipv6(ctx: &XdpContext, frame: &EtherFrame) -> u32 {
    let Some(ip) = parse::ipv6(ctx, frame.l3_off) else {
        return xdp_action::XDP_PASS;
    };
    if ip.next == IPPROTO_ICMPV6 {
        let Some(typ) = parse::ptr_at::<u8>(ctx, frame.l3_off + IP6_HLEN) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: bounds-checked by ptr_at.
        let typ = unsafe { *typ };
        if typ == ndp::ND_NS || typ == ndp::ND_NA {
            return ndp::handle(ctx, frame);
        }
    }
    if !maps::maybe_vip6(&ip.dst) {
        return xdp_action::XDP_PASS;
    }
    let icmp = ip.next == IPPROTO_ICMPV6;
    let step = if icmp {
        icmp6::handle(ctx, frame)
    } else {
        lb6::place(ctx, frame, &ip)
    };
    if step == lb6::FORWARD {
        return lb6::forward(ctx, frame, &ip, icmp);
    }
    if step != lb6::NOT_SERVICE {
        return step;
    }
    if maps::vip6(&ip.dst).is_some() {
        stats::bump(|s| s.ipv6_to_vip += 1);
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
