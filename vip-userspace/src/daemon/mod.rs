//! The standalone daemon: validate against the system, bring up the data plane (XDP, or the
//! kernel as fallback), own the VIPs, serve metrics, and clean up on SIGTERM/SIGINT.
//!
//! `mod.rs` wires the tasks and runs the loop: `events` (what it waits on, one typed
//! `Event`), `ownership` (who owns what: the elections and the Kubernetes source behind one
//! type), `plan` (pure: sources + election → what to apply), `deadman` (the userspace side
//! of the fence's deadline), `fence` (the kernel kept from answering ARP for the VIPs),
//! `lifecycle` (bring-up, hand-over, teardown), `link_check` (the periodic tick, which
//! follows the uplink), `reload` (SIGHUP).
mod deadman;
mod events;
mod fence;
mod lifecycle;
mod link_check;
mod ownership;
mod plan;
mod reload;

pub use plan::routed;

use std::sync::Arc;

use crate::{
    config::{self, Config, ConfigError, Mode},
    dataplane::{load, DataplaneError},
    metrics::{self, MetricsError, State},
    net::{
        addr::{self, AddrError},
        link::{self, LinkError},
    },
    reconcile::{services::ServiceError, ReconcileError},
    shutdown,
};

use events::{Event, Events};
use fence::wait_fenced;
pub use fence::FenceError;
use lifecycle::{bring_down, bring_up, Running};
use link_check::LINK_CHECK;
use ownership::Ownership;
use reload::reload_config;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("netlink socket")]
    Netlink(#[from] std::io::Error),
    #[error("interface")]
    Link(#[from] LinkError),
    #[error("listing addresses")]
    Addr(#[from] AddrError),
    #[error("XDP data plane")]
    Dataplane(#[from] DataplaneError),
    #[error("metrics")]
    Metrics(#[from] MetricsError),
    #[error("applying VIPs")]
    Reconcile(#[from] ReconcileError),
    #[error("services")]
    Services(#[from] ServiceError),
    #[error("reading the kubeconfig {}", path.display())]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    #[error("no Kubernetes client configuration (kubeconfig or in-cluster)")]
    KubeInfer(#[source] Box<kube::config::InferConfigError>),
    #[error("building the Kubernetes client")]
    KubeClient(#[source] Box<kube::Error>),
    #[error("Kubernetes election")]
    Election(#[from] crate::election::lease::ElectionError),
    #[error("BGP speaker")]
    Bgp(#[from] crate::bgp::BgpError),
    #[error(transparent)]
    Raft(#[from] crate::election::raft::RaftError),
    #[error(transparent)]
    Fence(#[from] FenceError),
}

/// Re-reads the configuration (SIGHUP).
pub type Reload = Box<dyn Fn() -> Result<Config, ConfigError> + Send>;

/// Checks that need the system: interface, local device and address conflicts. Failing here
/// is a config error (exit 2).
pub async fn check(cfg: &Config, handle: &rtnetlink::Handle) -> Result<(), DaemonError> {
    let ifindex = link::index(&cfg.interface);
    let addrs = addr::list(handle).await?;
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

pub async fn run(
    cfg: Config,
    keep_pinned: bool,
    reload: Option<Reload>,
) -> Result<(), DaemonError> {
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
            let first = ownership.routes(&state.bus.served.borrow());
            Some(crate::bgp::Speaker::start_announcing(b.clone(), first)?)
        }
        None => None,
    };
    // Check in with the data plane's dead-man four times per grace period (Raft: per heartbeat).
    let mut events = Events::new(
        &ownership,
        speaker.as_ref().map(|_| state.bus.served.subscribe()),
        cfg.bgp.is_some(),
        ownership.check_in_period(cfg.dead_man),
        LINK_CHECK,
    );
    let mut daemon = Daemon {
        cfg,
        keep_pinned,
        reload,
        handle,
        state,
        ownership,
        running,
        speaker,
        link_checks: 0,
        last_repair: std::time::Instant::now(),
    };
    let sig = loop {
        match events.next(&mut shutdown).await {
            Event::Stop(sig) => break sig,
            ev => daemon.handle(ev).await,
        }
    };
    daemon.shut_down(sig).await
}

/// The daemon while it runs: the configuration, the data plane if the uplink is up, the
/// elections, the BGP speaker.
struct Daemon {
    cfg: Config,
    keep_pinned: bool,
    reload: Option<Reload>,
    handle: rtnetlink::Handle,
    state: Arc<State>,
    ownership: Ownership,
    running: Option<Running>,
    speaker: Option<crate::bgp::Speaker>,
    link_checks: u64,
    last_repair: std::time::Instant,
}

impl Daemon {
    async fn handle(&mut self, ev: Event) {
        let (cfg, state, own) = (&self.cfg, &self.state, &self.ownership);
        match ev {
            Event::Stop(_) => {}
            Event::Reload => {
                if let Some(r) = &self.reload {
                    reload_config(r, &mut self.cfg, self.running.as_mut(), state, own).await;
                }
            }
            Event::Leadership => leadership_changed(cfg, self.running.as_mut(), state, own).await,
            Event::Sources => {
                apply_desired(cfg, self.running.as_mut(), state, own).await;
                // Communities or LOCAL_PREF may have changed without the VIPs changing.
                self.announce();
            }
            Event::Held | Event::Health => {
                apply_desired(cfg, self.running.as_mut(), state, own).await
            }
            Event::Served => self.announce(),
            Event::CheckIn => {
                // Raft: the election thread checks in; the main loop only says it is alive.
                let raft_checks_in = own.raft.as_ref().is_some_and(|r| r.main_loop_alive());
                if let (Some(r), false) = (self.running.as_mut(), raft_checks_in) {
                    r.rec.check_in_until(own.deadline_ns(cfg.dead_man));
                }
            }
            Event::LinkCheck => self.link_check().await,
        }
    }

    /// BGP announces what the data plane serves, with each VIP's route policy.
    fn announce(&self) {
        if let Some(sp) = &self.speaker {
            sp.announce_routes(self.ownership.routes(&self.state.bus.served.borrow()));
        }
    }

    /// The way out: silence first (VIPs out of the data plane, addresses unbound), then BGP,
    /// then the leases. A planned restart (SIGUSR2, or SIGTERM/SIGINT with `handover`)
    /// leaves the data plane running for the next daemon; anything else releases everything.
    async fn shut_down(self, sig: shutdown::Stop) -> Result<(), DaemonError> {
        let cfg = &self.cfg;
        let planned_restart = sig == shutdown::Stop::Restart || cfg.handover;
        tracing::info!(signal = sig.name(), planned_restart, "shutting down");
        let mut result = Ok(());
        if let Some(r) = self.running {
            // The last deadline is the main loop's (a planned restart's grace, or 1 with Raft).
            self.ownership.raft_check_in_stop();
            result = bring_down(r, cfg, &self.state, self.keep_pinned, planned_restart).await;
        } else if !self.keep_pinned && !planned_restart {
            load::remove_pins(&cfg.pin_dir);
        }
        if let Some(sp) = self.speaker {
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
            self.ownership.stop().await;
        }
        result?;
        tracing::info!("clean exit");
        Ok(())
    }
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
        tracing::error!(error = %crate::Chain(&e), "applying ownership failed");
    }
    tracing::info!(leader, "leadership changed");
    r.rec.repair().await;
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
    let t0 = std::time::Instant::now();
    let (desired, claims) = ownership.plan(cfg);
    let planned = t0.elapsed();
    if let Err(e) = r.rec.converge(&desired.services, &claims).await {
        state.reconcile_errors.inc();
        tracing::error!(error = %crate::Chain(&e), "applying the desired state failed");
    }
    // A pass costs the whole desired state (planning and the diff are O(services)): say so
    // when that shows, with where the time went.
    let took = t0.elapsed();
    if took >= SLOW_PASS {
        tracing::info!(
            plan_ms = planned.as_secs_f64() * 1e3,
            converge_ms = (took - planned).as_secs_f64() * 1e3,
            services = desired.services.len(),
            "apply pass took long"
        );
    }
}

/// An apply pass this long is logged with its parts.
const SLOW_PASS: std::time::Duration = std::time::Duration::from_millis(5);
