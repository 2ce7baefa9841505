//! Starting an election: state from disk, the socket, and the threads and channels that
//! connect them. Every channel of the election is made in `RaftElector::start`.
//!
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
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot, watch},
};

use super::{
    auth::Session,
    check_in::CheckIn,
    core::Core,
    fence::Fence,
    io_loop::IoLoop,
    sched::{self, Obtained, Priority},
    status::{Rejected, Snapshot},
    store::Store,
    transport::Transport,
    HardState, RaftAuth, RaftConfig, RaftElector, RaftError,
};

/// What each thread reports as it starts: which thread, what it got, what was refused.
type SchedReport = (&'static str, Obtained, Vec<String>);

impl RaftElector {
    /// Validate, load the persisted term and vote, bind the socket and start. Starts as a
    /// follower that won't vote or campaign for a minimum election timeout.
    pub async fn start(cfg: RaftConfig) -> Result<RaftElector, RaftError> {
        cfg.validate()?;
        let (store, hs, epoch) = open_state(&cfg).await?;
        let socket = bind(cfg.listen)?;
        log_start(&cfg, &hs, epoch, &store);
        let members: BTreeSet<u64> = cfg.peers.keys().copied().collect();
        let core = Core::new(cfg.id, &members, cfg.timing(), hs, Instant::now());
        let (tx, rx) = watch::channel(false);
        let fence = Arc::new(Fence::new(tx, watch::Sender::new(None)));
        let snapshot = Arc::new(Mutex::new(Snapshot::initial(hs.term)));
        let spawn_err = |source| RaftError::State {
            path: cfg.state_dir.clone(),
            source,
        };
        let (sched_tx, sched_rx) = std_mpsc::channel();
        let watchdog_stop = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (fence, stop) = (fence.clone(), watchdog_stop.clone());
            let name = format!("raft-fence-{}", cfg.id);
            spawn_raised(
                name,
                cfg.priority,
                sched_tx.clone(),
                "watchdog",
                move || fence.watch_until(&stop),
            )
            .map_err(spawn_err)?
        };
        let check_in = Arc::new(CheckIn::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (stall_tx, stall_rx) = mpsc::unbounded_channel();
        let rejected = Arc::new(Rejected::default());
        let authenticated = cfg.auth != RaftAuth::Insecure;
        let session = Session::new(cfg.id, epoch, cfg.auth.clone(), &cfg.peers);
        let io = IoLoop {
            id: cfg.id,
            core,
            transport: Transport::new(cfg.id, session, cfg.peers.clone(), rejected.clone()),
            heartbeat: cfg.heartbeat,
            store,
            persisted: hs,
            fence: fence.clone(),
            snapshot: snapshot.clone(),
            check_in: check_in.clone(),
            pushed: None,
            late: Default::default(),
        };
        let (done_tx, done_rx) = oneshot::channel();
        let id = cfg.id;
        let io_thread = spawn_raised(format!("raft-io-{id}"), cfg.priority, sched_tx, "io", {
            move || {
                run_io_thread(id, io, socket, stop_rx, stall_rx);
                let _ = done_tx.send(());
            }
        })
        .map_err(|e| {
            watchdog_stop.store(true, Ordering::Relaxed);
            spawn_err(e)
        })?;
        let sched = report_sched(&cfg, &sched_rx);
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
}

/// The persisted term and vote, and a new boot epoch, durable before any datagram of this
/// start leaves (auth.rs).
async fn open_state(cfg: &RaftConfig) -> Result<(Store, HardState, u64), RaftError> {
    let (dir, id) = (cfg.state_dir.clone(), cfg.id);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tokio::task::spawn_blocking(move || {
        let (mut store, hs) = Store::open(&dir, id)?;
        let epoch = store.begin_epoch(&hs, unix)?;
        Ok::<_, RaftError>((store, hs, epoch))
    })
    .await
    .map_err(|e| RaftError::State {
        path: cfg.state_dir.clone(),
        source: std::io::Error::other(e),
    })?
}

/// Bound here (errors are the caller's), registered later with the I/O thread's runtime.
fn bind(listen: SocketAddr) -> Result<std::net::UdpSocket, RaftError> {
    std::net::UdpSocket::bind(listen)
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|source| RaftError::Bind {
            addr: listen,
            source,
        })
}

/// What an operator needs to know before the first election: weak timings, and whether
/// anyone on the network can forge a vote.
fn log_start(cfg: &RaftConfig, hs: &HardState, epoch: u64, store: &Store) {
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
}

/// Spawn a named thread of the election at `want` priority; its first act is to raise its
/// own priority, which it reports on `obtained` (with what was refused) before running `f`.
fn spawn_raised(
    name: String,
    want: Priority,
    obtained: std_mpsc::Sender<SchedReport>,
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

/// The I/O thread's body. Its own runtime: the daemon's workers (reconciler, metrics,
/// Kubernetes watches) can be busy or blocked without this loop waiting for a worker.
fn run_io_thread(
    id: u64,
    io: IoLoop,
    socket: std::net::UdpSocket,
    stop_rx: oneshot::Receiver<()>,
    stall_rx: mpsc::UnboundedReceiver<Duration>,
) {
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
}

/// Both threads report before doing anything else; returns what the I/O thread got.
fn report_sched(cfg: &RaftConfig, reports: &std_mpsc::Receiver<SchedReport>) -> Obtained {
    let mut sched = Obtained::Normal;
    for (role, got, refused) in reports.iter().take(2) {
        if role == "io" {
            sched = got;
        }
        log_sched(cfg, role, got, &refused);
    }
    sched
}

/// Loud when the priority asked for was refused: that is when heartbeats can be late.
fn log_sched(cfg: &RaftConfig, role: &'static str, got: Obtained, refused: &[String]) {
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
