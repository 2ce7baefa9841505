//! Prometheus metrics and health endpoints (`/metrics`, `/healthz`, `/readyz`, `/bgp`), served by a
//! small HTTP/1.1 responder: four read-only GETs do not justify a web framework. It answers
//! GET on those paths only (404 elsewhere, 405 for other methods) and bounds what a client
//! may cost it ([`Limits`]).
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, counter::Counter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::counters::{PER_BACKEND, PER_SERVICE, PER_VIP, TOTALS};
use crate::dataplane::maps::StatsReader;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("binding metrics listener on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

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
    /// Kubernetes API writes (status, holder annotation, Event) that failed, each attempt;
    /// they are retried with back-off.
    pub k8s_write_failures: Counter,
    /// Writes given up after their retries (tried again at the next resync).
    pub k8s_writes_abandoned: Counter,
    pub services_unplaced: prometheus_client::metrics::gauge::Gauge,
    pub stats: Mutex<Option<StatsReader>>,
    pub garp_sent: Counter,
    pub garp_errors: Counter,
    pub uplink_present: prometheus_client::metrics::gauge::Gauge,
    /// 1 while the kernel settings the fence depends on are applied (or none are needed).
    pub fence_ready: prometheus_client::metrics::gauge::Gauge,
    pub dataplane_restarts: Counter,
    pub reconcile_errors: Counter,
    pub reloads: Counter,
    pub reload_errors: Counter,
    pub leader: prometheus_client::metrics::gauge::Gauge,
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

#[derive(Debug)]
struct DataplaneCollector(Arc<State>);

/// A counter family with one label: a row per label value.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    rows: &[(String, u64)],
) -> std::fmt::Result {
    let mut fam = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (key, v) in rows {
        let labels = [(label, key.as_str())];
        ConstCounter::new(*v).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge family with one label: a row per label value.
fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    rows: &[(String, i64)],
) -> std::fmt::Result {
    let mut fam = enc.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (key, v) in rows {
        let labels = [(label, key.as_str())];
        ConstGauge::new(*v).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Term, role, leader and the age of the quorum acknowledgement that keeps the fence open.
fn raft_metrics(
    enc: &mut DescriptorEncoder,
    r: &crate::election::raft::RaftStatus,
) -> std::fmt::Result {
    use crate::election::raft::RaftRole;
    let plain = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
        let g = ConstGauge::new(v);
        g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
    };
    plain(enc, "vip_raft_term", "Current Raft term", r.term as i64)?;
    plain(
        enc,
        "vip_raft_leader_id",
        "Id of the leader this node knows of (-1: none)",
        r.leader.map_or(-1, |l| l as i64),
    )?;
    plain(
        enc,
        "vip_raft_fenced_leader",
        "1 while this node leads with a fresh quorum acknowledgement (owns the VIPs)",
        r.fenced_leader as i64,
    )?;
    plain(
        enc,
        "vip_raft_ms_since_quorum_ack",
        "Since the send time of the newest heartbeat a majority acknowledged (-1: not leading)",
        r.millis_since_quorum_ack
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX)),
    )?;
    gauges(
        enc,
        "vip_election_sched",
        "Scheduling of the election's I/O thread, one row labelled by policy (fifo, nice, normal): the SCHED_FIFO priority, the nice value, or 0",
        "policy",
        &[(r.sched.policy().to_string(), r.sched.value())],
    )?;
    plain(
        enc,
        "vip_raft_authenticated",
        "1 when election datagrams are authenticated with a key, 0 with insecure: true",
        r.authenticated as i64,
    )?;
    let rejected: Vec<(String, u64)> = r
        .rejected
        .iter()
        .map(|(reason, n)| (reason.as_str().to_string(), *n))
        .collect();
    counters(
        enc,
        "vip_raft_rejected",
        "Election datagrams dropped, by reason (malformed, wrong_source, misdirected, unknown_key, bad_mac, replay, stale)",
        "reason",
        &rejected,
    )?;
    let roles: Vec<(String, i64)> = [
        RaftRole::Follower,
        RaftRole::PreCandidate,
        RaftRole::Candidate,
        RaftRole::Leader,
    ]
    .iter()
    .map(|x| (x.as_str().to_string(), (*x == r.role) as i64))
    .collect();
    gauges(
        enc,
        "vip_raft_role",
        "1 for this node's Raft role",
        "role",
        &roles,
    )
}

impl Collector for DataplaneCollector {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Scrape::read(&self.0).encode(enc)
    }
}

/// What one scrape reports beyond the registered counters: read from [`State`] and the
/// pinned maps in [`Scrape::read`], so that [`Scrape::encode`] is a function of plain values
/// (and a test can render every family, rows included, without a data plane).
#[derive(Debug, Default)]
struct Scrape {
    mode: String,
    interface: String,
    owned: Vec<Ipv4Addr>,
    attachment: Option<Attachment>,
    k8s: K8sStats,
    raft: Option<crate::election::raft::RaftStatus>,
    bgp: Vec<crate::bgp::PeerStatus>,
    /// None without a stats reader (kernel mode, or before the data plane is up).
    maps: Option<MapsScrape>,
}

#[derive(Debug, Default)]
struct MapsScrape {
    totals: Option<vip_common::Stats>,
    per_vip: Vec<(Ipv4Addr, vip_common::VipStats)>,
    /// From the pin directory, when it is known and readable.
    services: Option<Vec<crate::dataplane::inspect::ServiceView>>,
    /// Likewise, and only looked for when the services were read.
    backends: Option<Vec<crate::dataplane::inspect::BackendView>>,
    /// Kernel memlock of each pinned map, by map symbol.
    map_bytes: Vec<(&'static str, u64)>,
}

impl Scrape {
    fn read(st: &State) -> Scrape {
        use crate::dataplane::inspect::Snapshot;
        let reader = st.stats.lock().ok();
        let maps = reader.as_ref().and_then(|r| r.as_ref()).map(|reader| {
            let dir = st.pin_dir.read().ok().and_then(|d| d.clone());
            let services = dir
                .as_deref()
                .and_then(|d| Snapshot::read(d, false).ok())
                .map(|s| s.services);
            MapsScrape {
                totals: reader.totals().ok(),
                per_vip: reader.per_vip(),
                backends: services
                    .as_ref()
                    .and(dir.as_deref())
                    .and_then(|d| Snapshot::active_backends(d).ok()),
                services,
                map_bytes: dir
                    .as_deref()
                    .map(crate::dataplane::memory::pinned_bytes)
                    .unwrap_or_default(),
            }
        });
        Scrape {
            mode: st.mode.read().map(|m| m.clone()).unwrap_or_default(),
            interface: st.interface.read().map(|m| m.clone()).unwrap_or_default(),
            owned: st.bus.owned.borrow().clone(),
            attachment: st.attachment.read().ok().and_then(|a| a.clone()),
            k8s: st.k8s.lock().map(|k| k.clone()).unwrap_or_default(),
            raft: st
                .raft
                .read()
                .ok()
                .and_then(|r| r.as_ref().map(|s| s.get())),
            bgp: st.bgp.lock().map(|b| b.clone()).unwrap_or_default(),
            maps,
        }
    }

    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mode = &self.mode;
        let iface = &self.interface;
        let owned = self.owned.len();
        {
            let g = ConstGauge::new(1i64);
            let mut fam = enc.encode_descriptor(
                "vip_dataplane_info",
                "Data plane in use: xdp-native, xdp-generic or kernel",
                None,
                g.metric_type(),
            )?;
            let labels = [("mode", mode.as_str()), ("interface", iface.as_str())];
            g.encode(fam.encode_family(&labels)?)?;
        }
        let g = ConstGauge::new(owned as i64);
        g.encode(enc.encode_descriptor(
            "vip_vips_owned",
            "VIPs this node currently owns and answers for",
            None,
            g.metric_type(),
        )?)?;
        if let Some(a) = &self.attachment {
            gauges(
                &mut enc,
                "vip_dataplane_attachment",
                "How this daemon got its XDP attachment: fresh, or adopted from the previous daemon's pinned link with the program unchanged or replaced",
                "program",
                &[(a.program.to_string(), 1)],
            )?;
            for (name, help, v) in [
                (
                    "vip_xdp_link_id",
                    "Kernel id of the XDP bpf_link (stays the same across restarts)",
                    a.link_id,
                ),
                (
                    "vip_xdp_program_id",
                    "Kernel id of the XDP program running in the link",
                    a.prog_id,
                ),
            ] {
                let g = ConstGauge::new(v as i64);
                g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        // Ownership per VIP ("which node owns the VIP?" from any node's metrics).
        let owned_vips: Vec<(String, i64)> =
            self.owned.iter().map(|v| (v.to_string(), 1)).collect();
        gauges(
            &mut enc,
            "vip_vip_owner",
            "1 for each VIP this node owns",
            "vip",
            &owned_vips,
        )?;
        {
            let k = &self.k8s;
            if k.enabled {
                for (name, help, v) in [
                    (
                        "vip_k8s_services",
                        "LoadBalancer Services served",
                        k.services as i64,
                    ),
                    (
                        "vip_k8s_addresses_allocated",
                        "Addresses held by Services",
                        k.allocated as i64,
                    ),
                    (
                        "vip_k8s_allocation_failures",
                        "Services without an address (see their Events)",
                        k.failing as i64,
                    ),
                ] {
                    let g = ConstGauge::new(v);
                    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
                }
                let pool = |f: fn(&(String, u128, usize)) -> i64| -> Vec<(String, i64)> {
                    k.pools.iter().map(|p| (p.0.clone(), f(p))).collect()
                };
                gauges(
                    &mut enc,
                    "vip_k8s_pool_addresses",
                    "Addresses in each IPAM pool",
                    "pool",
                    &pool(|p| i64::try_from(p.1).unwrap_or(i64::MAX)),
                )?;
                gauges(
                    &mut enc,
                    "vip_k8s_pool_used",
                    "Addresses of each IPAM pool held by Services",
                    "pool",
                    &pool(|p| p.2 as i64),
                )?;
            }
        }
        if let Some(r) = &self.raft {
            raft_metrics(&mut enc, r)?;
        }
        let peers = &self.bgp;
        if !peers.is_empty() {
            let peer = |f: fn(&crate::bgp::PeerStatus) -> i64| -> Vec<(String, i64)> {
                peers
                    .iter()
                    .map(|p| (p.address.to_string(), f(p)))
                    .collect()
            };
            gauges(
                &mut enc,
                "vip_bgp_session_established",
                "1 while the session is Established",
                "peer",
                &peer(|p| (p.state == crate::bgp::SessionState::Established) as i64),
            )?;
            gauges(
                &mut enc,
                "vip_bgp_prefixes_announced",
                "Host routes announced on the session",
                "peer",
                &peer(|p| p.prefixes_announced as i64),
            )?;
            let flaps: Vec<(String, u64)> = peers
                .iter()
                .map(|p| (p.address.to_string(), p.flaps))
                .collect();
            counters(
                &mut enc,
                "vip_bgp_session_flaps",
                "Times the session left Established",
                "peer",
                &flaps,
            )?;
        }
        let Some(maps) = &self.maps else {
            return Ok(());
        };
        let mem: Vec<(String, i64)> = maps
            .map_bytes
            .iter()
            .map(|(m, b)| (m.to_string(), *b as i64))
            .collect();
        gauges(
            &mut enc,
            "vip_bpf_map_bytes",
            "Memory the kernel charges for each BPF map (memlock), by map",
            "map",
            &mem,
        )?;
        if let Some(s) = &maps.totals {
            table(&mut enc, TOTALS, &[(Vec::new(), s)])?;
        }
        let per_vip: Vec<_> = maps
            .per_vip
            .iter()
            .map(|(ip, s)| (vec![("vip", ip.to_string())], s))
            .collect();
        table(&mut enc, PER_VIP, &per_vip)?;
        if let Some(svcs) = &maps.services {
            services(&mut enc, svcs, maps.backends.as_deref())?;
        }
        Ok(())
    }
}

pub fn registry(state: Arc<State>) -> Registry {
    let mut r = registered(&state);
    r.register_collector(Box::new(DataplaneCollector(state)));
    r
}

/// The counters and gauges the daemon updates as it goes (the rest is read at scrape time).
fn registered(state: &State) -> Registry {
    let mut r = Registry::default();
    let counters = [
        (
            "vip_garp_sent",
            "Gratuitous ARP frames sent",
            &state.garp_sent,
        ),
        (
            "vip_garp_errors",
            "Gratuitous ARP frames that failed to send",
            &state.garp_errors,
        ),
        (
            "vip_service_failures",
            "Times a service could not be applied (a map or limit full); each fails alone",
            &state.service_failures,
        ),
        (
            "vip_k8s_api_write_failures",
            "Kubernetes API writes (status, holder annotation, Event) that failed; retried with back-off",
            &state.k8s_write_failures,
        ),
        (
            "vip_k8s_api_writes_abandoned",
            "Kubernetes API writes given up after their retries (tried again at the next resync)",
            &state.k8s_writes_abandoned,
        ),
        (
            "vip_dataplane_restarts",
            "Times the data plane was rebuilt after the uplink vanished or was replaced",
            &state.dataplane_restarts,
        ),
        (
            "vip_reconcile_errors",
            "Errors while releasing or acquiring VIPs",
            &state.reconcile_errors,
        ),
        (
            "vip_config_reloads",
            "Configuration reloads applied (SIGHUP)",
            &state.reloads,
        ),
        (
            "vip_config_reload_errors",
            "Configuration reloads rejected or failed",
            &state.reload_errors,
        ),
        (
            "vip_leader_transitions",
            "Leadership changes seen by this node",
            &state.leader_transitions,
        ),
    ];
    for (name, help, c) in counters {
        r.register(name, help, c.clone());
    }
    let gauges = [
        (
            "vip_uplink_present",
            "1 while the configured uplink exists and the data plane is up on it",
            &state.uplink_present,
        ),
        (
            "vip_services_unplaced",
            "Services the data plane does not serve as configured right now (see the log and Events)",
            &state.services_unplaced,
        ),
        (
            "vip_fence_ready",
            "1 while the kernel settings the fence depends on (arp_ignore on the uplink) are applied or not needed; 0: this node claims no VIP",
            &state.fence_ready,
        ),
        (
            "vip_leader",
            "1 while this node owns the VIPs (always 1 without election)",
            &state.leader,
        ),
    ];
    for (name, help, g) in gauges {
        r.register(name, help, g.clone());
    }
    r
}

/// Bind now (so a bad address fails at startup), serve until the task is dropped.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// What the server accepts from a client. The endpoints are read by Prometheus, kubelet
/// probes and `vip status` on the node network, where anyone can connect: a client gets
/// `timeout` for its whole request head (not per read, so trickling bytes does not keep a
/// connection open, "slowloris") and as long again to take the answer, sends at most
/// `max_head` bytes of head, and at most `max_conns` connections are served at a time
/// (the next wait in the kernel's backlog).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub timeout: std::time::Duration,
    pub max_conns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            timeout: std::time::Duration::from_secs(5),
            max_conns: 64,
        }
    }
}

pub async fn serve(listener: TcpListener, state: Arc<State>) {
    serve_with(listener, state, Limits::default()).await
}

pub async fn serve_with(listener: TcpListener, state: Arc<State>, limits: Limits) {
    let registry = Arc::new(registry(state.clone()));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_conns));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %crate::Chain(&e), "metrics accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let state = state.clone();
        tokio::spawn(async move {
            handle(sock, &registry, &state, limits).await;
            drop(permit);
        });
    }
}

/// One request, one answer, then the connection is closed.
async fn handle(
    mut sock: tokio::net::TcpStream,
    registry: &Registry,
    state: &State,
    limits: Limits,
) {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let head = tokio::time::timeout_at(deadline, read_head(&mut sock, limits.max_head)).await;
    let (status, extra, ctype, body) = match head {
        // Too slow: nothing is owed to a client that never finished asking.
        Err(_) => (
            "408 Request Timeout",
            "",
            TEXT,
            "request timeout\n".to_string(),
        ),
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => (
            "431 Request Header Fields Too Large",
            "",
            TEXT,
            "request head too large\n".to_string(),
        ),
        Ok(Ok(head)) => match request_line(&head) {
            None => ("400 Bad Request", "", TEXT, "bad request\n".to_string()),
            Some((method, path)) => respond(method, path, registry, state),
        },
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The answer gets its own deadline: a client that stops reading cannot hold the task.
    let _ = tokio::time::timeout(limits.timeout, async {
        sock.write_all(resp.as_bytes()).await?;
        sock.shutdown().await?;
        // Read what the client still sends (a refused head's rest) until it closes: a
        // socket closed with unread bytes sends a reset, which can discard the answer
        // before the client has read it.
        let mut sink = [0u8; 1024];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match sock.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

enum HeadError {
    Closed,
    TooLarge,
}

/// Bytes up to and including the blank line that ends the request head.
async fn read_head(
    sock: &mut (impl tokio::io::AsyncRead + Unpin),
    max: usize,
) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => n,
        };
        // Only the new bytes (and the three before them) can complete the terminator.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(from + end + 4);
            return if head.len() > max {
                Err(HeadError::TooLarge)
            } else {
                Ok(head)
            };
        }
        if head.len() > max {
            return Err(HeadError::TooLarge);
        }
    }
}

/// `METHOD /path HTTP/1.x` from the head's first line; the query, if any, is dropped.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

const TEXT: &str = "text/plain; charset=utf-8";

/// (status, extra header lines, content type, body). Only GET, and only on the known paths.
fn respond(
    method: &str,
    path: &str,
    registry: &Registry,
    state: &State,
) -> (&'static str, &'static str, &'static str, String) {
    if !PATHS.contains(&path) {
        return ("404 Not Found", "", TEXT, "not found\n".into());
    }
    if method != "GET" {
        return (
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            TEXT,
            "method not allowed\n".into(),
        );
    }
    let (status, ctype, body) = route(path, registry, state);
    (status, "", ctype, body)
}

/// Every path `route` answers.
const PATHS: [&str; 4] = ["/metrics", "/healthz", "/readyz", "/bgp"];

fn route(path: &str, registry: &Registry, state: &State) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, registry) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(_) => (
                    "500 Internal Server Error",
                    TEXT,
                    "encoding failed\n".into(),
                ),
            }
        }
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        // BGP sessions and what each announces, for `vip status`.
        "/bgp" => {
            let peers = state.bgp.lock().map(|b| b.clone()).unwrap_or_default();
            (
                "200 OK",
                "application/json",
                crate::bgp::status::to_json(&peers).to_string(),
            )
        }
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                ("200 OK", TEXT, "ready\n".into())
            } else {
                ("503 Service Unavailable", TEXT, "not ready\n".into())
            }
        }
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

/// Per-service and per-backend counters from the pinned maps.
fn services(
    enc: &mut DescriptorEncoder,
    services: &[crate::dataplane::inspect::ServiceView],
    backends: Option<&[crate::dataplane::inspect::BackendView]>,
) -> std::fmt::Result {
    let rows: Vec<_> = services
        .iter()
        .map(|s| {
            (
                vec![("service", s.name()), ("mode", s.mode.to_string())],
                &s.stats,
            )
        })
        .collect();
    table(enc, PER_SERVICE, &rows)?;
    let Some(backends) = backends else {
        return Ok(());
    };
    let rows: Vec<_> = backends
        .iter()
        .map(|b| {
            (
                vec![("backend", format!("{}:{}", b.addr, b.port))],
                &b.stats,
            )
        })
        .collect();
    table(enc, PER_BACKEND, &rows)
}

/// One family per metric of `table` (in the table's order), a sample per object in `rows`
/// (its labels, then the row's own label when several fields share the family).
fn table<S>(
    enc: &mut DescriptorEncoder,
    table: &[crate::counters::Counter<S>],
    rows: &[(Vec<(&str, String)>, &S)],
) -> std::fmt::Result {
    for (i, c) in table.iter().enumerate() {
        if table[..i].iter().any(|o| o.metric == c.metric) {
            continue;
        }
        let mut samples: Vec<(Vec<(&str, &str)>, u64)> = Vec::new();
        for (labels, s) in rows {
            for f in table[i..].iter().filter(|o| o.metric == c.metric) {
                let mut l: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                l.extend(f.label);
                samples.push((l, (f.get)(s)));
            }
        }
        let mut fam = enc.encode_descriptor(
            c.metric,
            c.help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        match &samples[..] {
            // A plain counter (the totals): no `{}` after its name.
            [(l, v)] if l.is_empty() => ConstCounter::new(*v).encode(fam)?,
            _ => {
                for (l, v) in &samples {
                    ConstCounter::new(*v).encode(fam.encode_family(l)?)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod dashboard_tests;
#[cfg(test)]
mod reference_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_metrics_without_dataplane() {
        let st = Arc::new(State::default());
        *st.mode.write().unwrap() = "kernel".into();
        st.bus
            .owned
            .send_replace(vec![Ipv4Addr::new(192, 0, 2, 100)]);
        st.garp_sent.inc_by(3);
        let reg = registry(st.clone());
        let (s, _, body) = route("/metrics", &reg, &st);
        assert_eq!(s, "200 OK");
        assert!(body.contains("vip_vips_owned 1"), "{body}");
        assert!(body.contains("vip_garp_sent_total 3"), "{body}");
        assert!(body.contains("mode=\"kernel\""), "{body}");
        assert_eq!(route("/readyz", &reg, &st).0, "503 Service Unavailable");
        st.ready.store(true, Ordering::Relaxed);
        assert_eq!(route("/readyz", &reg, &st).0, "200 OK");
        assert_eq!(route("/healthz", &reg, &st).0, "200 OK");
        assert_eq!(route("/nope", &reg, &st).0, "404 Not Found");
    }

    /// Every row of the counter tables is served, with its help, labels and the value of
    /// its own field (each field holds a different number).
    #[test]
    fn every_counter_of_the_table_is_exported() {
        use crate::counters::{numbered, Counter};
        let mut scrape = dashboard_tests::every_family();
        let maps = scrape.maps.as_mut().unwrap();
        maps.totals = Some(numbered(TOTALS));
        maps.per_vip[0].1 = numbered(PER_VIP);
        let svcs = maps.services.as_mut().unwrap();
        svcs[0].stats = numbered(PER_SERVICE);
        maps.backends.as_mut().unwrap()[0].stats = numbered(PER_BACKEND);
        let text = dashboard_tests::render(scrape);
        fn expect<S>(text: &str, table: &[Counter<S>], labels: &[(&str, &str)]) {
            for (i, c) in table.iter().enumerate() {
                let help = format!("# HELP {} {}\n", c.metric, c.help);
                assert!(text.contains(&help), "{}: no `{help}` in\n{text}", c.field);
                let l: Vec<String> = labels
                    .iter()
                    .copied()
                    .chain(c.label)
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                let l = if l.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", l.join(","))
                };
                let sample = format!("\n{}_total{l} {}\n", c.metric, i + 1);
                assert!(
                    text.contains(&sample),
                    "{}: no `{sample}` in\n{text}",
                    c.field
                );
            }
        }
        expect(&text, TOTALS, &[]);
        expect(&text, PER_VIP, &[("vip", "192.0.2.100")]);
        expect(
            &text,
            PER_SERVICE,
            &[("service", "192.0.2.100:80/tcp"), ("mode", "dsr")],
        );
        expect(&text, PER_BACKEND, &[("backend", "10.0.0.11:8080")]);
        // The one that used to be shown by `vip status` only.
        assert!(
            text.contains("\nvip_lb_icmp_errors_forwarded_total 22\n"),
            "{text}"
        );
    }

    /// A server on 127.0.0.1 with short timeouts; the address to connect to.
    async fn server(timeout_ms: u64) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            timeout: std::time::Duration::from_millis(timeout_ms),
            ..Limits::default()
        };
        tokio::spawn(serve_with(listener, Arc::new(State::default()), limits));
        addr
    }

    /// Send `parts` (a pause between them), then read the answer to the end.
    async fn ask(addr: SocketAddr, parts: &[&[u8]], pause_ms: u64) -> String {
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = c.into_split();
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        // Written while the answer is read: the server may answer (408, 431) and close
        // before everything is sent.
        let writer = tokio::spawn(async move {
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                }
                if wr.write_all(p).await.is_err() {
                    return;
                }
            }
            // Kept open (not shut down): the server must end the exchange by itself.
            std::future::pending::<()>().await;
        });
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        writer.abort();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status(resp: &str) -> &str {
        resp.lines().next().unwrap_or("")
    }

    #[tokio::test]
    async fn http_answers_get_on_known_paths_only() {
        let addr = server(2000).await;
        let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n");
        for (req, want) in [
            (get("/healthz"), "HTTP/1.1 200 OK"),
            (get("/metrics"), "HTTP/1.1 200 OK"),
            (get("/bgp"), "HTTP/1.1 200 OK"),
            (get("/readyz"), "HTTP/1.1 503 Service Unavailable"),
            (get("/healthz?x=1"), "HTTP/1.1 200 OK"),
            (get("/"), "HTTP/1.1 404 Not Found"),
            (get("/metrics/../etc"), "HTTP/1.1 404 Not Found"),
            (
                "POST /metrics HTTP/1.1\r\n\r\n".into(),
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (
                "DELETE /healthz HTTP/1.1\r\n\r\n".into(),
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (
                "POST /nope HTTP/1.1\r\n\r\n".into(),
                "HTTP/1.1 404 Not Found",
            ),
            ("GET /healthz\r\n\r\n".into(), "HTTP/1.1 400 Bad Request"),
            (
                "\x16\x03\x01garbage\r\n\r\n".into(),
                "HTTP/1.1 400 Bad Request",
            ),
        ] {
            let resp = ask(addr, &[req.as_bytes()], 0).await;
            assert_eq!(status(&resp), want, "{req:?} -> {resp}");
        }
        let resp = ask(addr, &[b"PUT /metrics HTTP/1.1\r\n\r\n"], 0).await;
        assert!(resp.contains("\r\nAllow: GET\r\n"), "{resp}");
        // A head in several segments is put together.
        let resp = ask(addr, &[b"GET /hea", b"lthz HTTP/1.1\r\n", b"\r\n"], 20).await;
        assert_eq!(status(&resp), "HTTP/1.1 200 OK", "{resp}");
    }

    #[tokio::test]
    async fn http_head_is_bounded() {
        let addr = server(2000).await;
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let resp = ask(addr, &[big.as_bytes()], 0).await;
        assert_eq!(
            status(&resp),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        // Without the blank line it is refused as soon as it passes the limit, not read on.
        let endless = "a".repeat(Limits::default().max_head + 1);
        let resp = ask(addr, &[endless.as_bytes()], 0).await;
        assert_eq!(
            status(&resp),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        let fits = format!(
            "GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(8000)
        );
        let resp = ask(addr, &[fits.as_bytes()], 0).await;
        assert_eq!(status(&resp), "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn slow_clients_are_cut_off() {
        let addr = server(300).await;
        // Slowloris: a byte every 50 ms would keep a per-read timeout happy forever; the
        // deadline is for the whole head.
        let t = std::time::Instant::now();
        let head = b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let parts: Vec<&[u8]> = head.chunks(1).collect();
        let resp = ask(addr, &parts, 50).await;
        assert_eq!(status(&resp), "HTTP/1.1 408 Request Timeout", "{resp}");
        // ask returns once the server closed: it stopped listening within its deadline
        // plus one pause, not after the ~3 s the whole trickle would take.
        assert!(
            t.elapsed() < std::time::Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        // Connected and silent: closed too.
        let t = std::time::Instant::now();
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        assert!(
            t.elapsed() < std::time::Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        // And the server still answers others.
        let resp = ask(addr, &[b"GET /healthz HTTP/1.1\r\n\r\n"], 0).await;
        assert_eq!(status(&resp), "HTTP/1.1 200 OK");
    }
}
