//! One pass of the controller: Services gone are released first (an address freed lets the
//! failing ones try again), then every dirty Service is recomputed and the view rebuilt from
//! the kept results if any changed. Also the whole-list `pass` that tests and one-shot
//! callers drive the same steps with.
use std::{collections::BTreeSet, net::IpAddr};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    discovery::v1::EndpointSlice,
};

use super::{Controller, Key, Kind, View};

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

impl Controller {
    /// Services whose allocation is failing.
    pub fn failing(&self) -> usize {
        self.failing.len()
    }

    /// Whether a `step` has anything to do.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || self.full || !self.restored
    }

    /// Recompute the dirty Services (all of them after a pool, leadership or first full
    /// sync), issue the writes they need, and update the view.
    pub fn step(&mut self) -> PassReport {
        let mut report = PassReport::default();
        if !self.restored {
            self.restore_statuses();
        }
        if std::mem::take(&mut self.full) {
            self.dirty.extend(self.svcs.keys().cloned());
            self.dirty.extend(self.results.keys().cloned());
        }
        let dirty = std::mem::take(&mut self.dirty);
        let freed = self.release_gone(&dirty, &mut report);
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

    /// The first step: addresses already in statuses are taken before anything is
    /// allocated, and every Service is looked at.
    fn restore_statuses(&mut self) {
        for (k, c) in &self.svcs {
            if !c.svc.status.is_empty() {
                self.ipam.restore(&c.svc.request, &c.svc.status);
                self.known.insert(k.clone());
            }
        }
        self.restored = true;
        self.full = true;
    }

    /// Released first: Services gone or no longer ours. Whether an address came free.
    fn release_gone(&mut self, dirty: &BTreeSet<Key>, report: &mut PassReport) -> bool {
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
        freed
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
        held: &BTreeSet<IpAddr>,
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
}
