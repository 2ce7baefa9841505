//! The shared `RINGS` map: which region of it each service holds, and its tables built,
//! compared and written. Apart from the pass because this is where the map's I/O paths live
//! (mapped memory, batch syscalls, slot by slot), and they change with the kernel, not with
//! the diff.
use vip_common::RING_EMPTY;

use super::{ServiceError, ServiceSync, SvcKey};
use crate::{maglev, model::Backend};

/// A service's region of `RINGS`: two tables of `size` slots from `off`, `live` in use.
#[derive(Debug, Clone)]
pub(super) struct Region {
    pub(super) off: u32,
    pub(super) size: u32,
    pub(super) live: u8,
}

impl Region {
    pub(super) fn table_off(&self, which: u8) -> u32 {
        self.off + u32::from(which) * self.size
    }
}

impl ServiceSync {
    /// Whether the table at `base` holds exactly `table` (one batch read where the kernel
    /// has it).
    pub(super) fn ring_holds(&self, base: u32, table: &[u32]) -> bool {
        use std::os::fd::AsFd;
        if let Some(fd) = &self.maps.rings_fd {
            if let Ok(live) =
                crate::reconcile::batch::lookup_u32(fd.as_fd(), base, table.len() as u32)
            {
                return live == table;
            }
        }
        table
            .iter()
            .enumerate()
            .all(|(s, v)| self.maps.rings.get(&(base + s as u32), 0).ok() == Some(*v))
    }

    pub(super) fn table(
        &self,
        key: SvcKey,
        mode: u8,
        backends: &[Backend],
        size: u32,
    ) -> Result<Vec<u32>, ServiceError> {
        let entries: Vec<maglev::Entry> = backends
            .iter()
            .map(|b| maglev::Entry {
                // "addr:port", "[addr]:port" for IPv6 (as `SocketAddr` writes it): the
                // name every node hashes, so every node builds the same table.
                id: std::net::SocketAddr::new(b.addr, b.port).to_string(),
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
    pub(super) fn write_ring(&mut self, base: u32, table: &[u32]) -> Result<usize, ServiceError> {
        use std::os::fd::AsFd;
        if let Some(m) = self.maps.rings_mem.as_mut() {
            if m.write(base, table) {
                return Ok(table.len());
            }
        }
        if let Some(fd) = &self.maps.rings_fd {
            match crate::reconcile::batch::update_u32(fd.as_fd(), base, table) {
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

    /// A region for two tables of `size` slots.
    pub(super) fn alloc_region(&mut self, size: u32) -> Result<Region, ServiceError> {
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
    pub(super) fn free_region(&mut self, r: &Region) {
        self.slab.free_range(r.off..r.off + 2 * r.size);
    }
}
