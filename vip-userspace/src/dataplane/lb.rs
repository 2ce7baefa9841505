//! Typed access to the load-balancer maps: config, services and backends of both families,
//! Maglev rings. A service's key says its family ([`SvcKey`]); its backends live in that
//! family's backend map, under ids from one space shared by both ([`BackendEntry`]).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use vip_common::{
    map_names, Backend6Value, BackendValue, Config, Service6Key, ServiceKey, ServiceValue,
};

use super::DataplaneError;

/// A service's key in the data plane: `SERVICES` for an IPv4 VIP, `SERVICES6` for an IPv6
/// one. The derived order (every IPv4 key before every IPv6 key, then address, port and
/// protocol number, all big-endian) is the order of `model::ServiceId`, so a sorted list of
/// services maps to sorted keys and the writer diffs them in one walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SvcKey {
    V4(ServiceKey),
    V6(Service6Key),
}

impl SvcKey {
    pub fn new(vip: IpAddr, port: u16, proto: u8) -> Self {
        let port_be = port.to_be_bytes();
        match vip {
            IpAddr::V4(a) => SvcKey::V4(ServiceKey {
                addr_be: a.octets(),
                port_be,
                proto,
                _pad: 0,
            }),
            IpAddr::V6(a) => SvcKey::V6(Service6Key {
                addr_be: a.octets(),
                port_be,
                proto,
                _pad: 0,
            }),
        }
    }

    pub fn vip(&self) -> IpAddr {
        match self {
            SvcKey::V4(k) => IpAddr::V4(Ipv4Addr::from(k.addr_be)),
            SvcKey::V6(k) => IpAddr::V6(Ipv6Addr::from(k.addr_be)),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            SvcKey::V4(k) => u16::from_be_bytes(k.port_be),
            SvcKey::V6(k) => u16::from_be_bytes(k.port_be),
        }
    }

    pub fn proto(&self) -> u8 {
        match self {
            SvcKey::V4(k) => k.proto,
            SvcKey::V6(k) => k.proto,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            SvcKey::V4(_) => Family::V4,
            SvcKey::V6(_) => Family::V6,
        }
    }
}

/// Which of the two backend maps an id is used in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// A backend's value in either family's map (`BackendValue`, `Backend6Value`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    pub addr: IpAddr,
    pub port: u16,
    pub mode: u8,
    pub flags: u32,
    pub gen: u32,
    pub svc: u32,
}

pub struct LbMaps {
    pub config: Array<MapData, Config>,
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub services6: HashMap<MapData, Service6Key, ServiceValue>,
    pub backends: Array<MapData, BackendValue>,
    /// Same length as `backends` (the loader sizes both by `max_backends`).
    pub backends6: Array<MapData, Backend6Value>,
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
            services6: HashMap::try_from(take(ebpf, map_names::SERVICES6)?)?,
            backends: Array::try_from(take(ebpf, map_names::BACKENDS)?)?,
            backends6: Array::try_from(take(ebpf, map_names::BACKENDS6)?)?,
            rings: Array::try_from(rings)?,
        })
    }

    /// Backend ids (one space for both families: the smaller map bounds it).
    pub fn max_backends(&self) -> u32 {
        self.backends.len().min(self.backends6.len())
    }

    /// The service entry of `k` into its family's map: for a live service, the flip.
    pub fn insert_service(&mut self, k: SvcKey, v: ServiceValue) -> Result<(), DataplaneError> {
        match k {
            SvcKey::V4(k) => self.services.insert(k, v, 0)?,
            SvcKey::V6(k) => self.services6.insert(k, v, 0)?,
        }
        Ok(())
    }

    /// Remove `k`'s entry; absent is fine.
    pub fn remove_service(&mut self, k: SvcKey) -> Result<(), DataplaneError> {
        let r = match k {
            SvcKey::V4(k) => self.services.remove(&k),
            SvcKey::V6(k) => self.services6.remove(&k),
        };
        match r {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every service entry of both maps, IPv4 first.
    pub fn service_entries(&self) -> Vec<(SvcKey, ServiceValue)> {
        let v4 = self
            .services
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (SvcKey::V4(k), v));
        let v6 = self
            .services6
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (SvcKey::V6(k), v));
        v4.chain(v6).collect()
    }

    /// Backend `id` of family `f`.
    pub fn backend(&self, f: Family, id: u32) -> Result<BackendEntry, DataplaneError> {
        Ok(match f {
            Family::V4 => {
                let b = self.backends.get(&id, 0)?;
                BackendEntry {
                    addr: IpAddr::V4(Ipv4Addr::from(b.addr_be)),
                    port: u16::from_be_bytes(b.port_be),
                    mode: b.mode,
                    flags: b.flags,
                    gen: b.gen,
                    svc: b.svc,
                }
            }
            Family::V6 => {
                let b = self.backends6.get(&id, 0)?;
                BackendEntry {
                    addr: IpAddr::V6(Ipv6Addr::from(b.addr_be)),
                    port: u16::from_be_bytes(b.port_be),
                    mode: b.mode,
                    flags: b.flags,
                    gen: b.gen,
                    svc: b.svc,
                }
            }
        })
    }

    /// Write backend `id` into the map of `b.addr`'s family.
    pub fn set_backend(&mut self, id: u32, b: &BackendEntry) -> Result<(), DataplaneError> {
        let port_be = b.port.to_be_bytes();
        match b.addr {
            IpAddr::V4(a) => self.backends.set(
                id,
                BackendValue {
                    addr_be: a.octets(),
                    port_be,
                    mode: b.mode,
                    _pad: 0,
                    flags: b.flags,
                    gen: b.gen,
                    svc: b.svc,
                    _pad2: 0,
                },
                0,
            )?,
            IpAddr::V6(a) => self.backends6.set(
                id,
                Backend6Value {
                    addr_be: a.octets(),
                    port_be,
                    mode: b.mode,
                    _pad: 0,
                    flags: b.flags,
                    gen: b.gen,
                    svc: b.svc,
                    _pad2: 0,
                },
                0,
            )?,
        }
        Ok(())
    }

    /// Backend `id` of family `f` no longer valid (flags 0; address and generation kept, so
    /// a restart continues the generation).
    pub fn deactivate_backend(&mut self, f: Family, id: u32) -> Result<(), DataplaneError> {
        if let Ok(mut b) = self.backend(f, id) {
            if b.flags != 0 {
                b.flags = 0;
                self.set_backend(id, &b)?;
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;

    /// The writer walks the sorted model list beside its sorted applied keys: the keys'
    /// order must be the order of `model::ServiceId` `(IpAddr, port, Proto)`, across
    /// families too (every IPv4 VIP before every IPv6 one, as `IpAddr` orders them).
    #[test]
    fn key_order_is_the_model_order_across_families() {
        let vips: Vec<IpAddr> = [
            "0.0.0.1",
            "10.0.0.1",
            "192.0.2.100",
            "255.255.255.255",
            "::",
            "::ffff:10.0.0.1",
            "2001:db8::100",
            "2001:db8::1:0",
            "fe80::1",
            "ffff::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut ids = Vec::new();
        for vip in &vips {
            for port in [0u16, 53, 80, 255, 256, 8080, 65535] {
                for proto in [Proto::Tcp, Proto::Udp] {
                    ids.push((*vip, port, proto));
                }
            }
        }
        let key =
            |(vip, port, proto): &(IpAddr, u16, Proto)| SvcKey::new(*vip, *port, proto.number());
        let mut by_id = ids.clone();
        by_id.sort();
        let mut by_key = ids.clone();
        by_key.sort_by_key(key);
        assert_eq!(by_id, by_key);
        for w in by_id.windows(2) {
            assert!(key(&w[0]) < key(&w[1]), "{:?} {:?}", w[0], w[1]);
        }
    }

    #[test]
    fn a_key_says_its_family_and_gives_back_what_it_was_made_of() {
        for (vip, f) in [("192.0.2.100", Family::V4), ("2001:db8::100", Family::V6)] {
            let ip: IpAddr = vip.parse().unwrap();
            let k = SvcKey::new(ip, 8080, vip_common::PROTO_UDP);
            assert_eq!(k.family(), f);
            assert_eq!(Family::of(ip), f);
            assert_eq!(
                (k.vip(), k.port(), k.proto()),
                (ip, 8080, vip_common::PROTO_UDP)
            );
        }
    }
}
