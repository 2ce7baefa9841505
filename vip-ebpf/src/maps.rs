//! Map definitions (BTF, so bpftool prints field names) and typed lookups.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap},
    macros::btf_map,
};
use vip_common::{
    BackendValue, Config, FlowKey, FlowValue, IfaceValue, LbStats, RevValue, ServiceKey,
    ServiceValue, Stats, VipKey, VipStats, VipValue, CONNTRACK_ENTRIES, MAX_BACKENDS, MAX_IFACES,
    MAX_SERVICES, MAX_VIPS, REVNAT_ENTRIES, RING_SIZE,
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

#[btf_map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue, { MAX_SERVICES as usize }> = HashMap::new();

#[btf_map]
pub static BACKENDS: Array<BackendValue, { MAX_BACKENDS as usize }> = Array::new();

/// Two Maglev rings per service, back to back: slot `(id * 2 + ring) * M + hash % M` holds
/// a backend id. Sized for the defaults; the daemon resizes it at load.
#[btf_map]
pub static RINGS: Array<u32, { (MAX_SERVICES * 2 * RING_SIZE) as usize }> = Array::new();

/// Per-CPU LRU, as Katran: a flow is steered to one CPU by RSS, so no locking and no
/// cross-CPU cache traffic; an evicted flow is re-placed by Maglev (same backend unless
/// the set changed).
#[btf_map]
pub static CONNTRACK: LruPerCpuHashMap<FlowKey, FlowValue, { CONNTRACK_ENTRIES as usize }> =
    LruPerCpuHashMap::new();

/// Shared (not per-CPU): replies are rewritten by tc egress on whatever CPU sends them.
#[btf_map]
pub static REVNAT: LruHashMap<FlowKey, RevValue, { REVNAT_ENTRIES as usize }> = LruHashMap::new();

#[btf_map]
pub static SVC_STATS: PerCpuArray<LbStats, { MAX_SERVICES as usize }> = PerCpuArray::new();

#[btf_map]
pub static BACKEND_STATS: PerCpuArray<LbStats, { MAX_BACKENDS as usize }> = PerCpuArray::new();

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
