//! Watches Services, EndpointSlices and the pool ConfigMap (kube-runtime watchers with the
//! default backoff, reflector caches) and runs a controller pass after every change, after a
//! leadership change, and every 30 s; publishes the resulting model services.
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Client,
};
use tokio::sync::watch;

use super::controller::{Controller, ControllerConfig, View};

const RESYNC: Duration = Duration::from_secs(30);
/// Changes arriving together are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(50);

pub async fn run(
    client: Client,
    cfg: ControllerConfig,
    mut leader: watch::Receiver<bool>,
    out: watch::Sender<View>,
    stats: std::sync::Arc<crate::metrics::State>,
) {
    // What this node has applied: holder annotations follow the data plane, not the lease.
    let mut held = stats.owned.subscribe();
    let mut conflicts = stats.conflicts.subscribe();
    let mut unplaced = stats.unplaced.subscribe();
    let mut reported = std::collections::BTreeMap::new();
    let (svcs, w1) = reflector::store::<Service>();
    let (slices, w2) = reflector::store::<EndpointSlice>();
    let (cms, w3) = reflector::store::<ConfigMap>();
    let s1 = reflector(
        w1,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ())
    .boxed();
    let s2 = reflector(
        w2,
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ())
    .boxed();
    let pools = watcher::Config::default().fields(&format!("metadata.name={}", cfg.pool_name));
    let s3 = reflector(
        w3,
        watcher(
            Api::<ConfigMap>::namespaced(client.clone(), &cfg.pool_namespace),
            pools,
        ),
    )
    .default_backoff()
    .map(|_| ())
    .boxed();
    let mut changes = stream::select_all([s1, s2, s3]);
    let mut ctl = Controller::new(client, cfg);
    let mut ready = false;
    loop {
        tokio::select! {
            c = changes.next() => if c.is_none() { return },
            r = leader.changed() => if r.is_err() { return },
            r = held.changed() => if r.is_err() { return },
            r = conflicts.changed() => {
                if r.is_err() { return }
                let seen = conflicts.borrow_and_update().clone();
                let s: Vec<Service> = svcs.state().iter().map(|x| (**x).clone()).collect();
                for (vip, mac) in seen {
                    ctl.conflict_event(&s, vip, mac).await;
                }
                continue;
            }
            r = unplaced.changed() => {
                if r.is_err() { return }
                // Once per failure (and again if its reason changes).
                let now = unplaced.borrow_and_update().clone();
                let s: Vec<Service> = svcs.state().iter().map(|x| (**x).clone()).collect();
                for (what, why) in &now {
                    if reported.get(what) != Some(why) {
                        ctl.unplaced_event(&s, *what, why).await;
                    }
                }
                reported = now;
                continue;
            }
            _ = tokio::time::sleep(RESYNC) => {}
        }
        // Take whatever else arrived meanwhile.
        let until = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => break,
                c = changes.next() => if c.is_none() { return },
            }
        }
        if !ready {
            // Allocate only once the caches hold the full lists (statuses restore first).
            let all = tokio::time::timeout(Duration::from_millis(10), async {
                let _ = svcs.wait_until_ready().await;
                let _ = slices.wait_until_ready().await;
            })
            .await;
            if all.is_err() {
                continue;
            }
            ready = true;
        }
        let s: Vec<Service> = svcs.state().iter().map(|x| (**x).clone()).collect();
        let e: Vec<EndpointSlice> = slices.state().iter().map(|x| (**x).clone()).collect();
        let cm = cms.state().first().map(|x| (**x).clone());
        let is_leader = *leader.borrow();
        let holding: std::collections::BTreeSet<_> =
            held.borrow_and_update().iter().copied().collect();
        let (model, report) = ctl.pass(&s, &e, cm.as_ref(), is_leader, &holding).await;
        if let Ok(mut k) = stats.k8s.lock() {
            *k = crate::metrics::K8sStats {
                enabled: true,
                services: report.served,
                allocated: report.with_address,
                failing: report.failed.len(),
                pools: report.pools.clone(),
            };
        }
        if !report.allocated.is_empty() || !report.failed.is_empty() || !report.released.is_empty()
        {
            tracing::info!(allocated = ?report.allocated, failed = ?report.failed, released = ?report.released, "services");
        }
        out.send_if_modified(|cur| {
            let changed = *cur != model;
            if changed {
                *cur = model;
            }
            changed
        });
    }
}
