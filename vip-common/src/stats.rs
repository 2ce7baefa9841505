//! Counters: the program's verdicts (`STATS`), per VIP (`VIP_STATS`), per service and
//! backend (`SVC_STATS`, `BACKEND_STATS`). A field added to `Stats` also needs its row in
//! vip-userspace's `counters` table.

/// Per-CPU counters per service (`SVC_STATS`, by service id) and per backend
/// (`BACKEND_STATS`, by backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub drops: u64,
}
const _: () = assert!(core::mem::size_of::<LbStats>() == 32);

impl LbStats {
    pub fn add(&mut self, o: &LbStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_flows += o.new_flows;
        self.drops += o.drops;
    }
}

/// Per-CPU verdict counters: one entry at index 0 of `STATS`. Named fields so that
/// `bpftool map dump pinned /sys/fs/bpf/vip/stats` is readable as it is. A field added here
/// also needs its row in vip-userspace's `counters` table (its tests fail until it has one).
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
    /// IPv4 packets addressed to a VIP that no service took: passed to the stack.
    pub ipv4_to_vip: u64,
    /// Frames too short to parse (Ethernet or VLAN header): passed.
    pub truncated: u64,
    /// Packets of a service forwarded to a backend (XDP_TX or redirect).
    pub lb_forward: u64,
    /// Packets of a `local` service handed to this node's stack.
    pub lb_local: u64,
    /// Flows found in conntrack.
    pub ct_hit: u64,
    /// Flows placed by Maglev (new, SYN, or their backend went away).
    pub ct_new: u64,
    /// Packets of a service with no backend: dropped.
    pub lb_no_backend: u64,
    /// TCP/UDP fragments to a VIP: passed to the stack (most carry no ports to hash on).
    pub lb_fragment: u64,
    /// Service packets with IPv4 options or a VLAN tag (either family): passed to the stack.
    pub lb_ip_options: u64,
    /// Next hop not resolved: `nat` passes to the stack, `dsr` drops (see docs/forwarding.md).
    pub fib_no_neigh: u64,
    /// Other FIB failures (no route, forwarding disabled): dropped.
    pub fib_fail: u64,
    /// ICMP errors about a service flow, sent to that flow's backend.
    pub icmp_to_backend: u64,
    /// ARP requests for an owned VIP not answered: the daemon's dead-man deadline passed.
    pub arp_deadman: u64,
    /// ARP frames claiming an owned VIP from another MAC (reply, gratuitous, or request sent
    /// from the VIP): another node answers for our address. Passed.
    pub arp_conflict: u64,
    /// Neighbor Solicitations for an owned IPv6 VIP answered from XDP with an advertisement
    /// (DAD probes defended included).
    pub ndp_reply: u64,
    /// Neighbor Solicitations for an IPv6 VIP held elsewhere, dropped.
    pub ndp_drop_not_owner: u64,
    /// NS/NA frames that fail RFC 4861's checks (hop limit, code, length, options, checksum),
    /// are truncated, or carry more options than the program reads: passed, never answered.
    pub ndp_malformed: u64,
    /// NS for an owned IPv6 VIP not answered: the daemon's dead-man deadline passed.
    pub ndp_deadman: u64,
    /// NA from another MAC whose target is an owned IPv6 VIP, or NS sent from one: another
    /// node claims our address. Passed.
    pub ndp_conflict: u64,
    /// DAD probes (NS from ::) for an owned IPv6 VIP, answered to all-nodes (also in
    /// `ndp_reply`): someone tried to take the address.
    pub ndp_dad_defended: u64,
    /// NS for an owned IPv6 VIP on an interface with no MAC configured: passed.
    pub ndp_no_iface: u64,
    /// IPv6 packets addressed to a VIP (`VIPS6`) that no service took: passed to the stack.
    pub ipv6_to_vip: u64,
    /// IPv6 packets to a VIP whose next header is an extension header (hop-by-hop, routing,
    /// fragment, destination options, AH, ESP, …): passed to the stack, which parses them.
    pub lb6_ext_header: u64,
    /// ICMPv6 Packet Too Big about a `dsr` service's IPv6 flow, sent to that flow's backend.
    pub icmp6_to_backend: u64,
}
const _: () = assert!(core::mem::size_of::<Stats>() == 32 * 8);

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
        self.lb_forward += o.lb_forward;
        self.lb_local += o.lb_local;
        self.ct_hit += o.ct_hit;
        self.ct_new += o.ct_new;
        self.lb_no_backend += o.lb_no_backend;
        self.lb_fragment += o.lb_fragment;
        self.lb_ip_options += o.lb_ip_options;
        self.fib_no_neigh += o.fib_no_neigh;
        self.fib_fail += o.fib_fail;
        self.icmp_to_backend += o.icmp_to_backend;
        self.arp_deadman += o.arp_deadman;
        self.arp_conflict += o.arp_conflict;
        self.ndp_reply += o.ndp_reply;
        self.ndp_drop_not_owner += o.ndp_drop_not_owner;
        self.ndp_malformed += o.ndp_malformed;
        self.ndp_deadman += o.ndp_deadman;
        self.ndp_conflict += o.ndp_conflict;
        self.ndp_dad_defended += o.ndp_dad_defended;
        self.ndp_no_iface += o.ndp_no_iface;
        self.ipv6_to_vip += o.ipv6_to_vip;
        self.lb6_ext_header += o.lb6_ext_header;
        self.icmp6_to_backend += o.icmp6_to_backend;
    }
}

/// Per-CPU, per-VIP counters (`VIP_STATS`), created by the daemon with the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipStats {
    pub arp_reply: u64,
    pub arp_drop: u64,
    pub ipv4_pkts: u64,
    /// Foreign claims on this VIP while we own it (see `Stats::arp_conflict`).
    pub arp_conflict: u64,
    /// The sender MAC of the latest foreign claim (on this CPU).
    pub conflict_mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<VipStats>() == 5 * 8);

impl VipStats {
    pub fn add(&mut self, o: &VipStats) {
        self.arp_reply += o.arp_reply;
        self.arp_drop += o.arp_drop;
        self.ipv4_pkts += o.ipv4_pkts;
        self.arp_conflict += o.arp_conflict;
        if o.conflict_mac != [0; 6] {
            self.conflict_mac = o.conflict_mac;
        }
    }
}

/// Shared per-IPv6-VIP counters (`VIP6_STATS`), created by the daemon with the VIP; the NDP
/// twin of `VipStats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vip6Stats {
    /// Advertisements sent (DAD defences included).
    pub ndp_reply: u64,
    /// Solicitations dropped (held elsewhere, or silenced by the dead-man).
    pub ndp_drop: u64,
    /// Foreign claims on this VIP while we own it (see `Stats::ndp_conflict`).
    pub ndp_conflict: u64,
    /// The Ethernet source MAC of the latest foreign claim.
    pub conflict_mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Vip6Stats>() == 4 * 8);

impl Vip6Stats {
    pub fn add(&mut self, o: &Vip6Stats) {
        self.ndp_reply += o.ndp_reply;
        self.ndp_drop += o.ndp_drop;
        self.ndp_conflict += o.ndp_conflict;
        if o.conflict_mac != [0; 6] {
            self.conflict_mac = o.conflict_mac;
        }
    }
}
