//! The load balancer's maps: services, backends, Maglev rings, conntrack, reverse NAT and
//! the next-hop cache, with the global `CONFIG` their rules depend on.
use crate::hash::{flow_hash, mix32};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// How a service forwards (`ServiceValue::mode`).
pub const MODE_DSR: u8 = 1;
pub const MODE_NAT: u8 = 2;
pub const MODE_LOCAL: u8 = 3;

/// `BackendValue::flags`: may receive new and existing flows.
pub const BACKEND_F_ACTIVE: u32 = 1;

/// `Config::table_sizing`.
pub const TABLE_FIXED: u32 = 0;
pub const TABLE_BY_NEED: u32 = 1;

/// A ring slot with no backend (a service without endpoints).
pub const RING_EMPTY: u32 = u32::MAX;

/// Global settings at index 0 of `CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The largest Maglev table a service may get (prime, `maglev_size`): each service's
    /// own size is in its `ServiceValue`. Kept here so a restarted daemon can tell whether
    /// the pinned tables were built under the same rule.
    pub ring_size: u32,
    /// Cluster-wide hash seed: the same on every node so every node picks the same backend.
    pub hash_seed: u32,
    /// Bumped by the daemon about once a second: cached next hops of an older epoch are
    /// looked up again, so neighbour and route changes reach forwarding within a second
    /// without a clock read per packet.
    pub epoch: u32,
    /// How tables are sized: `TABLE_FIXED` (every one `ring_size`) or `TABLE_BY_NEED`.
    pub table_sizing: u32,
    /// Where builds before `DEADMAN` kept the dead-man deadline. The program no longer reads
    /// it; the daemon copies it into `DEADMAN` once when it adopts such a pin directory (so
    /// an upgrade does not answer ARP that the old deadline had silenced) and writes 0.
    /// Kept so the value keeps its size and an old pinned `CONFIG` stays usable.
    pub old_deadline_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Config>() == 24);

/// Key of `SERVICES`: (VIP, port, protocol), network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub addr_be: [u8; 4],
    pub port_be: [u8; 2],
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index of this service: its stats slot. Backends carry it (`BackendValue::svc`), so a
    /// ring slot read after its region was given to another service is never followed.
    pub id: u32,
    /// First slot in `RINGS` of the live Maglev table.
    pub ring_off: u32,
    /// Slots of the live table (a prime); 0: no table (`local` mode, or no backends).
    pub ring_size: u32,
    pub mode: u8,
    /// Which half of the service's two-table region is live (0 or 1): userspace writes the
    /// other half and then replaces this value, which makes the new table live at once, so
    /// a packet sees the old table or the new one, never a mix.
    pub live: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 16);

impl ServiceValue {
    /// The `RINGS` slot for flow hash `h`, if the service has a table.
    #[inline(always)]
    pub fn ring_slot(&self, h: u32) -> Option<u32> {
        if self.ring_size == 0 {
            return None;
        }
        Some(self.ring_off.wrapping_add(h % self.ring_size))
    }
}

/// Value of `BACKENDS`, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
/// A backend *of one service*: ids are per (service, backend, mode), so an established flow
/// needs only its conntrack entry and this value to be forwarded (no service lookup).
pub struct BackendValue {
    pub addr_be: [u8; 4],
    pub port_be: [u8; 2],
    /// The service's forwarding mode (`MODE_*`).
    pub mode: u8,
    pub _pad: u8,
    pub flags: u32,
    /// Bumped each time the id is given to a different backend, so a conntrack entry made
    /// for the previous holder is not followed to the new one.
    pub gen: u32,
    /// The service's id (its stats slot).
    pub svc: u32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<BackendValue>() == 24);

/// A flow as the client sent it: key of `CONNTRACK`; also the key of `REVNAT` with the
/// backend as `src` and the client as `dst`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_be: [u8; 4],
    pub dst_be: [u8; 4],
    pub sport_be: [u8; 2],
    pub dport_be: [u8; 2],
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

/// One flow of the conntrack table: the flow and the backend (id, generation) it is pinned
/// to. `gen == 0` marks an empty way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub key: FlowKey,
    pub backend: u32,
    pub gen: u32,
}
const _: () = assert!(core::mem::size_of::<CtEntry>() == 24);

/// A conntrack set: two ways and which of them was used last. The table is a per-CPU array
/// of sets (a flow is steered to one CPU by RSS): lookup and insert are an array index and
/// two key compares instead of a hash-map walk, and eviction is exact LRU within the set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtSet {
    pub ways: [CtEntry; 2],
    /// Index of the most recently used way (the other one is replaced first).
    pub mru: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CtSet>() == 56);

/// The set a flow lives in: every field of the 5-tuple, so flows to different VIPs differ.
/// `mask` is the table's sets per CPU minus one (`globals::CT_SET_MASK`).
#[inline(always)]
pub fn ct_set_index(flow: &FlowKey, mask: u32) -> u32 {
    let h = flow_hash(
        flow.src_be,
        flow.sport_be,
        flow.dport_be,
        flow.proto,
        0x6374_7261,
    );
    mix32(h ^ u32::from_be_bytes(flow.dst_be)) & mask
}

impl FlowKey {
    /// Equality as two 8-byte words (cheaper in BPF than a bytewise compare).
    #[inline(always)]
    pub fn same(&self, o: &FlowKey) -> bool {
        let a = self.words();
        let b = o.words();
        a[0] == b[0] && a[1] == b[1]
    }

    #[inline(always)]
    fn words(&self) -> [u64; 2] {
        let mut lo = [0u8; 8];
        lo[..4].copy_from_slice(&self.src_be);
        lo[4..].copy_from_slice(&self.dst_be);
        let mut hi = [0u8; 8];
        hi[..2].copy_from_slice(&self.sport_be);
        hi[2..4].copy_from_slice(&self.dport_be);
        hi[4] = self.proto;
        [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
    }
}

/// Value of `REVNAT`: what a reply's source is rewritten back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevValue {
    pub vip_be: [u8; 4],
    pub vport_be: [u8; 2],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<RevValue>() == 8);

/// Per-CPU next-hop cache entry (`NEXTHOP`, slot `backend id % NEXTHOP_SLOTS`): the last FIB
/// answer for that backend, so a forwarded packet does not pay for bpf_fib_lookup every time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// The backend id the entry was made for (slots are shared by ids).
    pub backend: u32,
    /// Generation of the backend the entry was made for (0: empty).
    pub gen: u32,
    /// `Config::epoch` when the entry was made; another epoch means ask the FIB again.
    pub epoch: u32,
    pub ifindex: u32,
    /// Largest packet the FIB accepted (its MTU check: the IPv4 total length, or the IPv6
    /// header plus payload); longer packets ask again.
    pub ok_len: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<NextHop>() == 32);
