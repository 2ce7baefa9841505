//! Services into the data plane, as a diff. Each `dsr`/`nat` service owns a region of the
//! shared `RINGS` map: two Maglev tables of the size its backend count needs
//! (`maglev::size_for`), one live. A changed backend set is written into the idle table and
//! made live by replacing the service entry, so a packet sees the old table or the new one,
//! never a mix; a removed backend is deactivated only after that flip, so it receives nothing
//! once the flip is done. A service whose table size changes gets a new region, flipped to
//! the same way, and its old region goes back to the free space. `local` services (and ones
//! without backends) take no region at all.
//!
//! Both families go through the same rules: an IPv6 service's entry is in `SERVICES6` and
//! its backends in `BACKENDS6`, but its id, its tables' region of `RINGS` and its backends'
//! ids and generations come from the spaces IPv4 services use ([`SvcKey`] says which map).
//!
//! - `adopt`: taking over the maps at start, rebuilt (`new`) or as a previous run left them
//!   (`adopt`, the hitless restart).
//! - `walk`: one pass, the diff of what is wanted against what is applied.
//! - `one`: one service written: its table into the idle half, then the flip.
//! - `ring`: the `RINGS` map: regions of it, tables built and read and written.
//! - `ids`: service and backend ids, and their generations.
mod adopt;
mod ids;
mod one;
mod ring;
mod walk;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use range_alloc::RangeAllocator;
use vip_common::Config as BpfConfig;

use self::ring::Region;
pub use crate::dataplane::lb::SvcKey;
use crate::{
    dataplane::{
        lb::{Family, LbMaps},
        DataplaneError,
    },
    maglev,
    model::Service,
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

/// The data plane's key of `s`, in its VIP's family.
pub fn key_of(s: &Service) -> SvcKey {
    SvcKey::new(s.vip, s.port, s.proto.number())
}

/// A backend id to deactivate after the pass's flips, in the family whose map holds it.
type Retired = (Family, u32);

/// A backend within its service: (addr, port, mode).
type BackendKey = (IpAddr, u16, u8);

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
    pub failed: Vec<(SvcKey, ServiceError)>,
    /// Every service this pass looked at beyond "unchanged": added, changed, removed, failed.
    pub touched: Vec<SvcKey>,
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
    applied: BTreeMap<SvcKey, Applied>,
    free_sids: Vec<u32>,
    next_sid: u32,
    /// service -> (addr, port, mode) -> backend id. Ids are per service and mode: a flow's
    /// conntrack entry plus its backend's value are then enough to forward it. One id space
    /// for both families: an id is in use in one backend map at a time.
    backend_ids: HashMap<SvcKey, HashMap<BackendKey, u32>>,
    free_bids: Vec<u32>,
    next_bid: u32,
    /// Each id's last generation, whichever family held it: an id given to the other
    /// family gets the next one, so nothing made for its previous holder follows it.
    gens: HashMap<u32, u32>,
}

impl ServiceSync {
    /// No service, no backend, all of `RINGS` free: what `new` and `adopt` start from.
    fn empty(maps: LbMaps, sizing: maglev::Sizing) -> Self {
        Self {
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
        }
    }

    /// Backend id of (addr, port) in any service, as written in the maps (for stats and
    /// tests).
    pub fn backend_id(&self, addr: IpAddr, port: u16) -> Option<u32> {
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

    /// Whether tables are written through this process's mapping of the array (else by
    /// syscall).
    pub fn rings_mapped(&self) -> bool {
        self.maps.rings_mem.is_some()
    }

    /// Slots of the table map no service uses.
    pub fn free_slots(&self) -> u32 {
        self.slab.total_available()
    }
}
