//! The ABI shared by the XDP program and the daemon: map keys and values, map names and
//! pin names. Every type is `#[repr(C)]`, has no implicit padding and carries a size assert so
//! both sides (and `bpftool map dump`) agree on the layout.
#![no_std]

/// Symbol names of the maps in the eBPF object (what aya looks them up by).
pub mod map_names {
    pub const VIPS: &str = "VIPS";
    pub const IFACES: &str = "IFACES";
    pub const STATS: &str = "STATS";
    pub const VIP_STATS: &str = "VIP_STATS";
}

/// File names under the pin directory (`/sys/fs/bpf/vip/`), lower case for operators.
pub mod pin_names {
    pub const VIPS: &str = "vips";
    pub const IFACES: &str = "ifaces";
    pub const STATS: &str = "stats";
    pub const VIP_STATS: &str = "vip_stats";
}

/// Name of the XDP entry point in the object.
pub const XDP_PROG: &str = "vip_xdp";

pub const MAX_VIPS: u32 = 4096;
pub const MAX_IFACES: u32 = 64;

/// Key of `VIPS` and `VIP_STATS`: an IPv4 VIP in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr_be: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 4);

/// `VipValue::flags`: this node owns the VIP and answers for it. A VIP present without this
/// flag is known to the cluster but held elsewhere: ARP for it is dropped so the kernel can
/// never answer for an address bound on a local device.
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

/// Per-CPU verdict counters: one entry at index 0 of `STATS`. Named fields so that
/// `bpftool map dump pinned /sys/fs/bpf/vip/stats` is readable as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every frame the program saw.
    pub rx: u64,
    /// Frames handed to the kernel untouched.
    pub pass: u64,
    /// Frames dropped (ARP for a VIP held elsewhere).
    pub drop: u64,
    /// Frames sent back out of the interface (ARP replies).
    pub tx: u64,
    /// ARP requests for an owned VIP answered from XDP.
    pub arp_reply: u64,
    /// ARP requests for a VIP this node does not own, dropped.
    pub arp_drop_not_owner: u64,
    /// ARP requests for an owned VIP on an interface with no MAC configured: passed.
    pub arp_no_iface: u64,
    /// ARP frames that are not Ethernet/IPv4 or are truncated: passed.
    pub arp_malformed: u64,
    /// IPv4 packets addressed to a known VIP: passed to the stack.
    pub ipv4_to_vip: u64,
    /// Frames too short to parse (Ethernet or VLAN header): passed.
    pub truncated: u64,
}
const _: () = assert!(core::mem::size_of::<Stats>() == 10 * 8);

impl Stats {
    /// Sum over CPUs, for the daemon's metrics.
    pub fn add(&mut self, o: &Stats) {
        self.rx += o.rx;
        self.pass += o.pass;
        self.drop += o.drop;
        self.tx += o.tx;
        self.arp_reply += o.arp_reply;
        self.arp_drop_not_owner += o.arp_drop_not_owner;
        self.arp_no_iface += o.arp_no_iface;
        self.arp_malformed += o.arp_malformed;
        self.ipv4_to_vip += o.ipv4_to_vip;
        self.truncated += o.truncated;
    }
}

/// Per-CPU, per-VIP counters (`VIP_STATS`), created by the daemon with the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipStats {
    pub arp_reply: u64,
    pub arp_drop: u64,
    pub ipv4_pkts: u64,
}
const _: () = assert!(core::mem::size_of::<VipStats>() == 3 * 8);

impl VipStats {
    pub fn add(&mut self, o: &VipStats) {
        self.arp_reply += o.arp_reply;
        self.arp_drop += o.arp_drop;
        self.ipv4_pkts += o.ipv4_pkts;
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), Copy, made only of integers and byte arrays, with no
    // implicit padding (asserted above), so any bit pattern is valid.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipValue {}
    unsafe impl aya::Pod for IfaceValue {}
    unsafe impl aya::Pod for Stats {}
    unsafe impl aya::Pod for VipStats {}
}
