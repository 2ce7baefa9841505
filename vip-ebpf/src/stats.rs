//! Per-CPU counters. Plain increments are safe: each CPU has its own copy.
use aya_ebpf::bindings::xdp_action;
use vip_common::{LbStats, Stats, VipKey, VipStats};

use crate::maps::{BACKEND_STATS, STATS, SVC_STATS, VIP_STATS};

#[inline(always)]
pub fn bump(f: impl FnOnce(&mut Stats)) {
    if let Some(p) = STATS.get_ptr_mut(0) {
        // SAFETY: index 0 always exists in an array map and is private to this CPU.
        f(unsafe { &mut *p });
    }
}

#[inline(always)]
pub fn bump_vip(addr: &[u8; 4], f: impl FnOnce(&mut VipStats)) {
    let key = VipKey { addr_be: *addr };
    if let Some(p) = VIP_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value of an existing entry; the daemon creates it with the VIP.
        f(unsafe { &mut *p });
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

#[inline(always)]
pub fn service(id: u32, f: impl FnOnce(&mut LbStats)) {
    if let Some(p) = SVC_STATS.get_ptr_mut(id) {
        // SAFETY: array slot private to this CPU.
        f(unsafe { &mut *p });
    }
}

#[inline(always)]
pub fn backend(id: u32, f: impl FnOnce(&mut LbStats)) {
    if let Some(p) = BACKEND_STATS.get_ptr_mut(id) {
        // SAFETY: array slot private to this CPU.
        f(unsafe { &mut *p });
    }
}
