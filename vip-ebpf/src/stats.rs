//! Counters. `STATS` is per-CPU: plain increments are safe, each CPU has its own copy.
//! `VIP_STATS` is shared (atomic adds). The per-service and per-backend counters are
//! striped (see `SVC_STATS`): a CPU adds to its stripe, plainly while every CPU has a stripe
//! of its own, atomically once CPUs share them (the loader's `STAT_ATOMIC`, a constant to the
//! verifier, so only one of the two paths is in the program).
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{bindings::xdp_action, helpers::bpf_get_smp_processor_id};
use vip_common::{LbStats, Stats, Vip6Key, VipKey};

use crate::maps::{
    backend_stat_entries, stat_atomic, stat_stripe_mask, svc_stat_entries, BACKEND_STATS, STATS,
    SVC_STATS, VIP6_STATS, VIP_STATS,
};

#[inline(always)]
pub fn bump(f: impl FnOnce(&mut Stats)) {
    if let Some(p) = STATS.get_ptr_mut(0) {
        // SAFETY: index 0 always exists in an array map and is private to this CPU.
        f(unsafe { &mut *p });
    }
}

/// A per-VIP counter (`VipStats`).
pub enum VipCounter {
    ArpReply,
    ArpDrop,
    Ipv4,
    /// A foreign claim, from this MAC.
    Conflict([u8; 6]),
}

#[inline(always)]
pub fn bump_vip(addr: &[u8; 4], c: VipCounter) {
    let key = VipKey { addr_be: *addr };
    let Some(p) = VIP_STATS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: the value of an existing entry (the daemon creates it with the VIP), shared by
    // every CPU: counters are added atomically; the MAC is a plain store (a diagnostic: two
    // CPUs storing at once may leave a mix of two claimants' MACs).
    unsafe {
        let field = match c {
            VipCounter::ArpReply => &raw mut (*p).arp_reply,
            VipCounter::ArpDrop => &raw mut (*p).arp_drop,
            VipCounter::Ipv4 => &raw mut (*p).ipv4_pkts,
            VipCounter::Conflict(mac) => {
                (*p).conflict_mac = mac;
                &raw mut (*p).arp_conflict
            }
        };
        atomic_add(field, 1);
    }
}

/// A per-IPv6-VIP counter (`Vip6Stats`).
pub enum Vip6Counter {
    Reply,
    Drop,
    /// A foreign claim, from this MAC.
    Conflict([u8; 6]),
}

#[inline(always)]
pub fn bump_vip6(addr: &[u8; 16], c: Vip6Counter) {
    let key = Vip6Key { addr_be: *addr };
    let Some(p) = VIP6_STATS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: as in `bump_vip`: an existing entry's value, counters added atomically, the MAC
    // a plain store.
    unsafe {
        let field = match c {
            Vip6Counter::Reply => &raw mut (*p).ndp_reply,
            Vip6Counter::Drop => &raw mut (*p).ndp_drop,
            Vip6Counter::Conflict(mac) => {
                (*p).conflict_mac = mac;
                &raw mut (*p).ndp_conflict
            }
        };
        atomic_add(field, 1);
    }
}

#[inline(always)]
pub fn verdict(action: u32) {
    match action {
        xdp_action::XDP_PASS => bump(|s| s.pass += 1),
        xdp_action::XDP_DROP => bump(|s| s.drop += 1),
        xdp_action::XDP_TX => bump(|s| s.tx += 1),
        xdp_action::XDP_REDIRECT => bump(|s| s.tx += 1),
        _ => {}
    }
}

/// Add `d` to service `id`'s counters.
#[inline(always)]
pub fn service(id: u32, d: LbStats) {
    let n = svc_stat_entries();
    if id < n {
        if let Some(p) = SVC_STATS.get_ptr_mut(stripe() * n + id) {
            add(p, &d);
        }
    }
}

/// Add `d` to backend `id`'s counters.
#[inline(always)]
pub fn backend(id: u32, d: LbStats) {
    let n = backend_stat_entries();
    if id < n {
        if let Some(p) = BACKEND_STATS.get_ptr_mut(stripe() * n + id) {
            add(p, &d);
        }
    }
}

#[inline(always)]
fn stripe() -> u32 {
    // SAFETY: plain helper call.
    (unsafe { bpf_get_smp_processor_id() }) & stat_stripe_mask()
}

#[inline(always)]
fn add(p: *mut LbStats, d: &LbStats) {
    if stat_atomic() {
        // SAFETY: p is a live, 8-byte aligned array value; the fields are plain u64s.
        let field = |f: *mut u64, v: u64| {
            if v != 0 {
                unsafe { atomic_add(f, v) };
            }
        };
        unsafe {
            field(&raw mut (*p).packets, d.packets);
            field(&raw mut (*p).bytes, d.bytes);
            field(&raw mut (*p).new_flows, d.new_flows);
            field(&raw mut (*p).drops, d.drops);
        }
    } else {
        // SAFETY: this CPU's own stripe (no other CPU adds to it).
        let field = |f: *mut u64, v: u64| {
            if v != 0 {
                unsafe { *f += v };
            }
        };
        unsafe {
            field(&raw mut (*p).packets, d.packets);
            field(&raw mut (*p).bytes, d.bytes);
            field(&raw mut (*p).new_flows, d.new_flows);
            field(&raw mut (*p).drops, d.drops);
        }
    }
}

/// `*p += v` as one atomic instruction. BPF has an atomic add but no compare-and-swap, so
/// core's atomic types offer no `fetch_add` on this target; the intrinsic, its result unused,
/// compiles to the plain atomic add every kernel with BPF atomics takes.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: the caller passes a live, 8-byte aligned u64 in a map value.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}
