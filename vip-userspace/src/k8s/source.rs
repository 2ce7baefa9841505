//! Watches Services, EndpointSlices and the pool ConfigMap (kube-runtime watchers with the
//! default backoff) and feeds their events straight into the controller's compact caches;
//! after each batch of changes (whatever arrived together), a leadership change or a change
//! of the VIPs applied here, the controller recomputes only the Services concerned and the
//! view is published. Every 30 s what failed is tried again.
use std::{collections::BTreeMap, time::Duration};

use futures::{stream, FutureExt, StreamExt};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use tokio::sync::watch;

use super::{
    controller::{Controller, ControllerConfig, Kind, View},
    writer::Counters,
};

const RESYNC: Duration = Duration::from_secs(30);
/// The view is published at most this often while changes keep coming (every publication
/// costs the daemon a pass over the desired state); a lone change goes out at once.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);
/// Events taken in one batch before a step (bounds the latency of a burst's first change).
const BATCH: usize = 4096;
/// What the data plane could not take, and why (as the bus carries it).
type UnplacedReasons = BTreeMap<crate::reconcile::Unplaced, String>;

enum Change {
    Svc(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Pool(Box<watcher::Event<ConfigMap>>),
    /// A watch error (the stream backs off and retries by itself).
    Error,
}

fn events<K, F>(
    s: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    f: F,
) -> stream::BoxStream<'static, Change>
where
    K: Send + 'static,
    F: Fn(watcher::Event<K>) -> Change + Send + 'static,
{
    s.map(move |r| match r {
        Ok(e) => f(e),
        Err(e) => {
            tracing::warn!(error = %crate::Chain(&e), "watch failed; retrying");
            Change::Error
        }
    })
    .boxed()
}

fn ingest(ctl: &mut Controller, c: Change) {
    use watcher::Event as E;
    match c {
        Change::Svc(e) => match *e {
            E::Apply(s) | E::InitApply(s) => ctl.apply_service(&s),
            E::Delete(s) => ctl.delete_service(&s),
            E::Init => ctl.init(Kind::Services),
            E::InitDone => ctl.init_done(Kind::Services),
        },
        Change::Slice(e) => match *e {
            E::Apply(e) | E::InitApply(e) => ctl.apply_slice(&e),
            E::Delete(e) => ctl.delete_slice(&e),
            E::Init => ctl.init(Kind::Slices),
            E::InitDone => ctl.init_done(Kind::Slices),
        },
        Change::Pool(e) => match *e {
            E::Apply(c) | E::InitApply(c) => ctl.set_pools(Some(&c)),
            E::Delete(_) => ctl.set_pools(None),
            E::Init => ctl.init(Kind::Pools),
            E::InitDone => ctl.init_done(Kind::Pools),
        },
        Change::Error => {}
    }
}

/// The three watches (each with the default backoff), merged into one stream of changes.
fn watches(
    client: &Client,
    cfg: &ControllerConfig,
) -> stream::SelectAll<stream::BoxStream<'static, Change>> {
    let s1 = events(
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
        |e| Change::Svc(Box::new(e)),
    );
    let s2 = events(
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
        |e| Change::Slice(Box::new(e)),
    );
    let pools = watcher::Config::default().fields(&format!("metadata.name={}", cfg.pool_name));
    let s3 = events(
        watcher(
            Api::<ConfigMap>::namespaced(client.clone(), &cfg.pool_namespace),
            pools,
        )
        .default_backoff(),
        |e| Change::Pool(Box::new(e)),
    );
    stream::select_all([s1, s2, s3])
}

/// Take whatever else arrived meanwhile (without waiting for more); false when the watches
/// ended.
fn drain(
    ctl: &mut Controller,
    changes: &mut (impl futures::Stream<Item = Change> + Unpin),
) -> bool {
    for _ in 0..BATCH {
        match changes.next().now_or_never() {
            Some(Some(c)) => ingest(ctl, c),
            Some(None) => return false,
            None => break,
        }
    }
    true
}

/// Another host claims VIPs this node owns: a Warning for each.
fn report_conflicts(ctl: &mut Controller, seen: Vec<(std::net::IpAddr, [u8; 6])>) {
    for (vip, mac) in seen {
        ctl.conflict_event(vip, mac);
    }
}

/// Services the data plane could not take: once per failure (and again if its reason
/// changes); `reported` is what was reported last.
fn report_unplaced(ctl: &mut Controller, now: UnplacedReasons, reported: &mut UnplacedReasons) {
    for (what, why) in &now {
        if reported.get(what) != Some(why) {
            ctl.unplaced_event(*what, why);
        }
    }
    *reported = now;
}

/// One controller step, recorded in the daemon's metrics and logs; whether the view changed.
fn step(ctl: &mut Controller, stats: &crate::metrics::State) -> bool {
    let report = ctl.step();
    if let Ok(mut k) = stats.k8s.lock() {
        *k = crate::metrics::K8sStats {
            enabled: true,
            services: report.served,
            allocated: report.with_address,
            failing: ctl.failing(),
            pools: report.pools.clone(),
        };
    }
    if !report.allocated.is_empty() || !report.failed.is_empty() || !report.released.is_empty() {
        tracing::info!(allocated = report.allocated.len(), failed = ?report.failed.iter().take(10).collect::<Vec<_>>(), released = report.released.len(), "services");
    }
    tracing::debug!(recomputed = report.recomputed, "controller step");
    ctl.take_view_changed()
}

/// The view's publication, at most every `PUBLISH_EVERY` while changes keep coming.
struct Publisher {
    out: watch::Sender<std::sync::Arc<View>>,
    last: tokio::time::Instant,
    due: bool,
}

impl Publisher {
    fn new(out: watch::Sender<std::sync::Arc<View>>) -> Self {
        Self {
            out,
            last: tokio::time::Instant::now() - PUBLISH_EVERY,
            due: false,
        }
    }

    /// When a due publication may go out.
    fn at(&self) -> tokio::time::Instant {
        self.last + PUBLISH_EVERY
    }

    fn publish_if_due(&mut self, ctl: &Controller) {
        if !(self.due && tokio::time::Instant::now() >= self.at()) {
            return;
        }
        let t0 = std::time::Instant::now();
        self.out.send_replace(ctl.view().clone());
        // The view is copied whole per publication (O(services)): logged when it shows.
        let took = t0.elapsed();
        if took >= std::time::Duration::from_millis(5) {
            tracing::info!(
                copy_ms = took.as_secs_f64() * 1e3,
                services = ctl.view().services.len(),
                "view publication took long"
            );
        }
        self.last = tokio::time::Instant::now();
        self.due = false;
    }
}

pub async fn run(
    client: Client,
    cfg: ControllerConfig,
    mut leader: watch::Receiver<bool>,
    out: watch::Sender<std::sync::Arc<View>>,
    stats: std::sync::Arc<crate::metrics::State>,
) {
    // What this node has applied: holder annotations follow the data plane, not the lease.
    let mut held = stats.bus.owned.subscribe();
    let mut conflicts = stats.bus.conflicts.subscribe();
    let mut unplaced = stats.bus.unplaced.subscribe();
    let mut reported = UnplacedReasons::new();
    let mut changes = watches(&client, &cfg);
    let counters = Counters {
        failures: stats.k8s_write_failures.clone(),
        abandoned: stats.k8s_writes_abandoned.clone(),
    };
    let mut ctl = Controller::new(client, cfg).with_counters(counters);
    ctl.set_leader(*leader.borrow_and_update());
    ctl.set_held(held.borrow_and_update().iter().copied().collect());
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset();
    let mut publisher = Publisher::new(out);
    loop {
        let publish_at = publisher.at();
        tokio::select! {
            c = changes.next() => match c {
                None => return,
                Some(c) => ingest(&mut ctl, c),
            },
            r = leader.changed() => {
                if r.is_err() { return }
                ctl.set_leader(*leader.borrow_and_update());
            }
            r = held.changed() => {
                if r.is_err() { return }
                ctl.set_held(held.borrow_and_update().iter().copied().collect());
            }
            r = conflicts.changed() => {
                if r.is_err() { return }
                let seen = conflicts.borrow_and_update().clone();
                report_conflicts(&mut ctl, seen);
                continue;
            }
            r = unplaced.changed() => {
                if r.is_err() { return }
                let now = unplaced.borrow_and_update().clone();
                report_unplaced(&mut ctl, now, &mut reported);
                continue;
            }
            _ = resync.tick() => ctl.resync(),
            _ = tokio::time::sleep_until(publish_at), if publisher.due => {}
        }
        if !drain(&mut ctl, &mut changes) {
            return;
        }
        if !ctl.ready() {
            continue;
        }
        if ctl.has_work() {
            publisher.due |= step(&mut ctl, &stats);
        }
        publisher.publish_if_due(&ctl);
    }
}
