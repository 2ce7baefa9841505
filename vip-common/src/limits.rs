//! Sizes of the maps and the rules that derive them from the daemon's settings
//! (`map_max_entries`, `conntrack_flows`, the CPU count), and the object's globals the loader
//! sets to match.

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
/// Sets per CPU of the IPv6 conntrack table (`CT6`) in the object. A set is 104 bytes
/// (`Ct6Set`) against 56 for IPv4, so the object's default table holds a quarter of the
/// IPv4 default's flows for about half its memory; a loader sizes it and sets
/// `globals::CT6_SET_MASK` to match, as for `CONNTRACK`.
pub const CT6_SETS: u32 = 1 << 15;
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
    /// `sets per CPU - 1` of `CT6` (u32).
    pub const CT6_SET_MASK: &str = "CT6_SET_MASK";
}
pub const REVNAT_ENTRIES: u32 = 262_144;
/// Entries of `REVNAT6`: an eighth of `REVNAT`'s, as the IPv6 flow table has an eighth of
/// the IPv4 one's sets (an entry is 40 + 20 bytes, not 16 + 8; the daemon's map budget,
/// `dataplane::memory`, holds 10,000 services on 64 CPUs within 256 MiB with it).
pub const REVNAT6_ENTRIES: u32 = REVNAT_ENTRIES / 8;

/// Words of the VIP prefilter (`VIP_FILTER`): a 65536-bit bitmap over a hash of the address.
/// IPv4 traffic whose destination has no bit set cannot be for a VIP and skips every hash
/// lookup; a set bit (a VIP, or a rare collision) goes on to the exact lookups.
pub const VIP_FILTER_WORDS: u32 = 1024;
