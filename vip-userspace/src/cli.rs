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
    /// Print VIPs, services, backends and counters from the pinned maps.
    Status {
        /// Directory of the pinned maps.
        #[arg(long, env = "VIP_PIN_DIR", default_value = crate::paths::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
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
    /// Keep the pinned maps on exit (for restarts).
    #[arg(long)]
    pub keep_pinned: bool,
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
        }
    }
}
