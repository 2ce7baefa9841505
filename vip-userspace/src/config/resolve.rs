//! [`resolve`]: file and overrides merged into a [`Config`], one step per section.
//!
//! Each step reads only its own section and returns the first problem as a
//! [`ConfigError`] naming the exact field. The steps run in a fixed order (the order the
//! fields were always checked in), so a file with several mistakes reports the same one
//! first as before.
use std::{collections::BTreeSet, net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use crate::paths;

use super::{
    election::{merge_election, resolve_election},
    env_nonempty, parse_listen_addr, parse_vip,
    services::resolve_services,
    Config, ConfigError, Election, FileConfig, GarpConfig, GarpFile, LogFormat, Mode, Overrides,
    Service, CONNTRACK_FLOWS_MIN, DEFAULT_HASH_SEED,
};

/// Merge file and overrides (overrides win) and check every value that can be checked
/// without looking at the system.
pub fn resolve(mut file: FileConfig, ov: Overrides) -> Result<Config, ConfigError> {
    let election = merge_election(file.election.take(), &ov);
    let interface = resolve_interface(ov.interface, file.interface.take())?;
    let raw_vips = ov.vips.or(file.vips.take()).unwrap_or_default();
    let limits = resolve_limits(&file)?;
    let services = resolve_services(
        file.services.take().unwrap_or_default(),
        limits.maglev_size,
        limits.max_services,
    )?;
    let k8s_services = election.as_ref().is_some_and(|e| e.services == Some(true));
    let vips = resolve_vips(&raw_vips, &services, k8s_services)?;
    let mode = match ov.mode.or(file.mode.take()) {
        Some(m) => Mode::parse(&m, "mode")?,
        None => Mode::Auto,
    };
    let host = resolve_host(
        ov.metrics_addr.or(file.metrics_addr.take()),
        ov.pin_dir.or(file.pin_dir.take()),
        ov.local_device.or(file.local_device.take()),
    )?;
    let (log_format, log_level) = resolve_logging(
        ov.log_format.or(file.log_format.take()),
        ov.log_level.or(file.log_level.take()),
    )?;
    let garp = resolve_garp(file.garp.take())?;
    let election = resolve_election(election)?;
    let dead_man = dead_man(file.dead_man_ms, &election)?;
    let restart_grace = restart_grace(file.restart_grace_ms, &election)?;
    let handover = ov.handover.or(file.handover).unwrap_or(false);
    let bgp = resolve_bgp(file.bgp.take())?;
    Ok(Config {
        interface,
        vips,
        mode,
        metrics_addr: host.metrics_addr,
        pin_dir: host.pin_dir,
        local_device: host.local_device,
        log_format,
        log_level,
        garp,
        services,
        hash_seed: file.hash_seed.unwrap_or(DEFAULT_HASH_SEED),
        maglev_size: limits.maglev_size,
        max_services: limits.max_services,
        ring_slots: limits.ring_slots,
        max_backends: limits.max_backends,
        max_vips: limits.max_vips,
        conntrack_flows: limits.conntrack_flows,
        maglev_by_need: limits.maglev_by_need,
        dead_man,
        restart_grace,
        handover,
        election,
        bgp,
    })
}

fn resolve_interface(ov: Option<String>, file: Option<String>) -> Result<String, ConfigError> {
    let interface = ov
        .or(file)
        .ok_or_else(|| ConfigError::new("interface", "required (the uplink to serve VIPs on)"))?;
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
        return Err(ConfigError::new(
            "interface",
            format!("`{interface}` is not a valid interface name"),
        ));
    }
    Ok(interface)
}

/// The data plane's table sizes, checked against what the maps can hold.
struct Limits {
    maglev_size: u32,
    max_services: u32,
    ring_slots: u32,
    max_backends: u32,
    max_vips: u32,
    conntrack_flows: u32,
    maglev_by_need: bool,
}

fn resolve_limits(file: &FileConfig) -> Result<Limits, ConfigError> {
    let maglev_size = file.maglev_size.unwrap_or(vip_common::RING_SIZE);
    if !crate::maglev::is_prime(maglev_size) || !(3..=1_000_003).contains(&maglev_size) {
        return Err(ConfigError::new(
            "maglev_size",
            format!("{maglev_size} must be a prime between 3 and 1000003 (default 65537)"),
        ));
    }
    let max_services = file.max_services.unwrap_or(vip_common::MAX_SERVICES);
    if !(1..=65536).contains(&max_services) {
        return Err(ConfigError::new(
            "max_services",
            "must be between 1 and 65536",
        ));
    }
    let ring_slots = file.ring_slots.unwrap_or(vip_common::RING_SLOTS);
    // At least the two smallest tables; at most 1 GiB of tables.
    let smallest = 2 * crate::maglev::SIZES[0].min(maglev_size);
    if !(smallest..=1 << 28).contains(&ring_slots) {
        return Err(ConfigError::new(
            "ring_slots",
            format!("must be between {smallest} and 268435456 (4 bytes each)"),
        ));
    }
    let max_backends = file.max_backends.unwrap_or(vip_common::MAX_BACKENDS);
    if !(1..=1 << 20).contains(&max_backends) {
        return Err(ConfigError::new(
            "max_backends",
            "must be between 1 and 1048576",
        ));
    }
    let max_vips = file.max_vips.unwrap_or(vip_common::MAX_VIPS);
    if !(1..=1 << 20).contains(&max_vips) {
        return Err(ConfigError::new(
            "max_vips",
            "must be between 1 and 1048576",
        ));
    }
    let conntrack_flows = file.conntrack_flows.unwrap_or(vip_common::CT_FLOWS_DEFAULT);
    if !(CONNTRACK_FLOWS_MIN..=1 << 28).contains(&conntrack_flows) {
        return Err(ConfigError::new(
            "conntrack_flows",
            format!("must be between {CONNTRACK_FLOWS_MIN} and 268435456"),
        ));
    }
    let maglev_by_need = match file.maglev_sizing.as_deref() {
        None | Some("fixed") => false,
        Some("by-need") => true,
        Some(other) => {
            return Err(ConfigError::new(
                "maglev_sizing",
                format!("`{other}` is not `fixed` or `by-need`"),
            ))
        }
    };
    Ok(Limits {
        maglev_size,
        max_services,
        ring_slots,
        max_backends,
        max_vips,
        conntrack_flows,
        maglev_by_need,
    })
}

/// The listed VIPs (each named by its index), plus every service's VIP.
fn resolve_vips(
    raw_vips: &[String],
    services: &[Service],
    k8s_services: bool,
) -> Result<BTreeSet<IpAddr>, ConfigError> {
    if raw_vips.is_empty() && services.is_empty() && !k8s_services {
        return Err(ConfigError::new(
            "vips",
            "at least one VIP (or a service) is required",
        ));
    }
    let mut vips = BTreeSet::new();
    for (i, raw) in raw_vips.iter().enumerate() {
        let field = format!("vips[{i}]");
        let ip = parse_vip(raw).map_err(|m| ConfigError::new(&field, m))?;
        if !vips.insert(ip) {
            return Err(ConfigError::new(field, format!("{ip} is listed twice")));
        }
    }
    // A service's VIP is a VIP like any other: owned, answered for, announced.
    for svc in services {
        vips.insert(svc.vip);
    }
    Ok(vips)
}

/// Where the daemon listens and pins on this node.
struct Host {
    metrics_addr: SocketAddr,
    pin_dir: PathBuf,
    local_device: String,
}

fn resolve_host(
    metrics_addr: Option<String>,
    pin_dir: Option<PathBuf>,
    local_device: Option<String>,
) -> Result<Host, ConfigError> {
    let metrics_raw = metrics_addr.unwrap_or_else(|| paths::DEFAULT_METRICS_ADDR.to_string());
    let metrics_addr =
        parse_listen_addr(&metrics_raw).map_err(|m| ConfigError::new("metrics_addr", m))?;
    let pin_dir = pin_dir.unwrap_or_else(|| PathBuf::from(paths::DEFAULT_PIN_DIR));
    if !pin_dir.is_absolute() {
        return Err(ConfigError::new(
            "pin_dir",
            format!(
                "`{}` must be an absolute path on a bpffs",
                pin_dir.display()
            ),
        ));
    }
    let local_device = local_device.unwrap_or_else(|| paths::DEFAULT_LOCAL_DEVICE.to_string());
    Ok(Host {
        metrics_addr,
        pin_dir,
        local_device,
    })
}

fn resolve_logging(
    format: Option<String>,
    level: Option<String>,
) -> Result<(LogFormat, String), ConfigError> {
    let log_format = match format {
        Some(f) => LogFormat::parse(&f, "log_format")?,
        None => LogFormat::Human,
    };
    let log_level = level.unwrap_or_else(|| "info".to_string());
    if crate::logging::filter(&log_level).is_none() {
        return Err(ConfigError::new(
            "log_level",
            format!("`{log_level}` is not a level or filter (e.g. info, debug, vip=trace)"),
        ));
    }
    Ok((log_format, log_level))
}

fn resolve_garp(file: Option<GarpFile>) -> Result<GarpConfig, ConfigError> {
    let mut garp = GarpConfig::default();
    if let Some(g) = file {
        if let Some(c) = g.count {
            if !(1..=100).contains(&c) {
                return Err(ConfigError::new("garp.count", "must be between 1 and 100"));
            }
            garp.count = c;
        }
        if let Some(w) = g.window_ms {
            if w > 60_000 {
                return Err(ConfigError::new("garp.window_ms", "must be at most 60000"));
            }
            garp.window = Duration::from_millis(w);
        }
    }
    Ok(garp)
}

/// The file's `bgp:` section, else kube-vip's `bgp_enable=true` with `bgp_as`,
/// `bgp_routerid` and `bgp_peers` (`addr:AS:pass:multihop`, comma-separated).
fn resolve_bgp(
    file: Option<crate::bgp::BgpConfig>,
) -> Result<Option<crate::bgp::BgpConfig>, ConfigError> {
    let cfg = match file {
        Some(b) => b,
        None if env_nonempty("bgp_enable").as_deref() == Some("true") => {
            let local_as = env_nonempty("bgp_as")
                .ok_or_else(|| ConfigError::new("bgp_as", "required with bgp_enable=true"))?
                .parse::<u32>()
                .map_err(|e| ConfigError::new("bgp_as", crate::Chain(&e).to_string()))?;
            let router_id = env_nonempty("bgp_routerid")
                .ok_or_else(|| ConfigError::new("bgp_routerid", "required with bgp_enable=true"))?
                .parse()
                .map_err(|e: std::net::AddrParseError| {
                    ConfigError::new("bgp_routerid", crate::Chain(&e).to_string())
                })?;
            let peers =
                crate::bgp::parse_kube_vip_peers(&env_nonempty("bgp_peers").unwrap_or_default())
                    .map_err(|e| ConfigError::new(e.field, e.message))?;
            let mut b = crate::bgp::BgpConfig::new(local_as, router_id, peers);
            // kube-vip in BGP mode usually runs with ARP off (`vip_arp=false`).
            b.arp = env_nonempty("vip_arp").as_deref() != Some("false");
            b
        }
        None => return Ok(None),
    };
    cfg.validate()
        .map_err(|e| ConfigError::new(e.field, e.message))?;
    Ok(Some(cfg))
}

/// Default 2 s; with a Lease at most the renew deadline, so a hung leader is silent by the
/// time the fence would have silenced a cut-off one.
fn dead_man(ms: Option<u64>, election: &Election) -> Result<Duration, ConfigError> {
    let d = Duration::from_millis(ms.unwrap_or(2000));
    if ms.is_some_and(|m| m != 0 && m < 20) {
        return Err(ConfigError::new(
            "dead_man_ms",
            "must be 0 (off) or at least 20 (the daemon checks in every quarter of it)",
        ));
    }
    Ok(match election {
        Election::Lease { lease, .. } if !d.is_zero() => d.min(lease.renew_deadline),
        _ => d,
    })
}

/// Default 10 s (a pod restart with the image cached); with a Lease at most the renew
/// deadline, like the dead-man, so a node that never comes back is silent before another
/// can take the lease over.
fn restart_grace(ms: Option<u64>, election: &Election) -> Result<Duration, ConfigError> {
    let d = Duration::from_millis(ms.unwrap_or(10_000));
    if d > Duration::from_secs(300) {
        return Err(ConfigError::new(
            "restart_grace_ms",
            "must be at most 300000 (a data plane left without a daemon answers this long)",
        ));
    }
    Ok(match election {
        Election::Lease { lease, .. } => d.min(lease.renew_deadline),
        _ => d,
    })
}
