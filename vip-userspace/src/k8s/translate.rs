//! One Service and its EndpointSlices → the model's services (one per port) and the nodes
//! that may hold its VIP: pure, per Service.
use std::{collections::BTreeSet, net::IpAddr};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use crate::model::{Backend, LbMode, Proto, Service as ModelService};

use super::objects::*;

/// The model's services for `svc` at `vips`: one per (VIP, port), backends = ready
/// endpoints of the Service's EndpointSlices with the target port resolved by port name.
///
/// `externalTrafficPolicy: Local`: only endpoints on `node` are backends (traffic never
/// leaves the node, so the client address is kept), and the second value says whether
/// `node` has any ready endpoint, i.e. may hold the VIP. `None` for `Cluster`.
pub fn model_services(
    svc: &Service,
    slices: &[EndpointSlice],
    vips: &[IpAddr],
    node: &str,
) -> (Vec<ModelService>, Option<bool>) {
    let (ns, name) = key(svc);
    let mine: Vec<Slice> = slices
        .iter()
        .filter(|e| e.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter_map(Slice::of)
        .filter(|s| s.service == name)
        .collect();
    compute_model(&Svc::of(svc), mine.iter(), vips, node)
}

pub(crate) fn compute_model<'a>(
    svc: &Svc,
    mine: impl Iterator<Item = &'a Slice> + Clone,
    vips: &[IpAddr],
    node: &str,
) -> (Vec<ModelService>, Option<bool>) {
    let on_node = |ep: &Endpoint| !svc.local_only || ep.node.as_deref() == Some(node);
    let mut out = Vec::new();
    for p in &svc.ports {
        let Some(proto) = Proto::from_kubernetes(p.protocol.as_deref().unwrap_or("TCP")) else {
            continue;
        };
        let mut backends: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
        if svc.mode != LbMode::Local {
            for es in mine.clone() {
                let target = es
                    .ports
                    .iter()
                    .find(|ep| ep.name == p.name && ep.protocol == p.protocol)
                    .and_then(|ep| ep.port);
                let Some(tport) = target else { continue };
                for ep in &es.endpoints {
                    if !ep.ready || !on_node(ep) {
                        continue;
                    }
                    for ip in &ep.addrs {
                        backends.insert((*ip, tport as u16));
                    }
                }
            }
        }
        for vip in vips {
            out.push(ModelService {
                vip: *vip,
                port: p.port as u16,
                proto,
                mode: svc.mode,
                // A VIP's backends are of its own family: the data plane rewrites addresses
                // (nat) or keeps them (dsr), it never translates between families.
                backends: backends
                    .iter()
                    .filter(|(addr, _)| addr.is_ipv4() == vip.is_ipv4())
                    .map(|(addr, port)| Backend {
                        addr: *addr,
                        port: *port,
                        weight: 1,
                    })
                    .collect(),
            });
        }
    }
    let eligible = svc.local_only.then(|| {
        mine.flat_map(|es| es.endpoints.iter())
            .any(|ep| ep.ready && on_node(ep))
    });
    (out, eligible)
}

/// `externalTrafficPolicy: Local`: the nodes with a ready endpoint of the Service
/// (EndpointSlice `nodeName`); `None` for `Cluster`.
pub(crate) fn ready_nodes<'a>(
    svc: &Svc,
    mine: impl Iterator<Item = &'a Slice>,
) -> Option<BTreeSet<String>> {
    svc.local_only.then(|| {
        mine.flat_map(|es| es.endpoints.iter())
            .filter(|ep| ep.ready)
            .filter_map(|ep| ep.node.clone())
            .collect()
    })
}
