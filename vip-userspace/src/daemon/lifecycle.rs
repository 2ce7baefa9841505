//! The data plane's life: bring-up on the uplink (XDP, or the kernel as fallback), the first
//! application of the desired state, hand-over to the next daemon on a planned restart, and
//! teardown.
use std::sync::{atomic::Ordering, Arc};

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
        maps::{Maps, StatsReader},
        DataplaneError,
    },
    metrics::{self, State},
    net::link::{self, Link},
    reconcile::{lb::LbSide, services::ServiceSync, Backend, ReconcileError, Reconciler},
};

use super::{fence::strict_arp, ownership::Ownership, DaemonError};

/// The XDP program as attached, kept alive for the daemon's lifetime.
pub(super) struct XdpPlane {
    ebpf: Ebpf,
    xdp: Held<XdpLink>,
    mode: AttachMode,
    /// Whether the XDP link was adopted from a previous daemon (and how).
    adoption: Adoption,
    tc: Option<Held<SchedClassifierLink>>,
}

pub(super) struct XdpParts {
    plane: XdpPlane,
    maps: Maps,
    lb: LbMaps,
    reader: StatsReader,
}

pub(super) fn try_xdp(cfg: &Config, uplink: &Link) -> Result<XdpParts, DataplaneError> {
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
            tracing::warn!(error = %crate::Chain(&e), "tc egress not attached: nat services will not work");
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

/// The data plane's per-VIP counters (empty without XDP).
pub(super) fn vip_rows(state: &State) -> Vec<(std::net::IpAddr, crate::dataplane::maps::VipRow)> {
    state
        .stats
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|r| r.per_vip()))
        .unwrap_or_default()
}

/// `vip_rows` when some VIP saw a foreign claim since the last look, else nothing (see
/// `StatsReader::claimed_rows`): the link-check tick then costs the same at any VIP count.
pub(super) fn claimed_rows(
    state: &State,
) -> Vec<(std::net::IpAddr, crate::dataplane::maps::VipRow)> {
    state
        .stats
        .lock()
        .ok()
        .and_then(|mut s| s.as_mut().map(|r| r.claimed_rows()))
        .unwrap_or_default()
}

/// Whether forwarding met a next hop without a neighbour entry since the last look.
pub(super) fn no_neigh_moved(state: &State) -> bool {
    state
        .stats
        .lock()
        .ok()
        .and_then(|mut s| s.as_mut().map(|r| r.no_neigh_moved()))
        .unwrap_or(false)
}

/// Everything that is up while the uplink exists.
pub(super) struct Running {
    pub(super) uplink: Link,
    pub(super) plane: Option<XdpPlane>,
    pub(super) rec: Reconciler,
}

/// Load/attach the data plane on `uplink` (or fall back to the kernel), then own the VIPs.
pub(super) async fn bring_up(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    state: &Arc<State>,
    uplink: Link,
    ownership: &Ownership,
) -> Result<Running, DaemonError> {
    let (backend, plane) = choose_backend(cfg, handle, state, &uplink).await?;
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
    if let Err(e) = first_apply(cfg, state, &mut rec, ownership, adopted).await {
        state.reconcile_errors.inc();
        tracing::error!(error = %crate::Chain(&e), "could not apply VIPs; cleaning up");
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

/// The backend the configured mode gets on this uplink, with the XDP plane behind it when
/// there is one: `auto` falls back to the kernel when XDP cannot load or attach, `xdp` fails.
async fn choose_backend(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    state: &State,
    uplink: &Link,
) -> Result<(Backend, Option<XdpPlane>), DaemonError> {
    match cfg.mode {
        Mode::Kernel => Ok((kernel_backend(cfg, handle, uplink).await?, None)),
        Mode::Xdp | Mode::Auto => match try_xdp(cfg, uplink) {
            Ok(parts) => {
                let (backend, plane) = xdp_backend(cfg, handle, state, uplink, parts).await?;
                Ok((backend, Some(plane)))
            }
            Err(e) if cfg.mode == Mode::Auto => {
                tracing::warn!(error = %crate::Chain(&e), "XDP unavailable, falling back to kernel binding (mode auto)");
                load::remove_pins(&cfg.pin_dir);
                Ok((kernel_backend(cfg, handle, uplink).await?, None))
            }
            Err(e) => {
                load::remove_pins(&cfg.pin_dir);
                Err(e.into())
            }
        },
    }
}

/// VIPs bound as kernel addresses; the fence (strict ARP) still keeps the kernel quiet.
async fn kernel_backend(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    uplink: &Link,
) -> Result<Backend, DaemonError> {
    strict_arp(cfg, handle, false).await?;
    Ok(Backend::Kernel {
        uplink_index: uplink.index,
    })
}

/// The attached plane made visible (log, status, counters), then the XDP backend finished
/// over it. Past the attach, a failure tears the plane down (pins included) before it
/// returns: nothing half-attached outlives a failed bring-up.
async fn xdp_backend(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    state: &State,
    uplink: &Link,
    parts: XdpParts,
) -> Result<(Backend, XdpPlane), DaemonError> {
    let XdpParts {
        plane,
        maps,
        lb,
        reader,
    } = parts;
    log_attached(cfg, &plane);
    publish(cfg, state, &plane, reader);
    match finish_xdp(cfg, handle, uplink, maps, lb).await {
        Ok(backend) => Ok((backend, plane)),
        Err(e) => {
            teardown(Some(plane), cfg, state, false);
            Err(e)
        }
    }
}

fn log_attached(cfg: &Config, p: &XdpPlane) {
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
}

/// What `/metrics` and `vip status` read about the plane: the attachment, the counters,
/// the pin directory.
fn publish(cfg: &Config, state: &State, p: &XdpPlane, reader: StatsReader) {
    if let Ok(mut at) = state.attachment.write() {
        let (link_id, prog_id) = p.xdp.ids().unwrap_or_default();
        *at = Some(metrics::Attachment {
            program: p.adoption.as_str(),
            link_id,
            prog_id,
        });
    }
    if let Ok(mut s) = state.stats.lock() {
        *s = Some(reader);
    }
    if let Ok(mut d) = state.pin_dir.write() {
        *d = Some(cfg.pin_dir.clone());
    }
}

/// The XDP backend over the taken maps: the local device VIPs bind on, the fence, and the
/// services as the (possibly adopted) maps hold them.
async fn finish_xdp(
    cfg: &Config,
    handle: &rtnetlink::Handle,
    uplink: &Link,
    maps: Maps,
    lb: LbMaps,
) -> Result<Backend, DaemonError> {
    let Some(local_index) = link::index(&cfg.local_device) else {
        return Err(ConfigError::new("local_device", "device disappeared").into());
    };
    strict_arp(cfg, handle, true).await?;
    let sync = ServiceSync::adopt(lb, cfg.sizing(), cfg.hash_seed)?;
    Ok(Backend::Xdp {
        maps: Box::new(maps),
        uplink_index: uplink.index,
        local_index,
        lb: Box::new(LbSide::new(sync, &cfg.interface, uplink.index)),
    })
}

/// The first application of the desired state, after the deadline is set and the
/// conflict detector primed with the counters as found.
async fn first_apply(
    cfg: &Config,
    state: &State,
    rec: &mut Reconciler,
    ownership: &Ownership,
    adopted: bool,
) -> Result<(), ReconcileError> {
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
    if adopted {
        rec.adopt(&claims.owned).await?;
    }
    rec.prune_stale(&claims)?;
    rec.converge(&desired.services, &claims).await
}

/// Release every VIP (data plane first), detach, unpin; or, on a planned restart, leave
/// everything in place for the next daemon.
pub(super) async fn bring_down(
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
pub(super) fn hand_over(plane: Option<XdpPlane>, cfg: &Config, state: &State) {
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

pub(super) fn teardown(plane: Option<XdpPlane>, cfg: &Config, state: &State, keep_pinned: bool) {
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
