//! BGP speaker: announces this node's VIPs as host routes (/32, /128) to upstream routers.
//!
//! One tokio task per peer runs our own small FSM (connect with backoff or wait for the
//! peer, OPEN, keepalives, hold timer, UPDATEs). [`Speaker::announce_routes`] takes the
//! full desired set, each prefix with its communities and LOCAL_PREF; each session diffs it
//! against what it has advertised (a changed policy is re-announced, which replaces the
//! route at the peer). Optional per-peer
//! BFD (RFC 5880/5881) tears a session down within the detection time.
//!
//! `session.rs` is the task's I/O (socket, timers, the handshake's waits); what an
//! Established session does on each event is decided in `fsm.rs`, which has no sockets.
//!
//! The speaker never imports routes: UPDATEs from peers are read and dropped.
pub mod bfd;
pub mod config;
mod fsm;
mod session;
mod sock;
pub mod status;
pub mod wire;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinHandle,
};

pub use bfd::BfdState;
pub use config::{
    parse_communities, parse_kube_vip_peers, AnnounceConfig, AnnounceMode, BfdConfig, BgpConfig,
    BgpConfigError, Community, GrConfig, PeerConfig, RoutePolicy,
};

/// Host routes to advertise, each with what goes with it.
pub type Routes = BTreeMap<IpAddr, RoutePolicy>;

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error(transparent)]
    Config(#[from] BgpConfigError),
    #[error("the BGP speaker must be started inside a tokio runtime")]
    NoRuntime,
    #[error("listening on TCP port {port} for passive BGP peers")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("setting the TCP MD5 key for passive peer {peer}")]
    Md5 {
        peer: IpAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bfd(#[from] bfd::BfdError),
}

/// RFC 4271 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Connect => "connect",
            SessionState::Active => "active",
            SessionState::OpenSent => "opensent",
            SessionState::OpenConfirm => "openconfirm",
            SessionState::Established => "established",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub remote_as: u32,
    pub state: SessionState,
    /// Time since the session became Established (None when it is not).
    pub uptime: Option<Duration>,
    /// Transitions out of Established since the speaker started.
    pub flaps: u64,
    /// Host routes currently advertised on this session.
    pub prefixes_announced: usize,
    /// Those routes.
    pub prefixes: Vec<IpAddr>,
    pub last_error: Option<String>,
    /// None when BFD is not configured for this peer.
    pub bfd: Option<BfdState>,
}

/// What a peer task reports; read by [`Speaker::status`].
#[derive(Debug)]
struct Shared {
    state: SessionState,
    established_at: Option<Instant>,
    flaps: u64,
    announced: Vec<IpAddr>,
    last_error: Option<String>,
    bfd: Option<BfdState>,
}

impl Shared {
    /// A session not started yet; BFD reported Down until it comes up, if configured.
    fn idle(bfd: bool) -> SharedRef {
        Arc::new(Mutex::new(Shared {
            state: SessionState::Idle,
            established_at: None,
            flaps: 0,
            announced: Vec::new(),
            last_error: None,
            bfd: bfd.then_some(BfdState::Down),
        }))
    }
}

type SharedRef = Arc<Mutex<Shared>>;

fn update(shared: &SharedRef, f: impl FnOnce(&mut Shared)) {
    // A panicked peer task must not take status reporting down with it.
    let mut g = match shared.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    f(&mut g);
}

/// How peer tasks should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    /// Withdraw, NOTIFICATION Cease (Administrative Shutdown), close.
    Shutdown,
    /// Close TCP without withdrawing and without NOTIFICATION (graceful restart).
    Restart,
}

/// How long [`Speaker::shutdown`] waits for the withdrawals and the Cease to be written.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

pub struct Speaker {
    peers: Vec<(PeerConfig, SharedRef)>,
    desired: watch::Sender<Arc<Routes>>,
    control: watch::Sender<Control>,
    tasks: Vec<JoinHandle<()>>,
}

impl Speaker {
    /// Validate `cfg` and spawn one task per peer (plus listeners for passive peers and
    /// the BFD receivers) on the current tokio runtime.
    pub fn start(cfg: BgpConfig) -> Result<Speaker, BgpError> {
        Self::start_announcing(cfg, Routes::new())
    }

    /// [`Speaker::start`] with the first table already set: every session's initial
    /// UPDATEs (and the End-of-RIB after them) carry `routes`, never an empty table that
    /// would make a graceful-restart peer drop our stale routes.
    pub fn start_announcing(cfg: BgpConfig, routes: Routes) -> Result<Speaker, BgpError> {
        cfg.validate()?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| BgpError::NoRuntime)?;
        let _guard = rt.enter();
        let cfg = Arc::new(cfg);
        let (desired, desired_rx) = watch::channel(Arc::new(routes));
        let (control, control_rx) = watch::channel(Control::Run);

        let bfd_hub = start_bfd_hub(&cfg)?;
        let (mut tasks, mut peer_rx) = start_listeners(&cfg, &control_rx)?;

        let mut peers = Vec::new();
        for p in &cfg.peers {
            let shared = Shared::idle(p.bfd.is_some());
            let ctx = session::PeerCtx {
                cfg: cfg.clone(),
                peer: p.clone(),
                shared: shared.clone(),
                desired: desired_rx.clone(),
                control: control_rx.clone(),
                incoming: peer_rx.remove(&p.address),
                bfd: if p.bfd.is_some() {
                    bfd_hub.clone()
                } else {
                    None
                },
            };
            tasks.push(tokio::spawn(session::run(ctx)));
            peers.push((p.clone(), shared));
        }
        if let Some(hub) = bfd_hub {
            tasks.push(tokio::spawn(hub.run_until(control_rx.clone())));
        }
        Ok(Speaker {
            peers,
            desired,
            control,
            tasks,
        })
    }

    /// The full set of host routes this node should advertise now, with only the
    /// speaker-wide communities and LOCAL_PREF (see [`Speaker::announce_routes`]).
    pub fn announce(&self, prefixes: BTreeSet<IpAddr>) {
        self.announce_routes(
            prefixes
                .into_iter()
                .map(|p| (p, RoutePolicy::default()))
                .collect(),
        );
    }

    /// The full set of host routes this node should advertise now. Sessions diff it
    /// against what they advertised; calling it again with the same set does nothing.
    pub fn announce_routes(&self, routes: Routes) {
        self.desired.send_if_modified(|cur| {
            if **cur == routes {
                false
            } else {
                *cur = Arc::new(routes);
                true
            }
        });
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(p, shared)| {
                let g = match shared.lock() {
                    Ok(g) => g,
                    Err(e) => e.into_inner(),
                };
                PeerStatus {
                    address: p.address,
                    remote_as: p.remote_as,
                    state: g.state,
                    uptime: g.established_at.map(|t| t.elapsed()),
                    flaps: g.flaps,
                    prefixes_announced: g.announced.len(),
                    prefixes: g.announced.clone(),
                    last_error: g.last_error.clone(),
                    bfd: g.bfd,
                }
            })
            .collect()
    }

    /// Withdraw everything, send NOTIFICATION Cease (Administrative Shutdown) and close,
    /// waiting at most a few seconds for peers that do not read.
    pub async fn shutdown(self) {
        self.stop(Control::Shutdown).await;
    }

    /// Close every session without withdrawing and without a NOTIFICATION: peers that
    /// negotiated graceful restart keep our routes (stale) for the restart time, and the
    /// next speaker re-announces them before sending End-of-RIB.
    pub async fn stop_for_restart(self) {
        self.stop(Control::Restart).await;
    }

    async fn stop(mut self, how: Control) {
        let _ = self.control.send(how);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH;
        for t in &mut self.tasks {
            if tokio::time::timeout_at(deadline, &mut *t).await.is_err() {
                t.abort();
            }
        }
        self.tasks.clear();
    }
}

impl Drop for Speaker {
    /// A speaker dropped without `shutdown` behaves like a crash: sockets close, peers
    /// with graceful restart keep the routes as stale.
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The BFD receivers, for the address families of the peers that have BFD configured
/// (none when no peer has).
fn start_bfd_hub(cfg: &BgpConfig) -> Result<Option<bfd::Hub>, BgpError> {
    if !cfg.peers.iter().any(|p| p.bfd.is_some()) {
        return Ok(None);
    }
    let v4 = cfg
        .peers
        .iter()
        .any(|p| p.bfd.is_some() && p.address.is_ipv4());
    let v6 = cfg
        .peers
        .iter()
        .any(|p| p.bfd.is_some() && p.address.is_ipv6());
    Ok(Some(bfd::Hub::start(v4, v6)?))
}

/// Connections accepted for each passive peer, by its address.
type PeerIncoming = HashMap<IpAddr, mpsc::Receiver<TcpStream>>;

/// Passive peers: one listener per (port, family), connections handed to the peer's task
/// by source address. Returns the accept tasks and each passive peer's receiving end.
fn start_listeners(
    cfg: &BgpConfig,
    control_rx: &watch::Receiver<Control>,
) -> Result<(Vec<JoinHandle<()>>, PeerIncoming), BgpError> {
    let mut tasks = Vec::new();
    let mut incoming: HashMap<IpAddr, mpsc::Sender<TcpStream>> = HashMap::new();
    let mut peer_rx: PeerIncoming = HashMap::new();
    let mut listeners: HashMap<(u16, bool), Vec<&PeerConfig>> = HashMap::new();
    for p in cfg.peers.iter().filter(|p| p.passive) {
        let (tx, rx) = mpsc::channel(1);
        incoming.insert(p.address, tx);
        peer_rx.insert(p.address, rx);
        listeners
            .entry((p.port, p.address.is_ipv6()))
            .or_default()
            .push(p);
    }
    let incoming = Arc::new(incoming);
    for ((port, v6), peers) in listeners {
        let l = sock::listen(v6, port).map_err(|source| BgpError::Listen { port, source })?;
        for p in peers {
            if let Some(pw) = &p.password {
                sock::set_md5(&l, p.address, Some(pw.as_bytes())).map_err(|source| {
                    BgpError::Md5 {
                        peer: p.address,
                        source,
                    }
                })?;
            }
        }
        tasks.push(tokio::spawn(accept_loop(
            l,
            incoming.clone(),
            control_rx.clone(),
        )));
    }
    Ok((tasks, peer_rx))
}

async fn accept_loop(
    l: tokio::net::TcpListener,
    incoming: Arc<HashMap<IpAddr, mpsc::Sender<TcpStream>>>,
    mut control: watch::Receiver<Control>,
) {
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((s, from)) => hand_over(&incoming, s, from),
                Err(e) => {
                    tracing::warn!(error = %crate::Chain(&e), "accepting a BGP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            r = control.changed() => if r.is_err() || *control.borrow() != Control::Run {
                return;
            },
        }
    }
}

fn hand_over(incoming: &HashMap<IpAddr, mpsc::Sender<TcpStream>>, s: TcpStream, from: SocketAddr) {
    let ip = match from.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match incoming.get(&ip) {
        // A full channel means the peer's task already has a connection (collision):
        // the newer one is dropped.
        Some(tx) => {
            if tx.try_send(s).is_err() {
                tracing::info!(peer = %ip, "dropping a second connection from a BGP peer");
            }
        }
        None => tracing::info!(from = %from, "refusing a BGP connection from an unknown address"),
    }
}
