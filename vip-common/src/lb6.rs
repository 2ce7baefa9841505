//! The IPv6 load balancer's maps: services, backends, conntrack and reverse NAT keyed by
//! 16-byte addresses. Built like their IPv4 twins in `lb` (same set-associative conntrack,
//! same reverse-NAT scheme) and sharing what is not per address: services of both families
//! take their ids from one space and their Maglev tables from `RINGS`, backends of both
//! families take their ids from one space (a ring slot of an IPv6 service indexes
//! `BACKENDS6`), and the per-service and per-backend counters are the same maps.
use crate::hash::{flow6_hash, mix32};

/// Key of `SERVICES6`: (VIP, port, protocol), network byte order. Its value is the same
/// `ServiceValue` as an IPv4 service's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service6Key {
    pub addr_be: [u8; 16],
    pub port_be: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<Service6Key>() == 20);

/// Value of `BACKENDS6`, indexed by backend id: `BackendValue` with a 16-byte address. Ids
/// come from the same space as IPv4 backends' (an id is used by one family at a time), and
/// `gen` from the same sequence: an id handed to the other family gets a new generation, so
/// neither a conntrack entry nor the next-hop cache (`NEXTHOP`, keyed by id and generation)
/// made for its previous holder is followed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend6Value {
    pub addr_be: [u8; 16],
    pub port_be: [u8; 2],
    /// The service's forwarding mode (`MODE_*`).
    pub mode: u8,
    pub _pad: u8,
    /// `BACKEND_F_*`.
    pub flags: u32,
    pub gen: u32,
    /// The service's id (its stats slot).
    pub svc: u32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<Backend6Value>() == 36);

/// An IPv6 flow as the client sent it: key of `CT6`; also the key of `REVNAT6` with the
/// backend as `src` and the client as `dst`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flow6Key {
    pub src_be: [u8; 16],
    pub dst_be: [u8; 16],
    pub sport_be: [u8; 2],
    pub dport_be: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<Flow6Key>() == 40);

impl Flow6Key {
    /// Equality as five 8-byte words (cheaper in BPF than a bytewise compare).
    #[inline(always)]
    pub fn same(&self, o: &Flow6Key) -> bool {
        let a = self.words();
        let b = o.words();
        a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4]
    }

    #[inline(always)]
    fn words(&self) -> [u64; 5] {
        let w = |b: &[u8; 16], i: usize| {
            u64::from_ne_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let tail = u64::from_ne_bytes([
            self.sport_be[0],
            self.sport_be[1],
            self.dport_be[0],
            self.dport_be[1],
            self.proto,
            0,
            0,
            0,
        ]);
        [
            w(&self.src_be, 0),
            w(&self.src_be, 8),
            w(&self.dst_be, 0),
            w(&self.dst_be, 8),
            tail,
        ]
    }
}

/// One flow of `CT6`: the flow and the backend (id, generation) it is pinned to. `gen == 0`
/// marks an empty way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ct6Entry {
    pub key: Flow6Key,
    pub backend: u32,
    pub gen: u32,
}
const _: () = assert!(core::mem::size_of::<Ct6Entry>() == 48);

/// A set of `CT6`: two ways and the most recently used one, as `CtSet`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ct6Set {
    pub ways: [Ct6Entry; 2],
    /// Index of the most recently used way (the other one is replaced first).
    pub mru: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Ct6Set>() == 104);

/// The `CT6` set a flow lives in: every field of the 5-tuple, as `ct_set_index`. `mask` is
/// the table's sets per CPU minus one (`globals::CT6_SET_MASK`).
#[inline(always)]
pub fn ct6_set_index(flow: &Flow6Key, mask: u32) -> u32 {
    let h = flow6_hash(
        flow.src_be,
        flow.sport_be,
        flow.dport_be,
        flow.proto,
        0x6374_7236,
    );
    let d = &flow.dst_be;
    let mut x = h;
    let mut i = 0;
    while i < 16 {
        x = mix32(x ^ u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]));
        i += 4;
    }
    x & mask
}

/// Value of `REVNAT6`: what a reply's source is rewritten back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rev6Value {
    pub vip_be: [u8; 16],
    pub vport_be: [u8; 2],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Rev6Value>() == 20);
