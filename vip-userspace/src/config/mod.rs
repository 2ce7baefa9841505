//! Configuration: a YAML file, overridden by environment variables, overridden by flags.
//! Every problem is reported as a [`ConfigError`] naming the field, and the binary exits 2.
use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

mod election;
mod file;
mod resolve;
mod services;

pub use file::{BackendFile, ElectionFile, FileConfig, GarpFile, Overrides, RaftFile, ServiceFile};
pub use resolve::resolve;

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
    pub vips: BTreeSet<IpAddr>,
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

fn parse_vip(raw: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = raw
        .trim()
        .parse()
        .map_err(|_| format!("`{raw}` is not an IP address"))?;
    vip_allowed(ip).map_err(|why| format!("`{raw}` cannot be a VIP ({why})"))?;
    Ok(ip)
}

/// Whether `ip` can be a VIP: a unicast address a neighbour can be told about. The reason
/// when not.
pub fn vip_allowed(ip: IpAddr) -> Result<(), &'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || v4.is_loopback() {
                return Err("unspecified, broadcast, multicast or loopback");
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() || v6.is_multicast() || v6.is_loopback() {
                return Err("unspecified, multicast or loopback");
            }
            if v6.is_unicast_link_local() {
                return Err("link-local: every interface has its own fe80::/10");
            }
            if v6.to_ipv4_mapped().is_some() {
                return Err("an IPv4-mapped IPv6 address: write the IPv4 address");
            }
        }
    }
    Ok(())
}

/// What the system must look like for the config to make sense: the interface exists and no
/// VIP is one of the node's own addresses. `node_addrs` are (address, prefix length) pairs of
/// every interface; a /32 (IPv6: /128) equal to a VIP is taken as a binding left by an earlier
/// run of vip (which adds exactly that) and is adopted, anything else is the node's own
/// address.
pub fn check_system(
    cfg: &Config,
    ifindex: Option<u32>,
    node_addrs: &[(IpAddr, u8, String)],
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
            .find(|(a, plen, _)| a == vip && *plen != crate::net::addr::host_prefix(*vip))
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
