//! One service into the maps: its backends given ids, its new table written into the idle
//! half of its region (or a new region), then the flip. Apart from the pass (`walk`) because
//! this is where "a packet sees the old table or the new one, never a mix" and "on an error
//! nothing new of it is live" are kept, step by step.
use vip_common::ServiceValue;

use super::{
    ids::keep_of, ring::Region, Applied, Changes, Retired, ServiceError, ServiceSync, SvcKey,
};
use crate::model::{Backend, Service};

/// What one service is to become, as `apply_one` works it out once.
struct Want<'a> {
    k: SvcKey,
    svc: &'a Service,
    mode: u8,
    /// The backends that get ids and a place in the table (none for `local`).
    backends: &'a [Backend],
    /// Slots of each of its two tables (0: no table).
    size: u32,
}

/// What a successful flip put live.
struct Flipped {
    /// The backends that got ids and are in the live table.
    placed: Vec<Backend>,
    /// The first backend that did not fit (no free backend slot), if any.
    full: Option<ServiceError>,
    written: usize,
}

impl ServiceSync {
    /// One service into the maps (see `apply`). On an error nothing new of it is live: a
    /// new service is not inserted and its slot, region and backends are given back; an
    /// existing one keeps its live table (the idle one it may have half written is marked
    /// unknown).
    pub(super) fn apply_one(
        &mut self,
        k: SvcKey,
        svc: &Service,
        ch: &mut Changes,
        deactivate: &mut Vec<Retired>,
    ) -> Result<(), ServiceError> {
        // `local` hands packets to this node's stack: no table and no backend ids (its
        // endpoints would only use up backend slots).
        let local = svc.mode == crate::model::LbMode::Local;
        let backends: &[Backend] = if local { &[] } else { &svc.backends };
        // A ring slot of a service indexes its own family's backend map: a backend of the
        // other family cannot be written there (the config and the Kubernetes translation
        // keep them out; this keeps the maps right whatever the caller).
        let mixed;
        let backends = if backends
            .iter()
            .all(|b| b.addr.is_ipv4() == svc.vip.is_ipv4())
        {
            backends
        } else {
            mixed = backends
                .iter()
                .filter(|b| b.addr.is_ipv4() == svc.vip.is_ipv4())
                .cloned()
                .collect::<Vec<_>>();
            &mixed[..]
        };
        let w = Want {
            k,
            svc,
            mode: svc.mode.code(),
            backends,
            size: self.sizing.size(backends.len()),
        };
        if self.keep_adopted(&w, deactivate)? {
            return Ok(());
        }
        let existing = self.applied.remove(&k);
        let sid = match &existing {
            Some(a) => a.id,
            None => self.alloc_sid()?,
        };
        let old_region = existing.as_ref().and_then(|a| a.region.clone());
        let (mut region, fresh) = match self.region_for(w.size, old_region.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                self.undo(k, sid, existing, deactivate);
                return Err(e);
            }
        };
        let f = match self.flip(&w, sid, region.as_mut()) {
            Ok(f) => f,
            Err(e) => {
                if let Some(r) = &fresh {
                    self.free_region(r);
                }
                self.undo(k, sid, existing, deactivate);
                return Err(e);
            }
        };
        ch.slots_written += f.written;
        if let Some(old) = old_region.filter(|o| region.as_ref().is_none_or(|r| r.off != o.off)) {
            self.free_region(&old);
        }
        deactivate.extend(self.drop_backends(k, &keep_of(&f.placed, w.mode)));
        if existing.is_some() {
            ch.updated += 1;
        } else {
            ch.added += 1;
        }
        self.applied.insert(
            k,
            Applied {
                id: sid,
                mode: w.mode,
                region,
                backends: Some(svc.backends.clone()),
                complete: f.full.is_none(),
            },
        );
        f.full.map_or(Ok(()), Err)
    }

    /// Adopted: if the live table already is what this config builds, take it as it is (no
    /// write, no flip); backends the config dropped are retired. Returns whether it was.
    fn keep_adopted(
        &mut self,
        w: &Want,
        deactivate: &mut Vec<Retired>,
    ) -> Result<bool, ServiceError> {
        let Some(a) = self
            .applied
            .get(&w.k)
            .filter(|a| a.backends.is_none() && a.mode == w.mode)
        else {
            return Ok(false);
        };
        let sid = a.id;
        let live = a.region.as_ref().map(|r| (r.size, r.table_off(r.live)));
        let (placed, full) = self.acquire_backends(w.k, sid, w.mode, w.backends)?;
        let same = match live {
            None => w.size == 0,
            Some((s, base)) if s == w.size => {
                let table = self.table(w.k, w.mode, &placed, w.size)?;
                self.ring_holds(base, &table)
            }
            _ => false,
        };
        if full.is_some() || !same {
            return Ok(false);
        }
        deactivate.extend(self.drop_backends(w.k, &keep_of(&placed, w.mode)));
        if let Some(a) = self.applied.get_mut(&w.k) {
            a.backends = Some(w.svc.backends.clone());
        }
        Ok(true)
    }

    /// Where the new table goes: the idle half of the service's region if the size is the
    /// same, else a new region (the old one is freed after the flip). Returns the region to
    /// write (None: no table) and, if it is new, the same region to give back on an error.
    fn region_for(
        &mut self,
        size: u32,
        old: Option<&Region>,
    ) -> Result<(Option<Region>, Option<Region>), ServiceError> {
        let reuse = old.filter(|r| r.size == size).cloned();
        let fresh = if size > 0 && reuse.is_none() {
            Some(self.alloc_region(size)?)
        } else {
            None
        };
        Ok((reuse.or(fresh.clone()), fresh))
    }

    /// Ids for the backends, the table into the idle half of `region`, then the flip: one
    /// map update makes the new table (and mode) live.
    fn flip(
        &mut self,
        w: &Want,
        sid: u32,
        region: Option<&mut Region>,
    ) -> Result<Flipped, ServiceError> {
        let (placed, full) = self.acquire_backends(w.k, sid, w.mode, w.backends)?;
        let mut written = 0;
        let mut value = ServiceValue {
            id: sid,
            ring_off: 0,
            ring_size: 0,
            mode: w.mode,
            live: 0,
            _pad: [0; 2],
        };
        if let Some(r) = region {
            let idle = 1 - r.live;
            let table = self.table(w.k, w.mode, &placed, w.size)?;
            written = self.write_ring(r.table_off(idle), &table)?;
            r.live = idle;
            value.ring_off = r.table_off(idle);
            value.ring_size = r.size;
            value.live = idle;
        }
        // The flip: one map update makes the new table (and mode) live.
        self.maps.insert_service(w.k, value)?;
        Ok(Flipped {
            placed,
            full,
            written,
        })
    }

    /// After a failed `apply_one`: an existing service stays as it was live (its idle table
    /// unknown now); a new one gives back its slot and backends.
    fn undo(
        &mut self,
        k: SvcKey,
        sid: u32,
        existing: Option<Applied>,
        deactivate: &mut Vec<Retired>,
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
