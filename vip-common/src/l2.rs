//! What the ARP and NDP responders read: the VIPs with their owner flag, each link's MAC, and
//! the dead-man deadline that silences both.

/// Value of `DEADMAN` (index 0): the dead-man deadline, CLOCK_MONOTONIC ns as
/// `bpf_ktime_get_ns`. After it ARP for owned VIPs is no longer answered. The daemon pushes it
/// forward while it runs (with Raft, from the election's thread at every lease extension),
/// so a hung, stopped or cut-off daemon goes silent even though its map entries still say
/// "owned". 0: off. A slot of its own, not a field of `CONFIG`: its writers then never
/// read-modify-write each other's fields.
pub type Deadline = u64;

/// Key of `VIPS` and `VIP_STATS`: an IPv4 VIP in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr_be: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 4);

/// Key of `VIPS6` and `VIP6_STATS`: an IPv6 VIP in network byte order. Its value is the same
/// `VipValue` as an IPv4 VIP's: the owner flag and the link mean the same for NDP as for ARP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Vip6Key {
    pub addr_be: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Vip6Key>() == 16);

/// `VipValue::flags`: this node owns the VIP and answers for it. A VIP present without this
/// flag is known to the cluster but held elsewhere: ARP (NS for an IPv6 VIP) for it is dropped
/// so the kernel can never answer for an address bound on a local device.
pub const VIP_F_OWNED: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipValue {
    pub flags: u32,
    /// Interface the VIP is advertised on; 0 means every interface the program runs on.
    pub ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<VipValue>() == 8);

/// Value of `IFACES`, keyed by ifindex (u32): what the program needs to answer on that link.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceValue {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<IfaceValue>() == 8);
