//! The shape of every map the object creates, from the settings and the CPU count: one
//! table that the loader sizes maps from, checks kept pins against, and computes memory
//! from (`map_memory`, what the kernel charges), and that the daemon's
//! `vip_bpf_map_bytes` metric reads back from the kernel (`pinned_bytes`).
use std::path::Path;

use aya::maps::{MapData, MapType};
use vip_common::{
    map_names, pin_names, Backend6Value, BackendValue, Config, Ct6Set, CtSet, Flow6Key, FlowKey,
    IfaceValue, LbStats, NextHop, Rev6Value, RevValue, Service6Key, ServiceKey, ServiceValue,
    Stats, Vip6Key, Vip6Stats, VipKey, VipStats, VipValue, MAX_IFACES, NEXTHOP_SLOTS,
    REVNAT6_ENTRIES, REVNAT_ENTRIES, VIP_FILTER_WORDS,
};

use super::load::{Sizes, LOG_MAP};

/// What the program is given through its globals (`vip_common::globals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Globals {
    /// The CPU count these are for.
    pub ncpus: u32,
    pub ct_sets: u32,
    pub ct_set_mask: u32,
    /// The IPv6 flow table's sets per CPU: an eighth of the IPv4 table's (a set is 104
    /// bytes, not 56; IPv6 is the second family of a dual-stack cluster), at least one.
    pub ct6_sets: u32,
    pub ct6_set_mask: u32,
    pub stat_stripes: u32,
    pub stat_stripe_mask: u32,
    /// 1 when CPUs share counter stripes.
    pub stat_atomic: u32,
    pub svc_stat_entries: u32,
    pub backend_stat_entries: u32,
}

impl Globals {
    pub fn new(sizes: &Sizes, ncpus: u32) -> Globals {
        let ct_sets = vip_common::ct_sets_per_cpu(sizes.conntrack_flows, ncpus);
        let ct6_sets = (ct_sets / 8).max(1);
        let stat_stripes = vip_common::stat_stripes(ncpus);
        Globals {
            ncpus,
            ct_sets,
            ct_set_mask: ct_sets - 1,
            ct6_sets,
            ct6_set_mask: ct6_sets - 1,
            stat_stripes,
            stat_stripe_mask: stat_stripes - 1,
            stat_atomic: (ncpus > stat_stripes) as u32,
            svc_stat_entries: sizes.max_services,
            backend_stat_entries: sizes.max_backends,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Array,
    /// An array userspace maps into its memory (`BPF_F_MMAPABLE`): the Maglev tables,
    /// written with plain stores instead of one syscall element after element.
    MmapArray,
    PerCpuArray,
    Hash,
    PerCpuHash,
    LruHash,
    RingBuf,
}

impl Kind {
    fn map_type(self) -> MapType {
        match self {
            Kind::Array | Kind::MmapArray => MapType::Array,
            Kind::PerCpuArray => MapType::PerCpuArray,
            Kind::Hash => MapType::Hash,
            Kind::PerCpuHash => MapType::PerCpuHash,
            Kind::LruHash => MapType::LruHash,
            Kind::RingBuf => MapType::RingBuf,
        }
    }
}

/// One map as this build and these settings create it.
#[derive(Debug, Clone, Copy)]
pub struct MapShape {
    /// Symbol in the object.
    pub sym: &'static str,
    /// File under the pin dir (None: not pinned).
    pub pin: Option<&'static str>,
    pub kind: Kind,
    pub key: u32,
    pub value: u32,
    pub entries: u32,
    /// Whether the loader sets its entries (else the object's own size).
    pub sized: bool,
    /// What replacing a kept pin of another shape costs (logged when it happens).
    pub on_replace: &'static str,
}

impl MapShape {
    /// Why the pinned map `m` cannot be reused as this map (None: it can).
    pub fn mismatch(&self, m: &MapData) -> Option<String> {
        let info = match m.info() {
            Ok(i) => i,
            Err(e) => return Some(format!("its info is unreadable ({})", crate::Chain(&e))),
        };
        let have = (
            info.map_type().ok(),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags() & BPF_F_MMAPABLE != 0,
        );
        let want = (
            Some(self.kind.map_type()),
            self.key,
            self.value,
            self.entries,
            self.kind == Kind::MmapArray,
        );
        (have != want).then(|| {
            format!(
                "pinned {:?} key {} B value {} B {} entries mmapable {}, want {:?} key {} B value {} B {} entries mmapable {}",
                have.0, have.1, have.2, have.3, have.4, want.0, want.1, want.2, want.3, want.4
            )
        })
    }

    /// Bytes the kernel charges for this map on `ncpus` possible CPUs (its
    /// `map_mem_usage`, as `/proc/<pid>/fdinfo` reports it as `memlock`), for x86-64 Linux
    /// 6.x without lock debugging: exact there, checked by a kernel test.
    pub fn bytes(&self, ncpus: u32) -> u64 {
        let n = ncpus.max(1) as u64;
        let entries = self.entries as u64;
        let value = round8(self.value);
        let key = round8(self.key);
        match self.kind {
            Kind::Array => ARRAY_HDR + entries * value,
            // The header and the values each take whole pages (array_map_mem_usage).
            Kind::MmapArray => page_align(ARRAY_HDR) + page_align(entries * value),
            Kind::PerCpuArray => ARRAY_HDR + entries * 8 + entries * value * n,
            Kind::Hash | Kind::PerCpuHash | Kind::LruHash => {
                let buckets = entries.next_power_of_two();
                let mut b = HTAB_HDR + BUCKET * buckets + 4 * n * HTAB_LOCKS;
                match self.kind {
                    // Preallocated, with one spare element per CPU and a per-CPU pointer.
                    Kind::Hash => b += (HTAB_ELEM + key + value) * (entries + n) + 8 * n,
                    Kind::PerCpuHash => b += (HTAB_ELEM + key + 8) * entries + value * n * entries,
                    _ => b += (HTAB_ELEM + key + value) * entries,
                }
                b
            }
            Kind::RingBuf => {
                let data = entries / PAGE;
                RINGBUF_HDR
                    + (RINGBUF_META_PAGES + data) * PAGE
                    + (RINGBUF_META_PAGES + 2 * data) * 8
            }
        }
    }
}

fn round8(x: u32) -> u64 {
    (x as u64).div_ceil(8) * 8
}

const PAGE: u64 = 4096;

/// `BPF_F_MMAPABLE` (include/uapi/linux/bpf.h).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

fn page_align(b: u64) -> u64 {
    b.div_ceil(PAGE) * PAGE
}
/// `sizeof(struct bpf_array)` (measured: a 1-entry u64 array is charged 320 B).
const ARRAY_HDR: u64 = 312;
/// `sizeof(struct bpf_htab)` (measured).
const HTAB_HDR: u64 = 832;
/// `sizeof(struct bucket)`.
const BUCKET: u64 = 16;
/// `sizeof(struct htab_elem)` before the key.
const HTAB_ELEM: u64 = 48;
/// `HASHTAB_MAP_LOCK_COUNT` ints per CPU.
const HTAB_LOCKS: u64 = 8;
/// `sizeof(struct bpf_ringbuf_map)` (measured).
const RINGBUF_HDR: u64 = 304;
/// `RINGBUF_NR_META_PAGES`.
const RINGBUF_META_PAGES: u64 = 3;

fn size<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// Every map of the object that the daemon sizes or pins, as these settings make it.
pub fn shapes(s: &Sizes, ncpus: u32) -> Vec<MapShape> {
    let g = Globals::new(s, ncpus);
    let shape = |sym, pin, kind, key, value, entries, sized, on_replace| MapShape {
        sym,
        pin: Some(pin),
        kind,
        key,
        value,
        entries,
        sized,
        on_replace,
    };
    use Kind::*;
    vec![
        shape(map_names::VIPS, pin_names::VIPS, Hash, size::<VipKey>(), size::<VipValue>(), s.max_vips, true,
            "VIP entries are written again at start; until then none is answered"),
        shape(map_names::IFACES, pin_names::IFACES, Hash, 4, size::<IfaceValue>(), MAX_IFACES, false,
            "interfaces are written again at start"),
        shape(map_names::STATS, pin_names::STATS, PerCpuArray, 4, size::<Stats>(), 1, false,
            "global counters restart from zero"),
        shape(map_names::VIP_STATS, pin_names::VIP_STATS, Hash, size::<VipKey>(), size::<VipStats>(), s.max_vips, true,
            "per-VIP counters restart from zero"),
        shape(map_names::VIPS6, pin_names::VIPS6, Hash, size::<Vip6Key>(), size::<VipValue>(), s.max_vips, true,
            "IPv6 VIP entries are written again at start; until then no NS is answered"),
        shape(map_names::VIP6_STATS, pin_names::VIP6_STATS, Hash, size::<Vip6Key>(), size::<Vip6Stats>(), s.max_vips, true,
            "per-IPv6-VIP counters restart from zero"),
        shape(map_names::CONFIG, pin_names::CONFIG, Array, 4, size::<Config>(), 1, false,
            "the global config is written again"),
        shape(map_names::DEADMAN, pin_names::DEADMAN, Array, 4, size::<vip_common::Deadline>(), 1, false,
            "the dead-man deadline restarts off until the first check-in"),
        shape(map_names::SERVICES, pin_names::SERVICES, Hash, size::<ServiceKey>(), size::<ServiceValue>(), s.max_services, true,
            "services are written again at start; established flows keep their backends"),
        shape(map_names::BACKENDS, pin_names::BACKENDS, Array, 4, size::<BackendValue>(), s.max_backends, true,
            "backend ids start afresh and the flow table goes with them: established flows are placed by Maglev again"),
        shape(map_names::SERVICES6, pin_names::SERVICES6, Hash, size::<Service6Key>(), size::<ServiceValue>(), s.max_services, true,
            "IPv6 services are written again at start; established flows keep their backends"),
        shape(map_names::BACKENDS6, pin_names::BACKENDS6, Array, 4, size::<Backend6Value>(), s.max_backends, true,
            "backend ids start afresh and the flow tables go with them: established flows are placed by Maglev again"),
        shape(map_names::CT6, pin_names::CT6, PerCpuArray, 4, size::<Ct6Set>(), g.ct6_sets, true,
            "established IPv6 flows are placed by Maglev again: the same backend unless the service's backends changed since the flow began"),
        shape(map_names::REVNAT6, pin_names::REVNAT6, LruHash, size::<Flow6Key>(), size::<Rev6Value>(), REVNAT6_ENTRIES, false,
            "replies of established IPv6 nat flows are no longer rewritten to the VIP: those connections break"),
        shape(map_names::RINGS, pin_names::RINGS, MmapArray, 4, 4, s.ring_slots, true,
            "Maglev tables are written again at start; established flows keep their backends"),
        shape(map_names::CONNTRACK, pin_names::CONNTRACK, PerCpuArray, 4, size::<CtSet>(), g.ct_sets, true,
            "established flows are placed by Maglev again: the same backend unless the service's backends changed since the flow began"),
        shape(map_names::REVNAT, pin_names::REVNAT, LruHash, size::<FlowKey>(), size::<RevValue>(), REVNAT_ENTRIES, false,
            "replies of established nat flows are no longer rewritten to the VIP: those connections break"),
        shape(map_names::SVC_STATS, pin_names::SVC_STATS, Array, 4, size::<LbStats>(), s.max_services * g.stat_stripes, true,
            "per-service counters restart from zero"),
        shape(map_names::BACKEND_STATS, pin_names::BACKEND_STATS, Array, 4, size::<LbStats>(), s.max_backends * g.stat_stripes, true,
            "per-backend counters restart from zero"),
        shape(map_names::VIP_FILTER, pin_names::VIP_FILTER, Array, 4, 8, VIP_FILTER_WORDS, false,
            "the VIP prefilter is rebuilt from the VIPs at start"),
        shape(map_names::NEXTHOP, pin_names::NEXTHOP, PerCpuArray, 4, size::<NextHop>(), NEXTHOP_SLOTS, false,
            "a cache: next hops are looked up in the FIB again"),
        shape(LOG_MAP.0, LOG_MAP.1, RingBuf, 0, 0, 1 << 17, false,
            "log records the old program had not delivered are lost"),
        MapShape {
            sym: map_names::BENCH_FRAME,
            pin: None,
            kind: Array,
            key: 4,
            value: 64,
            entries: 1,
            sized: false,
            on_replace: "",
        },
    ]
}

/// Bytes per map that the kernel charges for the maps these settings create on a node with
/// `ncpus` possible CPUs (the object's small `.rodata` / `.bss` maps aside).
pub fn map_memory(s: &Sizes, ncpus: u32) -> Vec<(&'static str, u64)> {
    shapes(s, ncpus)
        .iter()
        .map(|m| (m.sym, m.bytes(ncpus)))
        .collect()
}

/// `memlock` of the map behind `fd` as the kernel reports it in this process's fdinfo.
pub fn fd_memlock(fd: i32) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The kernel's charge for each map pinned under `pin_dir`, by map symbol (maps not pinned
/// or not readable left out).
pub fn pinned_bytes(pin_dir: &Path) -> Vec<(&'static str, u64)> {
    use std::os::fd::{AsFd, AsRawFd};
    shapes(&Sizes::default(), 1)
        .iter()
        .filter_map(|m| {
            let data = MapData::from_pin(pin_dir.join(m.pin?)).ok()?;
            let bytes = fd_memlock(data.fd().as_fd().as_raw_fd())?;
            Some((m.sym, bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(s: &Sizes, n: u32) -> u64 {
        map_memory(s, n).iter().map(|(_, b)| b).sum()
    }

    #[test]
    fn formulas_match_the_kernel_charges_measured() {
        // Charges read from `bpftool map show` on Linux 6.18 x86-64, 2 possible CPUs.
        let m = |kind, key, value, entries| MapShape {
            sym: "t",
            pin: None,
            kind,
            key,
            value,
            entries,
            sized: false,
            on_replace: "",
        };
        assert_eq!(m(Kind::Array, 4, 8, 1).bytes(2), 320);
        assert_eq!(m(Kind::Array, 4, 8, 1000).bytes(2), 8312);
        assert_eq!(m(Kind::PerCpuArray, 4, 8, 1).bytes(2), 336);
        assert_eq!(m(Kind::PerCpuArray, 4, 56, 1000).bytes(2), 120_312);
        assert_eq!(m(Kind::Hash, 4, 8, 1).bytes(2), 1120);
        assert_eq!(m(Kind::Hash, 8, 16, 1000).bytes(2), 89_440);
        assert_eq!(m(Kind::LruHash, 16, 8, 1000).bytes(2), 89_280);
        assert_eq!(m(Kind::PerCpuHash, 4, 40, 1000).bytes(2), 161_280);
    }

    /// 10,000 `dsr` services of 10 endpoints (the scale bench's settings: room for 100
    /// more services, `by-need` tables of 1,021 slots; one VIP and 10 backend ids each):
    /// the IPv4 maps within 256 MiB on 2 and on 64 CPUs, the IPv6 ones within 20 MiB more. Prints the table docs/configuration.md's sizing shows
    /// (`cargo test -p vip-userspace --lib memory -- --nocapture`).
    #[test]
    fn ten_thousand_services_fit_on_64_cpus() {
        let s = Sizes {
            max_services: 10_240,
            max_backends: 131_072,
            max_vips: 16_384,
            ring_slots: 20 << 20,
            ..Sizes::default()
        };
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        for n in [2, 64] {
            let rows = map_memory(&s, n);
            let t: u64 = rows.iter().map(|(_, b)| b).sum();
            let list: Vec<String> = rows
                .iter()
                .map(|(m, b)| format!("{m} {:.2}", mib(*b)))
                .collect();
            println!("{n} CPUs: {:.1} MiB: {}", mib(t), list.join(", "));
            // The IPv6 maps (the second family's VIPs, services, backends and flows, at an
            // eighth of the IPv4 flow tables) come on top of the IPv4 budget.
            let v6: u64 = rows
                .iter()
                .filter(|(m, _)| m.contains('6'))
                .map(|(_, b)| b)
                .sum();
            assert!(t - v6 <= 256 << 20, "{n} CPUs: IPv4 {:.1} MiB", mib(t - v6));
            assert!(v6 <= 20 << 20, "{n} CPUs: IPv6 {:.1} MiB", mib(v6));
        }
        // The defaults grow by less than 10 MiB from 2 to 64 CPUs (was ~470 MiB).
        let d = Sizes::default();
        assert!(total(&d, 64) - total(&d, 2) < 10 << 20);
        for n in [2, 64] {
            println!("defaults, {n} CPUs: {:.1} MiB", mib(total(&d, n)));
        }
    }

    #[test]
    fn globals_follow_the_cpus() {
        let s = Sizes::default();
        let g = Globals::new(&s, 2);
        assert_eq!((g.ct_sets, g.stat_stripes, g.stat_atomic), (1 << 17, 2, 0));
        let g = Globals::new(&s, 64);
        assert_eq!((g.ct_sets, g.stat_stripes, g.stat_atomic), (1 << 12, 8, 1));
        assert_eq!(g.ct_set_mask, (1 << 12) - 1);
    }
}
