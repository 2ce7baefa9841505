//! Typed access to the load-balancer maps: config, services, backends, Maglev rings.
use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use vip_common::{map_names, BackendValue, Config, ServiceKey, ServiceValue};

use super::DataplaneError;

pub struct LbMaps {
    pub config: Array<MapData, Config>,
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub backends: Array<MapData, BackendValue>,
    pub rings: Array<MapData, u32>,
    /// A second descriptor of `RINGS`, for batched writes (aya has no batch operations).
    pub rings_fd: Option<std::os::fd::OwnedFd>,
    /// `RINGS` mapped into this process (`BPF_F_MMAPABLE`): tables are written with plain
    /// stores. None (a kept pin from a build without the flag): batched writes.
    pub rings_mem: Option<RingMem>,
    max_services: u32,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))
}

impl LbMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let services = take(ebpf, map_names::SERVICES)?;
        let max_services = match &services {
            aya::maps::Map::HashMap(d) => d.info().map_or(0, |i| i.max_entries()),
            _ => 0,
        };
        let rings = take(ebpf, map_names::RINGS)?;
        let rings_fd = match &rings {
            aya::maps::Map::Array(d) => {
                use std::os::fd::AsFd;
                d.fd().as_fd().try_clone_to_owned().ok()
            }
            _ => None,
        };
        let rings_mem = match (&rings, &rings_fd) {
            (aya::maps::Map::Array(d), Some(fd)) => {
                let entries = d.info().map_or(0, |i| i.max_entries());
                let flags = d.info().map_or(0, |i| i.map_flags());
                if flags & super::memory::BPF_F_MMAPABLE != 0 {
                    match RingMem::map(fd, entries) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot map the Maglev tables; writing them by syscall");
                            None
                        }
                    }
                } else {
                    None
                }
            }
            _ => None,
        };
        Ok(Self {
            max_services,
            rings_fd,
            rings_mem,
            config: Array::try_from(take(ebpf, map_names::CONFIG)?)?,
            services: HashMap::try_from(services)?,
            backends: Array::try_from(take(ebpf, map_names::BACKENDS)?)?,
            rings: Array::try_from(rings)?,
        })
    }

    pub fn max_backends(&self) -> u32 {
        self.backends.len()
    }

    /// How many services the services map has room for.
    pub fn max_services(&self) -> u32 {
        self.max_services
    }
}

/// `RINGS` mapped read-write into this process. The kernel lays an array's values out at
/// 8-byte strides (`round_up(value_size, 8)`), so slot `i` is the `u32` at byte `8 * i`.
pub struct RingMem {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    slots: u32,
}

// SAFETY: the mapping is owned by this value and only written through `&mut self`.
unsafe impl Send for RingMem {}
unsafe impl Sync for RingMem {}

/// A slot's stride in the mapping.
const SLOT: usize = 8;

impl RingMem {
    fn map(fd: &std::os::fd::OwnedFd, slots: u32) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let len = (slots as usize * SLOT).div_ceil(4096) * 4096;
        if len == 0 {
            return Err(std::io::Error::other("empty map"));
        }
        // SAFETY: a fresh shared mapping of the whole array; the kernel checks the length
        // against the map and the fd stays open for the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len, slots })
    }

    /// Write `table` at slots `base..`; false (nothing written) if it does not fit. The
    /// caller flips to it afterwards with a map update (a syscall: the stores are visible
    /// to the program before the flip; the fence says so in the code too).
    pub fn write(&mut self, base: u32, table: &[u32]) -> bool {
        let Some(end) = (base as usize).checked_add(table.len()) else {
            return false;
        };
        if end > self.slots as usize {
            return false;
        }
        for (i, v) in table.iter().enumerate() {
            // SAFETY: `base + i < slots`, so the 4 bytes at `SLOT * (base + i)` lie inside the
            // mapping, which is page-aligned (so is every slot); volatile, as the kernel's
            // program reads the same memory.
            unsafe {
                let at = self
                    .ptr
                    .as_ptr()
                    .add(SLOT * (base as usize + i))
                    .cast::<u32>();
                std::ptr::write_volatile(at, *v);
            }
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        true
    }
}

impl Drop for RingMem {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
