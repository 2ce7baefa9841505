//! vip's XDP program. Entry points only; each stage lives in its own module.
#![no_std]
#![no_main]

mod arp;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

use crate::parse::{EtherFrame, ETH_P_ARP, ETH_P_IP};

/// Attached to each uplink. Answers ARP for owned VIPs, drops ARP for VIPs held elsewhere,
/// passes everything else untouched.
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
        ETH_P_IP => ipv4_observe(ctx, &frame),
        _ => xdp_action::XDP_PASS,
    }
}

/// Until the load balancer stage exists, IPv4 to a VIP goes to the stack; count it per VIP so
/// operators can see the traffic arrive on the owner.
#[inline(always)]
fn ipv4_observe(ctx: &XdpContext, frame: &EtherFrame) -> u32 {
    if let Some(dst) = parse::ipv4_dst(ctx, frame.l3_off) {
        if maps::vip(&dst).is_some() {
            stats::bump(|s| s.ipv4_to_vip += 1);
            stats::bump_vip(&dst, |v| v.ipv4_pkts += 1);
        }
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
