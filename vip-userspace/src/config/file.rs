//! The file's format, as serde reads it (and schemars documents it: `tests/config_reference.rs`
//! holds `docs/configuration.md` to these structs), and the command line's overrides.
use std::path::PathBuf;

use serde::Deserialize;

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
