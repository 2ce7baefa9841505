//! The election task and its wiring:
//!
//! ```text
//!   node LeaseElector ──renewed──► node_rx ─┐          ┌─► execute: claim writes (API)
//!   Lease watch (LABEL) ──events──► caches ─┤          │
//!   daemon: wanted, applied, able ──────────┼─► pass ──┤
//!   retry-period tick ──────────────────────┘          └─► held (served VIPs) ──► daemon
//!   watchdog (10 ms) ── fence session changed ─────────────► held
//! ```
//!
//! The watchdog is a separate task so `held` follows the fence whatever the pass is waiting
//! on; the pass itself runs on the task's loop, after every input change and every tick.
use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api,
};
use tokio::sync::watch;

use super::{
    objects::{node_lease_name, LABEL},
    rule::release_action,
    state::{publish, served, Serving, State},
    writes::{Action, Outcome},
    Wanted, DEBOUNCE, RETIRE_WAIT,
};
use crate::election::lease::{Fence, LeaseConfig, LeaseElector};

/// What the daemon feeds the election.
pub(super) struct Inputs {
    pub(super) wanted: watch::Receiver<Wanted>,
    /// The VIPs in the data plane.
    pub(super) applied: watch::Receiver<Vec<IpAddr>>,
    /// False while the uplink is gone.
    pub(super) able: watch::Receiver<bool>,
    pub(super) stop: watch::Receiver<bool>,
}

pub(super) async fn run(
    client: kube::Client,
    base: LeaseConfig,
    node: LeaseElector,
    held: watch::Sender<BTreeSet<IpAddr>>,
    mut inp: Inputs,
) {
    let api: Api<Lease> = Api::namespaced(client, &base.namespace);
    let fence = node.fence();
    let serving: Serving = Default::default();
    let (node_tx, mut node_rx) = watch::channel(false);
    let (node_stop, node_stop_rx) = watch::channel(false);
    let node_task = tokio::spawn(node.run(node_tx, node_stop_rx));
    tracing::info!(lease = %node_lease_name(&base.identity), "rendezvous election started");
    let held = Arc::new(held);
    let watchdog = spawn_watchdog(held.clone(), fence.clone(), serving.clone());
    let mut st = State::new(held, api.clone(), base.clone(), fence, serving);
    let mut events = watcher(api, watcher::Config::default().labels(LABEL))
        .default_backoff()
        .boxed();
    let mut init = None;
    let mut tick = tokio::time::interval(base.retry_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(e)) => {
                    st.apply(e, &mut init);
                    take_burst(&mut events, &mut st, &mut init).await;
                }
                Some(Err(e)) => tracing::debug!(error = %crate::Chain(&e), "lease watch"),
                None => {}
            },
            r = inp.wanted.changed() => if r.is_err() { break },
            r = node_rx.changed() => if r.is_err() { break },
            r = inp.applied.changed(), if !st.releasing.is_empty() => if r.is_err() { break },
            r = inp.able.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
            _ = inp.stop.changed() => break,
        }
        let w = inp.wanted.borrow().clone();
        let a = inp.applied.borrow().clone();
        let ok = *inp.able.borrow();
        st.pass(&w, &a, ok).await;
        // Claimed VIPs are served now, not at the watchdog's next tick.
        publish(&st.held, served(&st.serving, &st.fence));
    }
    // Silent first, then the claims handed on once the data plane dropped them.
    watchdog.abort();
    retire(&st, &mut inp).await;
    let _ = node_stop.send(true);
    let _ = node_task.await;
}

/// `held` follows the fence within 10 ms, whatever the pass is waiting on.
fn spawn_watchdog(
    held: Arc<watch::Sender<BTreeSet<IpAddr>>>,
    fence: Arc<Fence>,
    serving: Serving,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Only the fence is watched here (the passes publish their own changes), so an
        // idle node does not rebuild the set of VIPs it holds 100 times a second.
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut last = None;
        loop {
            tick.tick().await;
            let now = fence.session();
            if now != last {
                publish(&held, served(&serving, &fence));
                last = now;
            }
        }
    })
}

/// Take whatever else arrives within [`DEBOUNCE`] into the same pass (a pass looks at every
/// VIP; a burst of claims must not cost a pass each).
async fn take_burst<S>(events: &mut S, st: &mut State, init: &mut Option<Vec<Lease>>)
where
    S: Stream<Item = Result<watcher::Event<Lease>, watcher::Error>> + Unpin,
{
    let until = tokio::time::sleep(DEBOUNCE);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => break,
            ev = events.next() => match ev {
                Some(Ok(e)) => st.apply(e, init),
                Some(Err(_)) => {}
                None => break,
            },
        }
    }
}

/// Stop serving, wait (at most [`RETIRE_WAIT`]) for the data plane to drop our VIPs, then
/// hand on their claims: cleared if the VIP is still wanted, deleted if not.
async fn retire(st: &State, inp: &mut Inputs) {
    let ours = st.ours();
    if let Ok(mut s) = st.serving.lock() {
        s.clear();
    }
    st.held.send_replace(BTreeSet::new());
    let drop_wait = inp
        .applied
        .wait_for(|a| !a.iter().any(|v| ours.contains(v)));
    if tokio::time::timeout(RETIRE_WAIT, drop_wait).await.is_err() {
        tracing::warn!("VIPs still applied after {RETIRE_WAIT:?}; releasing their claims anyway");
    }
    let w = inp.wanted.borrow().clone();
    let actions: Vec<Action> = ours
        .iter()
        .filter_map(|v| release_action(st.me(), *v, st.claims.get(v), w.contains_key(v)))
        .collect();
    let n = actions.len();
    let outcomes = st.execute(actions, None).await;
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Failed(..)))
        .count();
    if failed > 0 {
        tracing::warn!(
            failed,
            "claims not released (they lapse with the node lease)"
        );
    }
    tracing::info!(released = n - failed, "rendezvous election stopped");
}
