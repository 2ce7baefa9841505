//! Map definitions (BTF, so bpftool prints field names) and typed lookups.
use aya_ebpf::{
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use vip_common::{
    vip6_filter_slot, vip_filter_slot, Backend6Value, BackendValue, Config, Ct6Set, CtSet,
    Deadline, Flow6Key, FlowKey, IfaceValue, LbStats, NextHop, Rev6Value, RevValue, Service6Key,
    ServiceKey, ServiceValue, Stats, Vip6Key, Vip6Stats, VipKey, VipStats, VipValue, CT6_SETS,
    CT_SETS, MAX_BACKENDS, MAX_IFACES, MAX_SERVICES, MAX_VIPS, NEXTHOP_SLOTS, REVNAT6_ENTRIES,
    REVNAT_ENTRIES, RING_SLOTS, VIP_FILTER_WORDS,
};

// Globals the loader sets (`vip_common::globals`); `.rodata`, so the verifier takes them as
// constants. The defaults fit the map sizes below and are safe on any number of CPUs.
#[unsafe(no_mangle)]
static CT_SET_MASK: u32 = CT_SETS - 1;
#[unsafe(no_mangle)]
static STAT_STRIPE_MASK: u32 = 0;
#[unsafe(no_mangle)]
static STAT_ATOMIC: u32 = 1;
#[unsafe(no_mangle)]
static SVC_STAT_ENTRIES: u32 = MAX_SERVICES;
#[unsafe(no_mangle)]
static BACKEND_STAT_ENTRIES: u32 = MAX_BACKENDS;
#[unsafe(no_mangle)]
static CT6_SET_MASK: u32 = CT6_SETS - 1;

/// Read a global (volatile: the value is the loader's, not the one compiled in).
macro_rules! global {
    ($g:ident) => {
        // SAFETY: a plain u32 static, never written by the program.
        unsafe { core::ptr::read_volatile(&$g) }
    };
}

#[inline(always)]
pub fn ct_set_mask() -> u32 {
    global!(CT_SET_MASK)
}

#[inline(always)]
pub fn ct6_set_mask() -> u32 {
    global!(CT6_SET_MASK)
}

#[inline(always)]
pub fn stat_stripe_mask() -> u32 {
    global!(STAT_STRIPE_MASK)
}

#[inline(always)]
pub fn stat_atomic() -> bool {
    global!(STAT_ATOMIC) != 0
}

#[inline(always)]
pub fn svc_stat_entries() -> u32 {
    global!(SVC_STAT_ENTRIES)
}

#[inline(always)]
pub fn backend_stat_entries() -> u32 {
    global!(BACKEND_STAT_ENTRIES)
}

#[btf_map]
pub static VIPS: HashMap<VipKey, VipValue, { MAX_VIPS as usize }> = HashMap::new();

/// IPv6 VIPs, for the NDP responder: the same value as `VIPS`. A map of its own rather than
/// a wider key for both families, so IPv4 lookups keep their 4-byte key.
#[btf_map]
pub static VIPS6: HashMap<Vip6Key, VipValue, { MAX_VIPS as usize }> = HashMap::new();

/// Counters per IPv6 VIP, shared like `VIP_STATS`.
#[btf_map]
pub static VIP6_STATS: HashMap<Vip6Key, Vip6Stats, { MAX_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static IFACES: HashMap<u32, IfaceValue, { MAX_IFACES as usize }> = HashMap::new();

#[btf_map]
pub static STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();

/// Counters per VIP (ARP and traffic no service took), shared, with atomic adds: those
/// packets are few next to the load-balanced ones, and a per-CPU copy of every VIP would
/// grow with both VIPs and CPUs.
#[btf_map]
pub static VIP_STATS: HashMap<VipKey, VipStats, { MAX_VIPS as usize }> = HashMap::new();

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
/// `BPF_F_MMAPABLE` (1 << 10): the daemon writes tables into its own mapping of the array.
#[btf_map]
pub static RINGS: Array<u32, { RING_SLOTS as usize }, 1024> = Array::new();

/// Flow table: per-CPU array of 2-way sets (see `vip_common::CtSet`). Per-CPU like
/// Katran's: RSS steers a flow to one CPU, so no locks and no shared cache lines; a flow
/// that moves CPU, or whose way was evicted, is placed by Maglev again (the same backend
/// unless the set changed). The daemon sizes it from `conntrack_flows` divided over the
/// CPUs and sets `CT_SET_MASK` to match.
#[btf_map]
pub static CONNTRACK: PerCpuArray<CtSet, { CT_SETS as usize }> = PerCpuArray::new();

/// Shared (not per-CPU): replies are rewritten by tc egress on whatever CPU sends them.
#[btf_map]
pub static REVNAT: LruHashMap<FlowKey, RevValue, { REVNAT_ENTRIES as usize }> = LruHashMap::new();

/// IPv6 services: the same `ServiceValue` as `SERVICES` (one id space, tables in `RINGS`).
#[btf_map]
pub static SERVICES6: HashMap<Service6Key, ServiceValue, { MAX_SERVICES as usize }> =
    HashMap::new();

/// IPv6 backends by backend id (the ids of `BACKENDS`' space that IPv6 services use): ring
/// slots of an IPv6 service index this array.
#[btf_map]
pub static BACKENDS6: Array<Backend6Value, { MAX_BACKENDS as usize }> = Array::new();

/// The IPv6 flow table, built like `CONNTRACK` (per-CPU 2-way sets, `CT6_SET_MASK`).
#[btf_map]
pub static CT6: PerCpuArray<Ct6Set, { CT6_SETS as usize }> = PerCpuArray::new();

/// IPv6 reverse NAT, built like `REVNAT`.
#[btf_map]
pub static REVNAT6: LruHashMap<Flow6Key, Rev6Value, { REVNAT6_ENTRIES as usize }> =
    LruHashMap::new();

/// Per-CPU scratch of the IPv6 path: the flow and the backend chosen for it, handed from
/// `lb6::place` (or `icmp6::handle`) to `lb6::forward`, and the reverse-NAT entry built there. Kept here rather than on the stack:
/// with 16-byte addresses the whole path in one call does not fit BPF's 512-byte stack.
#[btf_map]
pub static SCRATCH6: PerCpuArray<Scratch6, 1> = PerCpuArray::new();

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch6 {
    pub flow: Flow6Key,
    pub backend: Backend6Value,
    pub id: u32,
    /// 1: placed by Maglev just now (the reverse-NAT entry is written).
    pub new_flow: u32,
    /// The reverse-NAT entry being written (`nat`).
    pub rev: Flow6Key,
    pub rev_to: Rev6Value,
}

/// Counters by service id, striped: stripe `s` is entries `s * SVC_STAT_ENTRIES ..` (see
/// `vip_common::STAT_STRIPES_MAX`). Shared, not per-CPU, so they do not grow with CPUs.
#[btf_map]
pub static SVC_STATS: Array<LbStats, { MAX_SERVICES as usize }> = Array::new();

/// Counters by backend id, striped like `SVC_STATS`.
#[btf_map]
pub static BACKEND_STATS: Array<LbStats, { MAX_BACKENDS as usize }> = Array::new();

/// Bitmap prefilter over VIP addresses (see `vip_common::vip_filter_slot`). An array: the
/// verifier inlines its lookup, so non-VIP traffic costs a few instructions.
#[btf_map]
pub static VIP_FILTER: Array<u64, { VIP_FILTER_WORDS as usize }> = Array::new();

/// Per-CPU next-hop cache, direct-mapped by backend id (per-CPU: no torn entries, no shared
/// cache lines; a fixed number of slots, so it does not grow with `max_backends`).
#[btf_map]
pub static NEXTHOP: PerCpuArray<NextHop, { NEXTHOP_SLOTS as usize }> = PerCpuArray::new();

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

/// Whether the IPv6 `addr` may be a VIP (same bitmap, `vip6_filter_slot`).
#[inline(always)]
pub fn maybe_vip6(addr: &[u8; 16]) -> bool {
    let (word, mask) = vip6_filter_slot(*addr);
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
pub fn vip6(addr: &[u8; 16]) -> Option<VipValue> {
    let key = Vip6Key { addr_be: *addr };
    VIPS6.get_ptr(key).map(|p| unsafe { *p })
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

#[inline(always)]
pub fn service6(key: &Service6Key) -> Option<ServiceValue> {
    SERVICES6.get_ptr(key).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn backend6(id: u32) -> Option<Backend6Value> {
    BACKENDS6.get_ptr(id).map(|p| unsafe { *p })
}
