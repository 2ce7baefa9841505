//! One Lease per VIP: spreads service VIPs over the nodes, and restricts a VIP to the nodes
//! allowed to hold it (`externalTrafficPolicy: Local`: nodes with a ready local endpoint).
//!
//! The daemon says which VIPs this node competes for (`wanted`); each gets its own fenced
//! [`LeaseElector`]; the VIPs whose lease we hold come back on `held`. A VIP we stop
//! competing for leaves `held` at once, and its lease is released only after the data plane
//! no longer answers for it (`applied`), so the next holder never overlaps with us.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use tokio::sync::{watch, Notify};

use super::lease::{LeaseConfig, LeaseElector};

/// How long a retiring lease waits for the data plane to drop its VIP before it is released
/// anyway (a stuck daemon is fenced by the renew deadline regardless).
const RETIRE_WAIT: Duration = Duration::from_secs(3);

/// `vip-192-0-2-10`: the Lease of one VIP (a valid object name; readable in `kubectl get
/// lease`); IPv6: `vip-2001-0db8-…-0100` (see [`super::name_part`]).
pub fn lease_name(vip: IpAddr) -> String {
    format!("vip-{}", super::name_part(vip))
}

struct Entry {
    stop: watch::Sender<bool>,
    leader: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    forward: tokio::task::JoinHandle<()>,
}

pub struct VipLeases {
    wanted: watch::Sender<BTreeSet<IpAddr>>,
    pub held: watch::Receiver<BTreeSet<IpAddr>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl VipLeases {
    /// `base`: namespace, identity and timings shared by every per-VIP lease (its name is
    /// replaced per VIP; the readyz gate is for the control-plane lease only).
    pub fn start(
        client: kube::Client,
        base: LeaseConfig,
        applied: watch::Receiver<Vec<IpAddr>>,
        able: watch::Receiver<bool>,
    ) -> VipLeases {
        let (wanted, wanted_rx) = watch::channel(BTreeSet::new());
        let (held_tx, held) = watch::channel(BTreeSet::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            client, base, wanted_rx, held_tx, applied, able, stop_rx,
        ));
        VipLeases {
            wanted,
            held,
            stop,
            task,
        }
    }

    /// The VIPs this node competes for now.
    pub fn want(&self, vips: BTreeSet<IpAddr>) {
        self.wanted.send_if_modified(|w| {
            let changed = *w != vips;
            *w = vips;
            changed
        });
    }

    /// Stop competing and release every lease (call after the VIPs left the data plane).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// How long a node leaves a free VIP lease to others: a step of five retry periods per VIP
/// it holds or is about to take (`load`), plus a per-(node, VIP) offset below half a step so
/// equally loaded nodes don't collide; capped at half a lease so a failover is never slowed
/// much. Nodes racing for several new VIPs thus split them instead of the fastest taking all.
fn patience(base: &LeaseConfig, vip: IpAddr, load: usize) -> Duration {
    use std::hash::{Hash, Hasher};
    let step = base.retry_period * 5;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (base.identity.as_str(), vip).hash(&mut h);
    let offset = base.retry_period * (h.finish() % 3) as u32;
    (step * load.min(64) as u32 + offset).min(base.lease_duration / 2)
}

/// Free VIP leases this node's electors are waiting to take.
type Claims = Arc<std::sync::Mutex<BTreeSet<IpAddr>>>;

fn spawn_elector(
    client: &kube::Client,
    base: &LeaseConfig,
    vip: IpAddr,
    notify: &Arc<Notify>,
    held: &watch::Receiver<BTreeSet<IpAddr>>,
    claims: &Claims,
    able: &watch::Receiver<bool>,
) -> Option<Entry> {
    let mut cfg = base.clone();
    cfg.name = lease_name(vip);
    cfg.readyz_gate = false;
    let load = {
        let held = held.clone();
        let base = base.clone();
        let claims = claims.clone();
        Arc::new(move |free: bool| {
            let Ok(mut c) = claims.lock() else {
                return Duration::ZERO;
            };
            if !free {
                c.remove(&vip);
                return Duration::ZERO;
            }
            c.insert(vip);
            let others = c.len() - 1;
            patience(&base, vip, held.borrow().len() + others)
        })
    };
    let elector = match LeaseElector::new(client.clone(), cfg) {
        Ok(e) => e.with_patience(load).with_able(able.clone()),
        Err(e) => {
            tracing::error!(%vip, error = %crate::Chain(&e), "per-VIP lease not started");
            return None;
        }
    };
    let (tx, leader) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(elector.run(tx, stop_rx));
    let forward = {
        let mut rx = leader.clone();
        let notify = notify.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                notify.notify_one();
            }
        })
    };
    tracing::info!(%vip, lease = %lease_name(vip), "competing for VIP");
    Some(Entry {
        stop,
        leader,
        task,
        forward,
    })
}

/// Hand a lease on once the data plane no longer holds its VIP.
fn retire(vip: IpAddr, e: Entry, mut applied: watch::Receiver<Vec<IpAddr>>) {
    tokio::spawn(async move {
        let silent = tokio::time::timeout(RETIRE_WAIT, applied.wait_for(|a| !a.contains(&vip)));
        if silent.await.is_err() {
            tracing::warn!(%vip, "VIP still applied after {RETIRE_WAIT:?}; releasing its lease anyway");
        }
        e.forward.abort();
        let _ = e.stop.send(true);
        let _ = e.task.await;
        tracing::info!(%vip, "stopped competing for VIP");
    });
}

async fn run(
    client: kube::Client,
    base: LeaseConfig,
    mut wanted: watch::Receiver<BTreeSet<IpAddr>>,
    held: watch::Sender<BTreeSet<IpAddr>>,
    applied: watch::Receiver<Vec<IpAddr>>,
    able: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let notify = Arc::new(Notify::new());
    let held_rx = held.subscribe();
    let claims: Claims = Default::default();
    let mut entries: BTreeMap<IpAddr, Entry> = BTreeMap::new();
    loop {
        let want = wanted.borrow_and_update().clone();
        let gone: Vec<IpAddr> = entries
            .keys()
            .filter(|v| !want.contains(v))
            .copied()
            .collect();
        for v in gone {
            if let Some(e) = entries.remove(&v) {
                if let Ok(mut c) = claims.lock() {
                    c.remove(&v);
                }
                retire(v, e, applied.clone());
            }
        }
        for v in &want {
            if !entries.contains_key(v) {
                if let Some(e) =
                    spawn_elector(&client, &base, *v, &notify, &held_rx, &claims, &able)
                {
                    entries.insert(*v, e);
                }
            }
        }
        let now: BTreeSet<IpAddr> = entries
            .iter()
            .filter(|(_, e)| *e.leader.borrow())
            .map(|(v, _)| *v)
            .collect();
        held.send_if_modified(|h| {
            let changed = *h != now;
            *h = now;
            changed
        });
        tokio::select! {
            r = wanted.changed() => if r.is_err() { break },
            _ = notify.notified() => {}
            _ = stop.changed() => break,
        }
    }
    held.send_replace(BTreeSet::new());
    for (_, e) in entries {
        e.forward.abort();
        let _ = e.stop.send(true);
        let _ = e.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn loaded_nodes_wait_longer_but_never_past_half_a_lease() {
        let mut base = LeaseConfig::new("kube-system", "x", "node-a");
        base.retry_period = Duration::from_millis(100);
        base.lease_duration = Duration::from_secs(15);
        let vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        let idle = patience(&base, vip, 0);
        assert!(idle < Duration::from_millis(300), "{idle:?}");
        assert!(patience(&base, vip, 1) >= Duration::from_millis(500));
        assert!(patience(&base, vip, 2) > patience(&base, vip, 1));
        assert_eq!(patience(&base, vip, 1000), Duration::from_millis(7500));
    }

    #[test]
    fn lease_names_are_object_names() {
        assert_eq!(
            lease_name(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
            "vip-192-0-2-10"
        );
    }
}
