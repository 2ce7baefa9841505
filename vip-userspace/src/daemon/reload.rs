//! SIGHUP: the file re-read and applied as a diff. Separate from the loop because it
//! decides which settings may change live and which wait for a restart.
use crate::{config::Config, metrics::State};

use super::{lifecycle::Running, ownership::Ownership, Reload};

/// SIGHUP: re-read the file, apply VIP and service changes as a diff. Settings that shape
/// the data plane itself (interface, mode, pins, map sizes, seed) need a restart and are
/// kept as they are, with a warning naming them.
pub(super) async fn reload_config(
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
