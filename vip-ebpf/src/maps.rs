//! Map definitions (BTF, so bpftool prints field names) and typed lookups.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    macros::btf_map,
};
use vip_common::{
    vip_filter_slot, BackendValue, Config, CtSet, Deadline, FlowKey, IfaceValue, LbStats, NextHop,
    RevValue, ServiceKey, ServiceValue, Stats, VipKey, VipStats, VipValue, CT_SETS, MAX_BACKENDS,
    MAX_IFACES, MAX_SERVICES, MAX_VIPS, REVNAT_ENTRIES, RING_SLOTS, VIP_FILTER_WORDS,
};

#[btf_map]
pub static VIPS: HashMap<VipKey, VipValue, { MAX_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static IFACES: HashMap<u32, IfaceValue, { MAX_IFACES as usize }> = HashMap::new();

#[btf_map]
pub static STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();

#[btf_map]
pub static VIP_STATS: PerCpuHashMap<VipKey, VipStats, { MAX_VIPS as usize }> = PerCpuHashMap::new();

#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();

/// The dead-man deadline (`vip_common::Deadline`), apart from `CONFIG` so its writers
/// (the daemon's main loop and the election thread) never overwrite other settings.
#[btf_map]
pub static DEADMAN: Array<Deadline, 1> = Array::new();

#[btf_map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue, { MAX_SERVICES as usize }> = HashMap::new();

#[btf_map]
pub static BACKENDS: Array<BackendValue, { MAX_BACKENDS as usize }> = Array::new();

/// Maglev tables of every service, each service two of its own size side by side (one
/// live, see `ServiceValue`): slot `ring_off + hash % ring_size` holds a backend id. Sized
/// for the defaults; the daemon resizes it at load (`ring_slots`).
#[btf_map]
pub static RINGS: Array<u32, { RING_SLOTS as usize }> = Array::new();

/// Flow table: per-CPU array of 2-way sets (see `vip_common::CtSet`). Per-CPU like
/// Katran's: RSS steers a flow to one CPU, so no locks and no shared cache lines; a flow
/// that moves CPU, or whose way was evicted, is placed by Maglev again (the same backend
/// unless the set changed).
#[btf_map]
pub static CONNTRACK: PerCpuArray<CtSet, { CT_SETS as usize }> = PerCpuArray::new();

/// Shared (not per-CPU): replies are rewritten by tc egress on whatever CPU sends them.
#[btf_map]
pub static REVNAT: LruHashMap<FlowKey, RevValue, { REVNAT_ENTRIES as usize }> = LruHashMap::new();

#[btf_map]
pub static SVC_STATS: PerCpuArray<LbStats, { MAX_SERVICES as usize }> = PerCpuArray::new();

#[btf_map]
pub static BACKEND_STATS: PerCpuArray<LbStats, { MAX_BACKENDS as usize }> = PerCpuArray::new();

/// Bitmap prefilter over VIP addresses (see `vip_common::vip_filter_slot`). An array: the
/// verifier inlines its lookup, so non-VIP traffic costs a few instructions.
#[btf_map]
pub static VIP_FILTER: Array<u64, { VIP_FILTER_WORDS as usize }> = Array::new();

/// Per-CPU next-hop cache by backend id (per-CPU: no torn entries, no shared cache lines).
#[btf_map]
pub static NEXTHOP: PerCpuArray<NextHop, { MAX_BACKENDS as usize }> = PerCpuArray::new();

/// Whether `addr` may be a VIP (false: certainly not).
#[inline(always)]
pub fn maybe_vip(addr: &[u8; 4]) -> bool {
    let (word, mask) = vip_filter_slot(*addr);
    match VIP_FILTER.get_ptr(word) {
        // SAFETY: array value, copied out at once.
        Some(p) => (unsafe { *p }) & mask != 0,
        None => false,
    }
}

// Copy values out at once: a reference into a hash map is only valid until the next update
// from userspace, so nothing is held across other work.

#[inline(always)]
pub fn vip(addr: &[u8; 4]) -> Option<VipValue> {
    let key = VipKey { addr_be: *addr };
    VIPS.get_ptr(key).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn iface(ifindex: u32) -> Option<IfaceValue> {
    IFACES.get_ptr(ifindex).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn config() -> Option<Config> {
    CONFIG.get_ptr(0).map(|p| unsafe { *p })
}

/// The dead-man deadline (0: off).
#[inline(always)]
pub fn deadline() -> Deadline {
    DEADMAN.get_ptr(0).map_or(0, |p| unsafe { *p })
}

#[inline(always)]
pub fn service(key: &ServiceKey) -> Option<ServiceValue> {
    SERVICES.get_ptr(key).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn backend(id: u32) -> Option<BackendValue> {
    BACKENDS.get_ptr(id).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn ring_slot(index: u32) -> Option<u32> {
    RINGS.get_ptr(index).map(|p| unsafe { *p })
}
