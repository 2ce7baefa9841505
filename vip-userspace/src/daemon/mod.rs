//! The standalone daemon: validate against the system, bring up the data plane (XDP, or the
//! kernel as fallback), own the VIPs, serve metrics, and clean up on SIGTERM/SIGINT.
//!
//! `mod.rs` wires the tasks and runs the loop: `events` (what it waits on, one typed
//! `Event`), `ownership` (who owns what: the elections and the Kubernetes source behind one
//! type), `plan` (pure: sources + election → what to apply), `deadman` (the userspace side
//! of the fence's deadline), `fence` (the kernel kept from answering ARP for the VIPs),
//! `lifecycle` (bring-up, hand-over, teardown).
mod deadman;
mod events;
mod fence;
mod lifecycle;
mod ownership;
mod plan;

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
use lifecycle::{bring_down, bring_up, claimed_rows, no_neigh_moved, Running};
use ownership::Ownership;

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

/// How often the uplink is checked. A vanished or replaced uplink (new ifindex or MAC) tears
/// the data plane down and brings it up again on the new device.
const LINK_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Link checks per next-hop epoch: cached backend next hops are refreshed about every second.
const EPOCH_TICKS: u64 = 2;

/// Link checks per repair of what the node may have lost around the services (interface
/// settings, flushed neighbour entries): about every 10 s, besides every ownership change.
const RECHECK_TICKS: u64 = 20;

/// The least time between two repairs prompted by unresolved next hops (a backend that is
/// really gone keeps them coming).
const REPAIR_SOON: std::time::Duration = std::time::Duration::from_secs(2);

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
            Some(
                crate::bgp::Speaker::start_announcing(b.clone(), first)
                    .map_err(|e| DaemonError::Bgp(crate::Chain(&e).to_string()))?,
            )
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

    /// Every `LINK_CHECK`: BGP status, the next-hop epoch, foreign ARP claims, and the
    /// uplink (gone or replaced: the data plane comes down, and up again on the new one).
    async fn link_check(&mut self) {
        self.link_checks += 1;
        let (cfg, state) = (&self.cfg, &self.state);
        if let Some(sp) = &self.speaker {
            if let Ok(mut b) = state.bgp.lock() {
                *b = sp.status();
            }
        }
        if let Some(r) = self.running.as_mut() {
            if self.link_checks.is_multiple_of(EPOCH_TICKS) {
                r.rec.tick_epoch();
            }
            // Periodically, and soon after forwarding met a next hop without a MAC (a dsr
            // packet is dropped then), at most every REPAIR_SOON.
            let soon = no_neigh_moved(state) && self.last_repair.elapsed() >= REPAIR_SOON;
            if self.link_checks.is_multiple_of(RECHECK_TICKS) || soon {
                self.last_repair = std::time::Instant::now();
                r.rec.repair().await;
            }
            r.rec.check_conflicts(&claimed_rows(state));
        }
        let current = match link::get(&self.handle, &cfg.interface).await {
            Ok(l) => Some(l),
            Err(LinkError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(error = %crate::Chain(&e), "checking the uplink failed");
                return;
            }
        };
        let changed = match (&self.running, &current) {
            (Some(r), Some(c)) => r.uplink != *c,
            (Some(_), None) | (None, Some(_)) => true,
            (None, None) => false,
        };
        if !changed {
            return;
        }
        let own = &self.ownership;
        if let Some(r) = self.running.take() {
            match &current {
                None => {
                    tracing::error!(iface = %cfg.interface, "uplink disappeared; VIPs released until it returns")
                }
                Some(c) => {
                    tracing::warn!(iface = %cfg.interface, old = r.uplink.index, new = c.index, "uplink replaced; re-attaching")
                }
            }
            state.uplink_present.set(0);
            own.raft_check_in_stop();
            if let Err(e) = bring_down(r, cfg, state, self.keep_pinned, false).await {
                // The device took most state with it; what is left is retried by bring_up.
                tracing::warn!(error = %crate::Chain(&e), "releasing after uplink loss was incomplete");
            }
            // Silent now; let another node take over at once rather than after expiry.
            own.able.send_replace(current.is_some());
        }
        let Some(c) = current else {
            return;
        };
        state.dataplane_restarts.inc();
        match bring_up(cfg, &self.handle, state, c, own).await {
            Ok(r) => {
                tracing::info!(iface = %cfg.interface, "uplink back; VIPs re-acquired");
                self.running = Some(r);
                state.fence_ready.set(1);
                own.able.send_replace(true);
            }
            // Retried on the next check: the device may still be settling. Meanwhile
            // nothing is served here, so the leases go to nodes that can.
            Err(e) => {
                if matches!(e, DaemonError::Fence(_)) {
                    state.fence_ready.set(0);
                }
                own.able.send_replace(false);
                tracing::error!(error = %crate::Chain(&e), "bringing the data plane up failed; retrying")
            }
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

/// SIGHUP: re-read the file, apply VIP and service changes as a diff. Settings that shape
/// the data plane itself (interface, mode, pins, map sizes, seed) need a restart and are
/// kept as they are, with a warning naming them.
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
            tracing::error!(error = %crate::Chain(&e), "reload rejected; keeping the running configuration");
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
            tracing::error!(error = %crate::Chain(&e), "applying the reloaded configuration failed");
        }
    }
}
