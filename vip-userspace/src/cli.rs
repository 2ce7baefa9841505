//! Command line: `vip run` and friends. Flags override environment, which overrides the file.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "vip",
    version,
    about = "Floating virtual IPs answered from XDP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run(RunArgs),
    /// Print deployment manifests: daemonset, pod (static), rbac or podmonitor (Prometheus
    /// Operator).
    Manifest(ManifestArgs),
    /// Print a fresh random key for `election.raft.key_file` (32 bytes, base64).
    RaftKey,
    /// Print VIPs, services, backends and counters from the pinned maps, and the BGP
    /// sessions (peers, state, announced prefixes) from the running daemon.
    Status {
        /// Directory of the pinned maps.
        #[arg(long, env = "VIP_PIN_DIR", default_value = crate::paths::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// The daemon's metrics address, where it serves its BGP status.
        /// In the pods `vip manifest` makes, VIP_METRICS_ADDR is already the node's address.
        #[arg(
            long,
            env = "VIP_METRICS_ADDR",
            default_value = crate::paths::DEFAULT_METRICS_ADDR,
            value_parser = crate::config::parse_listen_addr
        )]
        metrics_addr: std::net::SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// YAML config file.
    #[arg(long, short = 'c', env = "VIP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Uplink interface to serve VIPs on (kube-vip: vip_interface).
    #[arg(long, env = "VIP_INTERFACE")]
    pub interface: Option<String>,
    /// VIP to own; repeat for several (replaces the file's list). Env: comma-separated.
    #[arg(long = "vip", env = "VIP_VIPS", value_delimiter = ',')]
    pub vips: Vec<String>,
    /// xdp | kernel | auto.
    #[arg(long, env = "VIP_MODE")]
    pub mode: Option<String>,
    /// Listen address for /metrics, /healthz, /readyz.
    #[arg(long, env = "VIP_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Directory on bpffs for pinned maps.
    #[arg(long, env = "VIP_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Local non-ARP device VIPs are bound on in XDP mode.
    #[arg(long, env = "VIP_LOCAL_DEVICE")]
    pub local_device: Option<String>,
    /// human | json.
    #[arg(long, env = "VIP_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Level or filter directive (info, debug, vip=trace).
    #[arg(long, env = "VIP_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Keep the pinned maps on exit (inspection; the program is detached).
    #[arg(long)]
    pub keep_pinned: bool,
    /// Treat SIGTERM/SIGINT as a planned restart: leave XDP attached and the VIPs answered
    /// (for `restart_grace_ms`) for the next vip to adopt. SIGUSR2 always does this.
    #[arg(long, env = "VIP_HANDOVER")]
    pub handover: bool,
    /// Who owns the VIPs: single (this node), lease (a Kubernetes Lease holder) or raft
    /// (static peers; needs the file's `election.raft` section).
    #[arg(long, env = "VIP_ELECTION")]
    pub election: Option<String>,
    /// kubeconfig for the Lease (default: in-cluster, or $KUBECONFIG).
    #[arg(long, env = "VIP_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Lease name (kube-vip: vip_leasename).
    #[arg(long, env = "VIP_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Lease namespace.
    #[arg(long, env = "VIP_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This node's identity in the Lease (default $NODE_NAME, else the hostname).
    #[arg(long, env = "VIP_IDENTITY")]
    pub identity: Option<String>,
    /// Also serve Services of type LoadBalancer (needs --election lease).
    #[arg(long, env = "VIP_SERVICES")]
    pub services: bool,
    /// Hold the lease only while the API server's /readyz answers (control-plane VIP).
    #[arg(long, env = "VIP_READYZ_GATE")]
    pub readyz_gate: bool,
    /// Service VIPs: `shared` (one lease for all), `per-vip` (one lease each, spread over
    /// the nodes; kube-vip: svc_election=true) or `rendezvous` (one lease per node, VIPs
    /// spread by rendezvous hashing; API writes independent of the number of VIPs).
    #[arg(long, env = "VIP_SERVICE_ELECTION")]
    pub service_election: Option<String>,
}

impl RunArgs {
    /// Flags and VIP_* variables (clap has merged those), then kube-vip's variable names for
    /// what is still unset, so an existing kube-vip manifest's env carries over.
    pub fn overrides(&self) -> Overrides {
        let kube_vip = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let vips = if self.vips.is_empty() {
            kube_vip("address").map(|a| a.split(',').map(|s| s.trim().to_string()).collect())
        } else {
            Some(self.vips.clone())
        };
        Overrides {
            interface: self.interface.clone().or_else(|| kube_vip("vip_interface")),
            vips,
            mode: self.mode.clone(),
            metrics_addr: self.metrics_addr.clone(),
            pin_dir: self.pin_dir.clone(),
            local_device: self.local_device.clone(),
            log_format: self.log_format.clone(),
            log_level: self.log_level.clone(),
            election: self.election.clone(),
            kubeconfig: self.kubeconfig.clone(),
            lease_name: self.lease_name.clone(),
            lease_namespace: self.lease_namespace.clone(),
            identity: self.identity.clone(),
            services: self.services.then_some(true),
            readyz_gate: self.readyz_gate.then_some(true),
            service_election: self.service_election.clone(),
            handover: self.handover.then_some(true),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    /// daemonset | pod | rbac | podmonitor
    #[arg(value_parser = ["daemonset", "pod", "rbac", "podmonitor"])]
    pub kind: String,
    /// The container image. The default is the one `cargo xtask image` builds (an OCI
    /// archive under target/image/); after pushing it elsewhere, name that copy here.
    #[arg(long, default_value = vip_common::image::NAME)]
    pub image: String,
    #[arg(long, default_value = "eth0")]
    pub interface: String,
    /// VIP(s) to hold (repeat).
    #[arg(long = "vip", default_values_t = vec!["192.0.2.100".to_string()])]
    pub vips: Vec<String>,
    #[arg(long, default_value = "auto")]
    pub mode: String,
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
    #[arg(long, default_value = "plndr-cp-lock")]
    pub lease_name: String,
    /// Static pod: the node's admin kubeconfig.
    #[arg(long, default_value = "/etc/kubernetes/admin.conf")]
    pub kubeconfig: String,
    /// Also serve Services of type LoadBalancer (adds the RBAC and the flag).
    #[arg(long)]
    pub services: bool,
    /// With --services: how their VIPs are elected (adds the flag; `rendezvous` adds the
    /// lease list/watch/delete permissions).
    #[arg(long, value_parser = ["shared", "per-vip", "rendezvous"])]
    pub service_election: Option<String>,
}

impl ManifestArgs {
    pub fn options(&self) -> crate::manifest::Options {
        crate::manifest::Options {
            image: self.image.clone(),
            interface: self.interface.clone(),
            vips: self.vips.clone(),
            mode: self.mode.clone(),
            namespace: self.namespace.clone(),
            lease_name: self.lease_name.clone(),
            kubeconfig: self.kubeconfig.clone(),
            services: self.services,
            service_election: self.service_election.clone(),
        }
    }
}
