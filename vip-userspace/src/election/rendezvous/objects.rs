//! The Lease objects of the rendezvous election: what they are called, what the pass reads
//! from them, and the claim bodies it writes. Plain functions on values, no API calls: the
//! names are the wire contract between nodes (and with the RBAC manifest), so they live in one
//! place.
use std::net::IpAddr;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};

/// The label on node leases (`node`) and claims (`claim`): what the watch selects.
pub const LABEL: &str = "vip.dev/election";
pub(super) const NODE_PREFIX: &str = "vip-node-";
const CLAIM_PREFIX: &str = "vip-claim-";

/// `vip-node-<identity>`: this node's liveness lease.
pub fn node_lease_name(identity: &str) -> String {
    format!("{NODE_PREFIX}{identity}")
}

/// `vip-claim-192-0-2-10`: who owns one VIP (never renewed); IPv6 as in
/// [`crate::election::name_part`].
pub fn claim_name(vip: IpAddr) -> String {
    format!("{CLAIM_PREFIX}{}", crate::election::name_part(vip))
}

pub(super) fn claim_vip(name: &str) -> Option<IpAddr> {
    crate::election::parse_name_part(name.strip_prefix(CLAIM_PREFIX)?)
}

/// The holder of a lease; an empty holder is no holder (a cleared claim).
pub(super) fn holder(l: &Lease) -> Option<&str> {
    l.spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty())
}

/// resourceVersions are opaque, but ordered integers on etcd (and the test server); 0 when
/// not a number (then every update is taken).
pub(super) fn rv_num(l: &Lease) -> u64 {
    l.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// A new claim of `vip`, held by `me` from `now`.
pub(super) fn new_claim(vip: IpAddr, me: &str, ns: &str, now: MicroTime) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(claim_name(vip)),
            namespace: Some(ns.to_string()),
            labels: Some([(LABEL.to_string(), "claim".to_string())].into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(me.to_string()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    }
}

/// `l` taken by `me` (a transition, unless it was ours already: then only re-written).
pub(super) fn take_claim(l: &mut Lease, me: &str, now: MicroTime) {
    let spec = l.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(me) {
        spec.holder_identity = Some(me.to_string());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
}

/// `l` with no holder: the VIP still exists, so the claim stays for the next owner.
pub(super) fn clear_claim(l: &mut Lease, now: MicroTime) {
    let spec = l.spec.get_or_insert_with(Default::default);
    spec.holder_identity = None;
    spec.renew_time = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn names_are_object_names_and_parse_back() {
        let v = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(claim_name(v), "vip-claim-192-0-2-10");
        assert_eq!(claim_vip(&claim_name(v)), Some(v));
        assert_eq!(node_lease_name("node-1"), "vip-node-node-1");
        assert_eq!(claim_vip("vip-node-x"), None);
        let v6: IpAddr = "2001:db8::100".parse().unwrap();
        assert_eq!(claim_vip(&claim_name(v6)), Some(v6));
    }
}
