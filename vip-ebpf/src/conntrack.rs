//! Flow tables: which backend an established flow goes to. A per-CPU array of 2-way sets,
//! exact LRU within a set (see `vip_common::CtSet`); `CT6` is the IPv6 twin of `CONNTRACK`,
//! with the same rules.
use vip_common::{
    ct6_set_index, ct_set_index, Backend6Value, BackendValue, Ct6Entry, CtEntry, Flow6Key, FlowKey,
    BACKEND_F_ACTIVE,
};

use crate::maps::{backend, backend6, ct6_set_mask, ct_set_mask, CONNTRACK, CT6};

/// The backend a known flow is pinned to, if that backend still holds the same id and is
/// active (a removed or re-used id sends the flow back through Maglev).
#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Option<(u32, BackendValue)> {
    let set = CONNTRACK.get_ptr_mut(ct_set_index(flow, ct_set_mask()))?;
    // SAFETY: this CPU's set; nothing else touches it while the program runs here.
    let set = unsafe { &mut *set };
    let way = if set.ways[0].gen != 0 && set.ways[0].key.same(flow) {
        0
    } else if set.ways[1].gen != 0 && set.ways[1].key.same(flow) {
        1
    } else {
        return None;
    };
    let e = set.ways[way];
    let b = backend(e.backend)?;
    if b.flags & BACKEND_F_ACTIVE == 0 || b.gen != e.gen {
        return None;
    }
    set.mru = way as u32;
    Some((e.backend, b))
}

/// Pin `flow` to backend `id`: its own way if present, else the least recently used one.
#[inline(always)]
pub fn record(flow: &FlowKey, id: u32, b: &BackendValue) {
    let Some(set) = CONNTRACK.get_ptr_mut(ct_set_index(flow, ct_set_mask())) else {
        return;
    };
    // SAFETY: this CPU's set.
    let set = unsafe { &mut *set };
    let way = if set.ways[0].gen != 0 && set.ways[0].key.same(flow) {
        0
    } else if set.ways[1].gen != 0 && set.ways[1].key.same(flow) {
        1
    } else {
        (1 - set.mru.min(1)) as usize
    };
    set.ways[way] = CtEntry {
        key: *flow,
        backend: id,
        gen: b.gen,
    };
    set.mru = way as u32;
}

/// `lookup` for an IPv6 flow (`CT6`, backends in `BACKENDS6`).
#[inline(always)]
pub fn lookup6(flow: &Flow6Key) -> Option<(u32, Backend6Value)> {
    let set = CT6.get_ptr_mut(ct6_set_index(flow, ct6_set_mask()))?;
    // SAFETY: this CPU's set; nothing else touches it while the program runs here.
    let set = unsafe { &mut *set };
    let way = if set.ways[0].gen != 0 && set.ways[0].key.same(flow) {
        0
    } else if set.ways[1].gen != 0 && set.ways[1].key.same(flow) {
        1
    } else {
        return None;
    };
    let e = set.ways[way];
    let b = backend6(e.backend)?;
    if b.flags & BACKEND_F_ACTIVE == 0 || b.gen != e.gen {
        return None;
    }
    set.mru = way as u32;
    Some((e.backend, b))
}

/// `record` for an IPv6 flow.
#[inline(always)]
pub fn record6(flow: &Flow6Key, id: u32, b: &Backend6Value) {
    let Some(set) = CT6.get_ptr_mut(ct6_set_index(flow, ct6_set_mask())) else {
        return;
    };
    // SAFETY: this CPU's set.
    let set = unsafe { &mut *set };
    let way = if set.ways[0].gen != 0 && set.ways[0].key.same(flow) {
        0
    } else if set.ways[1].gen != 0 && set.ways[1].key.same(flow) {
        1
    } else {
        (1 - set.mru.min(1)) as usize
    };
    set.ways[way] = Ct6Entry {
        key: *flow,
        backend: id,
        gen: b.gen,
    };
    set.mru = way as u32;
}
