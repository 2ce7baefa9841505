//! What the election task holds between passes: the claims and node leases as the watch
//! last showed them, the VIPs this node serves (shared with the fence watchdog), and the
//! releases in progress. Here too: how a watch event updates the caches.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{runtime::watcher, Api};
use tokio::sync::watch;

use super::{
    nodes::Nodes,
    objects::{claim_name, claim_vip, holder, rv_num, NODE_PREFIX},
};
use crate::election::lease::{Fence, LeaseConfig};

/// VIPs this node serves: claim written (or re-written) by us in fence session `.1`.
pub(super) type Serving = Arc<Mutex<BTreeMap<IpAddr, u64>>>;

/// The VIPs served in the current fence session (none while the fence is closed).
pub(super) fn served(serving: &Serving, fence: &Fence) -> BTreeSet<IpAddr> {
    let Some(s) = fence.session() else {
        return BTreeSet::new();
    };
    serving
        .lock()
        .map(|m| {
            m.iter()
                .filter(|(_, at)| **at == s)
                .map(|(v, _)| *v)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn publish(tx: &watch::Sender<BTreeSet<IpAddr>>, now: BTreeSet<IpAddr>) {
    tx.send_if_modified(|h| {
        let changed = *h != now;
        *h = now;
        changed
    });
}

pub(super) struct State {
    /// Published at once whenever a VIP stops being served (before any API call).
    pub(super) held: Arc<watch::Sender<BTreeSet<IpAddr>>>,
    /// Some VIP was wanted once: until then (the daemon's first view of the Services may
    /// still be coming) no claim is cleaned up as belonging to a VIP that no longer exists.
    pub(super) wanted_ever: bool,
    pub(super) api: Api<Lease>,
    pub(super) cfg: LeaseConfig,
    pub(super) fence: Arc<Fence>,
    pub(super) serving: Serving,
    pub(super) claims: BTreeMap<IpAddr, Lease>,
    pub(super) nodes: Nodes,
    /// Released VIPs (out of `held`) waiting for the data plane before their claim is cleared.
    pub(super) releasing: BTreeMap<IpAddr, Instant>,
    /// Claims of VIPs not wanted any more, and since when (own clock).
    pub(super) unwanted: BTreeMap<IpAddr, Instant>,
    /// The watch has listed every Lease once: until then absence means nothing.
    pub(super) synced: bool,
    /// When this node's node lease was first held: free VIPs are claimed only a couple of
    /// retry periods later, so nodes starting together see each other first and share them.
    pub(super) first_live: Option<Instant>,
}

impl State {
    pub(super) fn new(
        held: Arc<watch::Sender<BTreeSet<IpAddr>>>,
        api: Api<Lease>,
        cfg: LeaseConfig,
        fence: Arc<Fence>,
        serving: Serving,
    ) -> State {
        State {
            held,
            wanted_ever: false,
            api,
            nodes: Nodes::new(&cfg),
            cfg,
            fence,
            serving,
            claims: BTreeMap::new(),
            releasing: BTreeMap::new(),
            unwanted: BTreeMap::new(),
            synced: false,
            first_live: None,
        }
    }

    pub(super) fn me(&self) -> &str {
        &self.cfg.identity
    }

    /// Live nodes: the others by the watch, this one while its fence holds.
    pub(super) fn live_nodes(&self) -> BTreeSet<String> {
        let mut out = self.nodes.live_others(self.me());
        if self.fence.is_leader() {
            out.insert(self.me().to_string());
        }
        out
    }

    /// The VIPs whose claim this node holds (as last seen).
    pub(super) fn ours(&self) -> Vec<IpAddr> {
        self.claims
            .iter()
            .filter(|(_, c)| holder(c) == Some(self.me()))
            .map(|(v, _)| *v)
            .collect()
    }

    pub(super) fn stop_serving(&self, vip: IpAddr) {
        if let Ok(mut s) = self.serving.lock() {
            s.remove(&vip);
        }
    }

    /// Stop serving `vip` now; its claim is handed on once the data plane dropped it.
    pub(super) fn release(&mut self, vip: IpAddr) {
        self.stop_serving(vip);
        self.releasing.entry(vip).or_insert_with(Instant::now);
    }

    /// Apply one watch event to the caches.
    pub(super) fn apply(&mut self, ev: watcher::Event<Lease>, init: &mut Option<Vec<Lease>>) {
        match ev {
            watcher::Event::Apply(l) => self.upsert(&l),
            watcher::Event::Delete(l) => self.remove(&l),
            watcher::Event::Init => *init = Some(Vec::new()),
            watcher::Event::InitApply(l) => {
                self.upsert(&l);
                if let Some(b) = init.as_mut() {
                    b.push(l);
                }
            }
            watcher::Event::InitDone => {
                self.synced = true;
                if let Some(listed) = init.take() {
                    self.forget_unlisted(&listed);
                }
            }
        }
    }

    /// After a full list: what was cached but not listed is gone.
    fn forget_unlisted(&mut self, listed: &[Lease]) {
        let names: BTreeSet<String> = listed
            .iter()
            .filter_map(|l| l.metadata.name.clone())
            .collect();
        self.claims.retain(|v, _| names.contains(&claim_name(*v)));
        self.nodes.forget_unlisted(&names);
    }

    fn upsert(&mut self, l: &Lease) {
        let Some(name) = l.metadata.name.as_deref() else {
            return;
        };
        if let Some(id) = name.strip_prefix(NODE_PREFIX) {
            self.nodes.seen(id, Some(l));
        } else if let Some(vip) = claim_vip(name) {
            // Never step back to an older version than one our own write returned.
            let newer = self
                .claims
                .get(&vip)
                .is_none_or(|c| rv_num(c) <= rv_num(l) || rv_num(c) == 0);
            if newer {
                self.claims.insert(vip, l.clone());
            }
        }
    }

    fn remove(&mut self, l: &Lease) {
        let Some(name) = l.metadata.name.as_deref() else {
            return;
        };
        if let Some(id) = name.strip_prefix(NODE_PREFIX) {
            self.nodes.seen(id, None);
        } else if let Some(vip) = claim_vip(name) {
            self.claims.remove(&vip);
        }
    }
}
