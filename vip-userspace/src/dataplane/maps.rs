//! Typed access to the pinned maps.
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    Ebpf,
};
use std::{net::Ipv4Addr, path::Path};
use vip_common::{
    map_names, pin_names, vip_filter_slot, Config, Deadline, IfaceValue, Stats, VipKey, VipStats,
    VipValue, VIP_F_OWNED,
};

use super::DataplaneError;

pub struct Maps {
    pub vips: HashMap<MapData, VipKey, VipValue>,
    /// Prefilter bitmap: a bit for every VIP, so non-VIP traffic skips the hash lookups.
    /// Bits are only ever set while running (a stale bit costs a lookup, never a wrong
    /// answer) and rebuilt from `vips` at start.
    pub filter: Array<MapData, u64>,
    filter_shadow: Vec<u64>,
    pub ifaces: HashMap<MapData, u32, IfaceValue>,
    pub vip_stats: HashMap<MapData, VipKey, VipStats>,
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

/// Read-only counters, shared with the metrics endpoint.
pub struct StatsReader {
    stats: PerCpuArray<MapData, Stats>,
    vip_stats: HashMap<MapData, VipKey, VipStats>,
    /// The global foreign-claim counter at the last `claimed_rows`.
    last_conflicts: Option<u64>,
    last_no_neigh: Option<u64>,
}

pub fn key(ip: Ipv4Addr) -> VipKey {
    VipKey {
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
            deadman,
        };
        m.rebuild_filter()?;
        Ok(m)
    }

    /// The prefilter from scratch: exactly the bits of the VIPs in the map.
    fn rebuild_filter(&mut self) -> Result<(), DataplaneError> {
        let mut want = vec![0u64; self.filter.len() as usize];
        for ip in self.vips() {
            let (w, mask) = vip_filter_slot(ip.octets());
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

    fn filter_add(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        let (w, mask) = vip_filter_slot(ip.octets());
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

    /// Make the data plane answer for `ip`. Counters are created first so the very first
    /// answered packet is counted.
    pub fn own(&mut self, ip: Ipv4Addr, ifindex: u32) -> Result<(), DataplaneError> {
        self.put(ip, ifindex, VIP_F_OWNED)
    }

    /// Serve `ip` without answering ARP for it: its traffic is balanced, requests for it are
    /// dropped (as for a VIP held elsewhere). For VIPs routed here by BGP while another
    /// node (or none) owns them on the segment.
    pub fn route(&mut self, ip: Ipv4Addr, ifindex: u32) -> Result<(), DataplaneError> {
        self.put(ip, ifindex, 0)
    }

    fn put(&mut self, ip: Ipv4Addr, ifindex: u32, flags: u32) -> Result<(), DataplaneError> {
        let k = key(ip);
        if self.vip_stats.get(&k, 0).is_err() {
            self.vip_stats.insert(k, VipStats::default(), 0)?;
        }
        // The filter bit first: once the VIP answers ARP, its traffic must reach the LB.
        self.filter_add(ip)?;
        self.vips.insert(k, VipValue { flags, ifindex }, 0)?;
        Ok(())
    }

    /// Silence the data plane for `ip` (it stops answering and the kernel never will).
    pub fn forget(&mut self, ip: Ipv4Addr) -> Result<(), DataplaneError> {
        let k = key(ip);
        for r in [self.vips.remove(&k), self.vip_stats.remove(&k)] {
            match r {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// VIPs a previous run left answering on `ifindex` (or on any uplink).
    pub fn owned_on(&self, ifindex: u32) -> Vec<Ipv4Addr> {
        self.vips
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| v.flags & VIP_F_OWNED != 0 && (v.ifindex == ifindex || v.ifindex == 0))
            .map(|(k, _)| Ipv4Addr::from(k.addr_be))
            .collect()
    }

    /// VIPs currently in the map (for reconciling against what a previous run left).
    pub fn vips(&self) -> Vec<Ipv4Addr> {
        self.vips
            .keys()
            .filter_map(Result::ok)
            .map(|k| Ipv4Addr::from(k.addr_be))
            .collect()
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
        Ok(Self {
            stats: PerCpuArray::try_from(aya::maps::Map::PerCpuArray(stats))?,
            vip_stats: HashMap::try_from(aya::maps::Map::HashMap(vip_stats))?,
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
    pub fn claimed_rows(&mut self) -> Vec<(Ipv4Addr, VipStats)> {
        let total = self.totals().ok().map(|t| t.arp_conflict);
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

    pub fn per_vip(&self) -> Vec<(Ipv4Addr, VipStats)> {
        let mut out = Vec::new();
        for (k, v) in self.vip_stats.iter().filter_map(Result::ok) {
            out.push((Ipv4Addr::from(k.addr_be), v));
        }
        out.sort_by_key(|(ip, _)| *ip);
        out
    }
}
