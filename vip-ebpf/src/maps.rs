//! Map definitions (BTF, so bpftool prints field names) and typed lookups.
use aya_ebpf::{
    btf_maps::{HashMap, PerCpuArray, PerCpuHashMap},
    macros::btf_map,
};
use vip_common::{IfaceValue, Stats, VipKey, VipStats, VipValue, MAX_IFACES, MAX_VIPS};

#[btf_map]
pub static VIPS: HashMap<VipKey, VipValue, { MAX_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static IFACES: HashMap<u32, IfaceValue, { MAX_IFACES as usize }> = HashMap::new();

#[btf_map]
pub static STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();

#[btf_map]
pub static VIP_STATS: PerCpuHashMap<VipKey, VipStats, { MAX_VIPS as usize }> = PerCpuHashMap::new();

#[inline(always)]
pub fn vip(addr: &[u8; 4]) -> Option<VipValue> {
    let key = VipKey { addr_be: *addr };
    // Copy the value out at once: a reference into a hash map is only valid until the next
    // update from userspace, so nothing is held across other work.
    VIPS.get_ptr(key).map(|p| unsafe { *p })
}

#[inline(always)]
pub fn iface(ifindex: u32) -> Option<IfaceValue> {
    IFACES.get_ptr(ifindex).map(|p| unsafe { *p })
}
