//! Service and backend ids. Apart from the tables because an id outlives a pass: a flow's
//! conntrack entry names its backend by id, so ids are reused only with a new generation,
//! and a backend id belongs to one service and mode.
use vip_common::BACKEND_F_ACTIVE;

use super::{BackendKey, Retired, ServiceError, ServiceSync, SvcKey};
use crate::{dataplane::lb::BackendEntry, model::Backend};

impl ServiceSync {
    pub(super) fn alloc_sid(&mut self) -> Result<u32, ServiceError> {
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
        key: SvcKey,
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
        // Into the map of the service's family (`apply_one` keeps other backends out).
        self.maps.set_backend(
            id,
            &BackendEntry {
                addr: b.addr,
                port: b.port,
                mode,
                flags: BACKEND_F_ACTIVE,
                gen: *gen,
                svc: sid,
            },
        )?;
        self.backend_ids.entry(key).or_default().insert(bk, id);
        Ok(id)
    }

    /// Ids of `key`'s backends (any mode) that are not in `keep`: to deactivate after flips.
    pub(super) fn drop_backends(&mut self, key: SvcKey, keep: &[BackendKey]) -> Vec<Retired> {
        let Some(ids) = self.backend_ids.get_mut(&key) else {
            return Vec::new();
        };
        let keep: std::collections::HashSet<&BackendKey> = keep.iter().collect();
        let gone: Vec<BackendKey> = ids.keys().filter(|b| !keep.contains(b)).copied().collect();
        let family = key.family();
        let out = gone
            .iter()
            .filter_map(|bk| ids.remove(bk))
            .map(|id| (family, id))
            .collect();
        if ids.is_empty() {
            self.backend_ids.remove(&key);
        }
        out
    }

    /// Ids for `backends` of service `k`; those that do not fit (no free backend slot) are
    /// left out, the first such error returned beside the ones that fit.
    pub(super) fn acquire_backends(
        &mut self,
        k: SvcKey,
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
}

pub(super) fn keep_of(backends: &[Backend], mode: u8) -> Vec<BackendKey> {
    backends.iter().map(|b| (b.addr, b.port, mode)).collect()
}
