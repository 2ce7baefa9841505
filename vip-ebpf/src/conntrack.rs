//! Flow table: which backend an established flow goes to.
use vip_common::{BackendValue, FlowKey, FlowValue, BACKEND_F_ACTIVE};

use crate::maps::{backend, CONNTRACK};

/// The backend a known flow is pinned to, if that backend still holds the same id and is
/// active (a removed or re-used id sends the flow back through Maglev).
#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Option<(u32, BackendValue)> {
    // SAFETY: copied out at once; per-CPU value of this CPU.
    let fv = unsafe { *CONNTRACK.get_ptr(flow)? };
    let b = backend(fv.backend)?;
    if b.flags & BACKEND_F_ACTIVE != 0 && b.gen == fv.gen {
        Some((fv.backend, b))
    } else {
        None
    }
}

#[inline(always)]
pub fn record(flow: &FlowKey, id: u32, b: &BackendValue) {
    // A full LRU evicts the least recent flow; an insert failure only means the next packet
    // of this flow is placed by Maglev again (same backend while the set is unchanged).
    let _ = CONNTRACK.insert(
        flow,
        FlowValue {
            backend: id,
            gen: b.gen,
        },
        0,
    );
}
