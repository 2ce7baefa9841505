//! Configuration: a YAML file, overridden by environment variables, overridden by flags.
//! Every problem is reported as a [`ConfigError`] naming the field, and the binary exits 2.
use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::paths;

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

/// The file as written by the operator. Unknown fields are an error (a typo must not be
/// silently ignored).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub interface: Option<String>,
    pub vips: Option<Vec<String>>,
    pub mode: Option<String>,
    pub metrics_addr: Option<String>,
    pub pin_dir: Option<PathBuf>,
    pub local_device: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub garp: Option<GarpFile>,
    pub services: Option<Vec<ServiceFile>>,
    pub hash_seed: Option<u32>,
    pub maglev_size: Option<u32>,
    pub max_services: Option<u32>,
    pub ring_slots: Option<u32>,
    pub max_backends: Option<u32>,
    pub max_vips: Option<u32>,
    pub conntrack_flows: Option<u32>,
    pub maglev_sizing: Option<String>,
    pub election: Option<ElectionFile>,
    /// Dead-man: XDP stops answering ARP this long after the daemon last checked in.
    pub dead_man_ms: Option<u64>,
    /// Announce owned VIPs to BGP peers (see docs/bgp.md).
    pub bgp: Option<crate::bgp::BgpConfig>,
    /// SIGTERM/SIGINT hand the running data plane over to the next daemon (planned
    /// restart) instead of releasing the VIPs (see docs/upgrades.md).
    pub handover: Option<bool>,
    /// On a hand-over, ARP stays answered this long for the next daemon to take over.
    pub restart_grace_ms: Option<u64>,
}

/// `election:` — who owns the VIPs. Absent or `mode: single`: this node, always.
/// `mode: lease`: the holder of a coordination.k8s.io Lease (kube-vip's way).
/// `mode: raft`: the fenced Raft leader among static peers (`raft:`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElectionFile {
    pub mode: Option<String>,
    /// kubeconfig file; absent: in-cluster service account (or $KUBECONFIG).
    pub kubeconfig: Option<PathBuf>,
    pub namespace: Option<String>,
    pub lease_name: Option<String>,
    /// This node's identity in the Lease (default: $NODE_NAME, else the hostname).
    pub identity: Option<String>,
    pub lease_duration_ms: Option<u64>,
    pub renew_deadline_ms: Option<u64>,
    pub retry_period_ms: Option<u64>,
    /// Also serve Services of type LoadBalancer from the API server (IPAM, status, Events);
    /// their VIPs are owned by the same lease.
    pub services: Option<bool>,
    /// Hold the lease only while the API server's /readyz answers (control-plane VIP).
    pub readyz_gate: Option<bool>,
    /// `shared` (one lease for every service VIP, kube-vip's default), `per-vip` (one lease
    /// per VIP: VIPs spread over the nodes; kube-vip's `svc_election=true`) or `rendezvous`
    /// (one lease per node, VIPs placed by rendezvous hashing: API writes independent of the
    /// number of VIPs).
    pub service_election: Option<String>,
    /// `mode: raft`: the members and the timing (see docs/election.md, standalone HA).
    pub raft: Option<RaftFile>,
}

/// `election.raft:` as written; defaults are the library's `DEFAULT_*` constants.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RaftFile {
    pub id: Option<u64>,
    /// Every member (this node included): id → "ip:port".
    pub peers: Option<std::collections::BTreeMap<u64, String>>,
    /// Default 0.0.0.0:<port of this node's peer entry>.
    pub listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_min_ms: Option<u64>,
    pub election_timeout_max_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    /// The shared key every datagram is authenticated with: base64 decoding to ≥ 32 bytes
    /// (a Kubernetes Secret mounted as a file works as is).
    pub key_file: Option<PathBuf>,
    /// A second key also accepted, for rotation (see docs/election.md, rotation).
    pub previous_key_file: Option<PathBuf>,
    /// Run without a key (unauthenticated datagrams): must be said explicitly.
    pub insecure: Option<bool>,
    /// SCHED_FIFO priority of the election's threads (1..99; 0: do not ask for real time).
    pub realtime_priority: Option<i64>,
    /// Nice value of the election's threads when real time is off or refused (-20..19).
    pub nice: Option<i64>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    pub vip: Option<String>,
    pub port: Option<u16>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
    #[serde(default)]
    pub backends: Vec<BackendFile>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    pub addr: Option<String>,
    pub port: Option<u16>,
    pub weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GarpFile {
    pub count: Option<u32>,
    pub window_ms: Option<u64>,
}

/// Values given by flags or environment; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub interface: Option<String>,
    pub vips: Option<Vec<String>>,
    pub mode: Option<String>,
    pub metrics_addr: Option<String>,
    pub pin_dir: Option<PathBuf>,
    pub local_device: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    /// `single` or `lease` (flag `--election`, or kube-vip's `vip_leaderelection=true`).
    pub election: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub lease_name: Option<String>,
    pub lease_namespace: Option<String>,
    pub identity: Option<String>,
    pub services: Option<bool>,
    pub readyz_gate: Option<bool>,
    pub service_election: Option<String>,
    pub handover: Option<bool>,
}

// The domain types live in `model`; the file's format is one of the two producers.
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

/// kube-vip's names are accepted from the environment for what the file leaves unset:
/// `vip_leasename`, `vip_leaseduration`/`vip_renewdeadline`/`vip_retryperiod` (seconds).
/// Flags (and kube-vip's `vip_leaderelection`) over the file's `election:` section.
fn merge_election(file: Option<ElectionFile>, ov: &Overrides) -> Option<ElectionFile> {
    let kube_vip = env_nonempty("vip_leaderelection")
        .filter(|v| v == "true")
        .map(|_| "lease".to_string());
    let mode = ov
        .election
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.mode.clone()))
        .or(kube_vip);
    if mode.is_none() && file.is_none() {
        return None;
    }
    let mut f = file.unwrap_or_default();
    f.mode = mode;
    f.kubeconfig = ov.kubeconfig.clone().or(f.kubeconfig);
    f.lease_name = ov.lease_name.clone().or(f.lease_name);
    f.namespace = ov.lease_namespace.clone().or(f.namespace);
    f.identity = ov.identity.clone().or(f.identity);
    f.services = ov.services.or(f.services);
    f.readyz_gate = ov.readyz_gate.or(f.readyz_gate);
    f.service_election = ov
        .service_election
        .clone()
        .or(f.service_election)
        .or_else(|| {
            env_nonempty("svc_election")
                .filter(|v| v == "true")
                .map(|_| "per-vip".to_string())
        });
    Some(f)
}

fn resolve_election(f: Option<ElectionFile>) -> Result<Election, ConfigError> {
    let Some(f) = f else {
        return Ok(Election::Single);
    };
    let default_mode = if f.raft.is_some() { "raft" } else { "lease" };
    match f.mode.as_deref().unwrap_or(default_mode) {
        "single" => return Ok(Election::Single),
        "lease" => {}
        "raft" => return resolve_raft(f.raft).map(Election::Raft),
        other => {
            return Err(ConfigError::new(
                "election.mode",
                format!("`{other}` is not one of single, lease, raft"),
            ))
        }
    }
    let secs = |k: &str| env_nonempty(k).and_then(|v| kube_vip_secs_to_ms(&v));
    let identity = f
        .identity
        .or_else(|| env_nonempty("NODE_NAME"))
        .or_else(|| env_nonempty("vip_nodename"))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            ConfigError::new("election.identity", "no identity: set it, or NODE_NAME")
        })?;
    let mut lease = crate::election::lease::LeaseConfig::new(
        f.namespace.as_deref().unwrap_or("kube-system"),
        &f.lease_name
            .or_else(|| env_nonempty("vip_leasename"))
            .unwrap_or_else(|| "plndr-cp-lock".to_string()),
        &identity,
    );
    if let Some(ms) = f.lease_duration_ms.or_else(|| secs("vip_leaseduration")) {
        lease.lease_duration = Duration::from_millis(ms);
    }
    if let Some(ms) = f.renew_deadline_ms.or_else(|| secs("vip_renewdeadline")) {
        lease.renew_deadline = Duration::from_millis(ms);
    }
    if let Some(ms) = f.retry_period_ms.or_else(|| secs("vip_retryperiod")) {
        lease.retry_period = Duration::from_millis(ms);
        lease.api_timeout = lease.api_timeout.min(lease.renew_deadline / 3);
    }
    lease.api_timeout = lease.api_timeout.min(lease.renew_deadline / 3);
    lease.readyz_gate = f.readyz_gate.unwrap_or(false);
    let service_election = match f.service_election.as_deref().unwrap_or("shared") {
        "shared" => ServiceElection::Shared,
        "per-vip" => ServiceElection::PerVip,
        "rendezvous" => ServiceElection::Rendezvous,
        other => {
            return Err(ConfigError::new(
                "election.service_election",
                format!("`{other}` is not one of shared, per-vip, rendezvous"),
            ))
        }
    };
    lease.validate().map_err(|e| match e {
        crate::election::lease::ElectionError::Config { field, message } => {
            ConfigError::new(format!("election.{field}"), message)
        }
        other => ConfigError::new("election", other.to_string()),
    })?;
    Ok(Election::Lease {
        kubeconfig: f.kubeconfig,
        lease,
        services: f.services.unwrap_or(false),
        service_election,
    })
}

/// kube-vip's durations are whole seconds; like a value that is not a number, one too
/// large to be counted in milliseconds is ignored (the default stays).
fn kube_vip_secs_to_ms(v: &str) -> Option<u64> {
    v.parse::<u64>().ok()?.checked_mul(1000)
}

fn resolve_raft(f: Option<RaftFile>) -> Result<crate::election::raft::RaftConfig, ConfigError> {
    use crate::election::raft::{self, RaftConfig, RaftError};
    let f = f.ok_or_else(|| {
        ConfigError::new(
            "election.raft",
            "required with mode: raft (id and peers at least)",
        )
    })?;
    let id = f.id.ok_or_else(|| {
        ConfigError::new("election.raft.id", "required (this node's key in peers)")
    })?;
    let auth = resolve_raft_auth(&f)?;
    let priority = raft_priority(&f)?;
    let raw = f.peers.unwrap_or_default();
    let mut peers = std::collections::BTreeMap::new();
    for (k, v) in &raw {
        let addr = v.parse::<SocketAddr>().map_err(|e| {
            ConfigError::new(
                format!("election.raft.peers.{k}"),
                format!("`{v}`: {e} (want ip:port)"),
            )
        })?;
        peers.insert(*k, addr);
    }
    let listen = match &f.listen {
        Some(l) => l.parse::<SocketAddr>().map_err(|e| {
            ConfigError::new("election.raft.listen", format!("`{l}`: {e} (want ip:port)"))
        })?,
        None => {
            let port = peers.get(&id).map_or(0, |a| a.port());
            SocketAddr::from(([0, 0, 0, 0], port))
        }
    };
    let ms = Duration::from_millis;
    let cfg = RaftConfig {
        heartbeat: f.heartbeat_ms.map_or(raft::DEFAULT_HEARTBEAT, ms),
        election_timeout: (
            f.election_timeout_min_ms
                .map_or(raft::DEFAULT_ELECTION_TIMEOUT.0, ms),
            f.election_timeout_max_ms
                .map_or(raft::DEFAULT_ELECTION_TIMEOUT.1, ms),
        ),
        lease: f.lease_ms.map_or(raft::DEFAULT_LEASE, ms),
        priority,
        ..RaftConfig::new(
            id,
            listen,
            peers,
            f.state_dir
                .unwrap_or_else(|| PathBuf::from(paths::DEFAULT_RAFT_STATE_DIR)),
            auth,
        )
    };
    cfg.validate().map_err(|e| match e {
        RaftError::Config { field, reason } => ConfigError::new(field, reason),
        other => ConfigError::new("election.raft", other.to_string()),
    })?;
    Ok(cfg)
}

/// `realtime_priority` and `nice`, in range (see `election::raft::sched`).
fn raft_priority(f: &RaftFile) -> Result<crate::election::raft::sched::Priority, ConfigError> {
    use crate::election::raft::sched::{Priority, DEFAULT_NICE, DEFAULT_REALTIME_PRIORITY};
    let realtime = match f.realtime_priority {
        None => DEFAULT_REALTIME_PRIORITY,
        Some(p) => u8::try_from(p).ok().filter(|p| *p <= 99).ok_or_else(|| {
            ConfigError::new(
                "election.raft.realtime_priority",
                format!("{p} is not a SCHED_FIFO priority (1..99, 0: off)"),
            )
        })?,
    };
    let nice = match f.nice {
        None => DEFAULT_NICE,
        Some(n) => i8::try_from(n)
            .ok()
            .filter(|n| (-20..=19).contains(n))
            .ok_or_else(|| {
                ConfigError::new(
                    "election.raft.nice",
                    format!("{n} is not a nice value (-20..19; 0: leave it)"),
                )
            })?,
    };
    Ok(Priority { realtime, nice })
}

/// `key_file` (+ `previous_key_file`), or an explicit `insecure: true`; never neither.
fn resolve_raft_auth(f: &RaftFile) -> Result<crate::election::raft::RaftAuth, ConfigError> {
    use crate::election::raft::{RaftAuth, RaftKey};
    let load = |field: &str, path: &Path| {
        RaftKey::from_file(path).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            ConfigError::new(field, format!("{e}{cause}"))
        })
    };
    match (&f.key_file, f.insecure.unwrap_or(false)) {
        (Some(_), true) => Err(ConfigError::new(
            "election.raft.insecure",
            "true together with key_file: choose one",
        )),
        (None, true) => {
            if f.previous_key_file.is_some() {
                return Err(ConfigError::new(
                    "election.raft.previous_key_file",
                    "given without key_file",
                ));
            }
            Ok(RaftAuth::Insecure)
        }
        (None, false) => Err(ConfigError::new(
            "election.raft.key_file",
            "required: a file with the cluster's shared key (base64 of at least 32 random bytes: `vip raft-key > FILE`), \
             or `insecure: true` to run unauthenticated on a network nobody else can send to",
        )),
        (Some(path), false) => Ok(RaftAuth::Keys {
            primary: load("election.raft.key_file", path)?,
            previous: f
                .previous_key_file
                .as_deref()
                .map(|p| load("election.raft.previous_key_file", p))
                .transpose()?,
        }),
    }
}

fn resolve_services(
    files: Vec<ServiceFile>,
    maglev_size: u32,
    max_services: u32,
) -> Result<Vec<Service>, ConfigError> {
    if files.len() > max_services as usize {
        return Err(ConfigError::new(
            "services",
            format!(
                "{} services, more than max_services ({max_services})",
                files.len()
            ),
        ));
    }
    let mut out: Vec<Service> = Vec::new();
    for (i, f) in files.into_iter().enumerate() {
        let at = |k: &str| format!("services[{i}].{k}");
        let vip = parse_vip(
            f.vip
                .as_deref()
                .ok_or_else(|| ConfigError::new(at("vip"), "required"))?,
        )
        .map_err(|m| ConfigError::new(at("vip"), m))?;
        let port = f
            .port
            .ok_or_else(|| ConfigError::new(at("port"), "required"))?;
        if port == 0 {
            return Err(ConfigError::new(at("port"), "must be 1-65535"));
        }
        let proto = match f.protocol.as_deref() {
            None => Proto::Tcp,
            Some(o) => Proto::parse(o).ok_or_else(|| {
                ConfigError::new(at("protocol"), format!("`{o}` is not {}", Proto::choices()))
            })?,
        };
        let mode = match f.mode.as_deref() {
            None => LbMode::Dsr,
            Some(o) => LbMode::parse(o).ok_or_else(|| {
                ConfigError::new(
                    at("mode"),
                    format!("`{o}` is not one of {}", LbMode::choices()),
                )
            })?,
        };
        if out
            .iter()
            .any(|s| s.vip == vip && s.port == port && s.proto == proto)
        {
            return Err(ConfigError::new(
                at("port"),
                format!("{vip}:{port}/{} is defined twice", proto.as_str()),
            ));
        }
        let mut backends: Vec<Backend> = Vec::new();
        for (j, b) in f.backends.into_iter().enumerate() {
            let bat = |k: &str| format!("services[{i}].backends[{j}].{k}");
            let raw = b
                .addr
                .ok_or_else(|| ConfigError::new(bat("addr"), "required"))?;
            let addr = parse_vip(&raw).map_err(|m| ConfigError::new(bat("addr"), m))?;
            let bport = b.port.unwrap_or(port);
            if bport == 0 {
                return Err(ConfigError::new(bat("port"), "must be 1-65535"));
            }
            let weight = b.weight.unwrap_or(1);
            if weight > 1000 {
                return Err(ConfigError::new(bat("weight"), "must be 0-1000 (0 drains)"));
            }
            if backends.iter().any(|x| x.addr == addr && x.port == bport) {
                return Err(ConfigError::new(
                    bat("addr"),
                    format!("{addr}:{bport} listed twice"),
                ));
            }
            if mode == LbMode::Dsr && bport != port {
                return Err(ConfigError::new(
                    bat("port"),
                    "dsr cannot change the port (the packet is not rewritten); use nat",
                ));
            }
            backends.push(Backend {
                addr,
                port: bport,
                weight,
            });
        }
        if backends.len() > maglev_size as usize {
            return Err(ConfigError::new(
                at("backends"),
                "more backends than maglev_size slots",
            ));
        }
        out.push(Service {
            vip,
            port,
            proto,
            mode,
            backends,
        });
    }
    Ok(out)
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
mod tests {
    use super::*;

    fn file(y: &str) -> FileConfig {
        parse_file(y).unwrap()
    }

    #[test]
    fn a_log_level_that_crashed_the_filter_parser_is_a_config_error() {
        // fuzz/kube_vip_env: VIP_LOG_LEVEL=" Т[" panicked inside tracing-subscriber.
        let ov = Overrides {
            log_level: Some(" \u{422}[".into()),
            ..Default::default()
        };
        let e = resolve(file("interface: eth0\nvips: [192.0.2.10]\n"), ov).unwrap_err();
        assert_eq!(e.field, "log_level");
    }

    #[test]
    fn kube_vip_seconds_that_overflow_milliseconds_are_ignored() {
        // Found by fuzz/fuzz_targets/kube_vip_env.rs: `vip_leaseduration=18446744073709552`
        // overflowed `s * 1000` (a panic with overflow checks, a wrapped lease without).
        assert_eq!(kube_vip_secs_to_ms("15"), Some(15_000));
        assert_eq!(
            kube_vip_secs_to_ms("18446744073709551"),
            Some(18_446_744_073_709_551_000)
        );
        assert_eq!(kube_vip_secs_to_ms("18446744073709552"), None);
        assert_eq!(kube_vip_secs_to_ms("x"), None);
    }

    #[test]
    fn full_file_resolves() {
        let c = resolve(
            file("interface: eth0\nvips: [192.0.2.100, 192.0.2.101]\nmode: xdp\nmetrics_addr: 0.0.0.0:9000\ngarp: {count: 3, window_ms: 500}\n"),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.interface, "eth0");
        assert_eq!(c.vips.len(), 2);
        assert_eq!(c.mode, Mode::Xdp);
        assert_eq!(c.metrics_addr.port(), 9000);
        assert_eq!(c.garp.count, 3);
        assert_eq!(c.garp.window, Duration::from_millis(500));
        assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/vip"));
    }

    #[test]
    fn dead_man_defaults_validates_and_fits_the_fence() {
        let base = "interface: eth0\nvips: [192.0.2.1]\n";
        let c = resolve(file(base), Overrides::default()).unwrap();
        assert_eq!(c.dead_man, Duration::from_secs(2));
        let c = resolve(
            file(&format!("{base}dead_man_ms: 0\n")),
            Overrides::default(),
        )
        .unwrap();
        assert!(c.dead_man.is_zero(), "0 turns it off");
        let e = resolve(
            file(&format!("{base}dead_man_ms: 5\n")),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "dead_man_ms");
        let c = resolve(
            file(&format!("{base}election: {{identity: n1, lease_duration_ms: 2000, renew_deadline_ms: 1000, retry_period_ms: 100}}\n")),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            c.dead_man,
            Duration::from_secs(1),
            "never past the renew deadline"
        );
    }

    #[test]
    fn restart_grace_defaults_validates_and_fits_the_fence() {
        let base = "interface: eth0\nvips: [192.0.2.1]\n";
        let c = resolve(file(base), Overrides::default()).unwrap();
        assert_eq!(c.restart_grace, Duration::from_secs(10));
        assert!(!c.handover, "SIGTERM releases unless asked");
        let c = resolve(
            file(&format!("{base}restart_grace_ms: 3000\nhandover: true\n")),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.restart_grace, Duration::from_secs(3));
        assert!(c.handover);
        let e = resolve(
            file(&format!("{base}restart_grace_ms: 900000\n")),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "restart_grace_ms");
        let c = resolve(
            file(&format!("{base}election: {{identity: n1, lease_duration_ms: 2000, renew_deadline_ms: 1000, retry_period_ms: 100}}\n")),
            Overrides {
                handover: Some(true),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.restart_grace,
            Duration::from_secs(1),
            "never past the renew deadline"
        );
        assert!(c.handover, "--handover flag");
    }

    #[test]
    fn lease_election_config() {
        let c = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, lease_duration_ms: 2000, renew_deadline_ms: 1000, retry_period_ms: 100}\n"),
            Overrides::default(),
        )
        .unwrap();
        let Election::Lease {
            lease,
            service_election,
            ..
        } = c.election
        else {
            panic!("lease")
        };
        assert_eq!(
            service_election,
            ServiceElection::Shared,
            "one shared lease by default, as kube-vip"
        );
        assert_eq!(lease.identity, "n1");
        assert_eq!(lease.name, "plndr-cp-lock");
        let c = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, service_election: per-vip}\n"),
            Overrides::default(),
        )
        .unwrap();
        assert!(matches!(
            c.election,
            Election::Lease {
                service_election: ServiceElection::PerVip,
                ..
            }
        ));
        let c = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, service_election: rendezvous}\n"),
            Overrides::default(),
        )
        .unwrap();
        assert!(matches!(
            c.election,
            Election::Lease {
                service_election: ServiceElection::Rendezvous,
                ..
            }
        ));
        let e = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, service_election: each}\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "election.service_election");
        assert!(crate::Chain(&e).to_string().contains("rendezvous"), "{e}");
        assert_eq!(lease.renew_deadline, Duration::from_millis(1000));
        let e = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, lease_duration_ms: 1000, renew_deadline_ms: 1000}\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "election.renew_deadline_ms");
        // The error names the setting that is wrong, not always the renew deadline.
        let e = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, lease_duration_ms: 3000, renew_deadline_ms: 1000, retry_period_ms: 1000}\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "election.retry_period_ms", "{e}");
        let e = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nelection: {mode: paxos}\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "election.mode");
    }

    #[test]
    fn raft_election_config() {
        let base =
            "interface: eth0\nvips: [192.0.2.1]\nelection:\n  mode: raft\n  raft:\n    insecure: true\n";
        let peers =
            "    peers: {1: \"10.0.0.1:7946\", 2: \"10.0.0.2:7946\", 3: \"10.0.0.3:7946\"}\n";
        let c = resolve(
            file(&format!("{base}    id: 2\n{peers}")),
            Overrides::default(),
        )
        .unwrap();
        let Election::Raft(r) = c.election else {
            panic!("raft")
        };
        assert_eq!(r.id, 2);
        assert_eq!(r.peers.len(), 3);
        assert_eq!(r.listen, "0.0.0.0:7946".parse().unwrap(), "default listen");
        assert_eq!(r.state_dir, PathBuf::from("/var/lib/vip"));
        assert_eq!(r.heartbeat, crate::election::raft::DEFAULT_HEARTBEAT);
        assert_eq!(r.priority, Default::default(), "real time by default");
        let c = resolve(
            file(&format!(
                "{base}    id: 2\n{peers}    realtime_priority: 0\n    nice: 0\n"
            )),
            Overrides::default(),
        )
        .unwrap();
        let Election::Raft(r) = c.election else {
            panic!("raft")
        };
        assert_eq!(
            r.priority,
            crate::election::raft::sched::Priority {
                realtime: 0,
                nice: 0
            }
        );
        let c = resolve(
            file(&format!("{base}    id: 1\n{peers}    heartbeat_ms: 20\n    election_timeout_min_ms: 70\n    election_timeout_max_ms: 110\n    lease_ms: 50\n    state_dir: /tmp/x\n")),
            Overrides::default(),
        )
        .unwrap();
        let Election::Raft(r) = c.election else {
            panic!("raft")
        };
        assert_eq!(
            (r.heartbeat, r.election_timeout, r.lease),
            (
                Duration::from_millis(20),
                (Duration::from_millis(70), Duration::from_millis(110)),
                Duration::from_millis(50)
            )
        );
        // Each mistake names its field.
        for (extra, field) in [
            ("    id: 9\n", "election.raft.id"),
            (
                "    peers: {1: \"10.0.0.1\"}\n    id: 1\n",
                "election.raft.peers.1",
            ),
            ("    id: 1\n    listen: nowhere\n", "election.raft.listen"),
            (
                "    id: 1\n    listen: \"0.0.0.0:1\"\n",
                "election.raft.listen",
            ),
            ("    id: 1\n    lease_ms: 600\n", "election.raft.lease_ms"),
            (
                "    id: 1\n    realtime_priority: 100\n",
                "election.raft.realtime_priority",
            ),
            (
                "    id: 1\n    realtime_priority: -1\n",
                "election.raft.realtime_priority",
            ),
            ("    id: 1\n    nice: -21\n", "election.raft.nice"),
            ("    id: 1\n    nice: 20\n", "election.raft.nice"),
            (
                "    id: 1\n    election_timeout_max_ms: 100\n",
                "election.raft.election_timeout_max_ms",
            ),
        ] {
            let p = if extra.contains("peers") { "" } else { peers };
            let e = resolve(file(&format!("{base}{extra}{p}")), Overrides::default()).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
        }
        let e = resolve(file(&format!("{base}{peers}")), Overrides::default()).unwrap_err();
        assert_eq!(e.field, "election.raft.id");
        let e = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nelection: {mode: raft}\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "election.raft");
    }

    #[test]
    fn raft_keys_are_required_and_checked() {
        use crate::election::raft::{RaftAuth, RaftKey};
        let d = std::env::temp_dir().join(format!("vip-config-keys-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (good, old, short) = (d.join("good"), d.join("old"), d.join("short"));
        std::fs::write(&good, RaftKey::generate().unwrap()).unwrap();
        std::fs::write(&old, RaftKey::generate().unwrap()).unwrap();
        std::fs::write(&short, "c2hvcnQ=\n").unwrap();
        let base = "interface: eth0\nvips: [192.0.2.1]\nelection:\n  raft:\n    id: 1\n    peers: {1: \"10.0.0.1:7946\", 2: \"10.0.0.2:7946\"}\n";
        let raft = |extra: &str| {
            resolve(file(&format!("{base}{extra}")), Overrides::default()).map(|c| {
                match c.election {
                    Election::Raft(r) => r.auth,
                    other => panic!("{other:?}"),
                }
            })
        };
        let p = |f: &Path| f.display().to_string();
        let RaftAuth::Keys { primary, previous } = raft(&format!(
            "    key_file: {}\n    previous_key_file: {}\n",
            p(&good),
            p(&old)
        ))
        .unwrap() else {
            panic!("keyed")
        };
        assert_eq!(primary, RaftKey::from_file(&good).unwrap());
        assert_eq!(previous, Some(RaftKey::from_file(&old).unwrap()));
        assert_eq!(raft("    insecure: true\n").unwrap(), RaftAuth::Insecure);
        for (extra, field, says) in [
            (String::new(), "election.raft.key_file", "insecure: true"),
            (
                format!("    key_file: {}\n", p(&short)),
                "election.raft.key_file",
                "5-byte",
            ),
            (
                format!("    key_file: {}\n", p(&d.join("nope"))),
                "election.raft.key_file",
                "No such file",
            ),
            (
                format!(
                    "    key_file: {}\n    previous_key_file: {}\n",
                    p(&good),
                    p(&short)
                ),
                "election.raft.previous_key_file",
                "at least 32",
            ),
            (
                format!("    key_file: {}\n    insecure: true\n", p(&good)),
                "election.raft.insecure",
                "choose one",
            ),
            (
                format!("    insecure: true\n    previous_key_file: {}\n", p(&old)),
                "election.raft.previous_key_file",
                "without key_file",
            ),
        ] {
            let e = raft(&extra).unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
            assert!(e.message.contains(says), "{e}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn services_resolve_and_add_their_vips() {
        let c = resolve(
            file("interface: eth0\nservices:\n  - vip: 192.0.2.50\n    port: 80\n    mode: nat\n    backends:\n      - {addr: 198.51.100.21, port: 8080}\n      - {addr: 198.51.100.22, weight: 2}\n"),
            Overrides::default(),
        )
        .unwrap();
        assert!(c.vips.contains(&Ipv4Addr::new(192, 0, 2, 50)));
        let s = &c.services[0];
        assert_eq!((s.port, s.proto, s.mode), (80, Proto::Tcp, LbMode::Nat));
        assert_eq!(s.backends[0].port, 8080);
        assert_eq!(s.backends[1].port, 80);
        assert_eq!(s.backends[1].weight, 2);
        assert_eq!(c.maglev_size, 65537);
    }

    #[test]
    fn bad_service_fields_are_named() {
        let base = "interface: eth0\nservices:\n";
        let cases = [
            ("  - {port: 80}\n", "services[0].vip"),
            ("  - {vip: 192.0.2.5}\n", "services[0].port"),
            (
                "  - {vip: 192.0.2.5, port: 80, protocol: sctp}\n",
                "services[0].protocol",
            ),
            (
                "  - {vip: 192.0.2.5, port: 80, mode: magic}\n",
                "services[0].mode",
            ),
            (
                "  - {vip: 192.0.2.5, port: 80, backends: [{addr: x}]}\n",
                "services[0].backends[0].addr",
            ),
            (
                "  - {vip: 192.0.2.5, port: 80, backends: [{addr: 192.0.2.9, port: 81}]}\n",
                "services[0].backends[0].port",
            ),
            (
                "  - {vip: 192.0.2.5, port: 80}\n  - {vip: 192.0.2.5, port: 80}\n",
                "services[1].port",
            ),
        ];
        for (svc, field) in cases {
            let e = resolve(file(&format!("{base}{svc}")), Overrides::default()).unwrap_err();
            assert_eq!(e.field, field, "{svc}: {e}");
        }
        let e = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nmaglev_size: 1000\n"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "maglev_size");
        for (line, field) in [
            ("maglev_sizing: auto", "maglev_sizing"),
            ("ring_slots: 10", "ring_slots"),
            ("max_services: 0", "max_services"),
            ("max_backends: 0", "max_backends"),
            ("max_vips: 0", "max_vips"),
            ("conntrack_flows: 100", "conntrack_flows"),
            ("conntrack_flows: 300000000", "conntrack_flows"),
        ] {
            let e = resolve(
                file(&format!("interface: eth0\nvips: [192.0.2.1]\n{line}\n")),
                Overrides::default(),
            )
            .unwrap_err();
            assert_eq!(e.field, field, "{line}: {e}");
        }
        let c = resolve(
            file("interface: eth0\nvips: [192.0.2.1]\nmaglev_sizing: by-need\n"),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.sizing(), crate::maglev::Sizing::by_need(65537));
    }

    #[test]
    fn overrides_win_over_file() {
        let ov = Overrides {
            interface: Some("eth1".into()),
            vips: Some(vec!["198.51.100.7".into()]),
            mode: Some("kernel".into()),
            ..Default::default()
        };
        let c = resolve(
            file("interface: eth0\nvips: [192.0.2.100]\nmode: xdp\n"),
            ov,
        )
        .unwrap();
        assert_eq!(c.interface, "eth1");
        assert_eq!(c.vips.iter().next().unwrap().to_string(), "198.51.100.7");
        assert_eq!(c.mode, Mode::Kernel);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = parse_file("interface: eth0\nvipz: [1.2.3.4]\n").unwrap_err();
        assert_eq!(e.field, "vipz", "{e}");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("vips: [192.0.2.1]\n", "interface"),
            ("interface: eth0\n", "vips"),
            ("interface: eth0\nvips: [192.0.2.1, nope]\n", "vips[1]"),
            ("interface: eth0\nvips: [192.0.2.1, 192.0.2.1]\n", "vips[1]"),
            ("interface: eth0\nvips: ['2001:db8::1']\n", "vips[0]"),
            ("interface: eth0\nvips: [255.255.255.255]\n", "vips[0]"),
            ("interface: eth0\nvips: [192.0.2.1]\nmode: fast\n", "mode"),
            (
                "interface: eth0\nvips: [192.0.2.1]\nmetrics_addr: nowhere\n",
                "metrics_addr",
            ),
            (
                "interface: eth0\nvips: [192.0.2.1]\nmetrics_addr: '$(VIP_NODE_IP):9472'\n",
                "metrics_addr",
            ),
            (
                "interface: eth0\nvips: [192.0.2.1]\nmetrics_addr: '192.0.2.1'\n",
                "metrics_addr",
            ),
            (
                "interface: eth0\nvips: [192.0.2.1]\npin_dir: relative/dir\n",
                "pin_dir",
            ),
            (
                "interface: eth0\nvips: [192.0.2.1]\nlog_format: xml\n",
                "log_format",
            ),
            (
                "interface: eth0\nvips: [192.0.2.1]\ngarp: {count: 0}\n",
                "garp.count",
            ),
            (
                "interface: this-name-is-too-long\nvips: [192.0.2.1]\n",
                "interface",
            ),
        ];
        for (yaml, field) in cases {
            let e = resolve(file(yaml), Overrides::default()).unwrap_err();
            assert_eq!(e.field, field, "for {yaml:?}: {e}");
            assert!(crate::Chain(&e).to_string().contains(field));
        }
    }

    #[test]
    fn listen_addresses() {
        for (raw, want) in [
            ("127.0.0.1:9472", "127.0.0.1:9472"),
            ("[fd00::1]:9472", "[fd00::1]:9472"),
            // `$(VIP_NODE_IP):9472` on an IPv6 node
            ("fd00::1:9472", "[fd00::1]:9472"),
        ] {
            assert_eq!(parse_listen_addr(raw).unwrap().to_string(), want, "{raw}");
        }
        for bad in ["", "192.0.2.1", "fd00::1", "host:9472", "192.0.2.1:99999"] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
        let e = parse_listen_addr("$(VIP_NODE_IP):9472").unwrap_err();
        assert!(e.contains("no variable NAME"), "{e}");
    }

    #[test]
    fn vip_equal_to_node_address_is_rejected_but_own_slash32_adopted() {
        let c = resolve(
            file("interface: eth0\nvips: [192.0.2.1, 192.0.2.100]\n"),
            Overrides::default(),
        )
        .unwrap();
        let addrs = vec![(Ipv4Addr::new(192, 0, 2, 100), 32, "lo".to_string())];
        check_system(&c, Some(2), &addrs).unwrap();
        let addrs = vec![(Ipv4Addr::new(192, 0, 2, 1), 24, "eth0".to_string())];
        let e = check_system(&c, Some(2), &addrs).unwrap_err();
        assert_eq!(e.field, "vips[0]");
        let e = check_system(&c, None, &[]).unwrap_err();
        assert_eq!(e.field, "interface");
    }
}
