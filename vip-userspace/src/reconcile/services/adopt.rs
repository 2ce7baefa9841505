//! Taking over the maps when the daemon starts. Apart from the pass (`walk`) because it runs
//! once and reads the maps back rather than the configuration: either the services a
//! previous run left are dropped (`new`), or they are kept exactly as a packet sees them
//! (`adopt`, the hitless restart) and the in-memory bookkeeping is rebuilt from them.
use std::{collections::HashMap, ops::Range};

use vip_common::{Config as BpfConfig, ServiceValue, BACKEND_F_ACTIVE};

use super::{Applied, Region, ServiceError, ServiceSync, SvcKey};
use crate::{
    dataplane::lb::{Family, LbMaps},
    maglev,
};

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
        for (k, _) in maps.service_entries() {
            maps.remove_service(k)?;
        }
        let gens = retire_pinned_backends(&mut maps)?;
        let mut sync = Self::empty(maps, sizing);
        sync.gens = gens;
        Ok(sync)
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
        let mut sync = Self::empty(maps, sizing);
        // Cached next hops were the previous run's: refreshed on their next packet.
        sync.tick_epoch()?;
        let services = sync.maps.service_entries();
        sync.adopt_services(&services);
        sync.adopt_free_space()?;
        let backends = sync.adopt_backends(&services)?;
        tracing::info!(
            services = sync.applied.len(),
            backends,
            "adopted the services in the pinned maps"
        );
        Ok(sync)
    }

    /// The pinned services as applied, with unknown backends (see `Applied::backends`), and
    /// the service ids they do not use as free.
    fn adopt_services(&mut self, services: &[(SvcKey, ServiceValue)]) {
        for (k, v) in services {
            let region = (v.ring_size > 0).then(|| Region {
                off: v.ring_off - u32::from(v.live & 1) * v.ring_size,
                size: v.ring_size,
                live: v.live & 1,
            });
            self.applied.insert(
                *k,
                Applied {
                    id: v.id,
                    mode: v.mode,
                    region,
                    backends: None,
                    complete: true,
                },
            );
            self.next_sid = self.next_sid.max(v.id + 1);
        }
        let used: Vec<u32> = services.iter().map(|(_, v)| v.id).collect();
        self.free_sids = (0..self.next_sid)
            .filter(|i| !used.contains(i))
            .rev()
            .collect();
    }

    /// The regions the adopted services use are taken; the rest is free.
    fn adopt_free_space(&mut self) -> Result<(), ServiceError> {
        let mut used: Vec<Range<u32>> = self
            .applied
            .values()
            .filter_map(|a| a.region.as_ref())
            .map(|r| r.off..r.off + 2 * r.size)
            .collect();
        used.sort_by_key(|r| r.start);
        let len = self.maps.rings.len();
        if len == 0 {
            return Ok(());
        }
        let all = self
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
                self.slab.free_range(at..r.start);
            }
            at = at.max(r.end);
        }
        Ok(())
    }

    /// The pinned backends: generations continued, the active ones of an adopted service
    /// kept under their ids, the rest deactivated. Returns how many were kept.
    fn adopt_backends(
        &mut self,
        services: &[(SvcKey, ServiceValue)],
    ) -> Result<usize, ServiceError> {
        let by_sid: HashMap<u32, SvcKey> = services.iter().map(|(k, v)| (v.id, *k)).collect();
        let mut active = Vec::new();
        for id in 0..self.maps.max_backends() {
            for family in [Family::V4, Family::V6] {
                let Ok(b) = self.maps.backend(family, id) else {
                    continue;
                };
                if b.gen == 0 && b.flags == 0 {
                    continue;
                }
                // One sequence over both families: the later of the two continues.
                let g = self.gens.entry(id).or_insert(0);
                if generation_after(b.gen, *g) {
                    *g = b.gen;
                }
                if b.flags & BACKEND_F_ACTIVE == 0 {
                    continue;
                }
                // Kept only as a backend of an adopted service of its own family and mode,
                // and only once (an id is in one family's map at a time).
                let owner = by_sid.get(&b.svc).filter(|k| {
                    k.family() == family
                        && self.applied.get(k).is_some_and(|a| a.mode == b.mode)
                        && !active.contains(&id)
                });
                match owner {
                    Some(k) => {
                        self.backend_ids
                            .entry(*k)
                            .or_default()
                            .insert((b.addr, b.port, b.mode), id);
                        active.push(id);
                        self.next_bid = self.next_bid.max(id + 1);
                    }
                    None => {
                        // No service refers to it: nothing can reach it.
                        self.maps.deactivate_backend(family, id)?;
                    }
                }
            }
        }
        self.free_bids = (0..self.next_bid)
            .filter(|i| !active.contains(i))
            .rev()
            .collect();
        Ok(active.len())
    }
}

/// Backends a previous run left (kept pins): deactivate them and continue their
/// generations, so conntrack entries from that run can never match a new holder of
/// the same id. Returns the generations to continue.
fn retire_pinned_backends(maps: &mut LbMaps) -> Result<HashMap<u32, u32>, ServiceError> {
    let mut gens: HashMap<u32, u32> = HashMap::new();
    for id in 0..maps.max_backends() {
        for family in [Family::V4, Family::V6] {
            let Ok(b) = maps.backend(family, id) else {
                continue;
            };
            if b.gen != 0 || b.flags != 0 {
                let g = gens.entry(id).or_insert(0);
                if generation_after(b.gen, *g) {
                    *g = b.gen;
                }
                maps.deactivate_backend(family, id)?;
            }
        }
    }
    Ok(gens)
}

/// Whether generation `a` came after `b` in the wrapping sequence `acquire_backend` counts
/// (0 is "never used").
fn generation_after(a: u32, b: u32) -> bool {
    b == 0 || (a != 0 && (a.wrapping_sub(b) as i32) > 0)
}

#[cfg(test)]
mod tests {
    use super::generation_after;

    #[test]
    fn the_later_generation_of_two_families_continues() {
        assert!(generation_after(5, 0));
        assert!(generation_after(6, 5));
        assert!(!generation_after(5, 6));
        assert!(!generation_after(0, 5));
        assert!(!generation_after(5, 5));
        // Across the wrap (the sequence skips 0).
        assert!(generation_after(1, u32::MAX));
    }
}
