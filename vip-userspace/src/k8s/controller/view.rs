//! The published view and the kept results it is made of: each Service's computed
//! contribution, indexed by service id and by VIP, so a change to one Service updates the
//! view without going through every Service, and a change that alters nothing the daemon
//! acts on publishes nothing.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{Controller, Key};
use crate::model::Service as ModelService;

/// What the Kubernetes source publishes to the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Sorted by `model::ServiceId`, one per id (an earlier Service, by namespace/name, wins
    /// over a later one on the same id). Shared: the daemon's plan holds the same list.
    pub services: std::sync::Arc<[ModelService]>,
    /// VIPs of Services with `externalTrafficPolicy: Local`, and whether this node may hold
    /// them: it has a ready endpoint of every such Service on the VIP. Those VIPs are
    /// elected one lease each, among eligible nodes only.
    pub local: BTreeMap<IpAddr, bool>,
    /// The same VIPs, and every node that may hold each: the nodes (EndpointSlice
    /// `nodeName`) with a ready endpoint of every Local Service on the VIP (rendezvous
    /// election places the VIP among these).
    pub eligible: BTreeMap<IpAddr, BTreeSet<String>>,
    /// BGP communities / LOCAL_PREF per VIP, from its pool and its Services' annotations
    /// (VIPs without any are absent).
    pub routes: BTreeMap<IpAddr, crate::bgp::RoutePolicy>,
}

/// A Service's computed contribution to the view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Computed {
    pub(super) services: Vec<ModelService>,
    /// `externalTrafficPolicy: Local`: whether this node may hold the VIPs.
    pub(super) eligible: Option<bool>,
    /// `externalTrafficPolicy: Local`: the nodes that may (a ready endpoint there).
    pub(super) ready: Option<BTreeSet<String>>,
    pub(super) vips: Vec<IpAddr>,
    pub(super) routes: Vec<(IpAddr, crate::bgp::RoutePolicy)>,
    pub(super) with_address: bool,
}

impl Computed {
    /// The same contribution to the view apart from the services (`with_address` is not in
    /// the view).
    fn same_around(&self, o: &Computed) -> bool {
        self.eligible == o.eligible
            && self.ready == o.ready
            && self.vips == o.vips
            && self.routes == o.routes
    }
}

impl Controller {
    /// The current view (what `step` last computed).
    pub fn view(&self) -> &std::sync::Arc<View> {
        &self.view
    }

    /// Whether the view changed since the last `take_view_changed`.
    pub fn take_view_changed(&mut self) -> bool {
        std::mem::take(&mut self.view_stale)
    }

    /// Keep `new` as the Service's result (None: it has none any more), keeping the indexes
    /// in step and marking the view stale where it changes.
    pub(super) fn set_result(&mut self, k: &Key, new: Option<Computed>) {
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
            self.unindex(k, o, &mut ids);
        }
        if let Some(n) = &new {
            self.index(k, n, &mut ids);
        }
        // Only what the view is made of: a status echo that flips `with_address` alone changes
        // nothing the daemon would act on.
        self.refresh_winners(ids);
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

    /// Take an old result out of the indexes (its ids go into `ids`).
    fn unindex(&mut self, k: &Key, o: &Computed, ids: &mut Vec<crate::model::ServiceId>) {
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
        for v in &o.vips {
            if let Some(set) = self.by_vip.get_mut(v) {
                set.remove(k);
                if set.is_empty() {
                    self.by_vip.remove(v);
                }
            }
        }
    }

    /// Put a new result into the indexes (its ids go into `ids`).
    fn index(&mut self, k: &Key, n: &Computed, ids: &mut Vec<crate::model::ServiceId>) {
        for m in &n.services {
            ids.push(m.id());
            self.by_id
                .entry(m.id())
                .or_default()
                .entry(k.clone())
                .or_insert_with(|| m.clone());
        }
        self.with_address += usize::from(n.with_address);
        for v in &n.vips {
            self.by_vip.entry(*v).or_default().insert(k.clone());
        }
    }

    /// The service each touched id is now served as.
    fn refresh_winners(&mut self, ids: Vec<crate::model::ServiceId>) {
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
    }

    /// The view from the kept results: no Service is recomputed.
    pub(super) fn rebuild_view(&mut self) {
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
                for v in &r.vips {
                    // Every Local Service sharing the VIP must have an endpoint here.
                    let cur = view.local.entry(*v).or_insert(true);
                    *cur = *cur && e;
                }
            }
            if let Some(nodes) = &r.ready {
                for v in &r.vips {
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
}
