//! Configuration: a YAML file, overridden by environment variables, overridden by flags.
//! Every problem is reported as a [`ConfigError`] naming the field, and the binary exits 2.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::paths;

mod election;
mod file;
mod services;

use election::{merge_election, resolve_election};
pub use file::{BackendFile, ElectionFile, FileConfig, GarpFile, Overrides, RaftFile, ServiceFile};
use services::resolve_services;

#[derive(Debug, thiserror::Error)]
#[error("config error: field `{field}`: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How VIPs are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// XDP answers ARP; the VIP is bound on the local device only.
    Xdp,
    /// The kernel answers: the VIP is bound on the interface (no XDP).
    Kernel,
    /// XDP if it attaches, otherwise kernel.
    Auto,
}

impl Mode {
    fn parse(s: &str, field: &str) -> Result<Self, ConfigError> {
        match s {
            "xdp" => Ok(Mode::Xdp),
            "kernel" => Ok(Mode::Kernel),
            "auto" => Ok(Mode::Auto),
            other => Err(ConfigError::new(
                field,
                format!("`{other}` is not one of xdp, kernel, auto"),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

impl LogFormat {
    fn parse(s: &str, field: &str) -> Result<Self, ConfigError> {
        match s {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(ConfigError::new(
                field,
                format!("`{other}` is not one of human, json"),
            )),
        }
    }
}

/// Gratuitous ARP burst sent when a VIP is acquired: the first at once, then `count - 1`
/// more spread over `window` with growing gaps (so caches that missed the first get another
/// chance without flooding the segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarpConfig {
    pub count: u32,
    pub window: Duration,
}

impl Default for GarpConfig {
    fn default() -> Self {
        Self {
            count: 5,
            window: Duration::from_secs(2),
        }
    }
}

pub use crate::model::{Backend, LbMode, Proto, Service};

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub interface: String,
    pub vips: BTreeSet<Ipv4Addr>,
    pub mode: Mode,
    pub metrics_addr: SocketAddr,
    pub pin_dir: PathBuf,
    pub local_device: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub garp: GarpConfig,
    pub services: Vec<Service>,
    /// Cluster-wide flow hash seed: must be equal on every node.
    pub hash_seed: u32,
    pub maglev_size: u32,
    pub max_services: u32,
    /// Slots of the shared Maglev table map.
    pub ring_slots: u32,
    /// Backend ids (one per service, endpoint and mode of a `dsr`/`nat` service).
    pub max_backends: u32,
    /// VIP entries of the data plane (owned, routed and known-elsewhere VIPs).
    pub max_vips: u32,
    /// Flows the conntrack table holds in total, divided over the CPUs (each CPU's table a
    /// power of two of sets, see `vip_common::ct_sets_per_cpu`).
    pub conntrack_flows: u32,
    /// Tables sized by each service's backend count (`maglev_sizing: by-need`) rather than
    /// all `maglev_size`.
    pub maglev_by_need: bool,
    pub election: Election,
    /// XDP answers ARP for owned VIPs only until this long after the daemon's last check-in
    /// (a hung or stopped daemon goes silent); zero turns it off. Never longer than the
    /// lease's renew deadline.
    pub dead_man: Duration,
    pub bgp: Option<crate::bgp::BgpConfig>,
    /// SIGTERM/SIGINT are a planned restart (SIGUSR2 always is): the data plane is left
    /// running and adopted by the next daemon.
    pub handover: bool,
    /// How long the data plane keeps answering ARP after a hand-over without a daemon
    /// (the dead-man deadline pushed out); never past the renew deadline with a lease.
    pub restart_grace: Duration,
}

/// Fewest `conntrack_flows`: one CPU's smallest table (`vip_common::CT_MIN_SETS` sets of
/// two ways).
pub const CONNTRACK_FLOWS_MIN: u32 = vip_common::CT_MIN_SETS * vip_common::CT_WAYS;

impl Config {
    /// How services' Maglev tables are sized.
    pub fn sizing(&self) -> crate::maglev::Sizing {
        if self.maglev_by_need {
            crate::maglev::Sizing::by_need(self.maglev_size)
        } else {
            crate::maglev::Sizing::fixed(self.maglev_size)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Election {
    /// This node owns every VIP.
    Single,
    /// The holder of a Lease owns every VIP (fenced by the renew deadline).
    Lease {
        kubeconfig: Option<PathBuf>,
        lease: crate::election::lease::LeaseConfig,
        /// Serve LoadBalancer Services (see `ElectionFile::services`).
        services: bool,
        /// How service VIPs are elected (see `ServiceElection`).
        service_election: ServiceElection,
    },
    /// The Raft leader among static peers owns every VIP while a quorum acknowledges it.
    Raft(crate::election::raft::RaftConfig),
}

/// How the VIPs of LoadBalancer Services are owned (`election.service_election`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceElection {
    /// The holder of the shared lease owns them all (Local VIPs: one lease each).
    #[default]
    Shared,
    /// One Lease per VIP, renewed by its holder.
    PerVip,
    /// One Lease per node as liveness and fence; VIPs placed by rendezvous hashing over the
    /// eligible live nodes, owners recorded in claims written on ownership changes only.
    Rendezvous,
}

/// Default seed: any fixed value works as long as every node uses the same one.
pub const DEFAULT_HASH_SEED: u32 = 0x7669_7031;

pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))?;
    parse_file(&text).map_err(|e| ConfigError {
        field: e.field,
        message: format!("{}: {}", path.display(), e.message),
    })
}

pub fn parse_file(text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_saphyr::from_str::<FileConfig>(text).map_err(|e| {
        let msg = crate::Chain(&e).to_string();
        ConfigError::new(field_in_serde_message(&msg), msg)
    })
}

/// serde names the offending field in backticks ("unknown field `x`", "missing field `y`");
/// pull it out so the error leads with it like every other config error.
fn field_in_serde_message(msg: &str) -> String {
    msg.split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "<file>".to_string())
}

/// Merge file and overrides (overrides win) and check every value that can be checked
/// without looking at the system.
pub fn resolve(mut file: FileConfig, ov: Overrides) -> Result<Config, ConfigError> {
    let election = merge_election(file.election.take(), &ov);
    let interface = ov
        .interface
        .or(file.interface)
        .ok_or_else(|| ConfigError::new("interface", "required (the uplink to serve VIPs on)"))?;
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
        return Err(ConfigError::new(
            "interface",
            format!("`{interface}` is not a valid interface name"),
        ));
    }
    let raw_vips = ov.vips.or(file.vips).unwrap_or_default();
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
    let services = resolve_services(file.services.unwrap_or_default(), maglev_size, max_services)?;
    let k8s_services = election.as_ref().is_some_and(|e| e.services == Some(true));
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
    for svc in &services {
        vips.insert(svc.vip);
    }
    let mode = match ov.mode.or(file.mode) {
        Some(m) => Mode::parse(&m, "mode")?,
        None => Mode::Auto,
    };
    let metrics_raw = ov
        .metrics_addr
        .or(file.metrics_addr)
        .unwrap_or_else(|| paths::DEFAULT_METRICS_ADDR.to_string());
    let metrics_addr =
        parse_listen_addr(&metrics_raw).map_err(|m| ConfigError::new("metrics_addr", m))?;
    let pin_dir = ov
        .pin_dir
        .or(file.pin_dir)
        .unwrap_or_else(|| PathBuf::from(paths::DEFAULT_PIN_DIR));
    if !pin_dir.is_absolute() {
        return Err(ConfigError::new(
            "pin_dir",
            format!(
                "`{}` must be an absolute path on a bpffs",
                pin_dir.display()
            ),
        ));
    }
    let local_device = ov
        .local_device
        .or(file.local_device)
        .unwrap_or_else(|| paths::DEFAULT_LOCAL_DEVICE.to_string());
    let log_format = match ov.log_format.or(file.log_format) {
        Some(f) => LogFormat::parse(&f, "log_format")?,
        None => LogFormat::Human,
    };
    let log_level = ov
        .log_level
        .or(file.log_level)
        .unwrap_or_else(|| "info".to_string());
    if crate::logging::filter(&log_level).is_none() {
        return Err(ConfigError::new(
            "log_level",
            format!("`{log_level}` is not a level or filter (e.g. info, debug, vip=trace)"),
        ));
    }
    let mut garp = GarpConfig::default();
    if let Some(g) = file.garp {
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
    let election = resolve_election(election)?;
    Ok(Config {
        interface,
        vips,
        mode,
        metrics_addr,
        pin_dir,
        local_device,
        log_format,
        log_level,
        garp,
        services,
        hash_seed: file.hash_seed.unwrap_or(DEFAULT_HASH_SEED),
        maglev_size,
        max_services,
        ring_slots,
        max_backends,
        max_vips,
        conntrack_flows,
        maglev_by_need,
        dead_man: dead_man(file.dead_man_ms, &election)?,
        restart_grace: restart_grace(file.restart_grace_ms, &election)?,
        handover: ov.handover.or(file.handover).unwrap_or(false),
        election,
        bgp: resolve_bgp(file.bgp)?,
    })
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

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// A listen address, `ip:port` or `[ipv6]:port`. Also a bare IPv6 address followed by
/// `:port`, which is what the manifests' `$(VIP_NODE_IP):9472` becomes on a node whose
/// primary address (`status.hostIP`) is IPv6.
pub fn parse_listen_addr(raw: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = raw.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some((host, port)) = raw.rsplit_once(':') {
        if let (Ok(ip), Ok(port)) = (host.parse::<std::net::Ipv6Addr>(), port.parse::<u16>()) {
            return Ok(SocketAddr::new(IpAddr::V6(ip), port));
        }
    }
    // Kubernetes leaves `$(NAME)` as is when the container has no variable NAME.
    let hint = if raw.contains("$(") {
        "; a `$(NAME)` left in it means the pod defines no variable NAME before this one"
    } else {
        ""
    };
    Err(format!("`{raw}` is not an address (want ip:port){hint}"))
}

fn parse_vip(raw: &str) -> Result<Ipv4Addr, String> {
    let ip: IpAddr = raw
        .trim()
        .parse()
        .map_err(|_| format!("`{raw}` is not an IP address"))?;
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => {
            return Err(format!(
                "`{raw}`: IPv6 VIPs are not supported yet (NDP responder pending)"
            ))
        }
    };
    if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || v4.is_loopback() {
        return Err(format!(
            "`{raw}` cannot be a VIP (unspecified, broadcast, multicast or loopback)"
        ));
    }
    Ok(v4)
}

/// What the system must look like for the config to make sense: the interface exists and no
/// VIP is one of the node's own addresses. `node_addrs` are (address, prefix length) pairs of
/// every interface; a /32 equal to a VIP is taken as a binding left by an earlier run of vip
/// (which adds exactly /32) and is adopted, anything else is the node's own address.
pub fn check_system(
    cfg: &Config,
    ifindex: Option<u32>,
    node_addrs: &[(Ipv4Addr, u8, String)],
) -> Result<(), ConfigError> {
    if ifindex.is_none() {
        return Err(ConfigError::new(
            "interface",
            format!("no interface named `{}` on this node", cfg.interface),
        ));
    }
    for (i, vip) in cfg.vips.iter().enumerate() {
        if let Some((_, plen, dev)) = node_addrs
            .iter()
            .find(|(a, plen, _)| a == vip && *plen != 32)
        {
            return Err(ConfigError::new(
                format!("vips[{i}]"),
                format!("{vip} is a node address ({vip}/{plen} on {dev}); a VIP must be free"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
