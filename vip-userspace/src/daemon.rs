//! The standalone daemon: validate against the system, bring up the data plane (XDP, or the
//! kernel as fallback), own the VIPs, serve metrics, and clean up on SIGTERM/SIGINT.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{atomic::Ordering, Arc},
};

use std::time::{Duration, Instant};

use aya::{
    programs::{tc::SchedClassifierLink, xdp::XdpLink},
    Ebpf,
};

use crate::{
    config::{self, Config, ConfigError, Mode},
    dataplane::{
        attach::{self, Adoption, AttachMode, Held},
        lb::LbMaps,
        load,
        maps::{monotonic_ns, Maps, StatsReader},
        DataplaneError,
    },
    election::{self, per_vip::VipLeases, raft::RaftElector, rendezvous::Rendezvous},
    k8s::controller::View,
    metrics::{self, MetricsError, State},
    model::Desired,
    net::{
        addr::{self, AddrError},
        link::{self, Link, LinkError},
    },
    reconcile::{
        lb::LbSide,
        services::{ServiceError, ServiceSync},
        Backend, Claims, ReconcileError, Reconciler,
    },
    shutdown,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("netlink socket: {0}")]
    Netlink(#[from] std::io::Error),
    #[error("interface: {0}")]
    Link(#[from] LinkError),
    #[error("listing addresses: {0}")]
    Addr(#[from] AddrError),
    #[error("XDP data plane: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    #[error("applying VIPs: {0}")]
    Reconcile(#[from] ReconcileError),
    #[error("services: {0}")]
    Services(#[from] ServiceError),
    #[error("kubernetes: {0}")]
    Kube(String),
    #[error("bgp: {0}")]
    Bgp(String),
    #[error(transparent)]
    Raft(#[from] crate::election::raft::RaftError),
    #[error(transparent)]
    Fence(#[from] FenceError),
}

/// Re-reads the configuration (SIGHUP).
pub type Reload = Box<dyn Fn() -> Result<Config, ConfigError> + Send>;

/// The XDP program as attached, kept alive for the daemon's lifetime.
struct XdpPlane {
    ebpf: Ebpf,
    xdp: Held<XdpLink>,
    mode: AttachMode,
    /// Whether the XDP link was adopted from a previous daemon (and how).
    adoption: Adoption,
    tc: Option<Held<SchedClassifierLink>>,
}

/// Checks that need the system: interface, local device and address conflicts. Failing here
/// is a config error (exit 2).
pub async fn check(cfg: &Config, handle: &rtnetlink::Handle) -> Result<(), DaemonError> {
    let ifindex = link::index(&cfg.interface);
    let addrs = addr::list_v4(handle).await?;
    config::check_system(cfg, ifindex, &addrs)?;
    if cfg.mode != Mode::Kernel && link::index(&cfg.local_device).is_none() {
        return Err(ConfigError::new(
            "local_device",
            format!("no device named `{}` to bind VIPs on", cfg.local_device),
        )
        .into());
    }
    Ok(())
}

struct XdpParts {
    plane: XdpPlane,
    maps: Maps,
    lb: LbMaps,
    reader: StatsReader,
}

fn try_xdp(cfg: &Config, uplink: &Link) -> Result<XdpParts, DataplaneError> {
    let sizes = load::Sizes {
        ring_slots: cfg.ring_slots,
        max_services: cfg.max_services,
        max_backends: cfg.max_backends,
        max_vips: cfg.max_vips,
        conntrack_flows: cfg.conntrack_flows,
    };
    let mut ebpf = load::load(&cfg.pin_dir, sizes)?;
    let held = crate::dataplane::memory::pinned_bytes(&cfg.pin_dir);
    tracing::info!(
        bytes = held.iter().map(|(_, b)| b).sum::<u64>(),
        cpus = load::possible_cpus(),
        conntrack_sets_per_cpu =
            vip_common::ct_sets_per_cpu(cfg.conntrack_flows, load::possible_cpus()),
        "BPF maps loaded (kernel memlock; per map in vip_bpf_map_bytes)"
    );
    load::spawn_log_forwarder(&mut ebpf);
    let mut maps = Maps::take(&mut ebpf)?;
    let lb = LbMaps::take(&mut ebpf)?;
    maps.set_iface(uplink.index, uplink.mac)?;
    let reader = StatsReader::open(&cfg.pin_dir)?;
    // Reverse NAT first, so a nat reply never leaves unrewritten once XDP forwards.
    let tc = match attach::attach_tc_egress(&mut ebpf, &cfg.interface, uplink.index, &cfg.pin_dir) {
        Ok((held, adoption)) => {
            tracing::debug!(program = adoption.as_str(), "tc egress attached");
            Some(held)
        }
        Err(e) => {
            tracing::warn!(error = %e, "tc egress not attached: nat services will not work");
            None
        }
    };
    let x = match attach::attach(&mut ebpf, &cfg.interface, uplink.index, &cfg.pin_dir) {
        Ok(x) => x,
        Err(e) => {
            // Pinned, the tc link would outlive us: detach it with the failed attempt.
            if let Some(t) = tc {
                t.release();
            }
            return Err(e);
        }
    };
    Ok(XdpParts {
        plane: XdpPlane {
            ebpf,
            xdp: x.held,
            mode: x.mode,
            adoption: x.adoption,
            tc,
        },
        maps,
        lb,
        reader,
    })
}

/// The fence's kernel layer could not be put in place: this node claims no VIP until it is.
#[derive(Debug, thiserror::Error)]
#[error("arp_ignore must be at least 1 on `{iface}`, or the kernel answers ARP for the VIPs bound on `{local}` whenever the XDP program is not there; this node claims no VIP until it is set")]
pub struct FenceError {
    iface: String,
    local: String,
    #[source]
    source: crate::net::devconf::DevconfError,
}

/// Whether VIPs are bound where the kernel would answer ARP for them on the uplink.
/// XDP mode binds VIPs on the local device (`lo`), and Linux by default answers ARP on any
/// interface for any local address. While XDP runs that never shows (it answers or drops
/// every request for an owned VIP first), but a detached program (pins removed, a kernel
/// without bpf_link XDP, a restart whose program fails to load) would leave the kernel
/// answering for a VIP this node may no longer own. Kernel mode needs it too when BGP may
/// route VIPs here without this node owning them (those are bound on `lo`, owned ones on
/// the uplink, which still answers for its own addresses).
/// `xdp`: the data plane that came up (mode `auto` may have fallen back to the kernel).
fn needs_strict_arp(cfg: &Config, xdp: bool) -> bool {
    if xdp {
        cfg.local_device != cfg.interface
    } else {
        cfg.bgp.is_some()
    }
}

/// `arp_ignore=1` on the uplink: the kernel answers only for the uplink's own addresses
/// (what kube-proxy's IPVS mode and MetalLB's strictARP set). Through rtnetlink, so it works
/// where /proc/sys is read-only (any unprivileged container). 2 and above are stricter still;
/// only the default is raised. Left set on exit.
async fn strict_arp(cfg: &Config, handle: &rtnetlink::Handle, xdp: bool) -> Result<(), FenceError> {
    use crate::net::devconf::{self, Setting};
    if !needs_strict_arp(cfg, xdp) {
        return Ok(());
    }
    let iface = cfg.interface.as_str();
    let raised = match devconf::get(handle, iface, Setting::ArpIgnore).await {
        Ok(v) if v >= 1 => Ok(()),
        Ok(_) => devconf::set(handle, iface, Setting::ArpIgnore, 1)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    raised.map_err(|source| FenceError {
        iface: cfg.interface.clone(),
        local: cfg.local_device.clone(),
        source,
    })
}

/// Before the election starts: a node that cannot keep the kernel from answering for VIPs
/// must not compete for them. Retried every link check, not ready and `vip_fence_ready 0`
/// meanwhile, the error logged each time it changes. Returns the signal if one came first.
async fn wait_fenced(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    state: &State,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = shutdown::Stop>>,
) -> Option<shutdown::Stop> {
    let mut logged = String::new();
    loop {
        match strict_arp(cfg, handle, cfg.mode != Mode::Kernel).await {
            Ok(()) => {
                state.fence_ready.set(1);
                return None;
            }
            Err(e) => {
                state.fence_ready.set(0);
                let msg = crate::Chain(&e).to_string();
                if msg != logged {
                    tracing::error!(error = %msg, "fence not in place; retrying");
                    logged = msg;
                }
            }
        }
        tokio::select! {
            sig = shutdown.as_mut() => return Some(sig),
            _ = tokio::time::sleep(LINK_CHECK) => {}
        }
    }
}

/// The data plane's per-VIP counters (empty without XDP).
fn vip_rows(state: &State) -> Vec<(std::net::Ipv4Addr, vip_common::VipStats)> {
    state
        .stats
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|r| r.per_vip()))
        .unwrap_or_default()
}

/// `vip_rows` when some VIP saw a foreign claim since the last look, else nothing (see
/// `StatsReader::claimed_rows`): the link-check tick then costs the same at any VIP count.
fn claimed_rows(state: &State) -> Vec<(std::net::Ipv4Addr, vip_common::VipStats)> {
    state
        .stats
        .lock()
        .ok()
        .and_then(|mut s| s.as_mut().map(|r| r.claimed_rows()))
        .unwrap_or_default()
}

/// Who owns the VIPs: this node always, or the holder of a Lease (fenced); service VIPs
/// elected one lease each (`per-vip`, and always for `externalTrafficPolicy: Local`), or
/// placed by rendezvous hashing under one lease per node (`rendezvous`, Local VIPs too).
struct Ownership {
    leader: tokio::sync::watch::Receiver<bool>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Services (and their VIPs) from the API server, when served.
    k8s: Option<tokio::sync::watch::Receiver<View>>,
    k8s_task: Option<tokio::task::JoinHandle<()>>,
    service_election: config::ServiceElection,
    vip_leases: Option<VipLeases>,
    /// `service_election: rendezvous`: every service VIP (instead of `vip_leases`).
    placement: Option<Rendezvous>,
    /// False while the uplink is gone: every lease is handed on instead of left to expire.
    able: tokio::sync::watch::Sender<bool>,
    /// `election.mode: raft`: the elector, whose lease also bounds the data plane's dead-man.
    raft: Option<RaftElector>,
    /// Whether this node's control plane is fit to serve (lease: the elector's readiness
    /// check; single: always): BGP ECMP announces the control-plane VIP from every such node.
    healthy: tokio::sync::watch::Receiver<bool>,
}

/// The control-plane VIP must be elected against this node's own API server, never through
/// the VIP (whose holder may be the node that is failing). A kubeconfig naming one of our
/// VIPs (kubeadm's admin.conf with the VIP as controlPlaneEndpoint) is pointed at
/// 127.0.0.1 on the same port; the certificate is still checked against the VIP, which is
/// in the API server's SANs.
pub fn elect_locally(kcfg: &mut kube::Config, vips: &BTreeSet<Ipv4Addr>) -> bool {
    let url = &kcfg.cluster_url;
    let Some(host) = url.host() else {
        return false;
    };
    let Ok(ip) = host.parse::<Ipv4Addr>() else {
        return false;
    };
    if !vips.contains(&ip) {
        return false;
    }
    let port = url.port_u16().unwrap_or(443);
    let path = url.path_and_query().map_or("", |p| p.as_str());
    let Ok(local) = format!("https://127.0.0.1:{port}{path}").parse() else {
        return false;
    };
    kcfg.cluster_url = local;
    kcfg.tls_server_name.get_or_insert_with(|| ip.to_string());
    true
}

impl Ownership {
    /// Single or Raft: no API server, no per-VIP leases, healthy while able.
    fn without_kubernetes(
        leader: tokio::sync::watch::Receiver<bool>,
        raft: Option<RaftElector>,
    ) -> Ownership {
        let able = tokio::sync::watch::Sender::new(true);
        Ownership {
            leader,
            stop: None,
            task: None,
            k8s: None,
            k8s_task: None,
            service_election: config::ServiceElection::Shared,
            vip_leases: None,
            placement: None,
            healthy: able.subscribe(),
            able,
            raft,
        }
    }

    async fn start(cfg: &Config, state: &Arc<State>) -> Result<Ownership, DaemonError> {
        match &cfg.election {
            config::Election::Single => {
                // The sender goes at once: the loop treats a closed channel as "never
                // changes" (leader for good).
                let (_tx, rx) = tokio::sync::watch::channel(true);
                state.leader.set(1);
                Ok(Ownership::without_kubernetes(rx, None))
            }
            config::Election::Raft(rc) => {
                let elector = RaftElector::start(rc.clone()).await?;
                if let Ok(mut r) = state.raft.write() {
                    *r = Some(elector.status_source());
                }
                tracing::info!(id = rc.id, members = rc.peers.len(), heartbeat = ?rc.heartbeat, lease = ?rc.lease, "raft election started");
                Ok(Ownership::without_kubernetes(
                    elector.leader(),
                    Some(elector),
                ))
            }
            config::Election::Lease {
                kubeconfig,
                lease,
                services,
                service_election,
            } => {
                let mut kcfg = match kubeconfig {
                    Some(p) => {
                        let kc = kube::config::Kubeconfig::read_from(p).map_err(|e| {
                            DaemonError::Kube(format!("kubeconfig {}: {e}", p.display()))
                        })?;
                        kube::Config::from_custom_kubeconfig(kc, &Default::default())
                            .await
                            .map_err(|e| DaemonError::Kube(e.to_string()))?
                    }
                    None => kube::Config::infer()
                        .await
                        .map_err(|e| DaemonError::Kube(e.to_string()))?,
                };
                let named = kcfg.cluster_url.to_string();
                if elect_locally(&mut kcfg, &cfg.vips) {
                    tracing::info!(kubeconfig = %named, using = %kcfg.cluster_url, "the kubeconfig names a VIP; electing against the local API server");
                }
                let client =
                    kube::Client::try_from(kcfg).map_err(|e| DaemonError::Kube(e.to_string()))?;
                let able = tokio::sync::watch::Sender::new(true);
                // Unhealthy until the elector's first check says otherwise.
                let (healthy_tx, healthy) = tokio::sync::watch::channel(false);
                let elector =
                    crate::election::lease::LeaseElector::new(client.clone(), lease.clone())
                        .map_err(|e| DaemonError::Kube(e.to_string()))?
                        .with_able(able.subscribe())
                        .with_healthy(healthy_tx);
                let (tx, rx) = tokio::sync::watch::channel(false);
                let (stop, stop_rx) = tokio::sync::watch::channel(false);
                tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "lease election started");
                let (k8s, k8s_task, vip_leases, placement) = if *services {
                    let (out, k8s_rx) = tokio::sync::watch::channel(View::default());
                    let cc = crate::k8s::controller::ControllerConfig::new(&lease.identity);
                    let task = tokio::spawn(crate::k8s::source::run(
                        client.clone(),
                        cc,
                        rx.clone(),
                        out,
                        state.clone(),
                    ));
                    let (leases, placement) =
                        if *service_election == config::ServiceElection::Rendezvous {
                            let r = Rendezvous::start(
                                client,
                                lease.clone(),
                                state.owned.subscribe(),
                                able.subscribe(),
                            )
                            .map_err(|e| DaemonError::Kube(e.to_string()))?;
                            (None, Some(r))
                        } else {
                            let l = VipLeases::start(
                                client,
                                lease.clone(),
                                state.owned.subscribe(),
                                able.subscribe(),
                            );
                            (Some(l), None)
                        };
                    tracing::info!(service_election = ?service_election, "serving Services of type LoadBalancer");
                    (Some(k8s_rx), Some(task), leases, placement)
                } else {
                    (None, None, None, None)
                };
                Ok(Ownership {
                    leader: rx,
                    stop: Some(stop),
                    task: Some(tokio::spawn(elector.run(tx, stop_rx))),
                    k8s,
                    k8s_task,
                    service_election: *service_election,
                    vip_leases,
                    placement,
                    able,
                    healthy,
                    raft: None,
                })
            }
        }
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// The data plane's dead-man deadline (CLOCK_MONOTONIC ns, 0: off): `dead_man` from now,
    /// and with Raft never past the lease, so XDP goes silent when the lease runs out even if
    /// this process is late or gone. Not leading: already past.
    fn deadline_ns(&self, dead_man: Duration) -> u64 {
        let now = Instant::now();
        let mut until = (!dead_man.is_zero()).then(|| now + dead_man);
        if let Some(r) = &self.raft {
            let lease = r.lease_deadline().unwrap_or(now);
            until = Some(until.map_or(lease, |u| u.min(lease)));
        }
        match until {
            None => 0,
            // Instant is CLOCK_MONOTONIC on Linux, the clock of bpf_ktime_get_ns; 0 would
            // mean "off", so a deadline in the past is never written as 0.
            Some(u) => (monotonic_ns() + u.saturating_duration_since(now).as_nanos() as u64).max(1),
        }
    }

    /// How often to check in: a quarter of the dead-man, and with Raft every heartbeat.
    /// With Raft the election thread writes the deadline at every lease extension itself and
    /// this tick only tells it that the main loop is alive (`main_loop_alive`, an atomic
    /// store); it writes the deadline only if the election thread has no handle.
    fn check_in_period(&self, dead_man: Duration) -> Duration {
        let base = (dead_man / 4).max(Duration::from_millis(5));
        match &self.raft {
            Some(r) if dead_man.is_zero() => r.heartbeat(),
            Some(r) => base.min(r.heartbeat()),
            None => base,
        }
    }

    /// Raft: the election thread checks in from now on, through a handle of its own, and
    /// only while the main loop keeps ticking (within `dead_man`).
    fn raft_check_in(&self, cfg: &Config) {
        let Some(r) = &self.raft else {
            return;
        };
        match crate::dataplane::maps::DeadMan::open(&cfg.pin_dir) {
            Ok(dm) => r.check_in_through(dm, cfg.dead_man),
            Err(e) => {
                tracing::warn!(error = %e, "raft: dead-man handle not opened; the main loop checks in instead")
            }
        }
    }

    /// Raft: the election thread stops checking in (before the data plane goes down, or
    /// the main loop writes the last deadline).
    fn raft_check_in_stop(&self) {
        if let Some(r) = &self.raft {
            r.stop_checking_in();
        }
    }

    /// Service VIPs elected one lease each, and whether this node may hold them. The file's
    /// VIPs (the control plane's) always follow the shared lease.
    fn individually(&self, cfg: &Config) -> BTreeMap<Ipv4Addr, bool> {
        let Some(rx) = &self.k8s else {
            return BTreeMap::new();
        };
        if self.placement.is_some() {
            return BTreeMap::new();
        }
        let view = rx.borrow();
        let mut out = BTreeMap::new();
        let per_vip = self.service_election == config::ServiceElection::PerVip;
        for s in &view.services {
            if cfg.vips.contains(&s.vip) {
                continue;
            }
            if per_vip || view.local.contains_key(&s.vip) {
                out.insert(s.vip, view.local.get(&s.vip).copied().unwrap_or(true));
            }
        }
        out
    }

    /// `rendezvous`: every service VIP, with the nodes that may hold it (Local VIPs: the
    /// nodes with a ready endpoint of each of its Local Services; others: any live node).
    fn placed(&self, cfg: &Config) -> election::rendezvous::Wanted {
        let (Some(rx), Some(_)) = (&self.k8s, &self.placement) else {
            return Default::default();
        };
        let view = rx.borrow();
        view.services
            .iter()
            .filter(|s| !cfg.vips.contains(&s.vip))
            .map(|s| {
                let eligible = view
                    .local
                    .contains_key(&s.vip)
                    .then(|| view.eligible.get(&s.vip).cloned().unwrap_or_default());
                (s.vip, eligible)
            })
            .collect()
    }

    /// Where this node learns that the VIPs it holds by a per-VIP election changed.
    fn held_watch(&self) -> Option<tokio::sync::watch::Receiver<BTreeSet<Ipv4Addr>>> {
        self.vip_leases
            .as_ref()
            .map(|l| l.held.clone())
            .or_else(|| self.placement.as_ref().map(|p| p.held.clone()))
    }

    /// The desired state (the file's, plus Services from the API server) and the VIPs this
    /// node owns in it (plus, with BGP, those it serves because it announces them); tells
    /// the per-VIP leases which VIPs to compete for.
    fn plan(&self, cfg: &Config) -> (Desired, Claims) {
        let desired = match &self.k8s {
            Some(rx) => Desired::from_sources(cfg, &rx.borrow().services),
            None => Desired::from_config(cfg),
        };
        let single = self.individually(cfg);
        let placed = self.placed(cfg);
        let mut owned: BTreeSet<Ipv4Addr> = if self.is_leader() {
            election::single::owned(&desired)
                .into_iter()
                .filter(|v| !single.contains_key(v) && !placed.contains_key(v))
                .collect()
        } else {
            BTreeSet::new()
        };
        if let Some(p) = &self.placement {
            let here = |v: &Ipv4Addr| match self
                .k8s
                .as_ref()
                .map(|rx| rx.borrow().local.get(v).copied())
            {
                // Local: only while this node has a ready endpoint (the release follows).
                Some(Some(eligible)) => eligible,
                _ => true,
            };
            owned.extend(
                p.held
                    .borrow()
                    .iter()
                    .filter(|v| placed.contains_key(v) && desired.vips.contains(v) && here(v)),
            );
            p.want(placed);
        }
        if let Some(l) = &self.vip_leases {
            l.want(
                single
                    .iter()
                    .filter(|(_, eligible)| **eligible)
                    .map(|(v, _)| *v)
                    .collect(),
            );
            owned.extend(
                l.held
                    .borrow()
                    .iter()
                    .filter(|v| single.get(v) == Some(&true) && desired.vips.contains(v)),
            );
        }
        let routed = match &cfg.bgp {
            Some(b) => {
                let local = self
                    .k8s
                    .as_ref()
                    .map(|rx| rx.borrow().local.clone())
                    .unwrap_or_default();
                routed(
                    &b.announce,
                    cfg,
                    &desired,
                    &local,
                    *self.healthy.borrow() && *self.able.borrow(),
                )
                .difference(&owned)
                .copied()
                .collect()
            }
            None => BTreeSet::new(),
        };
        (desired, Claims { owned, routed })
    }

    /// What goes with each served VIP's announcement (pool and Service annotations).
    fn routes(&self, served: &[Ipv4Addr]) -> crate::bgp::Routes {
        let policies = self
            .k8s
            .as_ref()
            .map(|rx| rx.borrow().routes.clone())
            .unwrap_or_default();
        served
            .iter()
            .map(|v| {
                (
                    std::net::IpAddr::V4(*v),
                    policies.get(v).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Before the first BGP table goes out: wait (bounded) for what decides it, so a
    /// restarted daemon does not announce a partial table and End-of-RIB, which would make
    /// graceful-restart peers drop the routes it has not re-learnt yet.
    async fn settle(&self, cfg: &Config) {
        let deadline = tokio::time::Instant::now() + SETTLE_MAX;
        if let Some(rx) = &self.k8s {
            let mut rx = rx.clone();
            let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
        }
        if let config::Election::Lease { lease, .. } = &cfg.election {
            // A restarted holder renews its own lease on its first round.
            let first_round = tokio::time::Instant::now() + lease.retry_period + lease.api_timeout;
            let mut leader = self.leader.clone();
            let _ =
                tokio::time::timeout_at(first_round.min(deadline), leader.wait_for(|l| *l)).await;
        }
    }

    /// Stop electing and release the leases (after the VIPs were released).
    async fn stop(self) {
        if let Some(t) = self.k8s_task {
            t.abort();
        }
        if let Some(l) = self.vip_leases {
            l.stop().await;
        }
        if let Some(p) = self.placement {
            p.stop().await;
        }
        if let Some(s) = self.stop {
            let _ = s.send(true);
        }
        if let Some(t) = self.task {
            let _ = t.await;
        }
        // Leader: silent already (VIPs released), now hand over at once (TimeoutNow).
        if let Some(r) = self.raft {
            r.stop().await;
        }
    }
}

/// The longest the first BGP table waits for the sources and the election (see `settle`).
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// VIPs this node announces by BGP under `bgp.announce` besides those it owns:
/// - control plane (the file's VIPs), `ecmp`: every node whose control plane is healthy;
/// - Services, `ecmp`: `externalTrafficPolicy: Local` VIPs where this node has a ready
///   endpoint (`local`), and `Cluster` VIPs all of whose services are balanced in XDP
///   (dsr/nat), since every node's data plane sends their flows to the same backends.
///   `Cluster` VIPs in `local` mode stay with the owner.
pub fn routed(
    announce: &crate::bgp::AnnounceConfig,
    cfg: &Config,
    desired: &Desired,
    local: &BTreeMap<Ipv4Addr, bool>,
    healthy: bool,
) -> BTreeSet<Ipv4Addr> {
    use crate::bgp::AnnounceMode;
    let mut out = BTreeSet::new();
    for vip in &desired.vips {
        let wanted = if cfg.vips.contains(vip) {
            announce.control_plane == AnnounceMode::Ecmp && healthy
        } else if announce.services == AnnounceMode::Ecmp {
            match local.get(vip) {
                Some(eligible) => *eligible,
                None => {
                    let mut svcs = desired.services.iter().filter(|s| s.vip == *vip).peekable();
                    svcs.peek().is_some() && svcs.all(|s| s.mode != config::LbMode::Local)
                }
            }
        } else {
            false
        };
        if wanted {
            out.insert(*vip);
        }
    }
    out
}

/// How often the uplink is checked. A vanished or replaced uplink (new ifindex or MAC) tears
/// the data plane down and brings it up again on the new device.
const LINK_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Link checks per next-hop epoch: cached backend next hops are refreshed about every second.
const EPOCH_TICKS: u64 = 2;

/// Everything that is up while the uplink exists.
struct Running {
    uplink: Link,
    plane: Option<XdpPlane>,
    rec: Reconciler,
}

pub async fn run(
    cfg: Config,
    keep_pinned: bool,
    reload: Option<Reload>,
) -> Result<(), DaemonError> {
    let mut cfg = cfg;
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let state = Arc::new(State::default());
    if let Ok(mut i) = state.interface.write() {
        *i = cfg.interface.clone();
    }
    let listener = metrics::bind(cfg.metrics_addr).await?;
    tracing::info!(addr = %cfg.metrics_addr, "serving /metrics, /healthz, /readyz");
    tokio::spawn(metrics::serve(listener, state.clone()));

    let uplink = link::get(&handle, &cfg.interface).await?;
    let shutdown = shutdown::wait();
    tokio::pin!(shutdown);
    if let Some(sig) = wait_fenced(&cfg, &handle, &state, &mut shutdown).await {
        tracing::info!(
            signal = sig.name(),
            "stopped before the fence was in place; nothing was claimed"
        );
        return Ok(());
    }
    let ownership = Ownership::start(&cfg, &state).await?;
    let mut running = Some(bring_up(&cfg, &handle, &state, uplink, &ownership).await?);
    // BGP announces exactly what the data plane serves (owned and routed VIPs), and its
    // first table waits until the election and sources have had their say.
    let speaker = match &cfg.bgp {
        Some(b) => {
            ownership.settle(&cfg).await;
            apply_desired(&cfg, running.as_mut(), &state, &ownership).await;
            let first = ownership.routes(&state.served.borrow());
            Some(
                crate::bgp::Speaker::start_announcing(b.clone(), first)
                    .map_err(|e| DaemonError::Bgp(e.to_string()))?,
            )
        }
        None => None,
    };
    let mut served_rx = state.served.subscribe();
    served_rx.mark_unchanged();
    let mut healthy_rx = Some(ownership.healthy.clone());
    let mut tick = tokio::time::interval(LINK_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    // A second handle on the Kubernetes source, to wait on while `ownership` reads the value.
    let mut k8s_rx = ownership.k8s.clone();
    let mut leader_rx = Some(ownership.leader.clone());
    let mut held_rx = ownership.held_watch();
    // Check in with the data plane's dead-man four times per grace period (Raft: per heartbeat).
    let mut check_in = tokio::time::interval(ownership.check_in_period(cfg.dead_man));
    check_in.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let announce = |speaker: &Option<crate::bgp::Speaker>, ownership: &Ownership| {
        if let Some(sp) = speaker {
            sp.announce_routes(ownership.routes(&state.served.borrow()));
        }
    };
    let sig = loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            sig = &mut shutdown => break sig,
            _ = hangup => {
                if let Some(r) = &reload {
                    reload_config(r, &mut cfg, running.as_mut(), &state, &ownership).await;
                }
                continue;
            }
            changed = watch_changed(&mut leader_rx) => {
                if changed {
                    leadership_changed(&cfg, running.as_mut(), &state, &ownership).await;
                }
                continue;
            }
            changed = watch_changed(&mut k8s_rx) => {
                if changed {
                    apply_desired(&cfg, running.as_mut(), &state, &ownership).await;
                    // Communities or LOCAL_PREF may have changed without the VIPs changing.
                    announce(&speaker, &ownership);
                }
                continue;
            }
            changed = watch_changed(&mut held_rx) => {
                if changed {
                    apply_desired(&cfg, running.as_mut(), &state, &ownership).await;
                }
                continue;
            }
            changed = watch_changed(&mut healthy_rx), if cfg.bgp.is_some() => {
                if changed {
                    apply_desired(&cfg, running.as_mut(), &state, &ownership).await;
                }
                continue;
            }
            r = served_rx.changed(), if speaker.is_some() => {
                if r.is_ok() {
                    served_rx.mark_unchanged();
                    announce(&speaker, &ownership);
                }
                continue;
            }
            _ = check_in.tick() => {
                // Raft: the election thread checks in; the main loop only says it is alive.
                let raft_checks_in = ownership.raft.as_ref().is_some_and(|r| r.main_loop_alive());
                if let (Some(r), false) = (running.as_mut(), raft_checks_in) {
                    r.rec.check_in_until(ownership.deadline_ns(cfg.dead_man));
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        ticks += 1;
        if let Some(sp) = &speaker {
            if let Ok(mut b) = state.bgp.lock() {
                *b = sp.status();
            }
        }
        if let Some(r) = running.as_mut() {
            if ticks.is_multiple_of(EPOCH_TICKS) {
                r.rec.tick_epoch();
            }
            r.rec.check_conflicts(&claimed_rows(&state));
        }
        let current = match link::get(&handle, &cfg.interface).await {
            Ok(l) => Some(l),
            Err(LinkError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(error = %e, "checking the uplink failed");
                continue;
            }
        };
        let changed = match (&running, &current) {
            (Some(r), Some(c)) => r.uplink != *c,
            (Some(_), None) | (None, Some(_)) => true,
            (None, None) => false,
        };
        if !changed {
            continue;
        }
        if let Some(r) = running.take() {
            match &current {
                None => {
                    tracing::error!(iface = %cfg.interface, "uplink disappeared; VIPs released until it returns")
                }
                Some(c) => {
                    tracing::warn!(iface = %cfg.interface, old = r.uplink.index, new = c.index, "uplink replaced; re-attaching")
                }
            }
            state.uplink_present.set(0);
            ownership.raft_check_in_stop();
            if let Err(e) = bring_down(r, &cfg, &state, keep_pinned, false).await {
                // The device took most state with it; what is left is retried by bring_up.
                tracing::warn!(error = %e, "releasing after uplink loss was incomplete");
            }
            // Silent now; let another node take over at once rather than after expiry.
            ownership.able.send_replace(current.is_some());
        }
        if let Some(c) = current {
            state.dataplane_restarts.inc();
            match bring_up(&cfg, &handle, &state, c, &ownership).await {
                Ok(r) => {
                    tracing::info!(iface = %cfg.interface, "uplink back; VIPs re-acquired");
                    running = Some(r);
                    state.fence_ready.set(1);
                    ownership.able.send_replace(true);
                }
                // Retried on the next tick: the device may still be settling. Meanwhile
                // nothing is served here, so the leases go to nodes that can.
                Err(e) => {
                    if matches!(e, DaemonError::Fence(_)) {
                        state.fence_ready.set(0);
                    }
                    ownership.able.send_replace(false);
                    tracing::error!(error = %crate::Chain(&e), "bringing the data plane up failed; retrying")
                }
            }
        }
    };
    // A planned restart (SIGUSR2, or SIGTERM/SIGINT with `handover`) leaves the data plane
    // running for the next daemon; anything else releases everything.
    let planned_restart = sig == shutdown::Stop::Restart || cfg.handover;
    tracing::info!(signal = sig.name(), planned_restart, "shutting down");
    let mut result = Ok(());
    // Silence first (VIPs out of the data plane, addresses unbound), then hand the lease on.
    if let Some(r) = running {
        // The last deadline is the main loop's (a planned restart's grace, or 1 with Raft).
        ownership.raft_check_in_stop();
        result = bring_down(r, &cfg, &state, keep_pinned, planned_restart).await;
    } else if !keep_pinned && !planned_restart {
        load::remove_pins(&cfg.pin_dir);
    }
    if let Some(sp) = speaker {
        let graceful = cfg
            .bgp
            .as_ref()
            .is_some_and(|b| b.graceful_restart.is_some());
        if planned_restart && graceful {
            // A hand-over: the data plane keeps forwarding, so close without withdrawing
            // or Cease; graceful-restart peers keep the routes (stale) until the next
            // daemon's End-of-RIB.
            tracing::info!("closing BGP sessions for a restart; peers keep the routes");
            sp.stop_for_restart().await;
        } else {
            // Routes withdrawn (nothing is served any more), then Cease.
            sp.announce(Default::default());
            sp.shutdown().await;
        }
    }
    // On a planned restart the leases stay held (not released): the next daemon, same
    // identity, renews them; releasing would let another node take VIPs we still answer.
    if !planned_restart {
        ownership.stop().await;
    }
    result?;
    tracing::info!("clean exit");
    Ok(())
}

/// SIGHUP: re-read the file, apply VIP and service changes as a diff. Settings that shape
/// the data plane itself (interface, mode, pins, map sizes, seed) need a restart and are
/// kept as they are, with a warning naming them.
/// A watch channel whose sender is gone never changes again: it becomes `None` (pending
/// forever) instead of failing at once on every turn of the loop, which would spin it.
async fn watch_changed<T>(rx: &mut Option<tokio::sync::watch::Receiver<T>>) -> bool {
    let changed = match rx.as_mut() {
        Some(r) => r.changed().await.is_ok(),
        None => std::future::pending().await,
    };
    if !changed {
        *rx = None;
    }
    changed
}

/// Leadership moved: own every VIP (leader) or none (follower, or fenced off).
async fn leadership_changed(
    cfg: &Config,
    running: Option<&mut Running>,
    state: &State,
    ownership: &Ownership,
) {
    let leader = ownership.is_leader();
    state.leader.set(leader as i64);
    state.leader_transitions.inc();
    let Some(r) = running else {
        tracing::info!(leader, "leadership changed");
        return;
    };
    // The takeover (or silence) path first: the services did not change with leadership and
    // are already in the data plane, so re-applying them (interface settings, neighbour entries, all
    // netlink round trips) would only delay the map entry and the first gratuitous ARP.
    // The deadline before the VIPs: a newly owned VIP is answered only under the new lease.
    r.rec.check_in_until(ownership.deadline_ns(cfg.dead_man));
    let (_, claims) = ownership.plan(cfg);
    if let Err(e) = r.rec.apply(&claims).await {
        state.reconcile_errors.inc();
        tracing::error!(error = %e, "applying ownership failed");
    }
    tracing::info!(leader, "leadership changed");
    apply_desired(cfg, Some(r), state, ownership).await;
}

/// Services and owned VIPs from the current sources and leadership.
async fn apply_desired(
    cfg: &Config,
    running: Option<&mut Running>,
    state: &State,
    ownership: &Ownership,
) {
    let Some(r) = running else {
        return;
    };
    let (desired, claims) = ownership.plan(cfg);
    if let Err(e) = r.rec.converge(&desired.services, &claims).await {
        state.reconcile_errors.inc();
        tracing::error!(error = %e, "applying the desired state failed");
    }
}

async fn reload_config(
    reload: &Reload,
    cfg: &mut Config,
    running: Option<&mut Running>,
    state: &State,
    ownership: &Ownership,
) {
    let new = match reload() {
        Ok(c) => c,
        Err(e) => {
            state.reload_errors.inc();
            tracing::error!(error = %e, "reload rejected; keeping the running configuration");
            return;
        }
    };
    let fixed = [
        ("interface", new.interface != cfg.interface),
        ("mode", new.mode != cfg.mode),
        ("pin_dir", new.pin_dir != cfg.pin_dir),
        ("local_device", new.local_device != cfg.local_device),
        ("metrics_addr", new.metrics_addr != cfg.metrics_addr),
        ("maglev_size", new.maglev_size != cfg.maglev_size),
        ("max_services", new.max_services != cfg.max_services),
        ("maglev_sizing", new.maglev_by_need != cfg.maglev_by_need),
        ("ring_slots", new.ring_slots != cfg.ring_slots),
        ("max_backends", new.max_backends != cfg.max_backends),
        ("max_vips", new.max_vips != cfg.max_vips),
        (
            "conntrack_flows",
            new.conntrack_flows != cfg.conntrack_flows,
        ),
        ("hash_seed", new.hash_seed != cfg.hash_seed),
        // Includes the Raft keys (re-read from their files): rotation is a restart.
        ("election", new.election != cfg.election),
    ];
    for (field, changed) in fixed {
        if changed {
            tracing::warn!(field, "changed in the file but needs a restart; ignored");
        }
    }
    cfg.vips = new.vips;
    cfg.services = new.services;
    cfg.garp = new.garp;
    let Some(r) = running else {
        tracing::info!("configuration reloaded; applied when the uplink returns");
        return;
    };
    let (desired, claims) = ownership.plan(cfg);
    match r.rec.converge(&desired.services, &claims).await {
        Ok(()) => {
            state.reloads.inc();
            tracing::info!(vips = ?r.rec.applied(), services = desired.services.len(), "configuration reloaded");
        }
        Err(e) => {
            state.reload_errors.inc();
            tracing::error!(error = %e, "applying the reloaded configuration failed");
        }
    }
}

/// Load/attach the data plane on `uplink` (or fall back to the kernel), then own the VIPs.
async fn bring_up(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    state: &Arc<State>,
    uplink: Link,
    ownership: &Ownership,
) -> Result<Running, DaemonError> {
    let mut plane = None;
    let backend = match cfg.mode {
        Mode::Kernel => {
            strict_arp(cfg, handle, false).await?;
            Backend::Kernel {
                uplink_index: uplink.index,
            }
        }
        Mode::Xdp | Mode::Auto => match try_xdp(cfg, &uplink) {
            Ok(parts) => {
                let p = parts.plane;
                match p.adoption {
                    Adoption::Fresh => {
                        tracing::info!(iface = %cfg.interface, mode = p.mode.as_str(), "XDP attached")
                    }
                    a => tracing::info!(
                        iface = %cfg.interface,
                        mode = p.mode.as_str(),
                        program = a.as_str(),
                        "adopted pinned data plane (program {})",
                        a.as_str()
                    ),
                }
                if let Ok(mut at) = state.attachment.write() {
                    let (link_id, prog_id) = p.xdp.ids().unwrap_or_default();
                    *at = Some(metrics::Attachment {
                        program: p.adoption.as_str(),
                        link_id,
                        prog_id,
                    });
                }
                if let Ok(mut s) = state.stats.lock() {
                    *s = Some(parts.reader);
                }
                if let Ok(mut d) = state.pin_dir.write() {
                    *d = Some(cfg.pin_dir.clone());
                }
                plane = Some(p);
                let Some(local_index) = link::index(&cfg.local_device) else {
                    teardown(plane, cfg, state, false);
                    return Err(ConfigError::new("local_device", "device disappeared").into());
                };
                if let Err(e) = strict_arp(cfg, handle, true).await {
                    teardown(plane, cfg, state, false);
                    return Err(e.into());
                }
                let sync = match ServiceSync::adopt(parts.lb, cfg.sizing(), cfg.hash_seed) {
                    Ok(s) => s,
                    Err(e) => {
                        teardown(plane, cfg, state, false);
                        return Err(e.into());
                    }
                };
                Backend::Xdp {
                    maps: Box::new(parts.maps),
                    uplink_index: uplink.index,
                    local_index,
                    lb: Box::new(LbSide::new(sync, &cfg.interface, uplink.index)),
                }
            }
            Err(e) if cfg.mode == Mode::Auto => {
                tracing::warn!(error = %e, "XDP unavailable, falling back to kernel binding (mode auto)");
                load::remove_pins(&cfg.pin_dir);
                strict_arp(cfg, handle, false).await?;
                Backend::Kernel {
                    uplink_index: uplink.index,
                }
            }
            Err(e) => {
                load::remove_pins(&cfg.pin_dir);
                return Err(e.into());
            }
        },
    };
    let mode_name = plane.as_ref().map_or("kernel", |p| p.mode.as_str());
    if let Ok(mut m) = state.mode.write() {
        *m = mode_name.to_string();
    }
    let mut rec = Reconciler::new(
        backend,
        handle.clone(),
        uplink.index,
        uplink.mac,
        cfg.garp,
        state.clone(),
    )
    .with_arp(cfg.bgp.as_ref().is_none_or(|b| b.arp));
    let adopted = plane
        .as_ref()
        .is_some_and(|p| p.adoption != Adoption::Fresh);
    if adopted && ownership.stop.is_some() {
        // Elected: the previous run's VIPs still answer (until its deadline); wait for the
        // first decision before planning, or they would be pruned as not ours and
        // re-acquired a moment later. The lease held by our identity is renewed at once.
        let mut leader = ownership.leader.clone();
        let _ = tokio::time::timeout(cfg.restart_grace, leader.wait_for(|l| *l)).await;
    }
    rec.check_in_until(ownership.deadline_ns(cfg.dead_man));
    rec.prime_conflicts(&vip_rows(state));
    let (desired, claims) = ownership.plan(cfg);
    // Services before VIPs: the first packet to an acquired VIP already finds its backends.
    let applied = async {
        if adopted {
            rec.adopt(&claims.owned).await?;
        }
        rec.prune_stale(&claims)?;
        rec.converge(&desired.services, &claims).await
    }
    .await;
    if let Err(e) = applied {
        state.reconcile_errors.inc();
        tracing::error!(error = %e, "could not apply VIPs; cleaning up");
        let _ = rec.release_all(false).await;
        teardown(plane, cfg, state, false);
        return Err(e.into());
    }
    if plane.is_some() {
        ownership.raft_check_in(cfg);
    }
    state.uplink_present.set(1);
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(vips = ?rec.applied(), mode = mode_name, "ready");
    Ok(Running { uplink, plane, rec })
}

/// Release every VIP (data plane first), detach, unpin; or, on a planned restart, leave
/// everything in place for the next daemon.
async fn bring_down(
    mut r: Running,
    cfg: &Config,
    state: &Arc<State>,
    keep_pinned: bool,
    planned_restart: bool,
) -> Result<(), DaemonError> {
    state.ready.store(false, Ordering::Relaxed);
    if planned_restart {
        r.rec.hand_over(cfg.dead_man, cfg.restart_grace);
        if matches!(cfg.election, config::Election::Raft(_)) {
            // Raft hands leadership over (TimeoutNow) as it stops: the successor answers
            // within a round trip, so ARP must not outlive us here (1: already past). Flows
            // keep forwarding; only ARP is gated by the deadline.
            r.rec.check_in_until(1);
        }
        hand_over(r.plane, cfg, state);
        return Ok(());
    }
    let released = r.rec.release_all(keep_pinned).await;
    if released.is_err() {
        state.reconcile_errors.inc();
    }
    teardown(r.plane, cfg, state, keep_pinned);
    Ok(released?)
}

/// Planned restart: close our handles only. The pinned links keep the programs attached
/// and the pinned maps keep their state; the next daemon adopts both.
fn hand_over(plane: Option<XdpPlane>, cfg: &Config, state: &State) {
    if let Ok(mut s) = state.stats.lock() {
        *s = None;
    }
    if let Some(p) = plane {
        if let Some(tc) = p.tc {
            if !tc.keep() {
                tracing::warn!("tc egress attached through netlink cannot be handed over; detached (nat replies unrewritten until the next daemon)");
            }
        }
        if p.xdp.keep() {
            tracing::info!(iface = %cfg.interface, dir = %cfg.pin_dir.display(), grace_ms = cfg.restart_grace.as_millis() as u64, "handing over: XDP left attached, VIPs answered for the next daemon");
        } else {
            tracing::warn!(iface = %cfg.interface, "XDP attached through netlink cannot be handed over; detached");
        }
        drop(p.ebpf);
    }
}

fn teardown(plane: Option<XdpPlane>, cfg: &Config, state: &State, keep_pinned: bool) {
    if let Ok(mut s) = state.stats.lock() {
        *s = None;
    }
    if let Ok(mut d) = state.pin_dir.write() {
        *d = None;
    }
    if let Some(p) = plane {
        if let Some(tc) = p.tc {
            tc.release();
        }
        p.xdp.release();
        tracing::info!(iface = %cfg.interface, "XDP detached");
        drop(p.ebpf);
    }
    if keep_pinned {
        tracing::info!(dir = %cfg.pin_dir.display(), "keeping pinned maps (--keep-pinned)");
    } else {
        let removed = load::remove_pins(&cfg.pin_dir);
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), dir = %cfg.pin_dir.display(), "removed pins");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::{AnnounceConfig, AnnounceMode};

    fn svc(vip: &str, port: u16, mode: config::LbMode) -> config::Service {
        config::Service {
            vip: vip.parse().unwrap(),
            port,
            proto: config::Proto::Tcp,
            mode,
            backends: vec![],
        }
    }

    #[test]
    fn who_announces_what() {
        use config::LbMode::{Dsr, Local, Nat};
        let cfg = config::resolve(
            config::parse_file("interface: eth0\nvips: [192.0.2.1]\n").unwrap(),
            Default::default(),
        )
        .unwrap();
        // .10 Cluster dsr+nat, .11 Cluster with one local-mode port, .12 ETP Local with a
        // ready endpoint here, .13 ETP Local without.
        let k8s = vec![
            svc("192.0.2.10", 80, Dsr),
            svc("192.0.2.10", 443, Nat),
            svc("192.0.2.11", 80, Dsr),
            svc("192.0.2.11", 443, Local),
            svc("192.0.2.12", 80, Local),
            svc("192.0.2.13", 80, Dsr),
        ];
        let desired = Desired::from_sources(&cfg, &k8s);
        let local: BTreeMap<Ipv4Addr, bool> = [
            ("192.0.2.12".parse().unwrap(), true),
            ("192.0.2.13".parse().unwrap(), false),
        ]
        .into();
        let ip = |s: &str| -> Ipv4Addr { s.parse().unwrap() };
        let owner = AnnounceConfig::default();
        assert!(routed(&owner, &cfg, &desired, &local, true).is_empty());
        let ecmp = AnnounceConfig {
            control_plane: AnnounceMode::Ecmp,
            services: AnnounceMode::Ecmp,
        };
        assert_eq!(
            routed(&ecmp, &cfg, &desired, &local, true),
            [ip("192.0.2.1"), ip("192.0.2.10"), ip("192.0.2.12")].into()
        );
        // An unhealthy control plane withdraws its VIP only; services stay.
        assert_eq!(
            routed(&ecmp, &cfg, &desired, &local, false),
            [ip("192.0.2.10"), ip("192.0.2.12")].into()
        );
        let cp_only = AnnounceConfig {
            control_plane: AnnounceMode::Ecmp,
            services: AnnounceMode::Owner,
        };
        assert_eq!(
            routed(&cp_only, &cfg, &desired, &local, true),
            [ip("192.0.2.1")].into()
        );
    }

    #[test]
    fn a_kubeconfig_naming_the_vip_is_pointed_at_the_local_api_server() {
        let vips: BTreeSet<Ipv4Addr> = ["192.0.2.100".parse().unwrap()].into();
        let mut k = kube::Config::new("https://192.0.2.100:6443".parse().unwrap());
        assert!(elect_locally(&mut k, &vips));
        assert_eq!(k.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(k.tls_server_name.as_deref(), Some("192.0.2.100"));
        // Any other server (a node address, a DNS name) is used as it is.
        for other in ["https://192.0.2.11:6443", "https://api.example:6443"] {
            let mut k = kube::Config::new(other.parse().unwrap());
            assert!(!elect_locally(&mut k, &vips));
            assert_eq!(k.tls_server_name, None);
        }
    }
}
