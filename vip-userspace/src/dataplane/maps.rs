//! Typed access to the pinned maps.
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    Ebpf,
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};
use vip_common::{
    map_names, pin_names, vip6_filter_slot, vip_filter_slot, Config, Deadline, IfaceValue, Stats,
    Vip6Key, Vip6Stats, VipKey, VipStats, VipValue, VIP_F_OWNED,
};

use super::DataplaneError;

pub struct Maps {
    pub vips: HashMap<MapData, VipKey, VipValue>,
    /// Prefilter bitmap: a bit for every VIP of either family (`vip_filter_slot`,
    /// `vip6_filter_slot`), so non-VIP traffic skips the hash lookups.
    /// Bits are only ever set while running (a stale bit costs a lookup, never a wrong
    /// answer) and rebuilt from `vips` at start.
    pub filter: Array<MapData, u64>,
    filter_shadow: Vec<u64>,
    pub ifaces: HashMap<MapData, u32, IfaceValue>,
    pub vip_stats: HashMap<MapData, VipKey, VipStats>,
    /// IPv6 VIPs (the NDP responder's; same value as `vips`) and their counters.
    pub vips6: HashMap<MapData, Vip6Key, VipValue>,
    pub vip6_stats: HashMap<MapData, Vip6Key, Vip6Stats>,
    /// The ARP responder's dead-man deadline.
    pub deadman: DeadMan,
}

/// The dead-man deadline (`vip_common::Deadline`, 0: off): one 8-byte slot, written whole,
/// so writers never lose each other's fields. The main loop holds one handle (through
/// [`Maps`]); with Raft the election thread opens a second one from the pin
/// ([`DeadMan::open`]) and pushes every lease extension itself.
pub struct DeadMan {
    map: Array<MapData, Deadline>,
}

impl DeadMan {
    /// A handle of its own, through the pin.
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        let m = MapData::from_pin(pin_dir.join(pin_names::DEADMAN))?;
        Ok(Self {
            map: Array::try_from(aya::maps::Map::Array(m))?,
        })
    }

    /// One map write (a syscall, no lock, no allocation).
    pub fn set(&mut self, deadline_ns: Deadline) -> Result<(), DataplaneError> {
        self.map.set(0, deadline_ns, 0)?;
        Ok(())
    }

    pub fn get(&self) -> Result<Deadline, DataplaneError> {
        Ok(self.map.get(&0, 0)?)
    }
}

impl std::fmt::Debug for DeadMan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadMan").finish_non_exhaustive()
    }
}

/// One VIP's counters: ARP for an IPv4 VIP, NDP for an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipRow {
    V4(VipStats),
    V6(Vip6Stats),
}

impl VipRow {
    /// Foreign claims counted while owned (ARP or NDP).
    pub fn claims(&self) -> u64 {
        match self {
            VipRow::V4(s) => s.arp_conflict,
            VipRow::V6(s) => s.ndp_conflict,
        }
    }

    /// The MAC of the latest foreign claim.
    pub fn claim_mac(&self) -> [u8; 6] {
        match self {
            VipRow::V4(s) => s.conflict_mac,
            VipRow::V6(s) => s.conflict_mac,
        }
    }
}

/// Read-only counters, shared with the metrics endpoint.
pub struct StatsReader {
    stats: PerCpuArray<MapData, Stats>,
    vip_stats: HashMap<MapData, VipKey, VipStats>,
    vip6_stats: HashMap<MapData, Vip6Key, Vip6Stats>,
    /// The global foreign-claim counters (ARP + NDP) at the last `claimed_rows`.
    last_conflicts: Option<u64>,
    last_no_neigh: Option<u64>,
}

pub fn key(ip: Ipv4Addr) -> VipKey {
    VipKey {
        addr_be: ip.octets(),
    }
}

pub fn key6(ip: Ipv6Addr) -> Vip6Key {
    Vip6Key {
        addr_be: ip.octets(),
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads in XDP.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))
}

impl Maps {
    /// Call before the program is attached (see `migrate_deadline`).
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps, DataplaneError> {
        let mut deadman = DeadMan {
            map: Array::try_from(take(ebpf, map_names::DEADMAN)?)?,
        };
        migrate_deadline(ebpf, &mut deadman)?;
        let mut m = Maps {
            vips: HashMap::try_from(take(ebpf, map_names::VIPS)?)?,
            filter: Array::try_from(take(ebpf, map_names::VIP_FILTER)?)?,
            filter_shadow: Vec::new(),
            ifaces: HashMap::try_from(take(ebpf, map_names::IFACES)?)?,
            vip_stats: HashMap::try_from(take(ebpf, map_names::VIP_STATS)?)?,
            vips6: HashMap::try_from(take(ebpf, map_names::VIPS6)?)?,
            vip6_stats: HashMap::try_from(take(ebpf, map_names::VIP6_STATS)?)?,
            deadman,
        };
        m.rebuild_filter()?;
        Ok(m)
    }

    /// The prefilter from scratch: exactly the bits of the VIPs in the map.
    fn rebuild_filter(&mut self) -> Result<(), DataplaneError> {
        let mut want = vec![0u64; self.filter.len() as usize];
        let v4 = self
            .vips
            .keys()
            .filter_map(Result::ok)
            .map(|k| vip_filter_slot(k.addr_be));
        let v6 = self
            .vips6
            .keys()
            .filter_map(Result::ok)
            .map(|k| vip6_filter_slot(k.addr_be));
        for (w, mask) in v4.chain(v6) {
            if let Some(x) = want.get_mut(w as usize) {
                *x |= mask;
            }
        }
        for (i, w) in want.iter().enumerate() {
            self.filter.set(i as u32, *w, 0)?;
        }
        self.filter_shadow = want;
        Ok(())
    }

    fn filter_add(&mut self, ip: IpAddr) -> Result<(), DataplaneError> {
        let (w, mask) = match ip {
            IpAddr::V4(a) => vip_filter_slot(a.octets()),
            IpAddr::V6(a) => vip6_filter_slot(a.octets()),
        };
        let Some(cur) = self.filter_shadow.get_mut(w as usize) else {
            return Ok(());
        };
        if *cur & mask == 0 {
            *cur |= mask;
            self.filter.set(w, *cur, 0)?;
        }
        Ok(())
    }

    pub fn set_iface(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), DataplaneError> {
        self.ifaces
            .insert(ifindex, IfaceValue { mac, _pad: [0; 2] }, 0)?;
        Ok(())
    }

    pub fn remove_iface(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        match self.ifaces.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Make the data plane answer for `ip` (ARP for IPv4, NDP for IPv6). Counters are
    /// created first so the very first answered packet is counted.
    pub fn own(&mut self, ip: IpAddr, ifindex: u32) -> Result<(), DataplaneError> {
        self.put(ip, ifindex, VIP_F_OWNED)
    }

    /// Serve `ip` without answering ARP/NDP for it: its traffic is balanced, requests for it
    /// are dropped (as for a VIP held elsewhere). For VIPs routed here by BGP while another
    /// node (or none) owns them on the segment.
    pub fn route(&mut self, ip: IpAddr, ifindex: u32) -> Result<(), DataplaneError> {
        self.put(ip, ifindex, 0)
    }

    fn put(&mut self, ip: IpAddr, ifindex: u32, flags: u32) -> Result<(), DataplaneError> {
        let value = VipValue { flags, ifindex };
        match ip {
            IpAddr::V4(v4) => {
                let k = key(v4);
                if self.vip_stats.get(&k, 0).is_err() {
                    self.vip_stats.insert(k, VipStats::default(), 0)?;
                }
                // The filter bit first: once the VIP answers ARP, its traffic must reach the LB.
                self.filter_add(ip)?;
                self.vips.insert(k, value, 0)?;
            }
            IpAddr::V6(v6) => {
                let k = key6(v6);
                if self.vip6_stats.get(&k, 0).is_err() {
                    self.vip6_stats.insert(k, Vip6Stats::default(), 0)?;
                }
                // As for IPv4: the bit before the entry, so the LB sees the VIP's traffic
                // from the first answered solicitation on.
                self.filter_add(ip)?;
                self.vips6.insert(k, value, 0)?;
            }
        }
        Ok(())
    }

    /// Silence the data plane for `ip` (it stops answering and the kernel never will).
    pub fn forget(&mut self, ip: IpAddr) -> Result<(), DataplaneError> {
        let results = match ip {
            IpAddr::V4(v4) => {
                let k = key(v4);
                [self.vips.remove(&k), self.vip_stats.remove(&k)]
            }
            IpAddr::V6(v6) => {
                let k = key6(v6);
                [self.vips6.remove(&k), self.vip6_stats.remove(&k)]
            }
        };
        for r in results {
            match r {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// VIPs a previous run left answering on `ifindex` (or on any uplink), both families.
    pub fn owned_on(&self, ifindex: u32) -> Vec<IpAddr> {
        let here =
            |v: &VipValue| v.flags & VIP_F_OWNED != 0 && (v.ifindex == ifindex || v.ifindex == 0);
        let v4 = self
            .vips
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| here(v))
            .map(|(k, _)| IpAddr::V4(Ipv4Addr::from(k.addr_be)));
        let v6 = self
            .vips6
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| here(v))
            .map(|(k, _)| IpAddr::V6(Ipv6Addr::from(k.addr_be)));
        v4.chain(v6).collect()
    }

    /// VIPs currently in the maps, both families (for reconciling against what a previous
    /// run left).
    pub fn vips(&self) -> Vec<IpAddr> {
        let v4 = self
            .vips
            .keys()
            .filter_map(Result::ok)
            .map(|k| IpAddr::V4(Ipv4Addr::from(k.addr_be)));
        let v6 = self
            .vips6
            .keys()
            .filter_map(Result::ok)
            .map(|k| IpAddr::V6(Ipv6Addr::from(k.addr_be)));
        v4.chain(v6).collect()
    }
}

/// A pin directory from a build before `DEADMAN` kept the deadline in `CONFIG`: carry it
/// over before the new program (which reads only `DEADMAN`) replaces the old one, or VIPs
/// the old deadline silenced (a Raft node that handed over) would be answered until the
/// first check-in. A fresh `DEADMAN` reads 0, which is also "off": only then is it seeded.
fn migrate_deadline(ebpf: &Ebpf, deadman: &mut DeadMan) -> Result<(), DataplaneError> {
    if deadman.get()? != 0 {
        return Ok(());
    }
    let Some(map) = ebpf.map(map_names::CONFIG) else {
        return Ok(());
    };
    let config: Array<&MapData, Config> = Array::try_from(map)?;
    let old = config.get(&0, 0).map_or(0, |c| c.old_deadline_ns);
    if old != 0 {
        tracing::info!("dead-man deadline carried over from an older pinned config map");
        deadman.set(old)?;
    }
    Ok(())
}

impl StatsReader {
    /// Open the counters through their pins: a handle of its own, so scrapes never wait
    /// for the reconciler.
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        let stats = MapData::from_pin(pin_dir.join(pin_names::STATS))?;
        let vip_stats = MapData::from_pin(pin_dir.join(pin_names::VIP_STATS))?;
        let vip6_stats = MapData::from_pin(pin_dir.join(pin_names::VIP6_STATS))?;
        Ok(Self {
            stats: PerCpuArray::try_from(aya::maps::Map::PerCpuArray(stats))?,
            vip_stats: HashMap::try_from(aya::maps::Map::HashMap(vip_stats))?,
            vip6_stats: HashMap::try_from(aya::maps::Map::HashMap(vip6_stats))?,
            last_conflicts: None,
            last_no_neigh: None,
        })
    }

    /// Counters summed over CPUs.
    pub fn totals(&self) -> Result<Stats, DataplaneError> {
        let per_cpu = self.stats.get(&0, 0)?;
        let mut total = Stats::default();
        for s in per_cpu.iter() {
            total.add(s);
        }
        Ok(total)
    }

    /// The per-VIP rows, but only when the global foreign-claim counter (bumped with every
    /// VIP's) moved since the last call; empty otherwise. At steady state that is one
    /// lookup, not two syscalls per VIP.
    pub fn claimed_rows(&mut self) -> Vec<(IpAddr, VipRow)> {
        let total = self.totals().ok().map(|t| t.arp_conflict + t.ndp_conflict);
        if total.is_some() && total == self.last_conflicts {
            return Vec::new();
        }
        self.last_conflicts = total;
        self.per_vip()
    }

    /// Whether packets found no neighbour entry for their next hop since the last call (a
    /// backend's entry may have been lost): one lookup.
    pub fn no_neigh_moved(&mut self) -> bool {
        let total = self.totals().ok().map(|t| t.fib_no_neigh);
        let moved = total.is_some() && self.last_no_neigh.is_some() && total != self.last_no_neigh;
        self.last_no_neigh = total;
        moved
    }

    /// Every VIP's counters, IPv4 then IPv6, each sorted by address.
    pub fn per_vip(&self) -> Vec<(IpAddr, VipRow)> {
        let mut out = Vec::new();
        for (k, v) in self.vip_stats.iter().filter_map(Result::ok) {
            out.push((IpAddr::V4(Ipv4Addr::from(k.addr_be)), VipRow::V4(v)));
        }
        for (k, v) in self.vip6_stats.iter().filter_map(Result::ok) {
            out.push((IpAddr::V6(Ipv6Addr::from(k.addr_be)), VipRow::V6(v)));
        }
        out.sort_by_key(|(ip, _)| *ip);
        out
    }
}
