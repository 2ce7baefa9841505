//! Service VIPs placed by rendezvous hashing, with API writes that do not grow with the
//! number of VIPs (`election.service_election: rendezvous`).
//!
//! - **Liveness and fence: one Lease per node**, `vip-node-<identity>`, renewed every retry
//!   period by a fenced [`LeaseElector`]. This node serves none of the VIPs it placed here
//!   while its node lease is not renewed within `renew_deadline` (own monotonic clock, counted
//!   from before the renewal was sent): a 10 ms watchdog empties `held` at the deadline,
//!   whatever API calls are still hanging. Another node counts a node as live while its node
//!   lease keeps changing (seen within `lease_duration` on the other node's own clock).
//! - **Placement**: a VIP's preferred node is the rendezvous (highest random weight) winner,
//!   a stable hash of (VIP, node), over the eligible live nodes: every live node, or for VIPs of
//!   `externalTrafficPolicy: Local` Services the nodes with a ready endpoint of each of them.
//! - **Claims, written on ownership changes only**: the owner of VIP `a.b.c.d` is the
//!   holder of the Lease `vip-claim-a-b-c-d`, which is never renewed. A node claims a VIP
//!   only if it is the VIP's preferred node and the claim is absent, released, or held by a
//!   node whose node lease has lapsed by the fence rule — checked with a fresh GET of that
//!   node lease, so a stale watch can never make a live owner look dead — and every claim
//!   write carries the resourceVersion read, so of two claimants one wins. A live eligible
//!   owner keeps its VIPs (a node joining moves nothing); an owner that becomes ineligible,
//!   loses its uplink (`able`) or stops takes the VIP out of its data plane first (`applied`)
//!   and only then clears the claim (or deletes it, for a VIP that no longer exists).
//! - **After any gap in its own fence** (a partition, an API outage, a restart) a node does
//!   not serve a claim it holds until it has re-written it, conditionally, in the new fence
//!   session: a node that took the VIP over meanwhile wins or loses that race at the API
//!   server, never both.
//!
//! The bound: a node cut off at its last committed renewal `c` is silent by `c +
//! renew_deadline`; no other node claims before it has seen that renewal unchanged for
//! `lease_duration`, i.e. before `c + lease_duration`. The gap `lease_duration −
//! renew_deadline` must cover the data plane's removal (milliseconds) and the clocks' rate
//! difference over `lease_duration` (negligible for monotonic clocks).
//!
//! Steady state: one node-lease GET + PUT per node per retry period, and one watch on the
//! Leases labelled [`LABEL`]. Every other call follows an ownership change.
//!
//! # Layout
//! - `placement`: the rendezvous hash (pure, version-stable);
//! - `rule`: the claim rule, from a snapshot of one pass to steps (pure);
//! - `nodes`: other nodes' lease liveness and the lapse check, on our own clock;
//! - `objects`: Lease names, fields read and claim bodies written;
//! - `state`: the caches the watch feeds, and what this node serves;
//! - `pass`: one pass — decide, stop serving, confirm lapses, write;
//! - `writes`: the conditional claim writes and their outcomes;
//! - `task`: the task's wiring, the fence watchdog, and shutdown.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use tokio::sync::watch;

use super::lease::{ElectionError, LeaseConfig, LeaseElector};

mod nodes;
mod objects;
mod pass;
mod placement;
mod rule;
mod state;
mod task;
mod writes;

pub use objects::{claim_name, node_lease_name, LABEL};
pub use placement::{choose, weight};

/// How long a released VIP waits for the data plane to drop it before its claim is cleared
/// anyway (a stuck daemon is fenced by its dead-man and node lease regardless).
const RETIRE_WAIT: Duration = Duration::from_secs(3);

/// Watch events arriving together are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Claim writes in flight at once (a cold start claims many VIPs).
const PARALLEL: usize = 32;

/// Per VIP: the nodes that may hold it (`None`: any live node).
pub type Wanted = BTreeMap<IpAddr, Option<BTreeSet<String>>>;

pub struct Rendezvous {
    wanted: watch::Sender<Wanted>,
    pub held: watch::Receiver<BTreeSet<IpAddr>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Rendezvous {
    /// `base`: namespace, identity and timings (the name is replaced by the node lease's; the
    /// readyz gate is for the control-plane lease only). `applied`: the VIPs in the data
    /// plane; `able`: false while the uplink is gone.
    pub fn start(
        client: kube::Client,
        base: LeaseConfig,
        applied: watch::Receiver<Vec<IpAddr>>,
        able: watch::Receiver<bool>,
    ) -> Result<Rendezvous, ElectionError> {
        let mut cfg = base.clone();
        cfg.name = node_lease_name(&base.identity);
        cfg.readyz_gate = false;
        let node = LeaseElector::new(client.clone(), cfg)?
            .with_labels([(LABEL.to_string(), "node".to_string())].into())
            .with_able(able.clone());
        let (wanted, wanted_rx) = watch::channel(Wanted::new());
        let (held_tx, held) = watch::channel(BTreeSet::new());
        let (stop, stop_rx) = watch::channel(false);
        let inputs = task::Inputs {
            wanted: wanted_rx,
            applied,
            able,
            stop: stop_rx,
        };
        let task = tokio::spawn(task::run(client, base, node, held_tx, inputs));
        Ok(Rendezvous {
            wanted,
            held,
            stop,
            task,
        })
    }

    /// The VIPs placed by this election, and who may hold each.
    pub fn want(&self, w: Wanted) {
        self.wanted.send_if_modified(|cur| {
            let changed = *cur != w;
            *cur = w;
            changed
        });
    }

    /// Stop serving, clear this node's claims (after the data plane dropped their VIPs),
    /// then release the node lease.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
