//! IPv6 services written straight into the maps, for the kernel tests that pin ids and ring
//! regions themselves (the daemon's writer, `ServiceSync`, writes the same ABI): `SERVICES6`, `BACKENDS6`, their Maglev tables in `RINGS` (built
//! by the daemon's own `maglev::build`), the VIP's prefilter bit and its `VIPS6` entry. One
//! copy for every test that balances IPv6 (`lb6_test_run`, the fuzz in `lb_test_run`).
use aya::{
    maps::{Array, HashMap, Map, MapData},
    Ebpf,
};
use vip_common::{
    map_names, pin_names, vip6_filter_slot, Backend6Value, Service6Key, ServiceValue, Vip6Key,
    VipValue, BACKEND_F_ACTIVE, MODE_LOCAL, VIP_F_OWNED,
};
use vip_userspace::maglev;

use crate::refmodel::{Fib, FibTable};

/// The fixtures' IPv6 addresses: the VIP the services listen on, a client, and the links'
/// prefixes (dsr backends on 2001:db8::/64, nat backends on 2001:db8:1::/64).
pub const VIP6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
pub const CLIENT6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];

/// dsr backend `i` (2001:db8::2i); 4 is on-link without a neighbour entry.
pub fn dsr_be6(i: u8) -> [u8; 16] {
    [
        0x20,
        1,
        0x0d,
        0xb8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0x20 + i,
    ]
}

/// nat backend `i` (2001:db8:1::2i).
pub fn nat_be6(i: u8) -> [u8; 16] {
    [
        0x20,
        1,
        0x0d,
        0xb8,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0x20 + i,
    ]
}

/// The MAC of a backend's permanent neighbour entry.
pub fn mac_of6(a: [u8; 16]) -> [u8; 6] {
    [2, 0xb6, a[12], a[13], a[14], a[15]]
}

/// Table size of every fixture service.
pub const RING6: u32 = 251;

/// The fixture's IPv6 services on `VIP6`, tables at the top of a `RINGS` of `ring_slots`
/// (the daemon fills it from the bottom), ids 10.. and backend ids 100.. (the IPv4 fixture
/// uses fewer). `(port, proto, mode)`: 80/TCP, 53/UDP dsr; 8080/TCP, 5353/UDP nat (to port
/// 8080 / 53); 7000/TCP local; 9999/TCP dsr and 9998/TCP nat to the backend without a
/// neighbour; 9996/TCP dsr without backends.
pub fn services6(ring_slots: u32) -> Vec<Svc6> {
    use vip_common::{MODE_DSR, MODE_NAT, PROTO_TCP, PROTO_UDP};
    let three = |f: fn(u8) -> [u8; 16], port: u16, first: u32| -> Vec<_> {
        (1..=3u8)
            .map(|i| (first + i as u32, f(i), port, 5))
            .collect()
    };
    let list: Vec<(u16, u8, u8, Vec<Backend6>)> = vec![
        (80, PROTO_TCP, MODE_DSR, three(dsr_be6, 80, 100)),
        (53, PROTO_UDP, MODE_DSR, three(dsr_be6, 53, 110)),
        (8080, PROTO_TCP, MODE_NAT, three(nat_be6, 8080, 120)),
        (5353, PROTO_UDP, MODE_NAT, three(nat_be6, 53, 130)),
        (7000, PROTO_TCP, MODE_LOCAL, vec![]),
        (9999, PROTO_TCP, MODE_DSR, vec![(141, dsr_be6(4), 9999, 5)]),
        (9998, PROTO_TCP, MODE_NAT, vec![(151, dsr_be6(4), 9998, 5)]),
        (9996, PROTO_TCP, MODE_DSR, vec![]),
    ];
    list.into_iter()
        .enumerate()
        .map(|(k, (port, proto, mode, backends))| Svc6 {
            vip: VIP6,
            port,
            proto,
            mode,
            id: 10 + k as u32,
            ring_off: ring_slots - (k as u32 + 1) * 2 * RING6,
            ring_size: RING6,
            backends,
        })
        .collect()
}

/// The fixture link `dev` in `ns` on both IPv6 prefixes (no DAD), permanent neighbours for
/// backends 1 to 3 of each, IPv6 forwarding on (bpf_fib_lookup needs it).
pub fn setup_netns(ns: &testbed::Netns, dev: &str) {
    ns.sysctl("net.ipv6.conf.all.forwarding", "1");
    for a in ["2001:db8::1/64", "2001:db8:1::1/64"] {
        ns.ip(&["-6", "addr", "add", a, "dev", dev, "nodad"]);
    }
    for i in 1..=3 {
        for a in [dsr_be6(i), nat_be6(i)] {
            let mac = mac_of6(a)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            let addr = std::net::Ipv6Addr::from(a).to_string();
            ns.ip(&[
                "-6",
                "neigh",
                "add",
                &addr,
                "lladdr",
                &mac,
                "nud",
                "permanent",
                "dev",
                dev,
            ]);
        }
    }
}

/// What the FIB answers for those backends, for the reference model.
pub fn add_routes(t: &mut FibTable, ifindex: u32, smac: [u8; 6]) {
    for i in 1..=3 {
        for a in [dsr_be6(i), nat_be6(i)] {
            let dmac = mac_of6(a);
            t.routes6.insert(
                a,
                Fib::Success {
                    ifindex,
                    smac,
                    dmac,
                },
            );
        }
    }
    t.routes6.insert(dsr_be6(4), Fib::NoNeigh);
}

/// (backend id, address, port, generation).
pub type Backend6 = (u32, [u8; 16], u16, u32);

/// One IPv6 service and its backends, with the ids and ring region the test gives it (the
/// daemon's id spaces and table regions are shared with IPv4: pick ones it does not use).
#[derive(Debug, Clone)]
pub struct Svc6 {
    pub vip: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub mode: u8,
    /// Service id (its stats slot).
    pub id: u32,
    /// First `RINGS` slot of its table.
    pub ring_off: u32,
    /// Table size (prime), used when it has backends and is not `local`.
    pub ring_size: u32,
    pub backends: Vec<Backend6>,
}

impl Svc6 {
    /// The service's Maglev table: backend ids by slot.
    pub fn table(&self) -> Vec<u32> {
        let entries: Vec<_> = self
            .backends
            .iter()
            .map(|(_, a, p, _)| maglev::Entry {
                id: format!("[{}]:{p}", std::net::Ipv6Addr::from(*a)),
                weight: 1,
            })
            .collect();
        let t = maglev::build(&entries, self.ring_size).expect("a prime table size");
        t.iter().map(|&i| self.backends[i as usize].0).collect()
    }

    /// The backend (id, address, port) the table gives slot `hash % ring_size`.
    pub fn pick(&self, hash: u32) -> (u32, [u8; 16], u16) {
        let id = self.table()[(hash % self.ring_size) as usize];
        let b = self.backends.iter().find(|b| b.0 == id).expect("a backend");
        (b.0, b.1, b.2)
    }

    fn has_table(&self) -> bool {
        self.mode != MODE_LOCAL && !self.backends.is_empty()
    }
}

/// `RINGS` and `VIP_FILTER` as pinned under `pins` (where the daemon's loader put them).
pub fn pinned_tables(pins: &std::path::Path) -> (Array<MapData, u32>, Array<MapData, u64>) {
    let pinned = |n: &str| Map::Array(MapData::from_pin(pins.join(n)).expect("pinned map"));
    (
        Array::try_from(pinned(pin_names::RINGS)).unwrap(),
        Array::try_from(pinned(pin_names::VIP_FILTER)).unwrap(),
    )
}

/// The object's map `name`, or, when the caller took it out of the object (the daemon's
/// `LbMaps::take` does), its pin `pin` under `pins`: a handle of its own either way.
pub fn map_or_pin(ebpf: &Ebpf, name: &str, pins: Option<&std::path::Path>, pin: &str) -> MapData {
    match ebpf.map(name) {
        Some(Map::HashMap(d) | Map::Array(d)) => {
            MapData::from_id(d.info().expect("map info").id()).expect("map by id")
        }
        Some(_) => panic!("{name}: not a hash map or array"),
        None => {
            let pins = pins.unwrap_or_else(|| panic!("{name} taken and no pin directory"));
            MapData::from_pin(pins.join(pin)).expect("pinned map")
        }
    }
}

/// Write `svcs` into the loaded `ebpf`'s IPv6 maps (or, taken out of it, their pins under
/// `pins`), `rings` and `filter` (the object's `RINGS` and `VIP_FILTER`, wherever the
/// caller holds them); their VIPs become owned IPv6 VIPs (in the object's `VIPS6`, if the
/// caller has not taken it).
pub fn install(
    ebpf: &mut Ebpf,
    pins: Option<&std::path::Path>,
    rings: &mut Array<MapData, u32>,
    filter: &mut Array<MapData, u64>,
    svcs: &[Svc6],
) {
    {
        let mut backends: Array<_, Backend6Value> = Array::try_from(Map::Array(map_or_pin(
            ebpf,
            map_names::BACKENDS6,
            pins,
            pin_names::BACKENDS6,
        )))
        .unwrap();
        for s in svcs {
            for &(id, addr_be, port, gen) in &s.backends {
                let b = Backend6Value {
                    addr_be,
                    port_be: port.to_be_bytes(),
                    mode: s.mode,
                    flags: BACKEND_F_ACTIVE,
                    gen,
                    svc: s.id,
                    ..Default::default()
                };
                backends.set(id, b, 0).unwrap();
            }
            if s.has_table() {
                for (i, id) in s.table().iter().enumerate() {
                    rings.set(s.ring_off + i as u32, *id, 0).unwrap();
                }
            }
        }
    }
    let mut services: HashMap<_, Service6Key, ServiceValue> = HashMap::try_from(Map::HashMap(
        map_or_pin(ebpf, map_names::SERVICES6, pins, pin_names::SERVICES6),
    ))
    .unwrap();
    for s in svcs {
        let key = Service6Key {
            addr_be: s.vip,
            port_be: s.port.to_be_bytes(),
            proto: s.proto,
            _pad: 0,
        };
        let v = ServiceValue {
            id: s.id,
            ring_off: s.ring_off,
            ring_size: if s.has_table() { s.ring_size } else { 0 },
            mode: s.mode,
            ..Default::default()
        };
        services.insert(key, v, 0).unwrap();
    }
    for s in svcs {
        let (w, m) = vip6_filter_slot(s.vip);
        let old = filter.get(&w, 0).unwrap();
        filter.set(w, old | m, 0).unwrap();
    }
    // Owned IPv6 VIPs, unless the caller holds `VIPS6` itself (the daemon's `Maps::take`
    // took it out of the object; it owns them through `Maps::own`).
    if let Some(m) = ebpf.map_mut(map_names::VIPS6) {
        let mut vips6: HashMap<_, Vip6Key, VipValue> = HashMap::try_from(m).unwrap();
        for s in svcs {
            let v = VipValue {
                flags: VIP_F_OWNED,
                ifindex: 0,
            };
            vips6.insert(Vip6Key { addr_be: s.vip }, v, 0).unwrap();
        }
    }
}
