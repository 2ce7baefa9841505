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
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{stream, StreamExt};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    api::{DeleteParams, PostParams, Preconditions},
    runtime::{watcher, WatchStreamExt},
    Api,
};
use tokio::sync::watch;

use super::lease::{ElectionError, Fence, LeaseConfig, LeaseElector};

/// The label on node leases (`node`) and claims (`claim`): what the watch selects.
pub const LABEL: &str = "vip.dev/election";
const NODE_PREFIX: &str = "vip-node-";
const CLAIM_PREFIX: &str = "vip-claim-";

/// How long a released VIP waits for the data plane to drop it before its claim is cleared
/// anyway (a stuck daemon is fenced by its dead-man and node lease regardless).
const RETIRE_WAIT: Duration = Duration::from_secs(3);

/// Watch events arriving together are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Claim writes in flight at once (a cold start claims many VIPs).
const PARALLEL: usize = 32;

/// `vip-node-<identity>`: this node's liveness lease.
pub fn node_lease_name(identity: &str) -> String {
    format!("{NODE_PREFIX}{identity}")
}

/// `vip-claim-192-0-2-10`: who owns one VIP (never renewed).
pub fn claim_name(vip: Ipv4Addr) -> String {
    format!("{CLAIM_PREFIX}{}", vip.to_string().replace('.', "-"))
}

fn claim_vip(name: &str) -> Option<Ipv4Addr> {
    name.strip_prefix(CLAIM_PREFIX)?
        .replace('-', ".")
        .parse()
        .ok()
}

/// The VIP's weight on `node`: FNV-1a over the VIP's octets and the node name, then the
/// splitmix64 finaliser (hand-written: it must never change between versions or nodes,
/// which std's hashers do not promise).
pub fn weight(vip: Ipv4Addr, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in vip
        .octets()
        .iter()
        .chain([0xffu8].iter())
        .chain(node.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The rendezvous choice for `vip` among `nodes` (ties, practically impossible, go to the
/// greater name).
pub fn choose<'a>(vip: Ipv4Addr, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes.into_iter().max_by_key(|n| (weight(vip, n), *n))
}

/// Per VIP: the nodes that may hold it (`None`: any live node).
pub type Wanted = BTreeMap<Ipv4Addr, Option<BTreeSet<String>>>;

pub struct Rendezvous {
    wanted: watch::Sender<Wanted>,
    pub held: watch::Receiver<BTreeSet<Ipv4Addr>>,
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
        applied: watch::Receiver<Vec<Ipv4Addr>>,
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
        let task = tokio::spawn(run(
            client, base, node, wanted_rx, held_tx, applied, able, stop_rx,
        ));
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

/// What this node has seen of another node's lease, and since when (own clock).
#[derive(Debug, Clone)]
struct NodeSeen {
    /// `None`: absent (deleted, or never seen).
    rv: Option<String>,
    holder: Option<String>,
    duration: Duration,
    since: Instant,
}

/// VIPs this node serves: claim written (or re-written) by us in fence session `.1`.
type Serving = Arc<Mutex<BTreeMap<Ipv4Addr, u64>>>;

fn served(serving: &Serving, fence: &Fence) -> BTreeSet<Ipv4Addr> {
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

fn publish(tx: &watch::Sender<BTreeSet<Ipv4Addr>>, now: BTreeSet<Ipv4Addr>) {
    tx.send_if_modified(|h| {
        let changed = *h != now;
        *h = now;
        changed
    });
}

fn holder(l: &Lease) -> Option<&str> {
    l.spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty())
}

/// What a pass decided for one VIP (before reading or writing anything).
enum Step {
    Release,
    Create,
    /// Take a free claim, or re-write ours in a new fence session.
    Rewrite,
    /// Take it if its owner's node lease has lapsed.
    Takeover(String),
}

/// One claim write to make, on the claim as last seen.
enum Action {
    Create(Ipv4Addr),
    /// Take the claim (free, or its holder lapsed), or re-write ours in a new session.
    Write(Ipv4Addr, Lease),
    /// Release: clear the holder (VIP still exists) or delete the claim.
    Clear(Ipv4Addr, Lease),
    Delete(Ipv4Addr, Lease),
}

enum Outcome {
    /// Ours now, in the session the write was made in.
    Claimed(Ipv4Addr, Lease, u64),
    /// Released (cleared, deleted, or already gone / changed by someone else).
    Released(Ipv4Addr, Option<Lease>),
    /// Someone else wrote first (409): the claim as read again just after (`None`: absent or
    /// unreadable), so a missed watch event cannot make us retry a stale write forever.
    Lost(Ipv4Addr, Option<Option<Lease>>),
    Failed(Ipv4Addr, String),
}

struct State {
    /// Published at once whenever a VIP stops being served (before any API call).
    held: Arc<watch::Sender<BTreeSet<Ipv4Addr>>>,
    /// Some VIP was wanted once: until then (the daemon's first view of the Services may
    /// still be coming) no claim is cleaned up as belonging to a VIP that no longer exists.
    wanted_ever: bool,
    api: Api<Lease>,
    cfg: LeaseConfig,
    fence: Arc<Fence>,
    serving: Serving,
    claims: BTreeMap<Ipv4Addr, Lease>,
    nodes: BTreeMap<String, NodeSeen>,
    /// Released VIPs (out of `held`) waiting for the data plane before their claim is cleared.
    releasing: BTreeMap<Ipv4Addr, Instant>,
    /// Claims of VIPs not wanted any more, and since when (own clock).
    unwanted: BTreeMap<Ipv4Addr, Instant>,
    /// The watch has listed every Lease once: until then absence means nothing.
    synced: bool,
    /// When this node's node lease was first held: free VIPs are claimed only a couple of
    /// retry periods later, so nodes starting together see each other first and share them.
    first_live: Option<Instant>,
    /// Nodes whose lease was read again to confirm a lapse: when, and whether it had lapsed
    /// (one read per node per retry period, however many of its VIPs wait).
    checked: BTreeMap<String, (Instant, bool)>,
}

impl State {
    fn me(&self) -> &str {
        &self.cfg.identity
    }

    fn lease_of(&self, n: &str) -> Duration {
        self.nodes
            .get(n)
            .map_or(self.cfg.lease_duration, |s| s.duration)
    }

    fn seen_node(&mut self, id: &str, l: Option<&Lease>) {
        let rv = l.and_then(|l| l.metadata.resource_version.clone());
        let holder = l.and_then(holder).map(str::to_string);
        let secs = l
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(0)
            .max(0) as u64;
        let duration = self.cfg.lease_duration.max(Duration::from_secs(secs));
        match self.nodes.get_mut(id) {
            Some(s) if s.rv == rv => {}
            Some(s) => {
                *s = NodeSeen {
                    rv,
                    holder,
                    duration,
                    since: Instant::now(),
                };
                self.checked.remove(id);
            }
            None => {
                self.nodes.insert(
                    id.to_string(),
                    NodeSeen {
                        rv,
                        holder,
                        duration,
                        since: Instant::now(),
                    },
                );
            }
        }
    }

    /// Live by the watch: its lease held by itself and seen changing within its duration.
    fn live(&self, n: &str) -> bool {
        if n == self.me() {
            return self.fence.is_leader();
        }
        self.nodes.get(n).is_some_and(|s| {
            s.rv.is_some() && s.holder.as_deref() == Some(n) && s.since.elapsed() < s.duration
        })
    }

    fn live_nodes(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .nodes
            .keys()
            .filter(|n| self.live(n))
            .cloned()
            .collect();
        if self.fence.is_leader() {
            out.insert(self.me().to_string());
        }
        out
    }

    /// Has `n`'s node lease lapsed by the fence rule: unchanged for its duration on our clock,
    /// confirmed by reading it again (the watch may be stale; a changed lease means live).
    async fn lapsed(&mut self, n: &str) -> bool {
        if n == self.me() {
            return false;
        }
        if self.live(n) {
            return false;
        }
        let unseen_for = self
            .nodes
            .get(n)
            .map_or(Duration::ZERO, |s| s.since.elapsed());
        if !self.nodes.contains_key(n) || unseen_for < self.lease_of(n) {
            // Never seen at all: start its clock now (a claim of a node we know nothing of
            // waits a whole lease duration).
            if !self.nodes.contains_key(n) {
                self.seen_node(n, None);
            }
            return false;
        }
        if let Some((at, lapsed)) = self.checked.get(n) {
            if at.elapsed() < self.cfg.retry_period {
                return *lapsed;
            }
        }
        let got =
            tokio::time::timeout(self.cfg.api_timeout, self.api.get_opt(&node_lease_name(n))).await;
        let lapsed = match got {
            Ok(Ok(l)) => {
                self.seen_node(n, l.as_ref());
                self.nodes
                    .get(n)
                    .is_some_and(|s| s.since.elapsed() >= s.duration)
                    && !self.live(n)
            }
            Ok(Err(e)) => {
                tracing::debug!(node = n, error = %crate::Chain(&e), "node lease not read");
                false
            }
            Err(_) => false,
        };
        self.checked.insert(n.to_string(), (Instant::now(), lapsed));
        lapsed
    }

    fn stop_serving(&self, vip: Ipv4Addr) {
        if let Ok(mut s) = self.serving.lock() {
            s.remove(&vip);
        }
    }

    fn serving_in(&self, vip: Ipv4Addr) -> Option<u64> {
        self.serving.lock().ok()?.get(&vip).copied()
    }

    fn release(&mut self, vip: Ipv4Addr) {
        self.stop_serving(vip);
        self.releasing.entry(vip).or_insert_with(Instant::now);
    }

    /// One placement pass: decide, write (in parallel), record what came back.
    async fn pass(&mut self, wanted: &Wanted, applied: &[Ipv4Addr], able: bool) {
        let me = self.me().to_string();
        let session = self.fence.session();
        if session.is_some() && self.first_live.is_none() {
            self.first_live = Some(Instant::now());
        }
        if !self.synced {
            return;
        }
        self.wanted_ever |= !wanted.is_empty();
        let settled = self
            .first_live
            .is_some_and(|t| t.elapsed() >= self.cfg.retry_period * 2);
        let live = self.live_nodes();
        let serving_now: BTreeMap<Ipv4Addr, u64> =
            self.serving.lock().map(|m| m.clone()).unwrap_or_default();
        // Decide on references only (a pass runs over every VIP), then act.
        let mut steps: Vec<(Ipv4Addr, Step)> = Vec::new();
        let mut not_ours = Vec::new();
        for (vip, eligible) in wanted {
            if self.releasing.contains_key(vip) {
                continue;
            }
            let ok_here = able && eligible.as_ref().is_none_or(|e| e.contains(&me));
            let claim = self.claims.get(vip);
            let owner = claim.and_then(holder);
            if owner == Some(me.as_str()) {
                if !ok_here {
                    steps.push((*vip, Step::Release));
                } else if let Some(s) = session {
                    if serving_now.get(vip) != Some(&s) {
                        // Ours from an earlier session (a gap in the fence, or a restart).
                        steps.push((*vip, Step::Rewrite));
                    }
                }
                continue;
            }
            if serving_now.contains_key(vip) {
                not_ours.push(*vip);
            }
            if session.is_none() || !ok_here {
                continue;
            }
            let cands = live
                .iter()
                .filter(|n| eligible.as_ref().is_none_or(|e| e.contains(*n)))
                .map(String::as_str);
            if choose(*vip, cands) != Some(me.as_str()) {
                continue;
            }
            match (claim.is_some(), owner) {
                (false, _) if settled => steps.push((*vip, Step::Create)),
                (true, None) if settled => steps.push((*vip, Step::Rewrite)),
                (_, None) => {}
                (_, Some(o)) => steps.push((*vip, Step::Takeover(o.to_string()))),
            }
        }
        if !not_ours.is_empty() {
            if let Ok(mut m) = self.serving.lock() {
                for v in &not_ours {
                    m.remove(v);
                }
            }
        }
        let releasing = steps.iter().any(|(_, s)| matches!(s, Step::Release));
        if !not_ours.is_empty() || releasing {
            for (vip, step) in &steps {
                if matches!(step, Step::Release) {
                    self.stop_serving(*vip);
                }
            }
            publish(&self.held, served(&self.serving, &self.fence));
        }
        let mut actions = Vec::new();
        for (vip, step) in steps {
            match step {
                Step::Release => {
                    tracing::info!(%vip, "no longer eligible here; releasing the VIP");
                    self.release(vip);
                }
                Step::Create => actions.push(Action::Create(vip)),
                Step::Rewrite => {
                    if let Some(c) = self.claims.get(&vip) {
                        actions.push(Action::Write(vip, c.clone()));
                    }
                }
                Step::Takeover(o) => {
                    if self.lapsed(&o).await {
                        if let Some(c) = self.claims.get(&vip) {
                            tracing::info!(%vip, previous = %o, "owner's node lease lapsed; claiming the VIP");
                            actions.push(Action::Write(vip, c.clone()));
                        }
                    }
                }
            }
        }
        // Claims of VIPs that no longer exist.
        let claims = &self.claims;
        self.unwanted
            .retain(|v, _| claims.contains_key(v) && !wanted.contains_key(v));
        let stale: Vec<(Ipv4Addr, Lease)> = self
            .claims
            .iter()
            .filter(|(v, _)| !wanted.contains_key(v))
            .map(|(v, c)| (*v, c.clone()))
            .collect();
        for (vip, c) in stale {
            if self.releasing.contains_key(&vip) {
                continue;
            }
            let owner = holder(&c).map(str::to_string);
            if owner.as_deref() == Some(me.as_str()) && self.serving_in(vip).is_some() {
                tracing::info!(%vip, "VIP gone; releasing its claim");
                self.release(vip);
                publish(&self.held, served(&self.serving, &self.fence));
                continue;
            }
            if !self.wanted_ever {
                continue;
            }
            let since = *self.unwanted.entry(vip).or_insert_with(Instant::now);
            if since.elapsed() < self.cfg.lease_duration || session.is_none() {
                continue;
            }
            // Cleaned up by the rendezvous choice among live nodes, once nobody can be
            // serving it: free, ours from before, or its holder lapsed.
            if choose(vip, live.iter().map(String::as_str)) != Some(me.as_str()) {
                continue;
            }
            let gone = match owner.as_deref() {
                None => true,
                Some(o) if o == me => true,
                Some(o) => self.lapsed(o).await,
            };
            if gone {
                actions.push(Action::Delete(vip, c));
            }
        }
        // Releases whose VIP the data plane has dropped (or that waited long enough).
        let due: Vec<Ipv4Addr> = self
            .releasing
            .iter()
            .filter(|(v, at)| !applied.contains(v) || at.elapsed() >= RETIRE_WAIT)
            .map(|(v, _)| *v)
            .collect();
        for vip in due {
            if applied.contains(&vip) {
                tracing::warn!(%vip, "VIP still applied after {RETIRE_WAIT:?}; clearing its claim anyway");
            }
            match self.claims.get(&vip).cloned() {
                Some(c) if holder(&c) == Some(me.as_str()) => {
                    if wanted.contains_key(&vip) {
                        actions.push(Action::Clear(vip, c));
                    } else {
                        actions.push(Action::Delete(vip, c));
                    }
                }
                _ => {
                    self.releasing.remove(&vip);
                }
            }
        }
        if actions.is_empty() {
            return;
        }
        let outcomes = self.execute(actions, session).await;
        self.record(outcomes);
    }

    async fn execute(&self, actions: Vec<Action>, session: Option<u64>) -> Vec<Outcome> {
        let me = self.me().to_string();
        let ns = self.cfg.namespace.clone();
        let api = self.api.clone();
        let t = self.cfg.api_timeout;
        stream::iter(actions)
            .map(|a| {
                let api = api.clone();
                let me = me.clone();
                let ns = ns.clone();
                async move { act(&api, &me, &ns, t, a, session).await }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await
    }

    fn record(&mut self, outcomes: Vec<Outcome>) {
        for o in outcomes {
            match o {
                Outcome::Claimed(vip, l, s) => {
                    tracing::info!(%vip, claim = %claim_name(vip), "VIP claimed");
                    self.claims.insert(vip, l);
                    if let Ok(mut m) = self.serving.lock() {
                        m.insert(vip, s);
                    }
                }
                Outcome::Released(vip, l) => {
                    tracing::info!(%vip, "VIP claim released");
                    self.releasing.remove(&vip);
                    self.stop_serving(vip);
                    match l {
                        Some(l) => self.claims.insert(vip, l),
                        None => self.claims.remove(&vip),
                    };
                }
                Outcome::Lost(vip, now) => {
                    tracing::debug!(%vip, "another node wrote the claim first");
                    self.stop_serving(vip);
                    match now {
                        Some(Some(l)) => {
                            self.claims.insert(vip, l);
                        }
                        Some(None) => {
                            self.claims.remove(&vip);
                        }
                        None => {}
                    }
                }
                Outcome::Failed(vip, e) => {
                    tracing::warn!(%vip, error = %e, "claim write failed; retried next pass");
                }
            }
        }
    }

    /// Apply one watch event to the caches.
    fn apply(&mut self, ev: watcher::Event<Lease>, init: &mut Option<Vec<Lease>>) {
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
                let Some(listed) = init.take() else { return };
                let names: BTreeSet<String> = listed
                    .iter()
                    .filter_map(|l| l.metadata.name.clone())
                    .collect();
                let gone_claims: Vec<Ipv4Addr> = self
                    .claims
                    .keys()
                    .filter(|v| !names.contains(&claim_name(**v)))
                    .copied()
                    .collect();
                for v in gone_claims {
                    self.claims.remove(&v);
                }
                let gone_nodes: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(n, s)| s.rv.is_some() && !names.contains(&node_lease_name(n)))
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in gone_nodes {
                    self.seen_node(&n, None);
                }
            }
        }
    }

    fn upsert(&mut self, l: &Lease) {
        let Some(name) = l.metadata.name.as_deref() else {
            return;
        };
        if let Some(id) = name.strip_prefix(NODE_PREFIX) {
            let id = id.to_string();
            self.seen_node(&id, Some(l));
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
            let id = id.to_string();
            self.seen_node(&id, None);
        } else if let Some(vip) = claim_vip(name) {
            self.claims.remove(&vip);
        }
    }
}

/// resourceVersions are opaque, but ordered integers on etcd (and the test server); 0 when
/// not a number (then every update is taken).
fn rv_num(l: &Lease) -> u64 {
    l.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

async fn act(
    api: &Api<Lease>,
    me: &str,
    ns: &str,
    t: Duration,
    a: Action,
    session: Option<u64>,
) -> Outcome {
    let now = MicroTime(Timestamp::now());
    let pp = PostParams::default();
    let (vip, res) = match a {
        Action::Create(vip) => {
            let Some(s) = session else {
                return Outcome::Failed(vip, "fence closed".into());
            };
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(claim_name(vip)),
                    namespace: Some(ns.to_string()),
                    labels: Some([(LABEL.to_string(), "claim".to_string())].into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.to_string()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let r = tokio::time::timeout(t, api.create(&pp, &l)).await;
            return claimed(api, t, vip, r, s).await;
        }
        Action::Write(vip, mut l) => {
            let Some(s) = session else {
                return Outcome::Failed(vip, "fence closed".into());
            };
            let spec = l.spec.get_or_insert_with(Default::default);
            let ours = spec.holder_identity.as_deref() == Some(me);
            if !ours {
                spec.holder_identity = Some(me.to_string());
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(now);
            let r = tokio::time::timeout(t, api.replace(&claim_name(vip), &pp, &l)).await;
            return claimed(api, t, vip, r, s).await;
        }
        Action::Clear(vip, mut l) => {
            let spec = l.spec.get_or_insert_with(Default::default);
            spec.holder_identity = None;
            spec.renew_time = Some(now);
            let r = tokio::time::timeout(t, api.replace(&claim_name(vip), &pp, &l)).await;
            (vip, r.map(|r| r.map(Some)))
        }
        Action::Delete(vip, l) => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: l.metadata.resource_version.clone(),
                    uid: l.metadata.uid.clone(),
                }),
                ..Default::default()
            };
            let r = tokio::time::timeout(t, api.delete(&claim_name(vip), &dp)).await;
            (vip, r.map(|r| r.map(|_| None)))
        }
    };
    match res {
        Ok(Ok(l)) => Outcome::Released(vip, l),
        // Gone, or changed by someone else: nothing of ours is left to release.
        Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => {
            Outcome::Released(vip, None)
        }
        Ok(Err(e)) => Outcome::Failed(vip, crate::Chain(&e).to_string()),
        Err(_) => Outcome::Failed(vip, format!("timed out after {t:?}")),
    }
}

async fn claimed(
    api: &Api<Lease>,
    t: Duration,
    vip: Ipv4Addr,
    r: Result<Result<Lease, kube::Error>, tokio::time::error::Elapsed>,
    session: u64,
) -> Outcome {
    match r {
        Ok(Ok(l)) => Outcome::Claimed(vip, l, session),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
            let now = match tokio::time::timeout(t, api.get_opt(&claim_name(vip))).await {
                Ok(Ok(l)) => Some(l),
                _ => None,
            };
            Outcome::Lost(vip, now)
        }
        Ok(Err(e)) => Outcome::Failed(vip, crate::Chain(&e).to_string()),
        Err(e) => Outcome::Failed(vip, format!("timed out: {e}")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    client: kube::Client,
    base: LeaseConfig,
    node: LeaseElector,
    mut wanted: watch::Receiver<Wanted>,
    held: watch::Sender<BTreeSet<Ipv4Addr>>,
    mut applied: watch::Receiver<Vec<Ipv4Addr>>,
    mut able: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &base.namespace);
    let fence = node.fence();
    let serving: Serving = Default::default();
    let (node_tx, mut node_rx) = watch::channel(false);
    let (node_stop, node_stop_rx) = watch::channel(false);
    let node_task = tokio::spawn(node.run(node_tx, node_stop_rx));
    tracing::info!(lease = %node_lease_name(&base.identity), "rendezvous election started");
    // The watchdog: `held` follows the fence within 10 ms, whatever the pass is waiting on.
    let held = Arc::new(held);
    let watchdog = {
        let (held, fence, serving) = (held.clone(), fence.clone(), serving.clone());
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
    };
    let mut st = State {
        held: held.clone(),
        wanted_ever: false,
        api: api.clone(),
        cfg: base.clone(),
        fence: fence.clone(),
        serving: serving.clone(),
        claims: BTreeMap::new(),
        nodes: BTreeMap::new(),
        releasing: BTreeMap::new(),
        unwanted: BTreeMap::new(),
        checked: BTreeMap::new(),
        synced: false,
        first_live: None,
    };
    let mut events = watcher(api.clone(), watcher::Config::default().labels(LABEL))
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
                    // Take whatever else arrives meanwhile into the same pass (a pass looks
                    // at every VIP; a burst of claims must not cost a pass each).
                    let until = tokio::time::sleep(DEBOUNCE);
                    tokio::pin!(until);
                    loop {
                        tokio::select! {
                            _ = &mut until => break,
                            ev = events.next() => match ev {
                                Some(Ok(e)) => st.apply(e, &mut init),
                                Some(Err(_)) => {}
                                None => break,
                            },
                        }
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %crate::Chain(&e), "lease watch"),
                None => {}
            },
            r = wanted.changed() => if r.is_err() { break },
            r = node_rx.changed() => if r.is_err() { break },
            r = applied.changed(), if !st.releasing.is_empty() => if r.is_err() { break },
            r = able.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let w = wanted.borrow().clone();
        let a = applied.borrow().clone();
        let ok = *able.borrow();
        st.pass(&w, &a, ok).await;
        // Claimed VIPs are served now, not at the watchdog's next tick.
        publish(&held, served(&serving, &fence));
    }
    // Silent first, then the claims handed on once the data plane dropped them.
    watchdog.abort();
    let ours: Vec<Ipv4Addr> = st
        .claims
        .iter()
        .filter(|(_, c)| holder(c) == Some(base.identity.as_str()))
        .map(|(v, _)| *v)
        .collect();
    if let Ok(mut s) = serving.lock() {
        s.clear();
    }
    held.send_replace(BTreeSet::new());
    let drop_wait = applied.wait_for(|a| !a.iter().any(|v| ours.contains(v)));
    if tokio::time::timeout(RETIRE_WAIT, drop_wait).await.is_err() {
        tracing::warn!("VIPs still applied after {RETIRE_WAIT:?}; releasing their claims anyway");
    }
    let w = wanted.borrow().clone();
    let actions: Vec<Action> = ours
        .iter()
        .filter_map(|v| {
            let c = st.claims.get(v)?.clone();
            Some(if w.contains_key(v) {
                Action::Clear(*v, c)
            } else {
                Action::Delete(*v, c)
            })
        })
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
    let _ = node_stop.send(true);
    let _ = node_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_object_names_and_parse_back() {
        let v = Ipv4Addr::new(192, 0, 2, 10);
        assert_eq!(claim_name(v), "vip-claim-192-0-2-10");
        assert_eq!(claim_vip(&claim_name(v)), Some(v));
        assert_eq!(node_lease_name("node-1"), "vip-node-node-1");
        assert_eq!(claim_vip("vip-node-x"), None);
    }

    #[test]
    fn weights_are_stable_across_versions() {
        // Fixed values: every node, every release, must agree on the placement.
        assert_eq!(
            weight(Ipv4Addr::new(192, 0, 2, 10), "node-a"),
            weight(Ipv4Addr::new(192, 0, 2, 10), "node-a")
        );
        assert_ne!(
            weight(Ipv4Addr::new(192, 0, 2, 10), "node-a"),
            weight(Ipv4Addr::new(192, 0, 2, 10), "node-b")
        );
        assert_eq!(
            weight(Ipv4Addr::new(192, 0, 2, 10), "node-a"),
            WEIGHT_192_0_2_10_NODE_A
        );
    }

    /// Computed independently (Python, same FNV-1a + splitmix64 steps).
    const WEIGHT_192_0_2_10_NODE_A: u64 = 11_859_286_088_946_882_205;

    #[test]
    fn rendezvous_spreads_and_moves_only_what_it_must() {
        let nodes = ["n1", "n2", "n3"];
        let vips: Vec<Ipv4Addr> = (0..3000u32)
            .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
            .collect();
        let mut count = BTreeMap::new();
        for v in &vips {
            *count.entry(choose(*v, nodes).unwrap()).or_insert(0) += 1;
        }
        for n in nodes {
            let c = count[n];
            assert!((850..=1150).contains(&c), "{n}: {c} of 3000");
        }
        // Removing n3 moves only n3's VIPs.
        for v in &vips {
            let before = choose(*v, nodes).unwrap();
            let after = choose(*v, ["n1", "n2"]).unwrap();
            if before != "n3" {
                assert_eq!(before, after);
            }
        }
        assert_eq!(choose(vips[0], std::iter::empty::<&str>()), None);
    }
}
