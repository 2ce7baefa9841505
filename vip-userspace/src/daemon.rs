//! The standalone daemon: validate against the system, bring up the data plane (XDP, or the
//! kernel as fallback), own the VIPs, serve metrics, and clean up on SIGTERM/SIGINT.
use std::sync::{atomic::Ordering, Arc};

use aya::{programs::xdp::XdpLinkId, Ebpf};

use crate::{
    config::{self, Config, ConfigError, Mode},
    dataplane::{
        attach::{self, AttachMode},
        load,
        maps::{Maps, StatsReader},
        DataplaneError,
    },
    election,
    metrics::{self, MetricsError, State},
    model::Desired,
    net::{
        addr::{self, AddrError},
        link::{self, Link, LinkError},
    },
    reconcile::{Backend, ReconcileError, Reconciler},
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
}

/// The XDP program as attached, kept alive for the daemon's lifetime.
struct XdpPlane {
    ebpf: Ebpf,
    link: XdpLinkId,
    mode: AttachMode,
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

fn try_xdp(cfg: &Config, uplink: &Link) -> Result<(XdpPlane, Maps, StatsReader), DataplaneError> {
    let mut ebpf = load::load(&cfg.pin_dir)?;
    load::spawn_log_forwarder(&mut ebpf);
    let mut maps = Maps::take(&mut ebpf)?;
    maps.set_iface(uplink.index, uplink.mac)?;
    let reader = StatsReader::open(&cfg.pin_dir)?;
    let (link, mode) = attach::attach(&mut ebpf, &cfg.interface, uplink.index)?;
    Ok((XdpPlane { ebpf, link, mode }, maps, reader))
}

pub async fn run(cfg: Config, keep_pinned: bool) -> Result<(), DaemonError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let uplink = link::get(&handle, &cfg.interface).await?;
    let state = Arc::new(State::default());
    if let Ok(mut i) = state.interface.write() {
        *i = cfg.interface.clone();
    }
    let listener = metrics::bind(cfg.metrics_addr).await?;
    tracing::info!(addr = %cfg.metrics_addr, "serving /metrics, /healthz, /readyz");
    tokio::spawn(metrics::serve(listener, state.clone()));

    let mut plane = None;
    let backend = match cfg.mode {
        Mode::Kernel => Backend::Kernel {
            uplink_index: uplink.index,
        },
        Mode::Xdp | Mode::Auto => match try_xdp(&cfg, &uplink) {
            Ok((p, maps, reader)) => {
                tracing::info!(iface = %cfg.interface, mode = p.mode.as_str(), "XDP attached");
                if let Ok(mut s) = state.stats.lock() {
                    *s = Some(reader);
                }
                plane = Some(p);
                Backend::Xdp {
                    maps: Box::new(maps),
                    uplink_index: uplink.index,
                    local_index: link::index(&cfg.local_device)
                        .ok_or_else(|| ConfigError::new("local_device", "device disappeared"))?,
                }
            }
            Err(e) if cfg.mode == Mode::Auto => {
                tracing::warn!(error = %e, "XDP unavailable, falling back to kernel binding (mode auto)");
                load::remove_pins(&cfg.pin_dir);
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
    );
    let owned = election::single::owned(&Desired::from_config(&cfg));
    let applied = async {
        rec.prune_stale(&owned)?;
        rec.apply(&owned).await
    }
    .await;
    if let Err(e) = applied {
        tracing::error!(error = %e, "could not apply VIPs; cleaning up");
        let _ = rec.release_all().await;
        teardown(plane, &cfg, keep_pinned);
        return Err(e.into());
    }
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(vips = ?rec.applied(), mode = mode_name, "ready");

    let sig = shutdown::wait().await;
    tracing::info!(signal = sig, "shutting down");
    state.ready.store(false, Ordering::Relaxed);
    let released = rec.release_all().await;
    teardown(plane, &cfg, keep_pinned);
    released?;
    tracing::info!("clean exit");
    Ok(())
}

fn teardown(plane: Option<XdpPlane>, cfg: &Config, keep_pinned: bool) {
    if let Some(mut p) = plane {
        match attach::program(&mut p.ebpf).and_then(|prog| Ok(prog.detach(p.link)?)) {
            Ok(()) => tracing::info!(iface = %cfg.interface, "XDP detached"),
            Err(e) => tracing::error!(error = %e, "XDP detach failed"),
        }
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
