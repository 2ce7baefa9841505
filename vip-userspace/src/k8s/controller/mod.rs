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
//!
//! This file holds the state the controller keeps; the work on it is split by concern:
//!
//! ```text
//! watch events, leadership, held VIPs ──► inputs     (caches; marks Services dirty)
//!                                            │
//!                           step ◄───────────┘        (releases, then recompute per Service)
//!                             │
//!                             ├──► recompute ──► events (status / holder / Event writes)
//!                             │        │
//!                             │        └──► view::set_result (kept results, indexes)
//!                             └──► view::rebuild_view  (the published View)
//! ```
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
};

use kube::Client;

use super::ipam::Ipam;
pub use super::objects::{
    bgp_annotations, request, status_ips, Key, Slice, Svc, BGP_COMMUNITIES_ANNOTATION,
    BGP_LOCAL_PREF_ANNOTATION, CLASS, HOLDER, KUBE_VIP_CLASS, MODE_ANNOTATION,
};
pub use super::translate::model_services;
use super::writer::{Counters, Writer};
use crate::model::Service as ModelService;

mod config;
mod events;
mod inputs;
mod recompute;
mod step;
mod view;

pub use config::ControllerConfig;
pub use inputs::Kind;
pub use step::PassReport;
pub use view::View;

use inputs::Cached;
use recompute::Sent;
use view::Computed;

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
    /// IPv4 and IPv6 EndpointSlices by (namespace, name), and their names by Service.
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
    by_vip: HashMap<IpAddr, BTreeSet<Key>>,
    dirty: BTreeSet<Key>,
    full: bool,
    leader: bool,
    held: BTreeSet<IpAddr>,
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
}
