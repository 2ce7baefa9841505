//! Services into the data plane, as a diff. A changed backend set is written into the
//! service's idle ring and then made live by flipping one field of the service entry, so a
//! packet sees the old table or the new one, never a mix; a removed backend is deactivated
//! only after that flip, so it receives nothing once the flip is done.
use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
};

use vip_common::{
    BackendValue, Config as BpfConfig, ServiceKey, ServiceValue, BACKEND_F_ACTIVE, RING_EMPTY,
};

use crate::{
    config::{Backend, Service},
    dataplane::{lb::LbMaps, DataplaneError},
    maglev,
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("data plane: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("maglev: {0}")]
    Maglev(#[from] maglev::MaglevError),
    #[error("no free service slot ({0} in use): raise max_services")]
    TooManyServices(u32),
    #[error("no free backend slot ({0} in use)")]
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

struct Applied {
    id: u32,
    live: u32,
    mode: u8,
    backends: Vec<Backend>,
    /// What each of the two rings holds, as far as we wrote it (None: unknown).
    rings: [Option<Vec<u32>>; 2],
}

/// What one `apply` did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub slots_written: usize,
}

pub struct ServiceSync {
    maps: LbMaps,
    m: u32,
    capacity: u32,
    applied: BTreeMap<ServiceKey, Applied>,
    free_sids: Vec<u32>,
    next_sid: u32,
    /// (addr, port) -> (backend id, services using it)
    backend_ids: HashMap<(Ipv4Addr, u16), (u32, u32)>,
    free_bids: Vec<u32>,
    next_bid: u32,
    gens: HashMap<u32, u32>,
}

impl ServiceSync {
    /// Take over the maps: global config written, services left by an earlier run removed
    /// (their entries are rebuilt from the config by the first `apply`).
    pub fn new(mut maps: LbMaps, ring_size: u32, hash_seed: u32) -> Result<Self, ServiceError> {
        maps.config.set(
            0,
            BpfConfig {
                ring_size,
                hash_seed,
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
        let capacity = maps.ring_capacity(ring_size);
        Ok(Self {
            maps,
            m: ring_size,
            capacity,
            applied: BTreeMap::new(),
            free_sids: Vec::new(),
            next_sid: 0,
            backend_ids: HashMap::new(),
            free_bids: Vec::new(),
            next_bid: 0,
            gens,
        })
    }

    /// Backend id of (addr, port) as written in the maps, if any (for stats and tests).
    pub fn backend_id(&self, addr: Ipv4Addr, port: u16) -> Option<u32> {
        self.backend_ids.get(&(addr, port)).map(|(id, _)| *id)
    }

    pub fn service_id(&self, key: &ServiceKey) -> Option<u32> {
        self.applied.get(key).map(|a| a.id)
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

    fn acquire_backend(&mut self, b: &Backend) -> Result<u32, ServiceError> {
        if let Some((id, refs)) = self.backend_ids.get_mut(&(b.addr, b.port)) {
            *refs += 1;
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
        *gen = gen.wrapping_add(1);
        self.maps.backends.set(
            id,
            BackendValue {
                addr_be: b.addr.octets(),
                port_be: b.port.to_be_bytes(),
                _pad: [0; 2],
                flags: BACKEND_F_ACTIVE,
                gen: *gen,
            },
            0,
        )?;
        self.backend_ids.insert((b.addr, b.port), (id, 1));
        Ok(id)
    }

    /// Drop one reference; returns the id if it was the last (to deactivate after flips).
    fn release_backend(&mut self, b: &Backend) -> Option<u32> {
        let entry = self.backend_ids.get_mut(&(b.addr, b.port))?;
        entry.1 -= 1;
        if entry.1 > 0 {
            return None;
        }
        let id = entry.0;
        self.backend_ids.remove(&(b.addr, b.port));
        Some(id)
    }

    fn table(&self, backends: &[Backend]) -> Result<Vec<u32>, ServiceError> {
        let entries: Vec<maglev::Entry> = backends
            .iter()
            .map(|b| maglev::Entry {
                id: format!("{}:{}", b.addr, b.port),
                weight: b.weight,
            })
            .collect();
        let t = maglev::build(&entries, self.m)?;
        Ok(t.into_iter()
            .map(|i| {
                if i == maglev::EMPTY {
                    RING_EMPTY
                } else {
                    backends
                        .get(i as usize)
                        .and_then(|b| self.backend_ids.get(&(b.addr, b.port)))
                        .map_or(RING_EMPTY, |(id, _)| *id)
                }
            })
            .collect())
    }

    /// Write `table` into ring `which` of service `sid`, only the slots that differ from
    /// what the ring is known to hold.
    fn write_ring(
        &mut self,
        sid: u32,
        which: u32,
        table: &[u32],
        known: Option<&Vec<u32>>,
    ) -> Result<usize, ServiceError> {
        let base = (sid * 2 + which) * self.m;
        let mut n = 0;
        for (s, &v) in table.iter().enumerate() {
            if known.map(|k| k[s]) == Some(v) {
                continue;
            }
            self.maps.rings.set(base + s as u32, v, 0)?;
            n += 1;
        }
        Ok(n)
    }

    pub fn apply(&mut self, desired: &[Service]) -> Result<Changes, ServiceError> {
        let mut ch = Changes::default();
        let mut deactivate = Vec::new();
        let want: BTreeMap<ServiceKey, &Service> = desired.iter().map(|s| (key_of(s), s)).collect();

        let gone: Vec<ServiceKey> = self
            .applied
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            self.maps.services.remove(&k)?;
            if let Some(a) = self.applied.remove(&k) {
                for b in &a.backends {
                    deactivate.extend(self.release_backend(b));
                }
                self.free_sids.push(a.id);
            }
            ch.removed += 1;
        }

        for (k, svc) in want {
            let mode = svc.mode.code();
            let unchanged = self
                .applied
                .get(&k)
                .is_some_and(|a| a.backends == svc.backends && a.mode == mode);
            if unchanged {
                continue;
            }
            for b in &svc.backends {
                self.acquire_backend(b)?;
            }
            let table = self.table(&svc.backends)?;
            match self.applied.remove(&k) {
                None => {
                    let id = self.alloc_sid()?;
                    ch.slots_written += self.write_ring(id, 0, &table, None)?;
                    self.maps.services.insert(
                        k,
                        ServiceValue {
                            id,
                            ring: 0,
                            mode,
                            _pad: [0; 3],
                        },
                        0,
                    )?;
                    self.applied.insert(
                        k,
                        Applied {
                            id,
                            live: 0,
                            mode,
                            backends: svc.backends.clone(),
                            rings: [Some(table), None],
                        },
                    );
                    ch.added += 1;
                }
                Some(mut a) => {
                    let idle = 1 - a.live;
                    let known = a.rings[idle as usize].take();
                    ch.slots_written += self.write_ring(a.id, idle, &table, known.as_ref())?;
                    // The flip: one map update makes the new table live.
                    self.maps.services.insert(
                        k,
                        ServiceValue {
                            id: a.id,
                            ring: idle,
                            mode,
                            _pad: [0; 3],
                        },
                        0,
                    )?;
                    for b in &a.backends {
                        deactivate.extend(self.release_backend(b));
                    }
                    a.rings[idle as usize] = Some(table);
                    a.live = idle;
                    a.mode = mode;
                    a.backends = svc.backends.clone();
                    self.applied.insert(k, a);
                    ch.updated += 1;
                }
            }
        }

        // Only now, with every flip done, may a backend stop being valid.
        for id in deactivate {
            if self.backend_ids.values().any(|(b, _)| *b == id) {
                continue;
            }
            if let Ok(mut v) = self.maps.backends.get(&id, 0) {
                v.flags = 0;
                self.maps.backends.set(id, v, 0)?;
            }
            self.free_bids.push(id);
        }
        Ok(ch)
    }
}
