//! Services into the data plane, as a diff. Each `dsr`/`nat` service owns a region of the
//! shared `RINGS` map: two Maglev tables of the size its backend count needs
//! (`maglev::size_for`), one live. A changed backend set is written into the idle table and
//! made live by replacing the service entry, so a packet sees the old table or the new one,
//! never a mix; a removed backend is deactivated only after that flip, so it receives nothing
//! once the flip is done. A service whose table size changes gets a new region, flipped to
//! the same way, and its old region goes back to the free space. `local` services (and ones
//! without backends) take no region at all.
use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
};

use range_alloc::RangeAllocator;
use vip_common::{
    BackendValue, Config as BpfConfig, ServiceKey, ServiceValue, BACKEND_F_ACTIVE, RING_EMPTY,
};

use crate::{
    dataplane::{lb::LbMaps, DataplaneError},
    maglev,
    model::{Backend, Service},
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("data plane")]
    Dataplane(#[from] DataplaneError),
    #[error("map")]
    Map(#[from] aya::maps::MapError),
    #[error("maglev")]
    Maglev(#[from] maglev::MaglevError),
    #[error("no free service slot ({0} in use): raise max_services")]
    TooManyServices(u32),
    #[error(
        "no room for two Maglev tables of {size} slots ({free} of {total} free): raise ring_slots"
    )]
    RingsFull { size: u32, free: u32, total: u32 },
    #[error("no free backend slot ({0} in use): raise max_backends")]
    TooManyBackends(u32),
}

pub fn key_of(s: &Service) -> ServiceKey {
    ServiceKey {
        addr_be: s.vip.octets(),
        port_be: s.port.to_be_bytes(),
        proto: s.proto.number(),
        _pad: 0,
    }
}

/// A backend within its service: (addr, port, mode).
type BackendKey = (Ipv4Addr, u16, u8);

/// A service's region of `RINGS`: two tables of `size` slots from `off`, `live` in use.
#[derive(Debug, Clone)]
struct Region {
    off: u32,
    size: u32,
    live: u8,
}

impl Region {
    fn table_off(&self, which: u8) -> u32 {
        self.off + u32::from(which) * self.size
    }
}

struct Applied {
    id: u32,
    mode: u8,
    /// None: `local` mode or no backends (no table).
    region: Option<Region>,
    /// None: adopted from a previous run's maps, whose weights are not recorded; the first
    /// `apply` compares the table it builds with the live one instead.
    backends: Option<crate::model::Backends>,
    /// Every backend of `backends` is in the live table (false: some did not fit and are
    /// tried again on the next pass).
    complete: bool,
}

impl Applied {
    /// Applied whole as `svc` says already. The same backends as last pass are the same
    /// shared list (from the view): a pointer comparison, no walk through 10,000 lists
    /// scattered over the heap.
    fn serves(&self, svc: &Service) -> bool {
        let same = |b: &crate::model::Backends| {
            std::sync::Arc::ptr_eq(b, &svc.backends) || *b == svc.backends
        };
        self.complete && self.mode == svc.mode.code() && self.backends.as_ref().is_some_and(same)
    }
}

/// What one `apply` did, for logs and tests.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub slots_written: usize,
    /// Services that could not be placed, or were placed without some of their backends (a
    /// map or a limit was full): each fails alone, every other service is applied.
    pub failed: Vec<(ServiceKey, ServiceError)>,
    /// Every service this pass looked at beyond "unchanged": added, changed, removed, failed.
    pub touched: Vec<ServiceKey>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added == 0
            && self.updated == 0
            && self.removed == 0
            && self.slots_written == 0
            && self.failed.is_empty()
    }
}

pub struct ServiceSync {
    maps: LbMaps,
    /// How big each service's tables are.
    sizing: maglev::Sizing,
    /// Services the maps have room for (`max_services`).
    capacity: u32,
    /// Free space of `RINGS`, in slots.
    slab: RangeAllocator<u32>,
    applied: BTreeMap<ServiceKey, Applied>,
    free_sids: Vec<u32>,
    next_sid: u32,
    /// service -> (addr, port, mode) -> backend id. Ids are per service and mode: a flow's
    /// conntrack entry plus its backend's value are then enough to forward it.
    backend_ids: HashMap<ServiceKey, HashMap<BackendKey, u32>>,
    free_bids: Vec<u32>,
    next_bid: u32,
    gens: HashMap<u32, u32>,
}

impl ServiceSync {
    /// Take over the maps: global config written, services left by an earlier run removed
    /// (their entries are rebuilt from the config by the first `apply`).
    pub fn new(
        mut maps: LbMaps,
        sizing: impl Into<maglev::Sizing>,
        hash_seed: u32,
    ) -> Result<Self, ServiceError> {
        let sizing = sizing.into();
        // The dead-man deadline is not here (`DEADMAN`, the ARP side's): what a previous run
        // left there stays. The old field was carried over by `Maps::take`.
        maps.config.set(
            0,
            BpfConfig {
                ring_size: sizing.max,
                hash_seed,
                epoch: 1,
                table_sizing: sizing.code(),
                old_deadline_ns: 0,
            },
            0,
        )?;
        let stale: Vec<ServiceKey> = maps.services.keys().filter_map(Result::ok).collect();
        for k in stale {
            maps.services.remove(&k)?;
        }
        // Backends a previous run left (kept pins): deactivate them and continue their
        // generations, so conntrack entries from that run can never match a new holder of
        // the same id.
        let mut gens = HashMap::new();
        for id in 0..maps.backends.len() {
            let Ok(mut b) = maps.backends.get(&id, 0) else {
                continue;
            };
            if b.gen != 0 || b.flags != 0 {
                gens.insert(id, b.gen);
                if b.flags != 0 {
                    b.flags = 0;
                    maps.backends.set(id, b, 0)?;
                }
            }
        }
        let capacity = maps.max_services();
        let slab = RangeAllocator::new(0..maps.rings.len());
        Ok(Self {
            maps,
            sizing,
            capacity,
            slab,
            applied: BTreeMap::new(),
            free_sids: Vec::new(),
            next_sid: 0,
            backend_ids: HashMap::new(),
            free_bids: Vec::new(),
            next_bid: 0,
            gens,
        })
    }

    /// Take over the maps a previous run left (planned restart or crash), changing nothing a
    /// packet could notice: services, backend ids and generations and the live rings stay,
    /// so established flows (conntrack) and new ones hash exactly as before. The first
    /// `apply` then changes only what the configuration changed. Maps built for another
    /// ring size or hash seed are rebuilt instead (`new`).
    pub fn adopt(
        maps: LbMaps,
        sizing: impl Into<maglev::Sizing>,
        hash_seed: u32,
    ) -> Result<Self, ServiceError> {
        let sizing = sizing.into();
        let cfg = maps.config.get(&0, 0)?;
        if cfg.ring_size != sizing.max
            || cfg.table_sizing != sizing.code()
            || cfg.hash_seed != hash_seed
        {
            if cfg.ring_size != 0 {
                tracing::info!(
                    ring_size = cfg.ring_size,
                    hash_seed = cfg.hash_seed,
                    "pinned services were built for another maglev_size, maglev_sizing or hash_seed; rebuilding"
                );
            }
            return Self::new(maps, sizing, hash_seed);
        }
        let mut sync = Self {
            capacity: maps.max_services(),
            slab: RangeAllocator::new(0..maps.rings.len()),
            maps,
            sizing,
            applied: BTreeMap::new(),
            free_sids: Vec::new(),
            next_sid: 0,
            backend_ids: HashMap::new(),
            free_bids: Vec::new(),
            next_bid: 0,
            gens: HashMap::new(),
        };
        // Cached next hops were the previous run's: refreshed on their next packet.
        sync.tick_epoch()?;
        let services: Vec<(ServiceKey, ServiceValue)> =
            sync.maps.services.iter().filter_map(Result::ok).collect();
        let by_sid: HashMap<u32, ServiceKey> = services.iter().map(|(k, v)| (v.id, *k)).collect();
        for (k, v) in &services {
            let region = (v.ring_size > 0).then(|| Region {
                off: v.ring_off - u32::from(v.live & 1) * v.ring_size,
                size: v.ring_size,
                live: v.live & 1,
            });
            sync.applied.insert(
                *k,
                Applied {
                    id: v.id,
                    mode: v.mode,
                    region,
                    backends: None,
                    complete: true,
                },
            );
            sync.next_sid = sync.next_sid.max(v.id + 1);
        }
        // The regions the adopted services use are taken; the rest is free.
        let mut used: Vec<std::ops::Range<u32>> = sync
            .applied
            .values()
            .filter_map(|a| a.region.as_ref())
            .map(|r| r.off..r.off + 2 * r.size)
            .collect();
        used.sort_by_key(|r| r.start);
        let len = sync.maps.rings.len();
        if len > 0 {
            let all = sync
                .slab
                .allocate_range(len)
                .map_err(|_| ServiceError::RingsFull {
                    size: len,
                    free: 0,
                    total: len,
                })?;
            let mut at = all.start;
            for r in used.iter().chain(std::iter::once(&(len..len))) {
                if r.start > at {
                    sync.slab.free_range(at..r.start);
                }
                at = at.max(r.end);
            }
        }
        let used: Vec<u32> = services.iter().map(|(_, v)| v.id).collect();
        sync.free_sids = (0..sync.next_sid)
            .filter(|i| !used.contains(i))
            .rev()
            .collect();
        let mut active = Vec::new();
        for id in 0..sync.maps.backends.len() {
            let Ok(mut b) = sync.maps.backends.get(&id, 0) else {
                continue;
            };
            if b.gen == 0 && b.flags == 0 {
                continue;
            }
            sync.gens.insert(id, b.gen);
            if b.flags & BACKEND_F_ACTIVE == 0 {
                continue;
            }
            let owner = by_sid
                .get(&b.svc)
                .filter(|k| sync.applied.get(k).is_some_and(|a| a.mode == b.mode));
            match owner {
                Some(k) => {
                    let addr = Ipv4Addr::from(b.addr_be);
                    let port = u16::from_be_bytes(b.port_be);
                    sync.backend_ids
                        .entry(*k)
                        .or_default()
                        .insert((addr, port, b.mode), id);
                    active.push(id);
                    sync.next_bid = sync.next_bid.max(id + 1);
                }
                None => {
                    // No service refers to it: nothing can reach it.
                    b.flags = 0;
                    sync.maps.backends.set(id, b, 0)?;
                }
            }
        }
        sync.free_bids = (0..sync.next_bid)
            .filter(|i| !active.contains(i))
            .rev()
            .collect();
        tracing::info!(
            services = sync.applied.len(),
            backends = active.len(),
            "adopted the services in the pinned maps"
        );
        Ok(sync)
    }

    /// Whether the table at `base` holds exactly `table` (one batch read where the kernel
    /// has it).
    fn ring_holds(&self, base: u32, table: &[u32]) -> bool {
        use std::os::fd::AsFd;
        if let Some(fd) = &self.maps.rings_fd {
            if let Ok(live) = super::batch::lookup_u32(fd.as_fd(), base, table.len() as u32) {
                return live == table;
            }
        }
        table
            .iter()
            .enumerate()
            .all(|(s, v)| self.maps.rings.get(&(base + s as u32), 0).ok() == Some(*v))
    }

    /// Backend id of (addr, port) in any service, as written in the maps (for stats and
    /// tests).
    pub fn backend_id(&self, addr: Ipv4Addr, port: u16) -> Option<u32> {
        self.backend_ids
            .values()
            .flat_map(|m| m.iter())
            .find(|((a, p, _), _)| *a == addr && *p == port)
            .map(|(_, id)| *id)
    }

    /// Advance the epoch that cached next hops are checked against (call about once a
    /// second): every CPU asks the FIB again on its next packet to each backend.
    pub fn tick_epoch(&mut self) -> Result<(), ServiceError> {
        self.update_config(|c| c.epoch = c.epoch.wrapping_add(1))
    }

    /// Read-modify-write of the one CONFIG entry (only this daemon task writes it; the
    /// dead-man deadline, which the election thread writes too, is in `DEADMAN`).
    fn update_config(&mut self, f: impl FnOnce(&mut BpfConfig)) -> Result<(), ServiceError> {
        let mut c = self.maps.config.get(&0, 0)?;
        f(&mut c);
        self.maps.config.set(0, c, 0)?;
        Ok(())
    }

    fn alloc_sid(&mut self) -> Result<u32, ServiceError> {
        if let Some(id) = self.free_sids.pop() {
            return Ok(id);
        }
        if self.next_sid >= self.capacity {
            return Err(ServiceError::TooManyServices(self.capacity));
        }
        self.next_sid += 1;
        Ok(self.next_sid - 1)
    }

    /// The id of `b` in service `key` (id `sid`) with `mode`, written to BACKENDS if new.
    fn acquire_backend(
        &mut self,
        key: ServiceKey,
        sid: u32,
        mode: u8,
        b: &Backend,
    ) -> Result<u32, ServiceError> {
        let bk = (b.addr, b.port, mode);
        if let Some(id) = self.backend_ids.get(&key).and_then(|m| m.get(&bk)) {
            return Ok(*id);
        }
        let id = match self.free_bids.pop() {
            Some(id) => id,
            None => {
                if self.next_bid >= self.maps.max_backends() {
                    return Err(ServiceError::TooManyBackends(self.next_bid));
                }
                self.next_bid += 1;
                self.next_bid - 1
            }
        };
        // A new generation per holder: flows pinned to the id's previous backend must not
        // follow the id to this one.
        let gen = self.gens.entry(id).or_insert(0);
        *gen = gen.wrapping_add(1).max(1);
        self.maps.backends.set(
            id,
            BackendValue {
                addr_be: b.addr.octets(),
                port_be: b.port.to_be_bytes(),
                mode,
                _pad: 0,
                flags: BACKEND_F_ACTIVE,
                gen: *gen,
                svc: sid,
                _pad2: 0,
            },
            0,
        )?;
        self.backend_ids.entry(key).or_default().insert(bk, id);
        Ok(id)
    }

    /// Ids of `key`'s backends (any mode) that are not in `keep`: to deactivate after flips.
    fn drop_backends(&mut self, key: ServiceKey, keep: &[BackendKey]) -> Vec<u32> {
        let Some(ids) = self.backend_ids.get_mut(&key) else {
            return Vec::new();
        };
        let keep: std::collections::HashSet<&BackendKey> = keep.iter().collect();
        let gone: Vec<BackendKey> = ids.keys().filter(|b| !keep.contains(b)).copied().collect();
        let out = gone.iter().filter_map(|bk| ids.remove(bk)).collect();
        if ids.is_empty() {
            self.backend_ids.remove(&key);
        }
        out
    }

    fn table(
        &self,
        key: ServiceKey,
        mode: u8,
        backends: &[Backend],
        size: u32,
    ) -> Result<Vec<u32>, ServiceError> {
        let entries: Vec<maglev::Entry> = backends
            .iter()
            .map(|b| maglev::Entry {
                id: format!("{}:{}", b.addr, b.port),
                weight: b.weight,
            })
            .collect();
        let t = maglev::build(&entries, size)?;
        let ids = self.backend_ids.get(&key);
        Ok(t.into_iter()
            .map(|i| {
                if i == maglev::EMPTY {
                    RING_EMPTY
                } else {
                    backends
                        .get(i as usize)
                        .and_then(|b| ids?.get(&(b.addr, b.port, mode)))
                        .map_or(RING_EMPTY, |id| *id)
                }
            })
            .collect())
    }

    /// Write `table` at slot `base` (an idle table: no packet reads it): plain stores into
    /// the mapped array; where it is not mapped (a kept pin from a build without the flag),
    /// one `BPF_MAP_UPDATE_BATCH` (kernel ≥ 5.6), else slot by slot.
    fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<usize, ServiceError> {
        use std::os::fd::AsFd;
        if let Some(m) = self.maps.rings_mem.as_mut() {
            if m.write(base, table) {
                return Ok(table.len());
            }
        }
        if let Some(fd) = &self.maps.rings_fd {
            match super::batch::update_u32(fd.as_fd(), base, table) {
                Ok(()) => return Ok(table.len()),
                Err(e) => {
                    tracing::debug!(error = %crate::Chain(&e), "batched ring write refused; writing slot by slot");
                }
            }
        }
        for (s, &v) in table.iter().enumerate() {
            self.maps.rings.set(base + s as u32, v, 0)?;
        }
        Ok(table.len())
    }

    /// Make the maps serve exactly `desired`. A service that cannot be placed fails alone
    /// (in `Changes::failed`, nothing of it live) and one whose backends do not all fit is
    /// served by those that do (and reported): removals always take effect. Only a failure
    /// to remove or retire what is gone is an error of the whole pass.
    pub fn apply(&mut self, desired: &[Service]) -> Result<Changes, ServiceError> {
        let mut ch = Changes::default();
        let mut deactivate = Vec::new();
        // In key order, one per key: as given when sorted (the plan's are), else sorted here
        // (the first of a key wins). Then what is gone is one walk beside `applied`.
        let want: Vec<(ServiceKey, &Service)> = if crate::model::sorted_unique(desired) {
            desired.iter().map(|s| (key_of(s), s)).collect()
        } else {
            let mut m: BTreeMap<ServiceKey, &Service> = BTreeMap::new();
            for s in desired {
                m.entry(key_of(s)).or_insert(s);
            }
            m.into_iter().collect()
        };
        debug_assert!(want.windows(2).all(|w| w[0].0 < w[1].0));
        // One walk of both sorted lists: what is gone, and what to apply (new, or not applied
        // as it is wanted now); no lookup per service.
        let mut gone: Vec<ServiceKey> = Vec::new();
        let mut todo: Vec<(ServiceKey, &Service)> = Vec::new();
        let mut applied = self.applied.iter().peekable();
        for &(k, svc) in &want {
            while let Some((a, _)) = applied.next_if(|(a, _)| **a < k) {
                gone.push(*a);
            }
            match applied.next_if(|(a, _)| **a == k) {
                Some((_, a)) if a.serves(svc) => {}
                _ => todo.push((k, svc)),
            }
        }
        gone.extend(applied.map(|(a, _)| *a));
        for k in gone {
            self.maps.services.remove(&k)?;
            if let Some(a) = self.applied.remove(&k) {
                deactivate.extend(self.drop_backends(k, &[]));
                self.free_sids.push(a.id);
                if let Some(r) = a.region {
                    self.free_region(&r);
                }
            }
            ch.removed += 1;
            ch.touched.push(k);
        }

        for (k, svc) in todo {
            ch.touched.push(k);
            if let Err(e) = self.apply_one(k, svc, &mut ch, &mut deactivate) {
                ch.failed.push((k, e));
            }
        }

        // Only now, with every flip done, may a backend stop being valid.
        for id in deactivate {
            if let Ok(mut v) = self.maps.backends.get(&id, 0) {
                v.flags = 0;
                self.maps.backends.set(id, v, 0)?;
            }
            self.free_bids.push(id);
        }
        Ok(ch)
    }

    /// Ids for `backends` of service `k`; those that do not fit (no free backend slot) are
    /// left out, the first such error returned beside the ones that fit.
    fn acquire_backends(
        &mut self,
        k: ServiceKey,
        sid: u32,
        mode: u8,
        backends: &[Backend],
    ) -> Result<(Vec<Backend>, Option<ServiceError>), ServiceError> {
        let mut placed = Vec::with_capacity(backends.len());
        let mut full = None;
        for b in backends {
            match self.acquire_backend(k, sid, mode, b) {
                Ok(_) => placed.push(b.clone()),
                Err(e @ ServiceError::TooManyBackends(_)) => {
                    full.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((placed, full))
    }

    /// A region for two tables of `size` slots.
    fn alloc_region(&mut self, size: u32) -> Result<Region, ServiceError> {
        let need = size.saturating_mul(2);
        let r = self
            .slab
            .allocate_range(need)
            .map_err(|_| ServiceError::RingsFull {
                size,
                free: self.free_slots(),
                total: self.maps.rings.len(),
            })?;
        Ok(Region {
            off: r.start,
            size,
            live: 1,
        })
    }

    /// Give a region back. A packet that loaded the service entry just before the flip
    /// may still read it; the data plane never follows a slot to another service's
    /// backend (`BackendValue::svc`), so its reuse is safe at once.
    fn free_region(&mut self, r: &Region) {
        self.slab.free_range(r.off..r.off + 2 * r.size);
    }

    /// Whether tables are written through this process's mapping of the array (else by
    /// syscall).
    pub fn rings_mapped(&self) -> bool {
        self.maps.rings_mem.is_some()
    }

    /// Slots of the table map no service uses.
    pub fn free_slots(&self) -> u32 {
        self.slab.total_available()
    }

    /// One service into the maps (see `apply`). On an error nothing new of it is live: a
    /// new service is not inserted and its slot, region and backends are given back; an
    /// existing one keeps its live table (the idle one it may have half written is marked
    /// unknown).
    fn apply_one(
        &mut self,
        k: ServiceKey,
        svc: &Service,
        ch: &mut Changes,
        deactivate: &mut Vec<u32>,
    ) -> Result<(), ServiceError> {
        let mode = svc.mode.code();
        // `local` hands packets to this node's stack: no table and no backend ids (its
        // endpoints would only use up backend slots).
        let local = svc.mode == crate::model::LbMode::Local;
        let backends: &[Backend] = if local { &[] } else { &svc.backends };
        let size = self.sizing.size(backends.len());
        if let Some(a) = self
            .applied
            .get(&k)
            .filter(|a| a.backends.is_none() && a.mode == mode)
        {
            // Adopted: if the live table already is what this config builds, take it as it
            // is (no write, no flip); backends the config dropped are retired.
            let sid = a.id;
            let live = a
                .region
                .as_ref()
                .map(|r| (r.size, r.table_off(r.live), r.live));
            let (placed, full) = self.acquire_backends(k, sid, mode, backends)?;
            let same = match live {
                None if size == 0 => Some(None),
                Some((s, base, which)) if s == size => {
                    let table = self.table(k, mode, &placed, size)?;
                    self.ring_holds(base, &table)
                        .then_some(Some((which, table)))
                }
                _ => None,
            };
            if let (None, Some(_)) = (&full, same) {
                deactivate.extend(self.drop_backends(k, &keep_of(&placed, mode)));
                if let Some(a) = self.applied.get_mut(&k) {
                    a.backends = Some(svc.backends.clone());
                }
                return Ok(());
            }
        }
        let existing = self.applied.remove(&k);
        let sid = match &existing {
            Some(a) => a.id,
            None => self.alloc_sid()?,
        };
        // Where the new table goes: the idle half of the service's region if the size is
        // the same, else a new region (the old one is freed after the flip).
        let old_region = existing.as_ref().and_then(|a| a.region.clone());
        let reuse = old_region.as_ref().filter(|r| r.size == size).cloned();
        let fresh = if size > 0 && reuse.is_none() {
            match self.alloc_region(size) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.undo(k, sid, existing, deactivate);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let mut region = reuse.or(fresh.clone());
        let flipped = self
            .acquire_backends(k, sid, mode, backends)
            .and_then(|(placed, full)| {
                let mut written = 0;
                let mut value = ServiceValue {
                    id: sid,
                    ring_off: 0,
                    ring_size: 0,
                    mode,
                    live: 0,
                    _pad: [0; 2],
                };
                if let Some(r) = region.as_mut() {
                    let idle = 1 - r.live;
                    let table = self.table(k, mode, &placed, size)?;
                    written = self.write_ring(r.table_off(idle), &table)?;
                    r.live = idle;
                    value.ring_off = r.table_off(idle);
                    value.ring_size = r.size;
                    value.live = idle;
                }
                // The flip: one map update makes the new table (and mode) live.
                self.maps.services.insert(k, value, 0)?;
                Ok((placed, full, written))
            });
        let (placed, full, written) = match flipped {
            Ok(f) => f,
            Err(e) => {
                if let Some(r) = &fresh {
                    self.free_region(r);
                }
                self.undo(k, sid, existing, deactivate);
                return Err(e);
            }
        };
        ch.slots_written += written;
        if let Some(old) = old_region.filter(|o| region.as_ref().is_none_or(|r| r.off != o.off)) {
            self.free_region(&old);
        }
        deactivate.extend(self.drop_backends(k, &keep_of(&placed, mode)));
        if existing.is_some() {
            ch.updated += 1;
        } else {
            ch.added += 1;
        }
        self.applied.insert(
            k,
            Applied {
                id: sid,
                mode,
                region,
                backends: Some(svc.backends.clone()),
                complete: full.is_none(),
            },
        );
        full.map_or(Ok(()), Err)
    }

    /// After a failed `apply_one`: an existing service stays as it was live (its idle table
    /// unknown now); a new one gives back its slot and backends.
    fn undo(
        &mut self,
        k: ServiceKey,
        sid: u32,
        existing: Option<Applied>,
        deactivate: &mut Vec<u32>,
    ) {
        match existing {
            Some(a) => {
                self.applied.insert(k, a);
            }
            None => {
                deactivate.extend(self.drop_backends(k, &[]));
                self.free_sids.push(sid);
            }
        }
    }
}

fn keep_of(backends: &[Backend], mode: u8) -> Vec<BackendKey> {
    backends.iter().map(|b| (b.addr, b.port, mode)).collect()
}
