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
    pub const CONFIG: &str = "CONFIG";
    pub const SERVICES: &str = "SERVICES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const RINGS: &str = "RINGS";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const REVNAT: &str = "REVNAT";
    pub const SVC_STATS: &str = "SVC_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const BENCH_FRAME: &str = "BENCH_FRAME";
    pub const VIP_FILTER: &str = "VIP_FILTER";
    pub const NEXTHOP: &str = "NEXTHOP";
    pub const DEADMAN: &str = "DEADMAN";
}

/// File names under the pin directory (`/sys/fs/bpf/vip/`), lower case for operators.
pub mod pin_names {
    pub const VIPS: &str = "vips";
    pub const IFACES: &str = "ifaces";
    pub const STATS: &str = "stats";
    pub const VIP_STATS: &str = "vip_stats";
    pub const CONFIG: &str = "config";
    pub const SERVICES: &str = "services";
    pub const BACKENDS: &str = "backends";
    pub const RINGS: &str = "rings";
    pub const CONNTRACK: &str = "conntrack";
    pub const REVNAT: &str = "revnat";
    pub const SVC_STATS: &str = "svc_stats";
    pub const BACKEND_STATS: &str = "backend_stats";
    pub const VIP_FILTER: &str = "vip_filter";
    pub const NEXTHOP: &str = "nexthop";
    pub const DEADMAN: &str = "deadman";
}

/// The container image: `cargo xtask image` builds it, `vip manifest` names it, the container
/// test runs it. One name, tagged with the workspace version, so no manifest can name an
/// image the project does not build.
pub mod image {
    macro_rules! repository {
        () => {
            "ghcr.io/vip-project/vip"
        };
    }
    pub const REPOSITORY: &str = repository!();
    pub const TAG: &str = env!("CARGO_PKG_VERSION");
    /// `REPOSITORY:TAG`.
    pub const NAME: &str = concat!(repository!(), ":", env!("CARGO_PKG_VERSION"));
    /// Where the image's source lives (its `org.opencontainers.image.source` label).
    pub const SOURCE: &str = "https://github.com/vip-project/vip";
    /// The OCI archive `cargo xtask image` writes, relative to the workspace root.
    pub const ARCHIVE: &str = concat!("target/image/vip-", env!("CARGO_PKG_VERSION"), ".oci.tar");
}

/// Name of the XDP entry point in the object.
pub const XDP_PROG: &str = "vip_xdp";
/// Name of the tc egress program (reverse NAT for `nat` services).
pub const TC_EGRESS_PROG: &str = "vip_tc_egress";
/// Benchmark-only entries (never attached): restore the frame, then run vip_xdp / nothing.
pub const BENCH_PROG: &str = "vip_bench";
pub const BENCH_NOOP_PROG: &str = "vip_bench_noop";

pub const MAX_VIPS: u32 = 4096;
pub const MAX_IFACES: u32 = 64;
/// Defaults; the daemon may resize maps at load (`map_max_entries`).
pub const MAX_SERVICES: u32 = 4096;
pub const MAX_BACKENDS: u32 = 4096;
/// The largest Maglev table a service may get (`maglev_size`); tables are sized by need.
pub const RING_SIZE: u32 = 65537;
/// Slots of `RINGS`, shared by every service's pair of tables: 64 MiB (the kernel charges an
/// array 8 bytes a slot, values being rounded up to 8), as much as the 64 fixed-size services
/// of earlier versions took.
pub const RING_SLOTS: u32 = 64 * 2 * RING_SIZE;
/// Conntrack sets per CPU in the object (a power of two, two flows per set): what a loader
/// that sets no globals gets. The daemon sizes the table from `conntrack_flows` instead
/// (`ct_sets_per_cpu`) and gives the program the matching mask (`globals::CT_SET_MASK`).
pub const CT_SETS: u32 = 1 << 17;
/// Ways of a conntrack set (`CtSet::ways`).
pub const CT_WAYS: u32 = 2;
/// Default `conntrack_flows`: the capacity of the table of earlier versions on a 2-CPU node
/// (2 CPUs x `CT_SETS` sets x 2 ways).
pub const CT_FLOWS_DEFAULT: u32 = 2 * CT_SETS * CT_WAYS;
/// Fewest sets per CPU, whatever the total (so a many-CPU node still has a usable table).
pub const CT_MIN_SETS: u32 = 1 << 10;
/// Most sets per CPU (56 MiB a CPU).
pub const CT_MAX_SETS: u32 = 1 << 20;

/// Sets per CPU for a table of `flows` flows in total on `ncpus` CPUs: RSS keeps a flow on
/// one CPU, so each CPU's table holds its share. The largest power of two not above the
/// share (the total never exceeds `flows`), but at least `CT_MIN_SETS`.
pub const fn ct_sets_per_cpu(flows: u32, ncpus: u32) -> u32 {
    let ncpus = if ncpus == 0 { 1 } else { ncpus };
    let share = flows / ncpus / CT_WAYS;
    let sets = if share == 0 {
        1
    } else {
        1u32 << (31 - share.leading_zeros())
    };
    if sets < CT_MIN_SETS {
        CT_MIN_SETS
    } else if sets > CT_MAX_SETS {
        CT_MAX_SETS
    } else {
        sets
    }
}

/// Slots of `NEXTHOP`, a per-CPU direct-mapped cache by backend id (`id % NEXTHOP_SLOTS`):
/// its size does not grow with `max_backends`, and backends sharing a slot only cost a FIB
/// lookup when they alternate.
pub const NEXTHOP_SLOTS: u32 = 4096;

/// Counter stripes (`SVC_STATS`, `BACKEND_STATS`): a CPU adds to stripe `cpu % stripes`.
/// Up to this many CPUs every CPU has a stripe of its own (plain adds, as a per-CPU map);
/// beyond it CPUs share stripes and add atomically, so the maps stop growing with CPUs.
pub const STAT_STRIPES_MAX: u32 = 8;

/// Stripes for a node with `ncpus` possible CPUs: a power of two, at most
/// `STAT_STRIPES_MAX`.
pub const fn stat_stripes(ncpus: u32) -> u32 {
    let n = if ncpus <= 1 {
        1
    } else {
        ncpus.next_power_of_two()
    };
    if n > STAT_STRIPES_MAX {
        STAT_STRIPES_MAX
    } else {
        n
    }
}

/// Globals of the object (`.rodata`), set by the loader before the verifier sees the program,
/// which then treats them as constants (no per-packet cost). The defaults in the object match
/// the map sizes in the object, so a loader that sets none (tests, the bench) gets a working
/// program.
pub mod globals {
    /// `sets per CPU - 1` of `CONNTRACK` (u32).
    pub const CT_SET_MASK: &str = "CT_SET_MASK";
    /// `stripes - 1` of the counter maps (u32).
    pub const STAT_STRIPE_MASK: &str = "STAT_STRIPE_MASK";
    /// 1 when CPUs share counter stripes, so adds must be atomic (u32).
    pub const STAT_ATOMIC: &str = "STAT_ATOMIC";
    /// Entries of one stripe of `SVC_STATS` (`max_services`, u32).
    pub const SVC_STAT_ENTRIES: &str = "SVC_STAT_ENTRIES";
    /// Entries of one stripe of `BACKEND_STATS` (`max_backends`, u32).
    pub const BACKEND_STAT_ENTRIES: &str = "BACKEND_STAT_ENTRIES";
}
pub const REVNAT_ENTRIES: u32 = 262_144;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// How a service forwards (`ServiceValue::mode`).
pub const MODE_DSR: u8 = 1;
pub const MODE_NAT: u8 = 2;
pub const MODE_LOCAL: u8 = 3;

/// `BackendValue::flags`: may receive new and existing flows.
pub const BACKEND_F_ACTIVE: u32 = 1;

/// `Config::table_sizing`.
pub const TABLE_FIXED: u32 = 0;
pub const TABLE_BY_NEED: u32 = 1;

/// A ring slot with no backend (a service without endpoints).
pub const RING_EMPTY: u32 = u32::MAX;

/// Value of `DEADMAN` (index 0): the dead-man deadline, CLOCK_MONOTONIC ns as
/// `bpf_ktime_get_ns`. After it ARP for owned VIPs is no longer answered. The daemon pushes it
/// forward while it runs (with Raft, from the election's thread at every lease extension),
/// so a hung, stopped or cut-off daemon goes silent even though its map entries still say
/// "owned". 0: off. A slot of its own, not a field of `CONFIG`: its writers then never
/// read-modify-write each other's fields.
pub type Deadline = u64;

/// Global settings at index 0 of `CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The largest Maglev table a service may get (prime, `maglev_size`): each service's
    /// own size is in its `ServiceValue`. Kept here so a restarted daemon can tell whether
    /// the pinned tables were built under the same rule.
    pub ring_size: u32,
    /// Cluster-wide hash seed: the same on every node so every node picks the same backend.
    pub hash_seed: u32,
    /// Bumped by the daemon about once a second: cached next hops of an older epoch are
    /// looked up again, so neighbour and route changes reach forwarding within a second
    /// without a clock read per packet.
    pub epoch: u32,
    /// How tables are sized: `TABLE_FIXED` (every one `ring_size`) or `TABLE_BY_NEED`.
    pub table_sizing: u32,
    /// Where builds before `DEADMAN` kept the dead-man deadline. The program no longer reads
    /// it; the daemon copies it into `DEADMAN` once when it adopts such a pin directory (so
    /// an upgrade does not answer ARP that the old deadline had silenced) and writes 0.
    /// Kept so the value keeps its size and an old pinned `CONFIG` stays usable.
    pub old_deadline_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Config>() == 24);

/// Key of `SERVICES`: (VIP, port, protocol), network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr_be: [u8; 4],
    pub port_be: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index of this service: its stats slot. Backends carry it (`BackendValue::svc`), so a
    /// ring slot read after its region was given to another service is never followed.
    pub id: u32,
    /// First slot in `RINGS` of the live Maglev table.
    pub ring_off: u32,
    /// Slots of the live table (a prime); 0: no table (`local` mode, or no backends).
    pub ring_size: u32,
    pub mode: u8,
    /// Which half of the service's two-table region is live (0 or 1): userspace writes the
    /// other half and then replaces this value, which makes the new table live at once, so
    /// a packet sees the old table or the new one, never a mix.
    pub live: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 16);

impl ServiceValue {
    /// The `RINGS` slot for flow hash `h`, if the service has a table.
    #[inline(always)]
    pub fn ring_slot(&self, h: u32) -> Option<u32> {
        if self.ring_size == 0 {
            return None;
        }
        Some(self.ring_off.wrapping_add(h % self.ring_size))
    }
}

/// Value of `BACKENDS`, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
/// A backend *of one service*: ids are per (service, backend, mode), so an established flow
/// needs only its conntrack entry and this value to be forwarded (no service lookup).
pub struct BackendValue {
    pub addr_be: [u8; 4],
    pub port_be: [u8; 2],
    /// The service's forwarding mode (`MODE_*`).
    pub mode: u8,
    pub _pad: u8,
    pub flags: u32,
    /// Bumped each time the id is given to a different backend, so a conntrack entry made
    /// for the previous holder is not followed to the new one.
    pub gen: u32,
    /// The service's id (its stats slot).
    pub svc: u32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<BackendValue>() == 24);

/// A flow as the client sent it: key of `CONNTRACK`; also the key of `REVNAT` with the
/// backend as `src` and the client as `dst`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_be: [u8; 4],
    pub dst_be: [u8; 4],
    pub sport_be: [u8; 2],
    pub dport_be: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// One flow of the conntrack table: the flow and the backend (id, generation) it is pinned
/// to. `gen == 0` marks an empty way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub key: FlowKey,
    pub backend: u32,
    pub gen: u32,
}
const _: () = assert!(core::mem::size_of::<CtEntry>() == 24);

/// A conntrack set: two ways and which of them was used last. The table is a per-CPU array
/// of sets (a flow is steered to one CPU by RSS): lookup and insert are an array index and
/// two key compares instead of a hash-map walk, and eviction is exact LRU within the set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtSet {
    pub ways: [CtEntry; 2],
    /// Index of the most recently used way (the other one is replaced first).
    pub mru: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CtSet>() == 56);

/// The set a flow lives in: every field of the 5-tuple, so flows to different VIPs differ.
/// `mask` is the table's sets per CPU minus one (`globals::CT_SET_MASK`).
#[inline(always)]
pub fn ct_set_index(flow: &FlowKey, mask: u32) -> u32 {
    let h = flow_hash(
        flow.src_be,
        flow.sport_be,
        flow.dport_be,
        flow.proto,
        0x6374_7261,
    );
    mix32(h ^ u32::from_be_bytes(flow.dst_be)) & mask
}

impl FlowKey {
    /// Equality as two 8-byte words (cheaper in BPF than a bytewise compare).
    #[inline(always)]
    pub fn same(&self, o: &FlowKey) -> bool {
        let a = self.words();
        let b = o.words();
        a[0] == b[0] && a[1] == b[1]
    }

    #[inline(always)]
    fn words(&self) -> [u64; 2] {
        let mut lo = [0u8; 8];
        lo[..4].copy_from_slice(&self.src_be);
        lo[4..].copy_from_slice(&self.dst_be);
        let mut hi = [0u8; 8];
        hi[..2].copy_from_slice(&self.sport_be);
        hi[2..4].copy_from_slice(&self.dport_be);
        hi[4] = self.proto;
        [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
    }
}

/// Value of `REVNAT`: what a reply's source is rewritten back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevValue {
    pub vip_be: [u8; 4],
    pub vport_be: [u8; 2],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<RevValue>() == 8);

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

/// Words of the VIP prefilter (`VIP_FILTER`): a 65536-bit bitmap over a hash of the address.
/// IPv4 traffic whose destination has no bit set cannot be for a VIP and skips every hash
/// lookup; a set bit (a VIP, or a rare collision) goes on to the exact lookups.
pub const VIP_FILTER_WORDS: u32 = 1024;

/// (word index, bit mask) of `addr` in the VIP prefilter.
#[inline(always)]
pub fn vip_filter_slot(addr_be: [u8; 4]) -> (u32, u64) {
    let bit = mix32(u32::from_be_bytes(addr_be)) & 0xffff;
    (bit >> 6, 1u64 << (bit & 63))
}

/// Per-CPU next-hop cache entry (`NEXTHOP`, slot `backend id % NEXTHOP_SLOTS`): the last FIB
/// answer for that backend, so a forwarded packet does not pay for bpf_fib_lookup every time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// The backend id the entry was made for (slots are shared by ids).
    pub backend: u32,
    /// Generation of the backend the entry was made for (0: empty).
    pub gen: u32,
    /// `Config::epoch` when the entry was made; another epoch means ask the FIB again.
    pub epoch: u32,
    pub ifindex: u32,
    /// Largest IPv4 total length the FIB accepted (its MTU check); longer packets ask again.
    pub ok_len: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<NextHop>() == 32);

/// murmur3's finalizer: cheap, no loops (the verifier takes it as is), good avalanche.
#[inline(always)]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^ (x >> 16)
}

/// The flow hash both the XDP program and the reference model use: source address, source
/// port, destination port, protocol and the cluster seed. Not the destination address, so
/// every node (and every VIP owner after a failover) maps a flow to the same slot.
#[inline(always)]
pub fn flow_hash(
    src_be: [u8; 4],
    sport_be: [u8; 2],
    dport_be: [u8; 2],
    proto: u8,
    seed: u32,
) -> u32 {
    let mut h = mix32(seed ^ u32::from_be_bytes(src_be));
    h = mix32(
        h ^ ((u16::from_be_bytes(sport_be) as u32) << 16 | u16::from_be_bytes(dport_be) as u32),
    );
    mix32(h ^ proto as u32)
}

/// RFC 1624 incremental update of a ones'-complement checksum (`csum`, as stored in the
/// header) when a 16-bit word changes from `old` to `new`.
#[inline(always)]
pub fn csum_replace2(csum: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m')
    let mut sum = (!csum as u32) + (!old as u32 & 0xffff) + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Same for a 32-bit field (an IPv4 address), as two 16-bit words.
#[inline(always)]
pub fn csum_replace4(csum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let c = csum_replace2(
        csum,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    csum_replace2(
        c,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

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
    /// Service packets with IPv4 options or a VLAN tag: passed to the stack.
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
}
const _: () = assert!(core::mem::size_of::<Stats>() == 22 * 8);

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
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for BackendValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for CtSet {}
    unsafe impl aya::Pod for RevValue {}
    unsafe impl aya::Pod for LbStats {}
    unsafe impl aya::Pod for NextHop {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full ones'-complement sum over 16-bit words, for checking the incremental form.
    fn full(words: &[u16]) -> u16 {
        let mut s: u32 = words.iter().map(|&w| w as u32).sum();
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn incremental_checksum_matches_recomputation() {
        let mut words = [
            0x4500u16, 0x0054, 0x1c46, 0x4000, 0x4006, 0, 0xc000, 0x0264, 0xc000, 0x0215,
        ];
        let before = full(&words);
        let old = [0xc0, 0x00, 0x02, 0x15];
        let new = [0xc6, 0x33, 0x64, 0x16];
        words[8] = 0xc633;
        words[9] = 0x6416;
        assert_eq!(csum_replace4(before, old, new), full(&words));
        let mut w2 = words;
        let c = full(&w2);
        w2[3] = 0xffff;
        assert_eq!(csum_replace2(c, 0x4000, 0xffff), full(&w2));
    }

    #[test]
    fn conntrack_sets_keep_the_total_and_a_floor() {
        // The default keeps the table of earlier versions on 2 CPUs (2^17 sets each).
        assert_eq!(ct_sets_per_cpu(CT_FLOWS_DEFAULT, 2), CT_SETS);
        assert_eq!(ct_sets_per_cpu(CT_FLOWS_DEFAULT, 1), 2 * CT_SETS);
        // 64 CPUs: each CPU holds its 1/64 share; the total stays the same.
        let s = ct_sets_per_cpu(CT_FLOWS_DEFAULT, 64);
        assert_eq!(s, 1 << 12);
        assert_eq!(s * CT_WAYS * 64, CT_FLOWS_DEFAULT);
        // Not a power of two: rounded down, never above the total.
        let s = ct_sets_per_cpu(CT_FLOWS_DEFAULT, 3);
        assert_eq!(s, 1 << 16);
        assert!(s * CT_WAYS * 3 <= CT_FLOWS_DEFAULT);
        // The floor and the ceiling.
        assert_eq!(ct_sets_per_cpu(1000, 64), CT_MIN_SETS);
        assert_eq!(ct_sets_per_cpu(u32::MAX, 1), CT_MAX_SETS);
        assert_eq!(ct_sets_per_cpu(CT_FLOWS_DEFAULT, 0), 2 * CT_SETS);
        for n in 1..=256 {
            assert!(ct_sets_per_cpu(12_345_678, n).is_power_of_two());
        }
    }

    #[test]
    fn set_index_stays_under_the_mask() {
        let mut f = FlowKey {
            src_be: [10, 0, 0, 1],
            dst_be: [192, 0, 2, 1],
            sport_be: [0, 0],
            dport_be: [0, 80],
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let mut seen = [false; 16];
        for p in 0..4096u16 {
            f.sport_be = p.to_be_bytes();
            let i = ct_set_index(&f, 15);
            assert!(i < 16);
            seen[i as usize] = true;
            // A smaller table is the larger one's index, masked.
            assert_eq!(ct_set_index(&f, CT_SETS - 1) & 15, i);
        }
        assert!(seen.iter().all(|s| *s), "every set used");
    }

    #[test]
    fn stripes_are_per_cpu_up_to_the_cap() {
        assert_eq!(stat_stripes(0), 1);
        assert_eq!(stat_stripes(1), 1);
        assert_eq!(stat_stripes(2), 2);
        assert_eq!(stat_stripes(3), 4);
        assert_eq!(stat_stripes(8), 8);
        assert_eq!(stat_stripes(64), STAT_STRIPES_MAX);
    }

    #[test]
    fn flow_hash_ignores_destination_and_uses_seed() {
        let a = flow_hash([192, 0, 2, 10], [0x30, 0x39], [0, 80], 6, 1);
        assert_eq!(a, flow_hash([192, 0, 2, 10], [0x30, 0x39], [0, 80], 6, 1));
        assert_ne!(a, flow_hash([192, 0, 2, 10], [0x30, 0x39], [0, 80], 6, 2));
        assert_ne!(a, flow_hash([192, 0, 2, 10], [0x30, 0x3a], [0, 80], 6, 1));
    }
}
