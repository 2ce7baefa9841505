//! Services of type LoadBalancer → addresses (IPAM), `status.loadBalancer`, Events, and the
//! model the reconciler applies. Incremental: watch events go into compact caches (only the
//! fields used here; EndpointSlices indexed by their Service), a change marks the Services it
//! touches dirty, and [`Controller::step`] recomputes only those, keeping each Service's
//! result so the [`View`] is updated rather than rebuilt from the whole cluster. A full
//! recompute happens only when it must: the pool ConfigMap changed, leadership changed, or
//! the caches became complete for the first time.
//!
//! Only the leader writes (allocations, status, Events); every node computes the same model
//! from what the statuses say, so services' rings are installed everywhere and an owner
//! change keeps flows on their backends. The leader's allocation is in the view at once (the
//! IPAM holds the address); its writes go through [`super::writer`], in the background.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::api::{
    core::v1::{ConfigMap, ObjectReference, Service},
    discovery::v1::EndpointSlice,
};
use kube::Client;

use super::ipam::{Ipam, Pools};
use super::objects::*;
pub use super::objects::{
    bgp_annotations, request, status_ips, Key, Slice, Svc, BGP_COMMUNITIES_ANNOTATION,
    BGP_LOCAL_PREF_ANNOTATION, CLASS, HOLDER, KUBE_VIP_CLASS, MODE_ANNOTATION,
};
pub use super::translate::model_services;
use super::translate::{compute_model, ready_nodes};
use super::writer::{Counters, EventSpec, Write, Writer};
use crate::model::Service as ModelService;

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

    pub fn serves(&self, svc: &Service) -> bool {
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
    /// Services recomputed by the pass (the incremental work it did).
    pub recomputed: usize,
}

/// What the Kubernetes source publishes to the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Sorted by `model::ServiceId`, one per id (an earlier Service, by namespace/name, wins
    /// over a later one on the same id). Shared: the daemon's plan holds the same list.
    pub services: std::sync::Arc<[ModelService]>,
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

/// A Service's computed contribution to the view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Computed {
    services: Vec<ModelService>,
    /// `externalTrafficPolicy: Local`: whether this node may hold the VIPs.
    eligible: Option<bool>,
    /// `externalTrafficPolicy: Local`: the nodes that may (a ready endpoint there).
    ready: Option<BTreeSet<String>>,
    v4: Vec<Ipv4Addr>,
    routes: Vec<(Ipv4Addr, crate::bgp::RoutePolicy)>,
    with_address: bool,
}

impl Computed {
    /// The same contribution to the view apart from the services (`with_address` is not in
    /// the view).
    fn same_around(&self, o: &Computed) -> bool {
        self.eligible == o.eligible
            && self.ready == o.ready
            && self.v4 == o.v4
            && self.routes == o.routes
    }
}

/// Writes issued for a Service, with the resourceVersion they were decided on: not
/// repeated while the cache still shows that version.
#[derive(Debug, Default)]
struct Sent {
    status: Option<(Vec<IpAddr>, Option<String>)>,
    holder: Option<Option<String>>,
}

struct Cached {
    rv: Option<String>,
    svc: Svc,
}

/// Which watch stream an init/done concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Services,
    Slices,
    Pools,
}

pub struct Controller {
    client: Client,
    cfg: ControllerConfig,
    ipam: Ipam,
    restored: bool,
    /// Services we allocated for (to release when they go).
    known: HashSet<Key>,
    /// Services whose last allocation failed, with the message (one Event per new failure).
    failing: BTreeMap<Key, String>,
    /// Services whose BGP annotations are malformed (warned once per new message).
    bad_annotations: BTreeMap<Key, String>,
    /// Served Services.
    svcs: BTreeMap<Key, Cached>,
    /// IPv4 EndpointSlices by (namespace, name), and their names by Service.
    slices: HashMap<Key, Slice>,
    by_service: HashMap<Key, BTreeSet<String>>,
    /// Relists in progress (watch restarted): the caches are replaced at their end.
    init_svcs: Option<BTreeMap<Key, Cached>>,
    init_slices: Option<HashMap<Key, Slice>>,
    init_pool: Option<BTreeMap<String, String>>,
    pool_data: Option<BTreeMap<String, String>>,
    /// Each stream has completed a list at least once.
    synced: [bool; 3],
    results: BTreeMap<Key, Computed>,
    /// The results' services by id, each with the Services contributing one (kept with the
    /// results, so a view is built without going through every Service).
    by_id: BTreeMap<crate::model::ServiceId, BTreeMap<Key, ModelService>>,
    /// The service each id is served as (its first contributor's): the view's list.
    winners: BTreeMap<crate::model::ServiceId, ModelService>,
    with_address: usize,
    by_vip: HashMap<Ipv4Addr, BTreeSet<Key>>,
    dirty: BTreeSet<Key>,
    full: bool,
    leader: bool,
    held: BTreeSet<Ipv4Addr>,
    sent: HashMap<Key, Sent>,
    counters: Counters,
    writer: Option<Writer>,
    /// Shared with the daemon: a publication is one pointer copy.
    view: std::sync::Arc<View>,
    view_stale: bool,
    /// The services changed since the view was last built (else its list is shared on).
    services_stale: bool,
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
            svcs: BTreeMap::new(),
            slices: HashMap::new(),
            by_service: HashMap::new(),
            init_svcs: None,
            init_slices: None,
            init_pool: None,
            pool_data: None,
            synced: [false; 3],
            results: BTreeMap::new(),
            by_id: BTreeMap::new(),
            winners: BTreeMap::new(),
            with_address: 0,
            by_vip: HashMap::new(),
            dirty: BTreeSet::new(),
            full: false,
            leader: false,
            held: BTreeSet::new(),
            sent: HashMap::new(),
            counters: Counters::default(),
            writer: None,
            view: Default::default(),
            view_stale: false,
            services_stale: false,
        }
    }

    /// Count write failures and give-ups in these (the daemon's metrics).
    pub fn with_counters(mut self, counters: Counters) -> Self {
        self.counters = counters;
        self
    }

    fn writer(&mut self) -> &Writer {
        let (client, counters) = (&self.client, &self.counters);
        self.writer
            .get_or_insert_with(|| Writer::start(client.clone(), counters.clone()))
    }

    fn write(&mut self, k: &Key, w: Write) {
        let k = k.clone();
        self.writer().send(k, w);
    }

    /// Until every write issued so far is done (written or given up).
    pub async fn flush(&self) {
        if let Some(w) = &self.writer {
            w.flush().await;
        }
    }

    /// Writes queued or in flight.
    pub fn pending_writes(&self) -> usize {
        self.writer.as_ref().map_or(0, Writer::pending)
    }

    fn event_spec(
        &self,
        namespace: &str,
        object: ObjectReference,
        type_: &str,
        reason: &str,
        message: &str,
    ) -> EventSpec {
        EventSpec {
            namespace: namespace.to_string(),
            object,
            type_: type_.into(),
            reason: reason.into(),
            message: message.into(),
            reporter: self.cfg.node.clone(),
        }
    }

    fn event(&mut self, k: &Key, svc: &Svc, type_: &str, reason: &str, message: &str) {
        let ev = self.event_spec(&k.0, svc.object(k), type_, reason, message);
        self.write(k, Write::Event(ev));
    }

    // ---- caches ----

    /// A Service was added or changed (watch `Apply`).
    pub fn apply_service(&mut self, s: &Service) {
        let k = key(s);
        if !self.cfg.serves(s) {
            self.remove_service(&k);
            return;
        }
        let c = Cached {
            rv: s.metadata.resource_version.clone(),
            svc: Svc::of(s),
        };
        if let Some(init) = &mut self.init_svcs {
            init.insert(
                k.clone(),
                Cached {
                    rv: c.rv.clone(),
                    svc: c.svc.clone(),
                },
            );
        }
        self.put_service(k, c);
    }

    fn put_service(&mut self, k: Key, c: Cached) {
        let changed = match self.svcs.get_mut(&k) {
            Some(cur) if cur.svc == c.svc => {
                cur.rv = c.rv;
                false
            }
            _ => {
                self.svcs.insert(k.clone(), c);
                true
            }
        };
        if changed {
            self.dirty.insert(k);
        }
    }

    /// A Service was deleted (watch `Delete`).
    pub fn delete_service(&mut self, s: &Service) {
        let k = key(s);
        if let Some(init) = &mut self.init_svcs {
            init.remove(&k);
        }
        self.remove_service(&k);
    }

    fn remove_service(&mut self, k: &Key) {
        if self.svcs.remove(k).is_some() || self.results.contains_key(k) {
            self.dirty.insert(k.clone());
        }
    }

    /// An EndpointSlice was added or changed.
    pub fn apply_slice(&mut self, e: &EndpointSlice) {
        let ns = e.metadata.namespace.clone().unwrap_or_default();
        let k = (ns, e.metadata.name.clone().unwrap_or_default());
        match Slice::of(e) {
            Some(s) => {
                if let Some(init) = &mut self.init_slices {
                    init.insert(k.clone(), s.clone());
                }
                self.put_slice(k, s);
            }
            None => {
                if let Some(init) = &mut self.init_slices {
                    init.remove(&k);
                }
                self.remove_slice(&k);
            }
        }
    }

    pub fn delete_slice(&mut self, e: &EndpointSlice) {
        let ns = e.metadata.namespace.clone().unwrap_or_default();
        let k = (ns, e.metadata.name.clone().unwrap_or_default());
        if let Some(init) = &mut self.init_slices {
            init.remove(&k);
        }
        self.remove_slice(&k);
    }

    fn put_slice(&mut self, k: Key, s: Slice) {
        if self.slices.get(&k) == Some(&s) {
            return;
        }
        self.remove_slice(&k);
        let svc = (k.0.clone(), s.service.clone());
        self.by_service
            .entry(svc.clone())
            .or_default()
            .insert(k.1.clone());
        self.dirty.insert(svc);
        self.slices.insert(k, s);
    }

    fn remove_slice(&mut self, k: &Key) {
        if let Some(old) = self.slices.remove(k) {
            let svc = (k.0.clone(), old.service);
            if let Some(set) = self.by_service.get_mut(&svc) {
                set.remove(&k.1);
                if set.is_empty() {
                    self.by_service.remove(&svc);
                }
            }
            self.dirty.insert(svc);
        }
    }

    /// The pool ConfigMap (None: absent). A change recomputes every Service.
    pub fn set_pools(&mut self, cm: Option<&ConfigMap>) {
        let data = cm.and_then(|c| c.data.clone()).unwrap_or_default();
        if self.init_pool.is_some() {
            self.init_pool = Some(data.clone());
        }
        if self.pool_data.as_ref() == Some(&data) {
            return;
        }
        match Pools::from_configmap(&data) {
            Ok(p) => self.ipam.set_pools(p),
            Err(e) => {
                tracing::error!(error = %crate::Chain(&e), "pool ConfigMap rejected; keeping the previous pools")
            }
        }
        self.pool_data = Some(data);
        self.full = true;
    }

    /// A watch (re)started its list: what it lists replaces the cache at `init_done`.
    pub fn init(&mut self, kind: Kind) {
        match kind {
            Kind::Services => self.init_svcs = Some(BTreeMap::new()),
            Kind::Slices => self.init_slices = Some(HashMap::new()),
            Kind::Pools => self.init_pool = Some(BTreeMap::new()),
        }
    }

    /// The list is complete: objects it did not list are gone.
    pub fn init_done(&mut self, kind: Kind) {
        match kind {
            Kind::Services => {
                if let Some(new) = self.init_svcs.take() {
                    let gone: Vec<Key> = self
                        .svcs
                        .keys()
                        .filter(|k| !new.contains_key(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.remove_service(&k);
                    }
                    for (k, c) in new {
                        self.put_service(k, c);
                    }
                }
                self.synced[0] = true;
            }
            Kind::Slices => {
                if let Some(new) = self.init_slices.take() {
                    let gone: Vec<Key> = self
                        .slices
                        .keys()
                        .filter(|k| !new.contains_key(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        self.remove_slice(&k);
                    }
                    for (k, s) in new {
                        self.put_slice(k, s);
                    }
                }
                self.synced[1] = true;
            }
            Kind::Pools => {
                if let Some(data) = self.init_pool.take() {
                    let cm = ConfigMap {
                        data: Some(data),
                        ..Default::default()
                    };
                    self.set_pools(Some(&cm));
                }
                self.synced[2] = true;
            }
        }
    }

    /// Every cache holds a complete list (allocation waits for it: statuses restore first).
    pub fn ready(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Leadership changed: every Service is looked at again.
    pub fn set_leader(&mut self, leader: bool) {
        if leader != self.leader {
            self.leader = leader;
            self.full = true;
        }
    }

    /// VIPs this node has applied in its data plane (holder annotations follow them): the
    /// Services on VIPs that came or went are looked at again.
    pub fn set_held(&mut self, held: BTreeSet<Ipv4Addr>) {
        if held == self.held {
            return;
        }
        for v in self.held.symmetric_difference(&held) {
            if let Some(keys) = self.by_vip.get(v) {
                self.dirty.extend(keys.iter().cloned());
            }
        }
        self.held = held;
    }

    /// The periodic resync: only what failed is tried again (allocations, and writes given
    /// up after their retries); nothing else costs anything.
    pub fn resync(&mut self) {
        let gave_up = self
            .writer
            .as_ref()
            .map(Writer::take_given_up)
            .unwrap_or_default();
        for k in gave_up {
            self.sent.remove(&k);
            self.dirty.insert(k);
        }
        if self.leader {
            let failing: Vec<Key> = self.failing.keys().cloned().collect();
            self.dirty.extend(failing);
        }
    }

    /// Services whose allocation is failing.
    pub fn failing(&self) -> usize {
        self.failing.len()
    }

    /// Whether a `step` has anything to do.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || self.full || !self.restored
    }

    /// The current view (what `step` last computed).
    pub fn view(&self) -> &std::sync::Arc<View> {
        &self.view
    }

    /// Whether the view changed since the last `take_view_changed`.
    pub fn take_view_changed(&mut self) -> bool {
        std::mem::take(&mut self.view_stale)
    }

    /// Recompute the dirty Services (all of them after a pool, leadership or first full
    /// sync), issue the writes they need, and update the view.
    pub fn step(&mut self) -> PassReport {
        let mut report = PassReport::default();
        if !self.restored {
            // Addresses already in statuses are taken before anything is allocated.
            for (k, c) in &self.svcs {
                if !c.svc.status.is_empty() {
                    self.ipam.restore(&c.svc.request, &c.svc.status);
                    self.known.insert(k.clone());
                }
            }
            self.restored = true;
            self.full = true;
        }
        if std::mem::take(&mut self.full) {
            self.dirty.extend(self.svcs.keys().cloned());
            self.dirty.extend(self.results.keys().cloned());
        }
        let dirty = std::mem::take(&mut self.dirty);
        // Released first: Services gone or no longer ours.
        let mut freed = false;
        let gone: Vec<Key> = dirty
            .iter()
            .filter(|k| !self.svcs.contains_key(*k))
            .cloned()
            .collect();
        for k in &gone {
            if self.known.remove(k) {
                self.ipam.release(&k.0, &k.1);
                report.released.push(format!("{}/{}", k.0, k.1));
                freed = true;
            }
            self.failing.remove(k);
            self.bad_annotations.remove(k);
            self.sent.remove(k);
            self.set_result(k, None);
        }
        let mut work: BTreeSet<Key> = dirty
            .into_iter()
            .filter(|k| self.svcs.contains_key(k))
            .collect();
        if freed && self.leader {
            // An address came free: those that waited for one try again.
            work.extend(self.failing.keys().cloned());
        }
        for k in &work {
            self.recompute(k, &mut report);
        }
        report.recomputed = work.len();
        report.served = self.svcs.len();
        report.with_address = self.with_address;
        report.pools = self.ipam.usage();
        if self.view_stale {
            self.rebuild_view();
        }
        report
    }

    fn set_result(&mut self, k: &Key, new: Option<Computed>) {
        let old = match &new {
            Some(n) => {
                if self.results.get(k) == Some(n) {
                    return;
                }
                self.results.insert(k.clone(), n.clone())
            }
            None => self.results.remove(k),
        };
        if old.is_none() && new.is_none() {
            return;
        }
        let mut ids: Vec<crate::model::ServiceId> = Vec::new();
        if let Some(o) = &old {
            for m in &o.services {
                ids.push(m.id());
                if let Some(c) = self.by_id.get_mut(&m.id()) {
                    c.remove(k);
                    if c.is_empty() {
                        self.by_id.remove(&m.id());
                    }
                }
            }
            self.with_address -= usize::from(o.with_address);
            for v in &o.v4 {
                if let Some(set) = self.by_vip.get_mut(v) {
                    set.remove(k);
                    if set.is_empty() {
                        self.by_vip.remove(v);
                    }
                }
            }
        }
        if let Some(n) = &new {
            for m in &n.services {
                ids.push(m.id());
                self.by_id
                    .entry(m.id())
                    .or_default()
                    .entry(k.clone())
                    .or_insert_with(|| m.clone());
            }
            self.with_address += usize::from(n.with_address);
            for v in &n.v4 {
                self.by_vip.entry(*v).or_default().insert(k.clone());
            }
        }
        // Only what the view is made of: a status echo that flips `with_address` alone changes
        // nothing the daemon would act on.
        for id in ids {
            match self.by_id.get(&id).and_then(|c| c.values().next()) {
                Some(w) => {
                    self.winners.insert(id, w.clone());
                }
                None => {
                    self.winners.remove(&id);
                }
            }
        }
        let (services_same, rest_same) = match (&old, &new) {
            (Some(o), Some(n)) => (o.services == n.services, o.same_around(n)),
            _ => (false, false),
        };
        if !services_same {
            self.services_stale = true;
        }
        if !(services_same && rest_same) {
            self.view_stale = true;
        }
    }

    /// The view from the kept results: no Service is recomputed.
    fn rebuild_view(&mut self) {
        let services = if std::mem::take(&mut self.services_stale) {
            self.winners.values().cloned().collect()
        } else {
            self.view.services.clone()
        };
        let mut view = View {
            services,
            ..View::default()
        };
        for r in self.results.values() {
            if let Some(e) = r.eligible {
                for v in &r.v4 {
                    // Every Local Service sharing the VIP must have an endpoint here.
                    let cur = view.local.entry(*v).or_insert(true);
                    *cur = *cur && e;
                }
            }
            if let Some(nodes) = &r.ready {
                for v in &r.v4 {
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
            for (v, p) in &r.routes {
                // Services sharing a VIP: their communities add up.
                let cur = view.routes.entry(*v).or_default();
                *cur = cur.merged(p);
            }
        }
        self.view = std::sync::Arc::new(view);
    }

    /// One Service: allocation (leader), status and holder writes, its model.
    fn recompute(&mut self, k: &Key, report: &mut PassReport) {
        let Some(c) = self.svcs.get(k) else {
            return;
        };
        let (s, rv) = (c.svc.clone(), c.rv.clone());
        let name = format!("{}/{}", k.0, k.1);
        let mut ips = s.status.clone();
        if self.leader {
            match self.ipam.allocate(&s.request) {
                Ok(got) => {
                    self.known.insert(k.clone());
                    self.failing.remove(k);
                    let mut want = got.clone();
                    want.sort();
                    let mut have = ips.clone();
                    have.sort();
                    if want != have {
                        let sent = self.sent.entry(k.clone()).or_default();
                        let mark = Some((want, rv.clone()));
                        if sent.status != mark {
                            sent.status = mark;
                            let list: Vec<String> = got.iter().map(IpAddr::to_string).collect();
                            let then = self.event_spec(
                                &k.0,
                                s.object(k),
                                "Normal",
                                "IPAllocated",
                                &format!("Assigned IP {}", list.join(", ")),
                            );
                            self.write(
                                k,
                                Write::Status {
                                    ips: got.clone(),
                                    then: Some(then),
                                },
                            );
                            report.allocated.push(name.clone());
                        }
                        ips = got;
                    }
                }
                Err(e) => {
                    let msg = crate::Chain(&e).to_string();
                    if self.failing.get(k) != Some(&msg) {
                        self.event(k, &s, "Warning", "AllocationFailed", &msg);
                        self.failing.insert(k.clone(), msg.clone());
                    }
                    report.failed.push(format!("{name}: {msg}"));
                }
            }
        }
        if !ips.is_empty() && !self.leader {
            // Track the leader's allocations, so that leading later never hands out an
            // address a Service already has.
            self.ipam.restore(&s.request, &ips);
            self.known.insert(k.clone());
        }
        let v4: Vec<Ipv4Addr> = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(_) => None,
            })
            .collect();
        let holds = v4.iter().any(|v| self.held.contains(v));
        let before = s.holder.as_deref();
        if holds && before != Some(self.cfg.node.as_str()) {
            // The VIP is advertised from here now: say so where operators look.
            let sent = self.sent.entry(k.clone()).or_default();
            if sent.holder.as_ref() != Some(&rv) {
                sent.holder = Some(rv.clone());
                let then = before.map(|b| {
                    self.event_spec(
                        &k.0,
                        s.object(k),
                        "Normal",
                        "OwnerChanged",
                        &format!("VIP now held by {} (was {b})", self.cfg.node),
                    )
                });
                if then.is_some() {
                    report.owner_changed.push(name.clone());
                }
                let node = self.cfg.node.clone();
                self.write(k, Write::Holder { node, then });
            }
        }
        let own_policy = match &s.bgp {
            Ok(p) => {
                self.bad_annotations.remove(k);
                p.clone()
            }
            Err(msg) => {
                if self.bad_annotations.get(k) != Some(msg) {
                    tracing::warn!(service = %name, error = %msg, "BGP annotation ignored");
                    if self.leader {
                        self.event(k, &s, "Warning", "BadAnnotation", msg);
                    }
                    self.bad_annotations.insert(k.clone(), msg.clone());
                }
                crate::bgp::RoutePolicy::default()
            }
        };
        let mut routes = Vec::new();
        for v in &v4 {
            let p = self
                .ipam
                .pools()
                .bgp_policy(IpAddr::V4(*v))
                .merged(&own_policy);
            if p != crate::bgp::RoutePolicy::default() {
                routes.push((*v, p));
            }
        }
        let mine = self
            .by_service
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|n| self.slices.get(&(k.0.clone(), n.clone())));
        let ready = ready_nodes(&s, mine.clone());
        let (services, eligible) = compute_model(&s, mine, &v4, &self.cfg.node);
        let result = Computed {
            services,
            eligible,
            ready,
            with_address: !ips.is_empty(),
            v4,
            routes,
        };
        self.set_result(k, Some(result));
    }

    /// One pass over complete lists (the objects as a list or a cache holds them): the
    /// caches are replaced by them, only what changed is recomputed, and the writes it
    /// issues are done when it returns. As leader, allocates and writes statuses; as the
    /// holder of a VIP (`held`: VIPs this node has applied in its data plane), writes the
    /// holder annotation of the Services on it.
    pub async fn pass(
        &mut self,
        services: &[Service],
        slices: &[EndpointSlice],
        pools: Option<&ConfigMap>,
        leader: bool,
        held: &BTreeSet<Ipv4Addr>,
    ) -> (View, PassReport) {
        for kind in [Kind::Services, Kind::Slices, Kind::Pools] {
            self.init(kind);
        }
        for s in services {
            self.apply_service(s);
        }
        for e in slices {
            self.apply_slice(e);
        }
        self.set_pools(pools);
        for kind in [Kind::Services, Kind::Slices, Kind::Pools] {
            self.init_done(kind);
        }
        self.set_leader(leader);
        self.set_held(held.clone());
        let report = self.step();
        self.flush().await;
        ((*self.view).clone(), report)
    }

    /// The data plane could not take a service (VIP, port, protocol): a Warning on every
    /// Service with that address and port, naming this node and why.
    pub fn unplaced_event(&mut self, what: crate::reconcile::Unplaced, why: &str) {
        let message = format!("node {} could not serve {what}: {why}", self.cfg.node);
        let hit: Vec<(Key, Svc)> = self
            .svcs
            .iter()
            .filter(|(_, c)| {
                c.svc.status.contains(&IpAddr::V4(what.vip))
                    && c.svc.ports.iter().any(|p| {
                        p.port == i32::from(what.port)
                            && p.protocol
                                .as_deref()
                                .unwrap_or("TCP")
                                .eq_ignore_ascii_case(what.proto.as_str())
                    })
            })
            .map(|(k, c)| (k.clone(), c.svc.clone()))
            .collect();
        for (k, s) in hit {
            self.event(&k, &s, "Warning", "ServiceNotApplied", &message);
        }
    }

    /// Another host claims a VIP this node owns (seen by XDP): a Warning on every Service
    /// with that address, or on this Node for a VIP no Service has (the control plane's).
    pub fn conflict_event(&mut self, vip: Ipv4Addr, mac: [u8; 6]) {
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        let message = format!(
            "host {mac} claims {vip}, which node {} owns; re-announcing (check for a duplicate address)",
            self.cfg.node
        );
        let on: Vec<(Key, Svc)> = self
            .svcs
            .iter()
            .filter(|(_, c)| c.svc.status.contains(&IpAddr::V4(vip)))
            .map(|(k, c)| (k.clone(), c.svc.clone()))
            .collect();
        if on.is_empty() {
            let object = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.cfg.node.clone()),
                ..Default::default()
            };
            let ev = self.event_spec("default", object, "Warning", "VIPConflict", &message);
            let k = ("default".to_string(), self.cfg.node.clone());
            self.write(&k, Write::Event(ev));
        }
        for (k, s) in on {
            self.event(&k, &s, "Warning", "VIPConflict", &message);
        }
    }
}
