//! Backend selection by the service's live Maglev ring: the same pick for the load balancer
//! (a new flow) and for ICMP errors quoting a flow (no conntrack entry). An IPv6 service's
//! ring holds ids of `BACKENDS6`.
use vip_common::{
    flow6_hash, flow_hash, Backend6Value, BackendValue, Flow6Key, FlowKey, ServiceValue,
    BACKEND_F_ACTIVE, RING_EMPTY,
};

use crate::maps;

/// The backend the service's live Maglev ring gives this flow (no conntrack, no recording).
#[inline(always)]
pub fn pick(flow: &FlowKey, svc: &ServiceValue) -> Option<(u32, BackendValue)> {
    if svc.ring_size == 0 {
        return None;
    }
    let cfg = maps::config()?;
    let h = flow_hash(
        flow.src_be,
        flow.sport_be,
        flow.dport_be,
        flow.proto,
        cfg.hash_seed,
    );
    let id = maps::ring_slot(svc.ring_slot(h)?)?;
    if id == RING_EMPTY {
        return None;
    }
    let b = maps::backend(id)?;
    // Another service's backend: this packet read a table region that was just handed to
    // that service (it loaded the service entry before the flip). Never followed.
    if b.flags & BACKEND_F_ACTIVE == 0 || b.svc != svc.id {
        return None;
    }
    Some((id, b))
}

/// `pick` for an IPv6 flow: `flow6_hash`, the same ring rules, the backend from `BACKENDS6`.
#[inline(always)]
pub fn pick6(flow: &Flow6Key, svc: &ServiceValue) -> Option<(u32, Backend6Value)> {
    if svc.ring_size == 0 {
        return None;
    }
    let cfg = maps::config()?;
    let h = flow6_hash(
        flow.src_be,
        flow.sport_be,
        flow.dport_be,
        flow.proto,
        cfg.hash_seed,
    );
    let id = maps::ring_slot(svc.ring_slot(h)?)?;
    if id == RING_EMPTY {
        return None;
    }
    let b = maps::backend6(id)?;
    if b.flags & BACKEND_F_ACTIVE == 0 || b.svc != svc.id {
        return None;
    }
    Some((id, b))
}
