//! Raft among static peers, used only to elect the VIP owner (standalone clusters and
//! control-plane bootstrap before the API server exists).
//!
//! # Why not openraft
//! DESIGN.md names openraft (0.9.25). For this job we implement Raft's *election* subset
//! ourselves (`core.rs`, ~450 lines plus tests, sans-I/O and unit-tested), because openraft 0.9 fights
//! the two things this module exists for:
//! - timing: its timer ticks every `heartbeat_interval * 3 / 2` (30 ms at 20 ms heartbeats),
//!   and a follower grants no vote until its leader lease (the maximum election timeout) and
//!   the next tick have passed, so takeover quantizes to several ticks past the timeout;
//! - the fence: it does not step down without quorum (REFERENCES.md) and exposes the quorum
//!   acknowledgement only as `millis_since_quorum_ack` in a metrics snapshot pushed when the
//!   core decides to, not as an instant a watchdog can read while the core is busy or stuck;
//! - persistence: membership lives in its log, so "log in memory, vote on disk" does not
//!   survive a restart (`initialize` refuses once a vote exists and the log is gone): we
//!   would have to make a log durable that carries nothing we need;
//! - no PreVote in 0.9 (a rejoining partitioned node would depose a healthy leader).
//!
//! What we keep from Raft: terms, one vote per term persisted before it is sent
//! (`store.rs`), PreVote, heartbeats with acknowledgements, check-quorum, leader stickiness
//! (no vote within the minimum election timeout of hearing from a leader), TimeoutNow on
//! shutdown. There is no log: any member may win.
//!
//! # Transport
//! UDP datagrams: a binary header, the message as JSON (`serde_json`, already a dependency;
//! messages are < 100 bytes) and an HMAC-SHA-256 tag (`auth.rs`: frame, keys, and the
//! replay protection that holds across restarts of either side).
//! UDP because every message is idempotent and superseded by the next one: no connections
//! to re-establish after a partition heals, no head-of-line blocking or retransmission
//! back-off delaying a heartbeat. Every request has a timeout: an acknowledgement counts only
//! if its heartbeat was sent less than `lease` ago, votes only for the current round, which
//! the next election timeout ends. Sends never block (`try_send_to`); a peer that is down
//! just never answers. A datagram that fails authentication is dropped before the state
//! machine sees it, counted by reason and logged at most once per reason every 10 s.
//!
//! HMAC with ring (0.17, already compiled in for rustls): no new crypto crate in the
//! binary, and `ring::hmac::verify` compares tags in constant time.
//!
//! # Threads
//! Nothing the rest of the daemon does may delay a heartbeat, so the election owns its
//! threads, each at a raised priority (`sched.rs`: SCHED_FIFO, else a lower nice value):
//! ```text
//!  raft-io-N  (current-thread tokio runtime: socket, timers, core)
//!     │ Fence::set ──► watch<bool> leader() ──────────────► daemon main loop (VIPs)
//!     │ CheckIn::push ──► DEADMAN map (own handle) ◄─────── main loop: bring-up and
//!     │                    ▲                                  leadership changes only
//!     │                    └ min(lease, main loop's last tick + dead_man)
//!  raft-fence-N (plain thread): re-evaluates the fence, publishes false at lease_until
//!  blocking pool of raft-io-N: term/vote fsync (only when the term or vote changes)
//! ```
//! The main loop only says it is alive (an atomic store per tick) and hands over the map
//! handle when the data plane comes up; it never sits between a lease extension and the
//! deadline in the map. Shared state is taken by these threads with `try_lock` where a
//! normal-priority thread also holds it (the check-in handle), or held only for copies.
//!
//! # The fence
//! The node is leader for VIP purposes only while `now < lease_until`, where `lease_until` is
//! the send time of the newest heartbeat a majority (itself included) acknowledged in its
//! current term plus `lease`. A watchdog thread (not a tokio task, so a stalled runtime
//! can't hold it) re-evaluates at least every 10 ms, and exactly at `lease_until`, and
//! publishes on a `watch::Sender<bool>`; stepping down publishes `false` at once.
//! Bounds (monotonic clocks at the same rate):
//! - a partitioned leader publishes `false` at most `lease + 10 ms` after the send time of
//!   its last quorum-acknowledged heartbeat (typically ~1 ms late, the watchdog wakes at the
//!   deadline);
//! - no other node can become leader before `election_timeout.0` after the followers last
//!   heard from it; `validate` requires `lease + 10 ms < election_timeout.0`, so the two
//!   never overlap. Whoever consumes `leader()` (the data plane) must act within the rest of
//!   that margin.
//!
//! # A node's own stall
//! On a VM the whole guest (all three daemons on a test bed) can be descheduled for tens of
//! milliseconds, which no priority inside it prevents. Such a stall must not look like a
//! silent leader to the follower that was not running either:
//! - on every wake the I/O loop first reads every datagram already queued on the socket
//!   (non-blocking, until `WouldBlock`), steps heartbeats before anything else, and only
//!   then lets the core act on an expired election timer;
//! - a wake more than half a heartbeat after one of its timers was due is a stall of this
//!   node (`Core::note_stall`): for a heartbeat and a half from then it neither campaigns,
//!   nor grants a (pre-)vote to someone else on its leader's silence, nor (as leader) steps
//!   down on check-quorum. A live leader's next heartbeat, or the acknowledgements of the
//!   one the leader sends as it wakes, arrive in that time.
//!
//! The cost: when a follower was itself stalled, failover of a genuinely dead leader takes
//! up to a heartbeat and a half longer (30 ms at 20 ms heartbeats); nothing changes for a
//! follower that was running. Delaying a campaign or refusing a vote only ever costs
//! liveness. The lease is not relaxed: a leader whose stall outlasted `quorum_ack + lease`
//! is silent when it wakes (the watchdog, a separate thread, closed the fence on time if it
//! ran, and `flush` publishes the lapsed lease at once if it did not) and speaks again only
//! after a majority acknowledged a heartbeat sent after the stall.
pub mod auth;
mod core;
pub mod sched;
mod store;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{net::UdpSocket, sync::watch};

use self::{
    auth::{Opened, Session},
    core::{Core, Timing},
    sched::{Obtained, Priority},
    store::Store,
};
pub use self::{
    auth::{RaftAuth, RaftKey, Reject},
    core::{HardState, Msg, Role as RaftRole},
};
use crate::dataplane::maps::{monotonic_ns, DeadMan};

/// How often (at most) the watchdog re-evaluates the fence.
pub const WATCHDOG_PERIOD: Duration = Duration::from_millis(10);

/// Defaults for a LAN: failover within about a second (keepalived's default advert_int 1
/// takes ~3.5 s), four lost heartbeats before the fence closes, 10 datagrams/s per peer.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);
pub const DEFAULT_ELECTION_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_millis(1000));
pub const DEFAULT_LEASE: Duration = Duration::from_millis(400);

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("{field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("raft state {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("raft state {path} is unusable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("raft: bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's id; must be a key of `peers`.
    pub id: u64,
    /// Where to receive (may be 0.0.0.0:port; peers send to `peers[id]`).
    pub listen: SocketAddr,
    /// All members, this node included.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Holds `raft-state.json` (term and vote).
    pub state_dir: PathBuf,
    pub heartbeat: Duration,
    /// (min, max): a follower campaigns after a random time in this range without a leader.
    pub election_timeout: (Duration, Duration),
    /// How long after its last quorum acknowledgement a leader still acts as leader.
    pub lease: Duration,
    /// The shared key(s), or `insecure`.
    pub auth: RaftAuth,
    /// Scheduling priority of the election's threads.
    pub priority: Priority,
}

impl RaftConfig {
    /// A config with the default timing.
    pub fn new(
        id: u64,
        listen: SocketAddr,
        peers: BTreeMap<u64, SocketAddr>,
        state_dir: PathBuf,
        auth: RaftAuth,
    ) -> RaftConfig {
        RaftConfig {
            id,
            listen,
            peers,
            state_dir,
            heartbeat: DEFAULT_HEARTBEAT,
            election_timeout: DEFAULT_ELECTION_TIMEOUT,
            lease: DEFAULT_LEASE,
            auth,
            priority: Priority::default(),
        }
    }

    /// Errors name the configuration field (`election.raft.*`).
    pub fn validate(&self) -> Result<(), RaftError> {
        let err = |field, reason: String| Err(RaftError::Config { field, reason });
        if self.peers.is_empty() {
            return err("election.raft.peers", "no members".into());
        }
        if !self.peers.contains_key(&self.id) {
            return err(
                "election.raft.id",
                format!(
                    "{} is not among election.raft.peers (all members, this node included)",
                    self.id
                ),
            );
        }
        // Peers send to `peers[id]`: a listener elsewhere would never hear them.
        if let Some(me) = self.peers.get(&self.id) {
            let same = if self.listen.ip().is_unspecified() {
                self.listen.port() == me.port()
            } else {
                self.listen == *me
            };
            if !same {
                return err(
                    "election.raft.listen",
                    format!(
                        "{} does not match this node's entry in election.raft.peers ({me})",
                        self.listen
                    ),
                );
            }
        }
        let addrs: BTreeSet<SocketAddr> = self.peers.values().copied().collect();
        if addrs.len() != self.peers.len() {
            return err("election.raft.peers", "two members share an address".into());
        }
        if self.priority.realtime > 99 {
            return err(
                "election.raft.realtime_priority",
                format!(
                    "{} is not a SCHED_FIFO priority (1..99, 0: off)",
                    self.priority.realtime
                ),
            );
        }
        if !(-20..=19).contains(&self.priority.nice) {
            return err(
                "election.raft.nice",
                format!("{} is not a nice value (-20..19)", self.priority.nice),
            );
        }
        if self.heartbeat < Duration::from_millis(1) {
            return err("election.raft.heartbeat_ms", "must be at least 1 ms".into());
        }
        let (min, max) = self.election_timeout;
        if max < min {
            return err(
                "election.raft.election_timeout_max_ms",
                format!("{max:?} is shorter than election_timeout_min_ms ({min:?})"),
            );
        }
        if self.lease <= self.heartbeat {
            return err(
                "election.raft.lease_ms",
                format!(
                    "{:?} must be longer than heartbeat_ms ({:?}), or the leader loses its lease between heartbeats",
                    self.lease, self.heartbeat
                ),
            );
        }
        if self.lease + WATCHDOG_PERIOD >= min {
            return err(
                "election.raft.lease_ms",
                format!(
                    "{:?} plus the {WATCHDOG_PERIOD:?} watchdog period must be shorter than election_timeout_min_ms ({min:?}): \
                     a cut-off leader must be silent before a follower can win an election",
                    self.lease
                ),
            );
        }
        Ok(())
    }

    fn timing(&self) -> Timing {
        Timing {
            heartbeat: self.heartbeat,
            election_min: self.election_timeout.0,
            election_max: self.election_timeout.1,
            lease: self.lease,
            loyalty: (self.lease + WATCHDOG_PERIOD)
                .max(self.election_timeout.0.saturating_sub(self.heartbeat / 2))
                .min(self.election_timeout.0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    pub role: RaftRole,
    /// What `leader()` says: leader with a fresh quorum acknowledgement.
    pub fenced_leader: bool,
    /// Since the send time of the newest heartbeat a majority acknowledged (leaders only).
    pub millis_since_quorum_ack: Option<u64>,
    /// Other members heard from within the maximum election timeout.
    pub reachable: Vec<u64>,
    /// False with `insecure: true`.
    pub authenticated: bool,
    /// Datagrams dropped since start, per reason (every reason, in `Reject::ALL` order).
    pub rejected: Vec<(Reject, u64)>,
    /// The scheduling the I/O thread obtained (`sched.rs`).
    pub sched: Obtained,
}

/// Dropped datagrams per reason, shared by the I/O loop and the status readers.
#[derive(Debug, Default)]
struct Rejected([AtomicU64; Reject::ALL.len()]);

impl Rejected {
    fn count(&self, r: Reject) {
        self.0[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn rows(&self) -> Vec<(Reject, u64)> {
        Reject::ALL
            .iter()
            .map(|r| (*r, self.0[r.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

/// The published leadership and the lease behind it, shared by the I/O loop and the
/// watchdog. Evaluation and publication happen under one lock, so a stale `true` can never
/// overwrite a `false` published by a step-down.
struct Fence {
    inner: Mutex<FenceInner>,
    tx: watch::Sender<bool>,
    /// `until` as it changes: the daemon pushes it to the data plane's dead-man at once.
    lease_tx: watch::Sender<Option<Instant>>,
}

struct FenceInner {
    until: Option<Instant>,
    /// Set by stop/drop: nothing may publish `true` again.
    closed: bool,
}

impl Fence {
    fn publish(&self, inner: &FenceInner) {
        let leader = !inner.closed && inner.until.is_some_and(|u| Instant::now() < u);
        self.tx.send_if_modified(|v| {
            let changed = *v != leader;
            *v = leader;
            changed
        });
    }

    fn set(&self, until: Option<Instant>) {
        if let Ok(mut i) = self.inner.lock() {
            if !i.closed {
                i.until = until;
            }
            // The lease before the flag: a consumer woken by `true` already finds the
            // deadline that bounds it.
            let u = i.until;
            self.lease_tx.send_if_modified(|v| {
                let changed = *v != u;
                *v = u;
                changed
            });
            self.publish(&i);
        }
    }

    fn close(&self) {
        match self.inner.lock() {
            Ok(mut i) => {
                i.closed = true;
                i.until = None;
                self.lease_tx.send_replace(None);
                self.publish(&i);
            }
            // A poisoned lock: still go silent.
            Err(_) => {
                self.lease_tx.send_replace(None);
                self.tx.send_replace(false);
            }
        }
    }

    fn until(&self) -> Option<Instant> {
        self.inner.lock().ok().and_then(|i| i.until)
    }

    /// Re-evaluate; how long the watchdog may sleep before the next look.
    fn check(&self) -> Duration {
        let Ok(i) = self.inner.lock() else {
            self.tx.send_replace(false);
            return WATCHDOG_PERIOD;
        };
        self.publish(&i);
        let now = Instant::now();
        match i.until {
            // Wake right at the deadline (a little after, to be past it).
            Some(u) if u > now => (u - now + Duration::from_micros(100)).min(WATCHDOG_PERIOD),
            _ => WATCHDOG_PERIOD,
        }
    }
}

/// The data plane's dead-man, checked in from the I/O thread at every lease change, so a
/// busy main loop cannot make the leader's ARP lapse. Bounded by the main loop's own
/// liveness: while it has not ticked for `grace`, the deadline stops moving and XDP goes
/// silent at `last tick + grace` even though the election thread is fine (a node whose
/// main loop hangs serves nothing it can keep consistent: uplink changes, services).
struct CheckIn {
    /// The handle on `DEADMAN`, from the main loop once the data plane is up; `None`
    /// before that, after it went down, and once the main loop took over for good (a
    /// planned restart writes its own final deadline).
    target: Mutex<Option<DeadMan>>,
    /// When the main loop last ticked (CLOCK_MONOTONIC ns).
    alive_ns: AtomicU64,
    /// How long a tick counts (ns); 0: no bound (`dead_man_ms: 0`).
    grace_ns: AtomicU64,
    /// Whether `target` holds a handle (read by the main loop without the lock).
    attached: AtomicBool,
}

impl CheckIn {
    /// The deadline for `lease` (CLOCK_MONOTONIC ns; 1, already past, when not leading;
    /// never 0, which would mean "off").
    fn deadline(&self, lease: Option<Instant>) -> u64 {
        let Some(until) = lease else {
            return 1;
        };
        let now = Instant::now();
        let mut d = monotonic_ns() + until.saturating_duration_since(now).as_nanos() as u64;
        let grace = self.grace_ns.load(Ordering::Relaxed);
        if grace != 0 {
            d = d.min(self.alive_ns.load(Ordering::Relaxed).saturating_add(grace));
        }
        d.max(1)
    }

    /// Write the deadline for `lease`. Never waits: when the main loop is swapping the
    /// handle this one is skipped (false), and the caller pushes again on its next turn.
    fn push(&self, lease: Option<Instant>) -> bool {
        let Ok(mut t) = self.target.try_lock() else {
            return false;
        };
        if let Some(dm) = t.as_mut() {
            if let Err(e) = dm.set(self.deadline(lease)) {
                tracing::warn!(error = %crate::Chain(&e), "raft: dead-man deadline not pushed");
            }
        }
        true
    }
}

#[derive(Debug, Clone)]
struct Snapshot {
    term: u64,
    leader: Option<u64>,
    role: RaftRole,
    quorum_ack: Option<Instant>,
    reachable: Vec<u64>,
}

/// Reads an elector's status without holding the elector.
#[derive(Clone)]
pub struct StatusSource {
    id: u64,
    authenticated: bool,
    sched: Obtained,
    snapshot: Arc<Mutex<Snapshot>>,
    rejected: Arc<Rejected>,
    rx: watch::Receiver<bool>,
}

impl StatusSource {
    pub fn get(&self) -> RaftStatus {
        let s = self.snapshot.lock().map(|s| s.clone()).ok();
        let fenced_leader = *self.rx.borrow();
        let (authenticated, rejected, sched) =
            (self.authenticated, self.rejected.rows(), self.sched);
        match s {
            Some(s) => RaftStatus {
                id: self.id,
                term: s.term,
                leader: s.leader,
                role: s.role,
                fenced_leader,
                millis_since_quorum_ack: s.quorum_ack.map(|t| t.elapsed().as_millis() as u64),
                reachable: s.reachable,
                authenticated,
                rejected,
                sched,
            },
            None => RaftStatus {
                id: self.id,
                term: 0,
                leader: None,
                role: RaftRole::Follower,
                fenced_leader,
                millis_since_quorum_ack: None,
                reachable: Vec::new(),
                authenticated,
                rejected,
                sched,
            },
        }
    }
}

impl std::fmt::Debug for StatusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusSource")
            .field("id", &self.id)
            .finish()
    }
}

pub struct RaftElector {
    id: u64,
    authenticated: bool,
    rejected: Arc<Rejected>,
    heartbeat: Duration,
    fence: Arc<Fence>,
    rx: watch::Receiver<bool>,
    snapshot: Arc<Mutex<Snapshot>>,
    check_in: Arc<CheckIn>,
    sched: Obtained,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    /// Test hook: make the I/O loop block for a while (`stall_io`).
    stall_tx: tokio::sync::mpsc::UnboundedSender<Duration>,
    /// The I/O thread, and a signal it sends as it ends.
    io: Option<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Receiver<()>,
    )>,
    watchdog_stop: Arc<AtomicBool>,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

/// Spawn a named thread of the election at `want` priority; its first act is to raise its
/// own priority, which it reports on `obtained` (with what was refused) before running `f`.
fn spawn_raised(
    name: String,
    want: Priority,
    obtained: std::sync::mpsc::Sender<(&'static str, Obtained, Vec<String>)>,
    role: &'static str,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        let (got, refused) = sched::raise(want);
        let _ = obtained.send((role, got, refused));
        drop(obtained);
        f()
    })
}

impl RaftElector {
    /// Validate, load the persisted term and vote, bind the socket and start. Starts as a
    /// follower that won't vote or campaign for a minimum election timeout.
    pub async fn start(cfg: RaftConfig) -> Result<RaftElector, RaftError> {
        cfg.validate()?;
        let (store, hs, epoch) = {
            let (dir, id) = (cfg.state_dir.clone(), cfg.id);
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // A new epoch, durable before any datagram of this start leaves (auth.rs).
            tokio::task::spawn_blocking(move || {
                let (mut store, hs) = Store::open(&dir, id)?;
                let epoch = store.begin_epoch(&hs, unix)?;
                Ok::<_, RaftError>((store, hs, epoch))
            })
            .await
            .map_err(|e| RaftError::State {
                path: cfg.state_dir.clone(),
                source: std::io::Error::other(e),
            })??
        };
        // Bound here (errors are the caller's), registered with the I/O thread's runtime.
        let socket = std::net::UdpSocket::bind(cfg.listen)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| RaftError::Bind {
                addr: cfg.listen,
                source,
            })?;
        if cfg.lease < cfg.heartbeat * 3 {
            tracing::warn!(id = cfg.id, lease = ?cfg.lease, heartbeat = ?cfg.heartbeat,
                "raft: the lease covers fewer than 3 heartbeats: a couple of lost datagrams will make the leader go silent");
        }
        match &cfg.auth {
            RaftAuth::Keys { primary, previous } => {
                tracing::info!(id = cfg.id, key = %primary.id_hex(), previous = ?previous.as_ref().map(|k| k.id_hex()), "raft: datagrams authenticated (HMAC-SHA-256)")
            }
            RaftAuth::Insecure => tracing::warn!(
                id = cfg.id,
                "raft: insecure: true, datagrams are NOT authenticated: anyone who can reach {} can depose the leader or make two owners",
                cfg.listen
            ),
        }
        tracing::info!(id = cfg.id, listen = %cfg.listen, term = hs.term, voted_for = ?hs.voted_for, epoch, state = %store.path().display(), "raft: starting");
        let members: BTreeSet<u64> = cfg.peers.keys().copied().collect();
        let core = Core::new(cfg.id, &members, cfg.timing(), hs, Instant::now());
        let (tx, rx) = watch::channel(false);
        let fence = Arc::new(Fence {
            inner: Mutex::new(FenceInner {
                until: None,
                closed: false,
            }),
            tx,
            lease_tx: watch::Sender::new(None),
        });
        let snapshot = Arc::new(Mutex::new(Snapshot {
            term: hs.term,
            leader: None,
            role: RaftRole::Follower,
            quorum_ack: None,
            reachable: Vec::new(),
        }));
        let spawn_err = |source| RaftError::State {
            path: cfg.state_dir.clone(),
            source,
        };
        let (sched_tx, sched_rx) = std::sync::mpsc::channel();
        let watchdog_stop = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (fence, stop) = (fence.clone(), watchdog_stop.clone());
            spawn_raised(
                format!("raft-fence-{}", cfg.id),
                cfg.priority,
                sched_tx.clone(),
                "watchdog",
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        let d = fence.check();
                        std::thread::sleep(d);
                    }
                },
            )
            .map_err(spawn_err)?
        };
        let check_in = Arc::new(CheckIn {
            target: Mutex::new(None),
            alive_ns: AtomicU64::new(monotonic_ns()),
            grace_ns: AtomicU64::new(0),
            attached: AtomicBool::new(false),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (stall_tx, stall_rx) = tokio::sync::mpsc::unbounded_channel();
        let rejected = Arc::new(Rejected::default());
        let authenticated = cfg.auth != RaftAuth::Insecure;
        let io = IoLoop {
            id: cfg.id,
            core,
            session: Session::new(cfg.id, epoch, cfg.auth.clone(), &cfg.peers),
            rejected: rejected.clone(),
            reject_log: Default::default(),
            heartbeat: cfg.heartbeat,
            peers: cfg.peers.clone(),
            store,
            persisted: hs,
            fence: fence.clone(),
            snapshot: snapshot.clone(),
            check_in: check_in.clone(),
            pushed: None,
            late: Lateness::default(),
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let id = cfg.id;
        let io_thread = spawn_raised(
            format!("raft-io-{}", cfg.id),
            cfg.priority,
            sched_tx,
            "io",
            move || {
                // Its own runtime: the daemon's workers (reconciler, metrics, Kubernetes
                // watches) can be busy or blocked without this loop waiting for a worker.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name(format!("raft-io-{id}-blocking"))
                    .build()
                {
                    Ok(rt) => rt.block_on(async move {
                        // A second handle on the same socket reads what is queued without
                        // waiting for the reactor to have reported it (`IoLoop::drain`).
                        match socket
                            .try_clone()
                            .and_then(|raw| UdpSocket::from_std(socket).map(|s| (s, raw)))
                        {
                            Ok((socket, raw)) => io.run(socket, raw, stop_rx, stall_rx).await,
                            Err(e) => tracing::error!(id, error = %crate::Chain(&e), "raft: socket not registered; not electing"),
                        }
                    }),
                    Err(e) => tracing::error!(id, error = %crate::Chain(&e), "raft: no runtime for the I/O thread; not electing"),
                }
                let _ = done_tx.send(());
            },
        )
        .map_err(|e| {
            watchdog_stop.store(true, Ordering::Relaxed);
            spawn_err(e)
        })?;
        // Both threads report before doing anything else.
        let mut sched = Obtained::Normal;
        for (role, got, refused) in sched_rx.iter().take(2) {
            if role == "io" {
                sched = got;
            }
            match got {
                Obtained::Fifo(p) => tracing::info!(
                    id = cfg.id,
                    thread = role,
                    priority = p,
                    "raft: thread runs SCHED_FIFO"
                ),
                Obtained::Nice(n) if cfg.priority.realtime > 0 => {
                    tracing::warn!(id = cfg.id, thread = role, nice = n, refused = ?refused,
                    "raft: no real-time priority (needs CAP_SYS_NICE); thread runs at a lower nice value, a busy node may still delay heartbeats")
                }
                Obtained::Nice(n) => tracing::info!(
                    id = cfg.id,
                    thread = role,
                    nice = n,
                    "raft: thread runs at a lower nice value"
                ),
                Obtained::Normal if refused.is_empty() => tracing::info!(
                    id = cfg.id,
                    thread = role,
                    "raft: thread runs at normal priority (realtime_priority and nice are 0)"
                ),
                Obtained::Normal => tracing::warn!(id = cfg.id, thread = role, refused = ?refused,
                    "raft: thread runs at normal priority (needs CAP_SYS_NICE): on a busy node heartbeats may be late, the leader's lease lapse and elections follow"),
            }
        }
        Ok(RaftElector {
            id: cfg.id,
            authenticated,
            rejected,
            heartbeat: cfg.heartbeat,
            fence,
            rx,
            snapshot,
            check_in,
            sched,
            stop_tx: Some(stop_tx),
            stall_tx,
            io: Some((io_thread, done_rx)),
            watchdog_stop,
            watchdog: Some(watchdog),
        })
    }

    /// For tests of a hung election: the I/O loop blocks its thread for `d` (as a stuck
    /// loop would), while the watchdog keeps running.
    #[doc(hidden)]
    pub fn stall_io(&self, d: Duration) {
        let _ = self.stall_tx.send(d);
    }

    /// What the I/O thread's scheduling is (`sched.rs`).
    pub fn sched(&self) -> Obtained {
        self.sched
    }

    /// Check in with the data plane's dead-man from the election thread from now on: at
    /// every lease change it writes `min(lease, last main-loop tick + grace)` through `dm`
    /// (grace zero: the lease alone). The main loop calls this when the data plane comes up.
    pub fn check_in_through(&self, dm: DeadMan, grace: Duration) {
        self.check_in
            .grace_ns
            .store(grace.as_nanos() as u64, Ordering::Relaxed);
        let _ = self.main_loop_alive();
        if let Ok(mut t) = self.check_in.target.lock() {
            *t = Some(dm);
            self.check_in.attached.store(true, Ordering::Relaxed);
        }
        // The lease may not change for a heartbeat: push now (off the I/O thread; the
        // handle is ours for the moment, the I/O thread skips and retries).
        self.check_in.push(self.fence.until());
    }

    /// Stop checking in (the data plane is going down, or the main loop writes the final
    /// deadline itself). Waits for a write in progress, so none lands after this returns.
    pub fn stop_checking_in(&self) {
        if let Ok(mut t) = self.check_in.target.lock() {
            *t = None;
        }
        self.check_in.attached.store(false, Ordering::Relaxed);
    }

    /// The main loop ticked: the election thread's check-ins are good for `grace` more.
    /// One atomic store. False while the election thread does not check in (no handle):
    /// the main loop must then write the deadline itself.
    pub fn main_loop_alive(&self) -> bool {
        self.check_in
            .alive_ns
            .store(monotonic_ns(), Ordering::Relaxed);
        self.check_in.attached.load(Ordering::Relaxed)
    }

    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Fenced leadership: true only while a majority acknowledged us within `lease`.
    pub fn leader(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Until when the current lease runs (None when not leading): for a data-plane
    /// dead-man deadline that silences the VIP even if this process stalls.
    pub fn lease_deadline(&self) -> Option<Instant> {
        self.fence.until()
    }

    /// `lease_deadline` as it changes (every quorum-acknowledged heartbeat while leading).
    pub fn lease_watch(&self) -> watch::Receiver<Option<Instant>> {
        self.fence.lease_tx.subscribe()
    }

    pub fn status(&self) -> RaftStatus {
        self.status_source().get()
    }

    /// A handle that reads the status later (metrics at scrape time).
    pub fn status_source(&self) -> StatusSource {
        StatusSource {
            id: self.id,
            authenticated: self.authenticated,
            sched: self.sched,
            snapshot: self.snapshot.clone(),
            rejected: self.rejected.clone(),
            rx: self.rx.clone(),
        }
    }

    /// Step down (publish `false`) first; a leader then asks its most recently answering
    /// follower to campaign at once (TimeoutNow), so failover takes one round trip instead
    /// of an election timeout. Then stop.
    pub async fn stop(mut self) {
        self.fence.close();
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some((thread, done)) = self.io.take() {
            if tokio::time::timeout(Duration::from_secs(2), done)
                .await
                .is_err()
            {
                tracing::warn!(id = self.id, "raft: I/O loop did not stop in time");
            } else {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
        self.watchdog_stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watchdog.take() {
            // The watchdog sleeps at most 10 ms; join it off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        tracing::info!(id = self.id, "raft: stopped");
    }
}

impl Drop for RaftElector {
    fn drop(&mut self) {
        // Dropped without stop(): go silent, then stop everything without waiting.
        self.fence.close();
        self.watchdog_stop.store(true, Ordering::Relaxed);
        // Dropping the sender ends the I/O loop (its stop branch sees the channel close).
        self.stop_tx.take();
    }
}

/// A rejected datagram is logged at most once per reason in this period.
const REJECT_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Per reason: when it was last logged, and how many went unlogged since.
#[derive(Default)]
struct RejectLog([(Option<Instant>, u64); Reject::ALL.len()]);

impl RejectLog {
    /// How many were suppressed before this one, if this one is to be logged.
    fn due(&mut self, r: Reject, now: Instant) -> Option<u64> {
        let (last, suppressed) = &mut self.0[r.index()];
        if last.is_some_and(|t| now.saturating_duration_since(t) < REJECT_LOG_PERIOD) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

struct IoLoop {
    id: u64,
    core: Core,
    session: Session,
    rejected: Arc<Rejected>,
    reject_log: RejectLog,
    heartbeat: Duration,
    peers: BTreeMap<u64, SocketAddr>,
    store: Store,
    persisted: HardState,
    fence: Arc<Fence>,
    snapshot: Arc<Mutex<Snapshot>>,
    check_in: Arc<CheckIn>,
    /// The lease last written to the dead-man (None: not yet).
    pushed: Option<Option<Instant>>,
    late: Lateness,
}

/// Timers that fired late by more than half a heartbeat: this thread did not get the CPU
/// (no real-time priority, or something above it). Logged at most once per
/// `REJECT_LOG_PERIOD` with the count and the worst since the last line.
#[derive(Default)]
struct Lateness {
    logged: Option<Instant>,
    count: u64,
    worst: Duration,
}

impl Lateness {
    fn note(&mut self, id: u64, late: Duration, heartbeat: Duration) {
        if late <= heartbeat / 2 {
            return;
        }
        self.count += 1;
        self.worst = self.worst.max(late);
        let now = Instant::now();
        if self
            .logged
            .is_some_and(|t| now.saturating_duration_since(t) < REJECT_LOG_PERIOD)
        {
            return;
        }
        tracing::warn!(id, count = self.count, worst = ?self.worst, ?heartbeat, "raft: timers fired late (the election thread did not get the CPU in time)");
        self.logged = Some(now);
        self.count = 0;
        self.worst = Duration::ZERO;
    }
}

/// What woke the I/O loop.
enum Wake {
    Stop,
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Timer,
    Stall(Duration),
    Hello,
}

/// Most datagrams read in one drain: a flood cannot hold the loop (and its timers) forever.
const DRAIN_MAX: usize = 256;

impl IoLoop {
    /// Every wake: note whether we were stalled (a timer of ours was due more than half a
    /// heartbeat ago), read everything already queued on the socket, hand it to the core
    /// heartbeats first, and only then act on the election timer. A leader's heartbeats
    /// sent while this node was not running are thus seen before its silence is judged.
    async fn run(
        mut self,
        socket: UdpSocket,
        raw: std::net::UdpSocket,
        mut stop: tokio::sync::oneshot::Receiver<()>,
        mut stall: tokio::sync::mpsc::UnboundedReceiver<Duration>,
    ) {
        let socket = &socket;
        let mut buf = vec![0u8; 2048];
        let mut batch = Vec::new();
        // Hellos carry no Raft state (nothing to persist first): members learn our epoch.
        let mut hello_at = tokio::time::Instant::now();
        loop {
            let deadline = tokio::time::Instant::from_std(self.core.next_deadline());
            let due = deadline.min(hello_at);
            let wake = tokio::select! {
                biased;
                _ = &mut stop => Wake::Stop,
                r = socket.recv_from(&mut buf) => Wake::Datagram(r),
                _ = tokio::time::sleep_until(deadline) => Wake::Timer,
                Some(d) = stall.recv() => Wake::Stall(d),
                _ = tokio::time::sleep_until(hello_at) => Wake::Hello,
            };
            let now = tokio::time::Instant::now();
            let late = now.saturating_duration_since(due);
            self.late.note(self.id, late, self.heartbeat);
            if late > self.core.stall_margin() {
                self.core.note_stall(now.into_std());
            }
            match wake {
                Wake::Stop => break,
                Wake::Stall(d) => {
                    std::thread::sleep(d);
                    continue;
                }
                Wake::Datagram(Ok((n, src))) => self.open(&buf[..n], src, &mut batch),
                // e.g. ICMP unreachable reported on the socket: the peer is down.
                Wake::Datagram(Err(e)) => {
                    tracing::trace!(id = self.id, error = %crate::Chain(&e), "raft: recv")
                }
                Wake::Timer => {}
                Wake::Hello => {
                    // After a stall, one hello now rather than one per missed period.
                    hello_at = (hello_at + self.heartbeat).max(now + self.heartbeat / 2);
                    for (to, bytes) in self.session.hellos(Instant::now()) {
                        self.send_bytes(socket, to, &bytes);
                    }
                }
            }
            self.drain(&raw, &mut buf, &mut batch);
            // The election timer last: whatever was queued has been heard first.
            if Instant::now() >= self.core.next_deadline() {
                self.core.tick(Instant::now());
            }
            self.flush(socket).await;
        }
        // The fence is already closed (stop() did it). A leader hands over.
        if let Some(to) = self.core.transfer(Instant::now()) {
            tracing::info!(
                id = self.id,
                to,
                "raft: stopping leader hands over (TimeoutNow)"
            );
        }
        self.flush(socket).await;
    }

    /// Read what is queued (non-blocking, on the second handle: the reactor may not have
    /// reported it yet), then step it all, heartbeats first: a pre-vote queued before the
    /// leader's heartbeat must not be granted on a silence that was only ours. UDP keeps no
    /// order anyway, so this is an order the network could have delivered.
    fn drain(&mut self, raw: &std::net::UdpSocket, buf: &mut [u8], batch: &mut Vec<(u64, Msg)>) {
        for _ in 0..DRAIN_MAX {
            match raw.recv_from(buf) {
                Ok((n, src)) => self.open(&buf[..n], src, batch),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => tracing::trace!(id = self.id, error = %crate::Chain(&e), "raft: recv"),
            }
        }
        batch.sort_by_key(|(_, m)| !matches!(m, Msg::Heartbeat { .. }));
        for (from, msg) in batch.drain(..) {
            self.core.step(Instant::now(), from, msg);
        }
    }

    /// Authenticate one datagram; a message goes to `batch` for `drain` to step.
    fn open(&mut self, data: &[u8], src: SocketAddr, batch: &mut Vec<(u64, Msg)>) {
        match self.session.open(src, data) {
            Ok(Opened::Msg { from, msg }) => batch.push((from, msg)),
            Ok(Opened::Hello { from }) => tracing::trace!(id = self.id, from, "raft: hello"),
            Err(r) => {
                self.rejected.count(r);
                if let Some(suppressed) = self.reject_log.due(r, Instant::now()) {
                    let reason = r.as_str();
                    // After a member restarts a few of its peers' datagrams are stale until
                    // they hear its hello: expected, so not a warning.
                    if r == Reject::Stale {
                        tracing::info!(id = self.id, %src, reason, suppressed, "raft: datagram rejected");
                    } else {
                        tracing::warn!(id = self.id, %src, reason, suppressed, "raft: datagram rejected (logged once per reason every 10 s; vip_raft_rejected_total counts all)");
                    }
                }
            }
        }
    }

    /// Fence first, then durable state, then messages (see core.rs). The fence is lowered
    /// before anything else, but raised or extended only once the term it belongs to is on
    /// disk, and after the status snapshot, so `status()` never lags a published `true`.
    async fn flush(&mut self, socket: &UdpSocket) {
        let lease = self.core.lease_until();
        if lease.is_none() {
            self.fence.set(None);
            self.push(None);
        }
        let hs = self.core.hard_state();
        let durable = if hs == self.persisted {
            true
        } else {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.save(&hs)).await {
                Ok(Ok(())) => {
                    self.persisted = hs;
                    true
                }
                Ok(Err(e)) => {
                    tracing::error!(id = self.id, error = %crate::Chain(&e), "raft: term/vote not persisted; not sending");
                    false
                }
                Err(e) => {
                    tracing::error!(id = self.id, error = %crate::Chain(&e), "raft: persist task failed; not sending");
                    false
                }
            }
        };
        let out = self.core.take_out();
        if durable {
            for (to, msg) in out {
                self.send(socket, to, msg);
            }
        }
        let snap = Snapshot {
            term: self.core.term(),
            leader: self.core.leader(),
            role: self.core.role(),
            quorum_ack: self.core.quorum_ack(),
            reachable: self.core.reachable(Instant::now()),
        };
        // Readers (metrics scrapes, at normal priority) hold this lock for a copy; one that
        // was preempted holding it must not stall this thread. Written on the next turn
        // (at the latest the next heartbeat or hello) instead.
        match self.snapshot.try_lock() {
            Ok(mut s) => *s = snap,
            Err(std::sync::TryLockError::Poisoned(p)) => *p.into_inner() = snap,
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        let lease = if durable { lease } else { None };
        self.fence.set(lease);
        self.push(lease);
    }

    /// The dead-man follows the fence: pushed whenever the lease changes (every
    /// quorum-acknowledged heartbeat while leading), and retried if the last push was
    /// skipped. The fence is published first, so the map never runs ahead of `leader()`.
    fn push(&mut self, lease: Option<Instant>) {
        if self.pushed == Some(lease) {
            return;
        }
        if self.check_in.push(lease) {
            self.pushed = Some(lease);
        }
    }

    fn send(&mut self, socket: &UdpSocket, to: u64, msg: Msg) {
        match self.session.seal(to, Some(&msg)) {
            Some(bytes) => self.send_bytes(socket, to, &bytes),
            None => tracing::warn!(id = self.id, to, "raft: cannot encode for a non-member"),
        }
    }

    fn send_bytes(&self, socket: &UdpSocket, to: u64, bytes: &[u8]) {
        let Some(addr) = self.peers.get(&to) else {
            return;
        };
        // Never wait for the socket: a datagram that can't go now is lost like any other.
        if let Err(e) = socket.try_send_to(bytes, *addr) {
            tracing::trace!(id = self.id, to, error = %crate::Chain(&e), "raft: send");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &std::path::Path) -> RaftConfig {
        let peers = (1..=3)
            .map(|i| (i, SocketAddr::from(([127, 0, 0, 1], 17000 + i as u16))))
            .collect();
        RaftConfig {
            heartbeat: Duration::from_millis(20),
            election_timeout: (Duration::from_millis(100), Duration::from_millis(200)),
            lease: Duration::from_millis(80),
            ..RaftConfig::new(
                1,
                "127.0.0.1:17001".parse().unwrap(),
                peers,
                dir.to_path_buf(),
                RaftAuth::keyed(RaftKey::from_bytes(&[1; 32])),
            )
        }
    }

    fn field(c: &RaftConfig) -> &'static str {
        match c.validate() {
            Err(RaftError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vip-raft-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn validation_names_the_field() {
        let d = tempdir("validate");
        assert!(cfg(&d).validate().is_ok());
        let defaults = RaftConfig::new(
            1,
            cfg(&d).listen,
            cfg(&d).peers,
            d.clone(),
            RaftAuth::Insecure,
        );
        assert!(defaults.validate().is_ok(), "defaults must validate");
        assert_eq!(
            field(&RaftConfig {
                lease: Duration::from_millis(95),
                ..cfg(&d)
            }),
            "election.raft.lease_ms"
        );
        assert_eq!(
            field(&RaftConfig {
                lease: Duration::from_millis(20),
                ..cfg(&d)
            }),
            "election.raft.lease_ms"
        );
        assert_eq!(field(&RaftConfig { id: 9, ..cfg(&d) }), "election.raft.id");
        assert_eq!(
            field(&RaftConfig {
                listen: "127.0.0.1:17009".parse().unwrap(),
                ..cfg(&d)
            }),
            "election.raft.listen"
        );
        assert!(RaftConfig {
            listen: "0.0.0.0:17001".parse().unwrap(),
            ..cfg(&d)
        }
        .validate()
        .is_ok());
        assert_eq!(
            field(&RaftConfig {
                election_timeout: (Duration::from_millis(300), Duration::from_millis(200)),
                ..cfg(&d)
            }),
            "election.raft.election_timeout_max_ms"
        );
        assert_eq!(
            field(&RaftConfig {
                heartbeat: Duration::ZERO,
                ..cfg(&d)
            }),
            "election.raft.heartbeat_ms"
        );
        assert_eq!(
            field(&RaftConfig {
                peers: BTreeMap::new(),
                ..cfg(&d)
            }),
            "election.raft.peers"
        );
    }

    #[test]
    fn persisted_vote_survives_reload_and_is_not_given_twice() {
        let d = tempdir("store");
        let (store, hs) = Store::open(&d, 1).unwrap();
        assert_eq!(hs, HardState::default());
        // Node 1 votes for 2 in term 5 and persists it, as the I/O loop does.
        let members = BTreeSet::from([1, 2, 3]);
        let timing = cfg(&d).timing();
        let t0 = Instant::now();
        let mut c = Core::new(1, &members, timing, hs, t0);
        let later = t0 + Duration::from_millis(150);
        c.step(
            later,
            2,
            Msg::Vote {
                term: 5,
                transfer: false,
            },
        );
        store.save(&c.hard_state()).unwrap();
        drop(c);
        // Restart: same directory, fresh core.
        let (store, hs) = Store::open(&d, 1).unwrap();
        assert_eq!(
            hs,
            HardState {
                term: 5,
                voted_for: Some(2)
            }
        );
        let t1 = Instant::now();
        let mut c = Core::new(1, &members, timing, hs, t1);
        let later = t1 + Duration::from_millis(150);
        c.step(
            later,
            3,
            Msg::Vote {
                term: 5,
                transfer: true,
            },
        );
        c.step(
            later,
            2,
            Msg::Vote {
                term: 5,
                transfer: false,
            },
        );
        let out = c.take_out();
        assert!(
            matches!(
                out[0].1,
                Msg::VoteResp {
                    term: 5,
                    granted: false
                }
            ),
            "{out:?}"
        );
        assert!(
            matches!(
                out[1].1,
                Msg::VoteResp {
                    term: 5,
                    granted: true
                }
            ),
            "{out:?}"
        );
        // A new term is a new vote, and is persisted as such.
        c.step(
            later,
            3,
            Msg::Vote {
                term: 6,
                transfer: false,
            },
        );
        store.save(&c.hard_state()).unwrap();
        assert_eq!(
            store.load().unwrap(),
            HardState {
                term: 6,
                voted_for: Some(3)
            }
        );
        assert!(!d.join("raft-state.json.tmp").exists());
        // Every start a higher boot epoch, kept by the saves in between (auth.rs relies on
        // it); the clock term when it is ahead, the counter when the clock is behind.
        let (mut store, hs) = Store::open(&d, 1).unwrap();
        let e1 = store.begin_epoch(&hs, 1_000).unwrap();
        store.save(&hs).unwrap();
        let (mut store, hs) = Store::open(&d, 1).unwrap();
        let e2 = store.begin_epoch(&hs, 5).unwrap();
        assert_eq!((e1, e2), (1_000, 1_001));
        assert_eq!(
            store.load().unwrap().term,
            6,
            "the epoch leaves term and vote alone"
        );
        // Another node's state, or garbage, is refused rather than read as term 0.
        assert!(matches!(Store::open(&d, 2), Err(RaftError::Corrupt { .. })));
        std::fs::write(d.join("raft-state.json"), b"{not json").unwrap();
        assert!(matches!(Store::open(&d, 1), Err(RaftError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn check_in_follows_the_lease_and_the_main_loops_last_tick() {
        let c = CheckIn {
            target: Mutex::new(None),
            alive_ns: AtomicU64::new(monotonic_ns()),
            grace_ns: AtomicU64::new(0),
            attached: AtomicBool::new(false),
        };
        // Not leading: already past, never 0 ("off").
        assert_eq!(c.deadline(None), 1);
        let now = monotonic_ns();
        let lease = Instant::now() + Duration::from_secs(1);
        let d = c.deadline(Some(lease));
        assert!(
            d > now + 900_000_000 && d <= monotonic_ns() + 1_000_000_000,
            "{d} vs {now}"
        );
        // A main loop that last ticked 200 ms ago with a 100 ms grace: already past.
        c.grace_ns.store(100_000_000, Ordering::Relaxed);
        c.alive_ns.store(now - 200_000_000, Ordering::Relaxed);
        assert!(c.deadline(Some(lease)) < monotonic_ns());
        // Ticked just now: the grace bounds it, not the lease.
        c.alive_ns.store(monotonic_ns(), Ordering::Relaxed);
        assert!(c.deadline(Some(lease)) <= monotonic_ns() + 100_000_000);
        // No handle: a push is a no-op that succeeds.
        assert!(c.push(Some(lease)));
    }

    #[tokio::test]
    async fn single_member_leads_and_stop_publishes_false_first() {
        let d = tempdir("single");
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cfg = RaftConfig {
            peers: BTreeMap::from([(1, addr)]),
            listen: addr,
            ..cfg(&d)
        };
        let e = RaftElector::start(cfg).await.unwrap();
        let mut rx = e.leader();
        tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|l| *l))
            .await
            .unwrap()
            .unwrap();
        let s = e.status();
        assert_eq!((s.role, s.leader, s.term), (RaftRole::Leader, Some(1), 1));
        e.stop().await;
        assert!(!*rx.borrow());
        let _ = std::fs::remove_dir_all(&d);
    }
}
