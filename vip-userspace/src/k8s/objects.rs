//! What the controller keeps of the API's objects: compact caches of Services (`Svc`) and
//! EndpointSlices (`Slice`) with only the fields it uses, and the annotations it reads.
use std::net::IpAddr;

use k8s_openapi::api::{
    core::v1::{ObjectReference, Service},
    discovery::v1::EndpointSlice,
};

use super::ipam::{Family, Request};
use crate::model::LbMode;

/// Our LoadBalancer class.
pub const CLASS: &str = "vip.dev/vip";
/// kube-vip's class, served when kube-vip compatibility is on.
pub const KUBE_VIP_CLASS: &str = "kube-vip.io/kube-vip-class";
/// Annotation naming the node that holds the VIP.
pub const HOLDER: &str = "vip.dev/holder";
pub(crate) const IPS_ANNOTATIONS: [&str; 2] =
    ["vip.dev/loadbalancerIPs", "kube-vip.io/loadbalancerIPs"];
pub(crate) const SHARING_ANNOTATIONS: [&str; 2] = [
    "vip.dev/sharing-key",
    "kube-vip.io/loadbalancer-ips-sharing-key",
];
/// Per-Service forwarding mode: `local` (default: the node's stack, i.e. kube-proxy, does
/// the service hop, as with kube-vip), `dsr` or `nat` (vip balances in XDP).
pub const MODE_ANNOTATION: &str = "vip.dev/forwarding-mode";
/// BGP communities for the Service's VIPs (comma-separated `ASN:VALUE` or `ASN:D1:D2`),
/// added to those of `bgp.communities` and of the address's pool.
pub const BGP_COMMUNITIES_ANNOTATION: &str = "vip.dev/bgp-communities";
/// LOCAL_PREF for the Service's VIPs (iBGP peers only); overrides the pool's and
/// `bgp.local_pref`.
pub const BGP_LOCAL_PREF_ANNOTATION: &str = "vip.dev/bgp-local-pref";

/// A Service's own BGP policy from its annotations; a malformed value is named in the error.
pub fn bgp_annotations(svc: &Service) -> Result<crate::bgp::RoutePolicy, String> {
    let mut p = crate::bgp::RoutePolicy::default();
    if let Some(v) = annotation(svc, &[BGP_COMMUNITIES_ANNOTATION]) {
        p.communities = crate::bgp::parse_communities(v)
            .map_err(|e| format!("annotation {BGP_COMMUNITIES_ANNOTATION}: {e}"))?;
    }
    if let Some(v) = annotation(svc, &[BGP_LOCAL_PREF_ANNOTATION]) {
        p.local_pref = Some(v.trim().parse().map_err(|_| {
            format!("annotation {BGP_LOCAL_PREF_ANNOTATION}: `{v}` is not a number 0..=4294967295")
        })?);
    }
    Ok(p)
}

/// (namespace, name) of a Service.
pub type Key = (String, String);

pub(crate) fn key(s: &Service) -> Key {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

pub(crate) fn annotation<'a>(s: &'a Service, names: &[&str]) -> Option<&'a str> {
    let a = s.metadata.annotations.as_ref()?;
    names.iter().find_map(|n| a.get(*n).map(String::as_str))
}

/// Addresses in `status.loadBalancer.ingress`.
pub fn status_ips(s: &Service) -> Vec<IpAddr> {
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What `s` asks the IPAM for: its annotations (`loadbalancerIPs`, sharing key) and spec.
pub fn request(s: &Service) -> Request {
    let spec = s.spec.clone().unwrap_or_default();
    let mut requested: Vec<String> = annotation(s, &IPS_ANNOTATIONS)
        .map(|v| {
            v.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if requested.is_empty() {
        requested.extend(spec.load_balancer_ip.filter(|i| !i.is_empty()));
    }
    let families = match spec.ip_families.as_deref() {
        Some(f) if !f.is_empty() => f
            .iter()
            .map(|x| if x == "IPv6" { Family::V6 } else { Family::V4 })
            .collect(),
        _ => vec![Family::V4],
    };
    let (namespace, name) = key(s);
    Request {
        namespace,
        name,
        requested,
        families,
        sharing_key: annotation(s, &SHARING_ANNOTATIONS).map(str::to_string),
        ports: spec
            .ports
            .unwrap_or_default()
            .iter()
            .map(|p| {
                (
                    p.port as u16,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                )
            })
            .collect(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SvcPort {
    pub(crate) name: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) port: i32,
}

/// What the controller keeps of a Service: only the fields it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svc {
    pub(crate) uid: Option<String>,
    pub(crate) request: Request,
    pub(crate) status: Vec<IpAddr>,
    pub(crate) holder: Option<String>,
    pub(crate) local_only: bool,
    pub(crate) mode: LbMode,
    pub(crate) ports: Vec<SvcPort>,
    pub(crate) bgp: Result<crate::bgp::RoutePolicy, String>,
}

impl Svc {
    pub fn of(s: &Service) -> Self {
        let spec = s.spec.as_ref();
        Self {
            uid: s.metadata.uid.clone(),
            request: request(s),
            status: status_ips(s),
            holder: annotation(s, &[HOLDER]).map(str::to_string),
            local_only: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
            // dsr or nat when asked for; anything else is served by the node (local).
            mode: annotation(s, &[MODE_ANNOTATION])
                .and_then(LbMode::parse)
                .unwrap_or(LbMode::Local),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .map(|ps| {
                    ps.iter()
                        .map(|p| SvcPort {
                            name: p.name.clone(),
                            protocol: p.protocol.clone(),
                            port: p.port,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            bgp: bgp_annotations(s),
        }
    }

    pub(crate) fn object(&self, (ns, name): &Key) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: self.uid.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlicePort {
    pub(crate) name: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) addrs: Vec<IpAddr>,
    pub(crate) node: Option<String>,
    pub(crate) ready: bool,
}

/// What the controller keeps of an IPv4 or IPv6 EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Its `kubernetes.io/service-name` label.
    pub(crate) service: String,
    pub(crate) ports: Vec<SlicePort>,
    pub(crate) endpoints: Vec<Endpoint>,
}

impl Slice {
    /// None: not an IPv4 or IPv6 slice of a Service (FQDN slices: nothing here uses them).
    /// A dual-stack Service has one slice (or more) per family; each VIP takes the backends
    /// of its own family (see `translate`).
    pub fn of(e: &EndpointSlice) -> Option<Self> {
        if e.address_type != "IPv4" && e.address_type != "IPv6" {
            return None;
        }
        let service = e
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))?
            .clone();
        Some(Self {
            service,
            ports: e
                .ports
                .as_ref()
                .map(|ps| {
                    ps.iter()
                        .map(|p| SlicePort {
                            name: p.name.clone(),
                            protocol: p.protocol.clone(),
                            port: p.port,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            endpoints: e
                .endpoints
                .iter()
                .map(|ep| Endpoint {
                    addrs: ep.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                    node: ep.node_name.clone(),
                    ready: ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                })
                .collect(),
        })
    }
}
