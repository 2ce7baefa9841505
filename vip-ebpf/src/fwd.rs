//! Sending a frame on towards a backend: next hop from the kernel's FIB and neighbour table
//! (bpf_fib_lookup), then XDP_TX out of the same link or a redirect to another one.
//!
//! bpf_fib_lookup costs more than the rest of the fast path together, so its answer is
//! cached per CPU and per backend (`NEXTHOP`) until the daemon's next epoch tick (about a
//! second), and only for packets no longer than one the FIB already accepted (its MTU
//! check). A neighbour or route change is therefore followed within the tick; a failed
//! lookup is never cached. Both families share the cache: backend ids come from one space
//! (an id is an IPv4 or an IPv6 backend, told apart by its generation).
use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use vip_common::{Backend6Value, BackendValue, NextHop, NEXTHOP_SLOTS};

use crate::{
    maps::{self, NEXTHOP},
    parse::ptr_at,
    stats,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;

pub enum NoNeigh {
    /// Hand the (already rewritten) packet to the kernel, which resolves and forwards it.
    Pass,
    /// Drop: the packet still carries the VIP, which the kernel would deliver locally.
    Drop,
}

/// Rewrite the MACs for the next hop and pick the verdict.
#[inline(always)]
fn out(ctx: &XdpContext, ingress: u32, ifindex: u32, smac: &[u8; 6], dmac: &[u8; 6]) -> u32 {
    let Some(eth) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds-checked by ptr_at.
    unsafe {
        let mut m = [0u8; 12];
        m[..6].copy_from_slice(dmac);
        m[6..].copy_from_slice(smac);
        *eth = m;
    }
    stats::bump(|s| s.lb_forward += 1);
    if ifindex == ingress {
        xdp_action::XDP_TX
    } else {
        // SAFETY: plain helper call; returns XDP_REDIRECT (or XDP_ABORTED on bad flags).
        unsafe { bpf_redirect(ifindex, 0) as u32 }
    }
}

/// Route towards IPv4 backend `id` (cached next hop, else the FIB), rewrite the MACs and
/// send. `tot_len`: the IPv4 total length.
#[inline(always)]
pub fn send(
    ctx: &XdpContext,
    src: [u8; 4],
    id: u32,
    backend: &BackendValue,
    proto: u8,
    tot_len: u16,
    no_neigh: NoNeigh,
) -> u32 {
    let dst = backend.addr_be;
    route(ctx, id, backend.gen, proto, tot_len, no_neigh, |p| {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    })
}

/// `send` for IPv6 backend `id`. `tot_len`: fixed header plus payload.
#[inline(always)]
pub fn send6(
    ctx: &XdpContext,
    src: &[u8; 16],
    id: u32,
    backend: &Backend6Value,
    proto: u8,
    tot_len: u16,
    no_neigh: NoNeigh,
) -> u32 {
    route(ctx, id, backend.gen, proto, tot_len, no_neigh, |p| {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = words(src);
        p.__bindgen_anon_4.ipv6_dst = words(&backend.addr_be);
    })
}

/// An IPv6 address as the FIB's four network-order words.
#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// The cached next hop of backend (`id`, `gen`), else the FIB's answer for the addresses
/// `addrs` writes into the lookup; then the MACs and the verdict.
#[inline(always)]
fn route(
    ctx: &XdpContext,
    id: u32,
    gen: u32,
    proto: u8,
    tot_len: u16,
    no_neigh: NoNeigh,
    addrs: impl FnOnce(&mut bpf_fib_lookup),
) -> u32 {
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let epoch = maps::config().map_or(0, |c| c.epoch);
    let cache = NEXTHOP.get_ptr_mut(id % NEXTHOP_SLOTS);
    if let Some(c) = cache {
        // SAFETY: this CPU's slot of a per-CPU array; copied out at once.
        let nh = unsafe { *c };
        if nh.backend == id && nh.gen == gen && nh.epoch == epoch && tot_len <= nh.ok_len {
            return out(ctx, ingress, nh.ifindex, &nh.smac, &nh.dmac);
        }
    }
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid start.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.l4_protocol = proto;
    p.ifindex = ingress;
    p.__bindgen_anon_1.tot_len = tot_len;
    addrs(&mut p);
    // SAFETY: ctx is this program's context; p is a valid, writable lookup struct.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx as *mut _,
            &mut p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH {
        stats::bump(|s| s.fib_no_neigh += 1);
        return match no_neigh {
            NoNeigh::Pass => xdp_action::XDP_PASS,
            NoNeigh::Drop => xdp_action::XDP_DROP,
        };
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        stats::bump(|s| s.fib_fail += 1);
        return xdp_action::XDP_DROP;
    }
    if let Some(c) = cache {
        // SAFETY: this CPU's slot; nothing else writes it concurrently.
        unsafe {
            *c = NextHop {
                backend: id,
                gen,
                epoch,
                ifindex: p.ifindex,
                ok_len: tot_len,
                smac: p.smac,
                dmac: p.dmac,
                _pad: [0; 2],
            };
        }
    }
    out(ctx, ingress, p.ifindex, &p.smac, &p.dmac)
}
