//! What the controller is told: watch events into its compact caches (relists replace a
//! cache at their end), the pool ConfigMap, leadership, the VIPs held here and the periodic
//! resync. Each input only marks the Services it touches dirty; the work is done by `step`.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    discovery::v1::EndpointSlice,
};

use super::{Controller, Key, Slice, Svc};
use crate::k8s::{ipam::Pools, objects::key, writer::Writer};

/// A served Service as the cache holds it, with the resourceVersion it was seen at.
pub(super) struct Cached {
    pub(super) rv: Option<String>,
    pub(super) svc: Svc,
}

/// Which watch stream an init/done concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Services,
    Slices,
    Pools,
}

impl Controller {
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
    pub fn set_held(&mut self, held: BTreeSet<IpAddr>) {
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
}
