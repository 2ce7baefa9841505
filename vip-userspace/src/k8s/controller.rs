//! Services of type LoadBalancer → addresses (IPAM), `status.loadBalancer`, Events, and the
//! model the reconciler applies. One `pass` takes the current objects (from watch caches) and
//! does what is missing; it is idempotent, so it can run after every change.
//!
//! Only the leader writes (allocations, status, Events); every node computes the same model
//! from what the statuses say, so services' rings are installed everywhere and an owner
//! change keeps flows on their backends.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Event, ObjectReference, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::json;

use super::ipam::{Family, Ipam, Pools, Request};
use crate::config::{Backend, LbMode, Proto, Service as ModelService};

/// Our LoadBalancer class.
pub const CLASS: &str = "vip.dev/vip";
/// kube-vip's class, served when kube-vip compatibility is on.
pub const KUBE_VIP_CLASS: &str = "kube-vip.io/kube-vip-class";
/// Annotation naming the node that holds the VIP.
pub const HOLDER: &str = "vip.dev/holder";
const IPS_ANNOTATIONS: [&str; 2] = ["vip.dev/loadbalancerIPs", "kube-vip.io/loadbalancerIPs"];
const SHARING_ANNOTATIONS: [&str; 2] = [
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

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node: String,
    /// Serve Services with `spec.loadBalancerClass` = our class.
    pub kube_vip_compat: bool,
    /// Also serve Services without a class.
    pub serve_unclassed: bool,
    pub pool_namespace: String,
    pub pool_name: String,
}

impl ControllerConfig {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            kube_vip_compat: true,
            serve_unclassed: true,
            pool_namespace: "kube-system".into(),
            pool_name: "kubevip".into(),
        }
    }

    fn serves(&self, svc: &Service) -> bool {
        let Some(spec) = &svc.spec else {
            return false;
        };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return false;
        }
        match spec.load_balancer_class.as_deref() {
            None => self.serve_unclassed,
            Some(CLASS) => true,
            Some(KUBE_VIP_CLASS) => self.kube_vip_compat,
            Some(_) => false,
        }
    }
}

/// What one pass did (for logs, metrics and tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// LoadBalancer Services this node serves, and how many hold an address.
    pub served: usize,
    pub with_address: usize,
    pub allocated: Vec<String>,
    pub owner_changed: Vec<String>,
    pub failed: Vec<String>,
    pub released: Vec<String>,
    /// (pool, addresses, held) after the pass.
    pub pools: Vec<(String, u128, usize)>,
}

/// What the Kubernetes source publishes to the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub services: Vec<ModelService>,
    /// VIPs of Services with `externalTrafficPolicy: Local`, and whether this node may hold
    /// them: it has a ready endpoint of every such Service on the VIP. Those VIPs are
    /// elected one lease each, among eligible nodes only.
    pub local: BTreeMap<Ipv4Addr, bool>,
    /// The same VIPs, and every node that may hold each: the nodes (EndpointSlice
    /// `nodeName`) with a ready endpoint of every Local Service on the VIP (rendezvous
    /// election places the VIP among these).
    pub eligible: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    /// BGP communities / LOCAL_PREF per VIP, from its pool and its Services' annotations
    /// (VIPs without any are absent).
    pub routes: BTreeMap<Ipv4Addr, crate::bgp::RoutePolicy>,
}

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

pub struct Controller {
    client: Client,
    cfg: ControllerConfig,
    ipam: Ipam,
    restored: bool,
    /// Services we allocated for (to release when they go).
    known: HashSet<(String, String)>,
    /// Services whose last pass failed, with the message (one Event per new failure).
    failing: BTreeMap<(String, String), String>,
    /// Services whose BGP annotations are malformed (warned once per new message).
    bad_annotations: BTreeMap<(String, String), String>,
}

fn key(s: &Service) -> (String, String) {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

fn annotation<'a>(s: &'a Service, names: &[&str]) -> Option<&'a str> {
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

/// The model's services for `svc` at `vips`: one per (VIP, port), backends = ready
/// endpoints of the Service's EndpointSlices with the target port resolved by port name.
///
/// `externalTrafficPolicy: Local`: only endpoints on `node` are backends (traffic never
/// leaves the node, so the client address is kept), and the second value says whether
/// `node` has any ready endpoint, i.e. may hold the VIP. `None` for `Cluster`.
pub fn model_services(
    svc: &Service,
    slices: &[EndpointSlice],
    vips: &[Ipv4Addr],
    node: &str,
) -> (Vec<ModelService>, Option<bool>) {
    let (ns, name) = key(svc);
    let local_only = svc
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local");
    let on_node = |ep: &k8s_openapi::api::discovery::v1::Endpoint| {
        !local_only || ep.node_name.as_deref() == Some(node)
    };
    let ready = |ep: &k8s_openapi::api::discovery::v1::Endpoint| {
        ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
    };
    let mode = match annotation(svc, &[MODE_ANNOTATION]) {
        Some("dsr") => LbMode::Dsr,
        Some("nat") => LbMode::Nat,
        _ => LbMode::Local,
    };
    let mine: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|e| {
            e.metadata.namespace.as_deref() == Some(ns.as_str())
                && e.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(name.as_str())
                && e.address_type == "IPv4"
        })
        .collect();
    let mut out = Vec::new();
    for p in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
    {
        let proto = match p.protocol.as_deref().unwrap_or("TCP") {
            "UDP" => Proto::Udp,
            "TCP" => Proto::Tcp,
            _ => continue,
        };
        let mut backends: BTreeSet<(Ipv4Addr, u16)> = BTreeSet::new();
        for es in &mine {
            let target = es.ports.as_ref().and_then(|ps| {
                ps.iter()
                    .find(|ep| ep.name == p.name && ep.protocol == p.protocol)
                    .and_then(|ep| ep.port)
            });
            let Some(tport) = target else { continue };
            for ep in &es.endpoints {
                if !ready(ep) || !on_node(ep) {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        backends.insert((ip, tport as u16));
                    }
                }
            }
        }
        for vip in vips {
            out.push(ModelService {
                vip: *vip,
                port: p.port as u16,
                proto,
                mode,
                backends: if mode == LbMode::Local {
                    Vec::new()
                } else {
                    backends
                        .iter()
                        .map(|(addr, port)| Backend {
                            addr: *addr,
                            port: *port,
                            weight: 1,
                        })
                        .collect()
                },
            });
        }
    }
    let eligible = local_only.then(|| {
        mine.iter()
            .flat_map(|es| es.endpoints.iter())
            .any(|ep| ready(ep) && on_node(ep))
    });
    (out, eligible)
}

/// `externalTrafficPolicy: Local`: the nodes with a ready endpoint of `svc` (EndpointSlice
/// `nodeName`); `None` for `Cluster`.
pub fn ready_nodes(svc: &Service, slices: &[EndpointSlice]) -> Option<BTreeSet<String>> {
    let local = svc
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local");
    if !local {
        return None;
    }
    let (ns, name) = key(svc);
    Some(
        slices
            .iter()
            .filter(|e| {
                e.metadata.namespace.as_deref() == Some(ns.as_str())
                    && e.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .map(String::as_str)
                        == Some(name.as_str())
                    && e.address_type == "IPv4"
            })
            .flat_map(|es| es.endpoints.iter())
            .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|ep| ep.node_name.clone())
            .collect(),
    )
}

impl Controller {
    pub fn new(client: Client, cfg: ControllerConfig) -> Self {
        Self {
            client,
            cfg,
            ipam: Ipam::default(),
            restored: false,
            known: HashSet::new(),
            failing: BTreeMap::new(),
            bad_annotations: BTreeMap::new(),
        }
    }

    async fn event(&self, svc: &Service, type_: &str, reason: &str, message: &str) {
        let (ns, name) = key(svc);
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            name: Some(name),
            namespace: Some(ns.clone()),
            uid: svc.metadata.uid.clone(),
            ..Default::default()
        };
        self.record(&ns, object, type_, reason, message).await;
    }

    /// The data plane could not take a service (VIP, port, protocol): a Warning on every
    /// Service with that address and port, naming this node and why.
    pub async fn unplaced_event(
        &self,
        services: &[Service],
        what: crate::reconcile::Unplaced,
        why: &str,
    ) {
        let message = format!("node {} could not serve {what}: {why}", self.cfg.node);
        for s in services {
            let on_vip = status_ips(s).contains(&IpAddr::V4(what.vip));
            let on_port = s
                .spec
                .as_ref()
                .and_then(|sp| sp.ports.as_ref())
                .is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p.port == i32::from(what.port)
                            && p.protocol
                                .as_deref()
                                .unwrap_or("TCP")
                                .eq_ignore_ascii_case(what.proto.as_str())
                    })
                });
            if on_vip && on_port {
                self.event(s, "Warning", "ServiceNotApplied", &message)
                    .await;
            }
        }
    }

    /// Another host claims a VIP this node owns (seen by XDP): a Warning on every Service
    /// with that address, or on this Node for a VIP no Service has (the control plane's).
    pub async fn conflict_event(&self, services: &[Service], vip: Ipv4Addr, mac: [u8; 6]) {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        let message = format!(
            "host {mac} claims {vip}, which node {} owns; re-announcing (check for a duplicate address)",
            self.cfg.node
        );
        let on: Vec<&Service> = services
            .iter()
            .filter(|s| status_ips(s).contains(&IpAddr::V4(vip)))
            .collect();
        if on.is_empty() {
            let object = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.cfg.node.clone()),
                ..Default::default()
            };
            self.record("default", object, "Warning", "VIPConflict", &message)
                .await;
        }
        for s in on {
            self.event(s, "Warning", "VIPConflict", &message).await;
        }
    }

    async fn record(
        &self,
        ns: &str,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let now = Timestamp::now();
        let name = object.name.clone().unwrap_or_default();
        let ev = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            involved_object: object,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some("vip".into()),
            reporting_instance: Some(self.cfg.node.clone()),
            action: Some(reason.into()),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            tracing::warn!(error = %e, reason, "event not recorded");
        }
    }

    /// One reconciliation pass. Returns the view (every node computes it); as leader,
    /// allocates and writes statuses; as the holder of a VIP (`held`: VIPs this node has
    /// applied in its data plane), writes the holder annotation of the Services on it.
    pub async fn pass(
        &mut self,
        services: &[Service],
        slices: &[EndpointSlice],
        pools: Option<&ConfigMap>,
        leader: bool,
        held: &BTreeSet<Ipv4Addr>,
    ) -> (View, PassReport) {
        let mut report = PassReport::default();
        let data = pools.and_then(|c| c.data.clone()).unwrap_or_default();
        match Pools::from_configmap(&data) {
            Ok(p) => self.ipam.set_pools(p),
            Err(e) => {
                tracing::error!(error = %e, "pool ConfigMap rejected; keeping the previous pools")
            }
        }
        let served: Vec<&Service> = services.iter().filter(|s| self.cfg.serves(s)).collect();
        if !self.restored {
            // Addresses already in statuses are taken before anything is allocated.
            for s in &served {
                let ips = status_ips(s);
                if !ips.is_empty() {
                    self.ipam.restore(&request(s), &ips);
                    self.known.insert(key(s));
                }
            }
            self.restored = true;
        }
        // Released: Services gone or no longer ours.
        let present: HashSet<(String, String)> = served.iter().map(|s| key(s)).collect();
        for k in self.known.clone() {
            if !present.contains(&k) {
                self.ipam.release(&k.0, &k.1);
                self.known.remove(&k);
                self.failing.remove(&k);
                report.released.push(format!("{}/{}", k.0, k.1));
            }
        }
        let mut view = View::default();
        report.served = served.len();
        for s in served {
            let k = key(s);
            let mut ips = status_ips(s);
            if leader {
                match self.ipam.allocate(&request(s)) {
                    Ok(got) => {
                        self.known.insert(k.clone());
                        self.failing.remove(&k);
                        let mut want = got.clone();
                        want.sort();
                        let mut have = ips.clone();
                        have.sort();
                        if want != have {
                            if self.write_status(s, &got).await {
                                let list: Vec<String> = got.iter().map(IpAddr::to_string).collect();
                                self.event(
                                    s,
                                    "Normal",
                                    "IPAllocated",
                                    &format!("Assigned IP {}", list.join(", ")),
                                )
                                .await;
                                report.allocated.push(format!("{}/{}", k.0, k.1));
                            }
                            ips = got;
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if self.failing.get(&k) != Some(&msg) {
                            self.event(s, "Warning", "AllocationFailed", &msg).await;
                            self.failing.insert(k.clone(), msg.clone());
                        }
                        report.failed.push(format!("{}/{}: {msg}", k.0, k.1));
                    }
                }
            }
            if !ips.is_empty() {
                report.with_address += 1;
                if !leader {
                    // Track the leader's allocations, so that leading later never hands out
                    // an address a Service already has.
                    self.ipam.restore(&request(s), &ips);
                    self.known.insert(k.clone());
                }
            }
            let v4: Vec<Ipv4Addr> = ips
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(v) => Some(*v),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let holds = v4.iter().any(|v| held.contains(v));
            let before = annotation(s, &[HOLDER]);
            if holds && before != Some(self.cfg.node.as_str()) {
                // The VIP is advertised from here now: say so where operators look.
                let before = before.map(str::to_string);
                if self.write_holder(s).await {
                    if let Some(before) = before {
                        self.event(
                            s,
                            "Normal",
                            "OwnerChanged",
                            &format!("VIP now held by {} (was {before})", self.cfg.node),
                        )
                        .await;
                        report.owner_changed.push(format!("{}/{}", k.0, k.1));
                    }
                }
            }
            let own_policy = match bgp_annotations(s) {
                Ok(p) => {
                    self.bad_annotations.remove(&k);
                    p
                }
                Err(msg) => {
                    if self.bad_annotations.get(&k) != Some(&msg) {
                        tracing::warn!(service = %format!("{}/{}", k.0, k.1), error = %msg, "BGP annotation ignored");
                        if leader {
                            self.event(s, "Warning", "BadAnnotation", &msg).await;
                        }
                        self.bad_annotations.insert(k.clone(), msg);
                    }
                    crate::bgp::RoutePolicy::default()
                }
            };
            for v in &v4 {
                let p = self
                    .ipam
                    .pools()
                    .bgp_policy(IpAddr::V4(*v))
                    .merged(&own_policy);
                if p != crate::bgp::RoutePolicy::default() {
                    // Services sharing a VIP: their communities add up.
                    let cur = view.routes.entry(*v).or_default();
                    *cur = cur.merged(&p);
                }
            }
            if let Some(nodes) = ready_nodes(s, slices) {
                for v in &v4 {
                    // Every Local Service sharing the VIP must have an endpoint there.
                    match view.eligible.entry(*v) {
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(nodes.clone());
                        }
                        std::collections::btree_map::Entry::Occupied(mut e) => {
                            e.get_mut().retain(|n| nodes.contains(n));
                        }
                    }
                }
            }
            let (services, eligible) = model_services(s, slices, &v4, &self.cfg.node);
            view.services.extend(services);
            if let Some(e) = eligible {
                for v in &v4 {
                    // Every Local Service sharing the VIP must have an endpoint here.
                    let cur = view.local.entry(*v).or_insert(true);
                    *cur = *cur && e;
                }
            }
        }
        report.pools = self.ipam.usage();
        (view, report)
    }

    async fn write_status(&self, s: &Service, ips: &[IpAddr]) -> bool {
        let (ns, name) = key(s);
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let ingress: Vec<_> = ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
            .collect();
        let status = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "status not written");
            return false;
        }
        true
    }

    async fn write_holder(&self, s: &Service) -> bool {
        let (ns, name) = key(s);
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let holder = json!({"metadata": {"annotations": {HOLDER: self.cfg.node}}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&holder))
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "holder annotation not written");
                false
            }
        }
    }
}
