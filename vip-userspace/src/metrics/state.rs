//! What the daemon reports, as its tasks leave it: the daemon's loops (lifecycle, ownership,
//! fence, BGP and election status), the reconciler and the Service controller write here as
//! they go, and a scrape only reads (`scrape`, `registry`, `http`). Apart from the encoding
//! and the HTTP server because it is the one part of `metrics` the rest of the daemon uses.
use std::sync::{atomic::AtomicBool, Mutex, RwLock};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use crate::dataplane::maps::StatsReader;

/// What the daemon reports; updated by the reconciler, read at scrape time.
#[derive(Default)]
pub struct State {
    pub ready: AtomicBool,
    /// Pin directory of the data plane's maps, for per-service counters (XDP mode only).
    pub pin_dir: RwLock<Option<std::path::PathBuf>>,
    pub mode: RwLock<String>,
    pub interface: RwLock<String>,
    /// What the reconciler publishes to the other tasks (see `bus`).
    pub bus: crate::bus::Bus,
    pub service_failures: Counter,
    /// Interface settings the load balancer's forwarding needs that could not be applied.
    pub setting_failures: Counter,
    /// Kubernetes API writes (status, holder annotation, Event) that failed, each attempt;
    /// they are retried with back-off.
    pub k8s_write_failures: Counter,
    /// Writes given up after their retries (tried again at the next resync).
    pub k8s_writes_abandoned: Counter,
    pub services_unplaced: Gauge,
    pub stats: Mutex<Option<StatsReader>>,
    pub garp_sent: Counter,
    pub garp_errors: Counter,
    /// Unsolicited Neighbor Advertisements (the IPv6 twin of gratuitous ARP).
    pub na_sent: Counter,
    pub na_errors: Counter,
    pub uplink_present: Gauge,
    /// 1 while the kernel settings the fence depends on are applied (or none are needed).
    pub fence_ready: Gauge,
    pub dataplane_restarts: Counter,
    pub reconcile_errors: Counter,
    pub reloads: Counter,
    pub reload_errors: Counter,
    pub leader: Gauge,
    pub leader_transitions: Counter,
    /// What the Service controller last saw (Kubernetes mode).
    pub k8s: Mutex<K8sStats>,
    /// BGP sessions, refreshed by the daemon every link check.
    pub bgp: Mutex<Vec<crate::bgp::PeerStatus>>,
    /// The Raft election, read at scrape time (`election.mode: raft`).
    pub raft: RwLock<Option<crate::election::raft::StatusSource>>,
    /// How the XDP attachment came about (XDP mode only).
    pub attachment: RwLock<Option<Attachment>>,
}

/// The XDP attachment as reported: adopted or not, and the kernel's ids (0 when the
/// attachment is not a bpf_link).
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    /// `fresh`, `unchanged` or `replaced` (see `dataplane::attach::Adoption`).
    pub program: &'static str,
    pub link_id: u32,
    pub prog_id: u32,
}

#[derive(Debug, Clone, Default)]
pub struct K8sStats {
    pub enabled: bool,
    pub services: usize,
    pub allocated: usize,
    pub failing: usize,
    /// (pool, addresses, held) per configured pool.
    pub pools: Vec<(String, u128, usize)>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}
