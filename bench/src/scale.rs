//! Scale: N LoadBalancer Services × 10 endpoints each, two real daemons (XDP, `election:
//! {kubeconfig, identity, services: true}`) against the in-process fake API server, for two
//! sizes of N and in `local` and `dsr` forwarding mode.
//!
//! ```text
//!  ns vb-sc-api    fake API server (objects inserted in-process, daemons over HTTP)
//!  ns vb-sc-client Capture of ARP: every gratuitous ARP, when and from which MAC
//!  ns vb-sc-node1  vip run (pins /sys/fs/bpf/vip-bench-scale/node1)
//!  ns vb-sc-node2  vip run (pins /sys/fs/bpf/vip-bench-scale/node2)
//!           all on one bridge; VIPs from 10.77.0.0/16, endpoints 10.100/10.120.x.x (off-link)
//! ```
//!
//! Per case: the cluster is populated before the daemons start (setup, timed apart); then
//! cold start (both daemons spawned → every VIP owned in the holder's pinned VIPS map, and,
//! in dsr, every service with a table in its SERVICES map; → the first gratuitous ARP for the
//! last VIP at the client), a 10 s idle window (CPU, API requests by verb per node), memory
//! (resident memory from smaps without the mapped BPF maps; BPF maps from the kernel's memlock accounting in the daemon's fdinfo), Service
//! creates (→ status written, → first GARP), endpoint changes (dsr: → the service entry
//! flipped to a new table, checked to hold the new backend) and a failover (SIGTERM to the
//! holder → the other node owns and announced every VIP; its API requests meanwhile).
//! Every wait is bounded in time, and stops early when nothing moves any more.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap as BpfHash, Map, MapData};
use fake_apiserver::{ApiThread, FakeApiServer};
use serde_json::{json, Value};
use testbed::{parse_mac, Bed, Capture, Proc};
use vip_common::{
    pin_names, BackendValue, ServiceKey, ServiceValue, VipKey, VipValue, RING_EMPTY, VIP_F_OWNED,
};

use crate::{
    die_with_parent,
    failover::{ms, percentile},
    stopped,
    table::Row,
    PREFIX,
};

/// The daemons' pins, one folder per node (removed by the bench and by xtask).
pub const PIN_DIR: &str = "/sys/fs/bpf/vip-bench-scale";
const NODES: [&str; 2] = ["node1", "node2"];
const ENDPOINTS: usize = 10;
/// Services created one after another with N present.
const CREATES: usize = 100;
/// Endpoint changes (dsr), one after another.
const CHANGES: usize = 100;
const PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
/// Pool: 10.77.0.1–10.77.255.254, addresses that exist only on the bed.
const POOL: &str = "10.77.0.1-10.77.255.254";
const IDLE: Duration = Duration::from_secs(10);
/// Quiet: no API writes but Lease renewals for this long. Long enough to span a pass of
/// the controller at N=10,000 (a 3 s window was declared quiet between two bursts of a
/// write backlog, and the steady-state rows then measured the backlog).
const QUIET: Duration = Duration::from_secs(10);
/// Maglev table of a by-need service of 10 backends (≥ 100 slots per backend).
const BY_NEED_10: u32 = 1021;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Local,
    Dsr,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Dsr => "dsr",
        }
    }
}

/// Settings a case gives the daemons, as printed in the table: every limit raised to what
/// N Services (plus the creates) need, rounded up to a multiple of 1,024 and never below
/// the default 4,096.
struct Settings {
    max_services: u32,
    max_vips: u32,
    /// dsr: one backend id per endpoint.
    max_backends: Option<u32>,
    ring_slots: Option<u32>,
}

fn limit(need: u32) -> u32 {
    need.div_ceil(1024).max(4) * 1024
}

impl Settings {
    fn new(n: usize, mode: Mode) -> Settings {
        let need = (n + CREATES) as u32;
        let dsr = mode == Mode::Dsr;
        // Two tables per dsr service (one live, one being written).
        let ring_slots = dsr.then(|| (need * 2 * BY_NEED_10).div_ceil(1 << 20) << 20);
        Settings {
            max_services: limit(need),
            max_vips: limit(need),
            max_backends: dsr.then(|| limit(need * ENDPOINTS as u32)),
            ring_slots,
        }
    }

    fn yaml(&self) -> String {
        let mut s = format!(
            "max_services: {}\nmax_vips: {}\n",
            self.max_services, self.max_vips
        );
        if let Some(b) = self.max_backends {
            s.push_str(&format!("max_backends: {b}\n"));
        }
        if let Some(r) = self.ring_slots {
            s.push_str(&format!("maglev_sizing: by-need\nring_slots: {r}\n"));
        }
        s
    }

    fn describe(&self) -> String {
        let mut d = format!(
            "max_services {}, max_vips {}",
            self.max_services, self.max_vips
        );
        if let Some(b) = self.max_backends {
            d.push_str(&format!(", max_backends {b}"));
        }
        if let Some(r) = self.ring_slots {
            // The kernel charges 8 B a slot (a u32 value rounded up).
            d.push_str(&format!(
                ", maglev_sizing by-need, ring_slots {r} ({} MiB)",
                (r as u64 * 8) >> 20
            ));
        }
        d
    }
}

fn service_name(i: usize) -> String {
    format!("s{i:05}")
}

/// The address of endpoint `j` of service `i` (unique, off the bed's subnets).
fn endpoint_addr(base: u8, i: usize, j: usize) -> String {
    let k = i * ENDPOINTS + j;
    format!(
        "10.{}.{}.{}",
        base as usize + k / 65536,
        (k / 256) % 256,
        k % 256
    )
}

fn service(name: &str, mode: Mode) -> Value {
    let mut s = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                 "ports": [{"name": "http", "port": PORT, "targetPort": TARGET_PORT, "protocol": "TCP"}]}
    });
    if mode == Mode::Dsr {
        s["metadata"]["annotations"] = json!({"vip.dev/forwarding-mode": "dsr"});
    }
    s
}

fn slice(svc: &str, addrs: &[String]) -> Value {
    let endpoints: Vec<Value> = addrs
        .iter()
        .enumerate()
        .map(|(j, a)| {
            json!({"addresses": [a], "nodeName": NODES[j % 2], "conditions": {"ready": true}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-x1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}]
    })
}

fn slice_for(i: usize) -> Value {
    let addrs: Vec<String> = (0..ENDPOINTS).map(|j| endpoint_addr(100, i, j)).collect();
    slice(&service_name(i), &addrs)
}

/// First gratuitous ARP per (VIP, sender MAC) seen at the client, read from the capture a
/// piece at a time.
struct Garps {
    cap: Capture,
    read: usize,
    first: HashMap<(Ipv4Addr, [u8; 6]), Instant>,
}

impl Garps {
    fn update(&mut self) {
        let new = self.cap.frames_from(self.read);
        self.read += new.len();
        for (t, f) in new {
            // RFC 5227 announcement: ARP request, sender address = target address.
            if f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 1] && f[28..32] == f[38..42]
            {
                let ip = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
                let mac: [u8; 6] = f[22..28].try_into().unwrap_or_default();
                self.first.entry((ip, mac)).or_insert(t);
            }
        }
    }

    /// VIPs of the pool announced by `mac`, and when the last of them was first announced.
    fn announced_by(&self, mac: [u8; 6], since: Instant) -> (usize, Option<Instant>) {
        let ts: Vec<Instant> = self
            .first
            .iter()
            .filter(|((ip, m), t)| *m == mac && ip.octets()[..2] == [10, 77] && **t >= since)
            .map(|(_, t)| *t)
            .collect();
        (ts.len(), ts.iter().max().copied())
    }

    fn first_of(&self, ip: Ipv4Addr, mac: [u8; 6]) -> Option<Instant> {
        self.first.get(&(ip, mac)).copied()
    }
}

/// When each Service's status first carried an address (from the server's change feed).
struct Statuses {
    seen: Arc<Mutex<HashMap<String, (Instant, Ipv4Addr)>>>,
    /// The change feed dropped events (a burst beyond its 4,096): [`Statuses::rescan`] reads
    /// the store for what was missed.
    lagged: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Statuses {
    fn start(server: &FakeApiServer) -> Statuses {
        let mut rx = server.subscribe();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let lagged = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, lagged2) = (seen.clone(), stop.clone(), lagged.clone());
        let thread = std::thread::spawn(move || {
            use tokio::sync::broadcast::error::TryRecvError;
            while !stop2.load(Ordering::Relaxed) {
                match rx.try_recv() {
                    Ok(e) if e.res.ends_with("/services") => {
                        let ip = e.obj["status"]["loadBalancer"]["ingress"][0]["ip"]
                            .as_str()
                            .and_then(|s| s.parse::<Ipv4Addr>().ok());
                        let name = e.obj["metadata"]["name"].as_str().unwrap_or("");
                        if let (Some(ip), Ok(mut m)) = (ip, seen2.lock()) {
                            m.entry(name.to_string()).or_insert((Instant::now(), ip));
                        }
                    }
                    Ok(_) => {}
                    Err(TryRecvError::Lagged(_)) => lagged2.store(true, Ordering::Relaxed),
                    Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_micros(200)),
                    Err(TryRecvError::Closed) => return,
                }
            }
        });
        Statuses {
            seen,
            lagged,
            stop,
            thread: Some(thread),
        }
    }

    /// After the feed lagged: statuses in the store not seen yet are taken as written now (a
    /// bound from above on when they were).
    fn rescan(&self, server: &FakeApiServer) {
        if !self.lagged.swap(false, Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let objs = server.objects("services");
        let Ok(mut m) = self.seen.lock() else { return };
        for o in objs {
            let ip = o["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok());
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            if let Some(ip) = ip {
                m.entry(name.to_string()).or_insert((now, ip));
            }
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().map_or(0, |m| m.len())
    }

    fn get(&self, name: &str) -> Option<(Instant, Ipv4Addr)> {
        self.seen.lock().ok()?.get(name).copied()
    }
}

impl Drop for Statuses {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `perf record` of some daemons over one phase, when `VIP_BENCH_SCALE_PERF` names a
/// directory (`<phase>-<mode>-<n>.data` there; read with `perf report -i`).
struct Profile(std::process::Child);

impl Profile {
    fn start(phase: &str, n: usize, mode: Mode, nodes: &[Node]) -> Option<Profile> {
        let dir = std::env::var_os("VIP_BENCH_SCALE_PERF")?;
        let pids: Vec<String> = nodes.iter().map(|nd| nd.pid().to_string()).collect();
        let out = Path::new(&dir).join(format!("{phase}-{}-{n}.data", mode.name()));
        let child = std::process::Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(pids.join(","))
            .arg("-o")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Profile(child))
    }

    fn stop(mut self) {
        // SIGINT: perf writes its file and exits.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// `vip run` on one node, stopped with SIGTERM (then killed) when dropped.
struct Node {
    proc: Proc,
    log: PathBuf,
    pins: PathBuf,
    token: &'static str,
    mac: [u8; 6],
}

impl Node {
    fn pid(&self) -> i32 {
        self.proc.child.id() as i32
    }

    fn alive(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn stop(&mut self) {
        if self.alive() {
            self.proc.signal(libc::SIGTERM);
            // Removing thousands of addresses and pins takes a while.
            if self.proc.wait_timeout(Duration::from_secs(30)).is_none() {
                let _ = self.proc.child.kill();
                let _ = self.proc.child.wait();
            }
        }
    }

    fn vips(&self) -> Option<BpfHash<MapData, VipKey, VipValue>> {
        let m = MapData::from_pin(self.pins.join(pin_names::VIPS)).ok()?;
        BpfHash::try_from(Map::HashMap(m)).ok()
    }

    fn services(&self) -> Option<BpfHash<MapData, ServiceKey, ServiceValue>> {
        let m = MapData::from_pin(self.pins.join(pin_names::SERVICES)).ok()?;
        BpfHash::try_from(Map::HashMap(m)).ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// Owned VIPs in a node's VIPS map, and services with a table in its SERVICES map.
fn dataplane_counts(node: &Node) -> (usize, usize) {
    let owned = node.vips().map_or(0, |m| {
        m.iter()
            .filter_map(|e| e.ok())
            .filter(|(_, v)| v.flags & VIP_F_OWNED != 0)
            .count()
    });
    let tables = node.services().map_or(0, |m| {
        m.iter()
            .filter_map(|e| e.ok())
            .filter(|(_, v)| v.ring_size > 0)
            .count()
    });
    (owned, tables)
}

/// `vip_services_unplaced` of the daemon on `node` (None: metrics not served yet).
fn unplaced(bed: &Bed, node: &str) -> Option<u64> {
    let (code, body) = testbed::http_get(
        &bed.host(node).ns,
        "127.0.0.1:9472".parse().ok()?,
        "/metrics",
    )
    .ok()?;
    if code != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("vip_services_unplaced "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// API requests of one client by verb, over a window.
#[derive(Default, Clone)]
struct Verbs {
    by: BTreeMap<&'static str, usize>,
    secs: f64,
}

impl Verbs {
    fn of(requests: &[String], secs: f64) -> Verbs {
        let mut by = BTreeMap::new();
        for r in requests {
            let (method, rest) = r.split_once(' ').unwrap_or((r, ""));
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let list = fake_apiserver::RESOURCES
                .iter()
                .any(|res| path.ends_with(&format!("/{}", res.plural)));
            let verb = match method {
                "GET"
                    if query
                        .split('&')
                        .any(|q| q == "watch=true" || q == "watch=1") =>
                {
                    "watch"
                }
                "GET" if list => "list",
                "GET" => "get",
                "POST" => "create",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "other",
            };
            *by.entry(verb).or_insert(0) += 1;
        }
        Verbs { by, secs }
    }

    fn writes_per_s(&self) -> f64 {
        let w: usize = ["create", "update", "patch", "delete"]
            .iter()
            .map(|v| self.by.get(v).copied().unwrap_or(0))
            .sum();
        w as f64 / self.secs.max(1e-9)
    }

    fn describe(&self) -> String {
        if self.by.is_empty() {
            return "none".into();
        }
        self.by
            .iter()
            .map(|(v, n)| format!("{v} {:.2}", *n as f64 / self.secs.max(1e-9)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Wait until the clients `tokens` made no API write other than to a Lease for `window`
/// (within `cap`); when that began, or None.
fn quiet(
    server: &FakeApiServer,
    tokens: &[&str],
    window: Duration,
    cap: Duration,
) -> Option<Instant> {
    let writes = || -> usize {
        tokens
            .iter()
            .map(|t| {
                server
                    .requests_by(t)
                    .iter()
                    .filter(|r| !r.starts_with("GET") && !r.contains("/leases"))
                    .count()
            })
            .sum()
    };
    let start = Instant::now();
    let (mut last, mut since) = (writes(), Instant::now());
    while start.elapsed() < cap && !stopped() {
        std::thread::sleep(Duration::from_millis(250));
        let w = writes();
        if w != last {
            (last, since) = (w, Instant::now());
        } else if since.elapsed() >= window {
            return Some(since);
        }
    }
    None
}

/// New requests of `token` since the first `from` of them.
fn requests_since(server: &FakeApiServer, token: &str, from: usize) -> Vec<String> {
    let all = server.requests_by(token);
    all.get(from..).unwrap_or_default().to_vec()
}

/// Resident memory of `pid` without its mappings of BPF maps (`anon_inode:bpf-map`: the
/// Maglev tables it writes in place are kernel memory the maps row already counts; VmRSS
/// would count them twice).
fn rss_bytes(pid: i32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut total = 0u64;
    let mut in_map = false;
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        match f.next() {
            Some("Rss:") if !in_map => {
                total += f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
            }
            // A mapping's header line: "start-end perms offset dev inode [path]".
            Some(first)
                if first.contains('-')
                    && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
                    && !first.ends_with(':') =>
            {
                in_map = l.contains("bpf-map");
            }
            _ => {}
        }
    }
    total
}

/// BPF map memory held by `pid` as the kernel accounts it (`memlock` in the fdinfo of each
/// map fd, each map once): (total, per-CPU maps' share, the map ids).
fn map_memlock(pid: i32) -> (u64, u64, HashSet<u64>) {
    let mut seen = HashSet::new();
    let (mut total, mut percpu) = (0u64, 0u64);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0, seen);
    };
    for fd in fds.flatten() {
        let is_map =
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("bpf-map"));
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |k: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        if !seen.insert(field("map_id:")) {
            continue;
        }
        let m = field("memlock:");
        total += m;
        // BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE.
        if matches!(field("map_type:"), 5 | 6 | 10 | 21) {
            percpu += m;
        }
    }
    (total, percpu, seen)
}

/// The largest of the maps `ids` by memlock, named (from `bpftool map show`).
fn map_breakdown(ids: &HashSet<u64>) -> String {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output();
    let Ok(maps) = out.map(|o| serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap_or_default())
    else {
        return "bpftool unavailable".into();
    };
    let mut named: Vec<(u64, String)> = maps
        .iter()
        .filter(|m| m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|m| {
            (
                m["bytes_memlock"].as_u64().unwrap_or(0),
                m["name"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    named.sort_by(|a, b| b.cmp(a));
    named
        .iter()
        .take(6)
        .map(|(b, n)| format!("{n} {}", mib(*b)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// p50 / p99 of the samples that completed, and how many did.
fn p50_p99(samples: &[Option<Duration>]) -> (Option<(Duration, Duration)>, usize) {
    let mut ok: Vec<Duration> = samples.iter().flatten().copied().collect();
    ok.sort();
    let n = ok.len();
    if ok.is_empty() {
        return (None, 0);
    }
    (Some((percentile(&ok, 0.50), percentile(&ok, 0.99))), n)
}

/// What one case measured.
#[derive(Default)]
struct Case {
    n: usize,
    setup: Duration,
    settings: String,
    /// Spawn → every VIP owned in the holder's map (and, dsr, every table in place).
    cold_dataplane: Option<Duration>,
    /// Spawn → first GARP of the last VIP.
    cold_announced: Option<Duration>,
    /// (owned, tables, announced) when cold start ended.
    cold_reached: (usize, usize, usize),
    statuses_written: Option<Duration>,
    create_status: Vec<Option<Duration>>,
    create_garp: Vec<Option<Duration>>,
    change_live: Vec<Option<Duration>>,
    rss: [u64; 2],
    maps: u64,
    maps_percpu: u64,
    map_breakdown: String,
    unplaced: u64,
    statuses_seen: usize,
    change_skipped: usize,
    /// The holder's own account of the endpoint-change phase (its "took long" log lines).
    change_costs: String,
    cpu_pct: [f64; 2],
    /// One /metrics scrape of the holder: its CPU time, wall time, body bytes and lines.
    scrape: Option<(Duration, Duration, usize, usize)>,
    steady: [Verbs; 2],
    failover: Verbs,
    takeover: Option<Duration>,
    takeover_vips: usize,
    failover_quiet: bool,
    /// Spawn → the start of the first `QUIET` without API writes but Lease renewals (a pass
    /// that computes longer than that before it writes again looks the same).
    quiet: Option<Duration>,
    takeover_reached: (usize, usize),
    log_notes: Vec<String>,
}

struct Bounds {
    settle: Duration,
    cold: Duration,
    stall: Duration,
    phase: Duration,
}

/// Poll every `every` until `done` says so, nothing moved for `b.stall`, or `cap` passed.
/// `progress` returns a value that changes while things move, and whether it is done.
fn until<T: PartialEq + Clone>(
    cap: Duration,
    stall: Duration,
    every: Duration,
    mut progress: impl FnMut() -> Result<(T, bool)>,
) -> Result<T> {
    let start = Instant::now();
    let mut moved = Instant::now();
    let mut last: Option<T> = None;
    loop {
        let (v, done) = progress()?;
        if done || start.elapsed() > cap || moved.elapsed() > stall || stopped() {
            return Ok(v);
        }
        if last.as_ref() != Some(&v) {
            moved = Instant::now();
            last = Some(v);
        }
        std::thread::sleep(every);
    }
}

fn config(dir: &Path, node: &str, url: &str, settings: &Settings) -> Result<PathBuf> {
    let kc = fake_apiserver::kubeconfig(dir, url, node)?;
    let cfg = dir.join(format!("{node}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "interface: eth0\nmode: xdp\nmetrics_addr: 127.0.0.1:9472\npin_dir: {PIN_DIR}/{node}\n{}election:\n  kubeconfig: {}\n  identity: {node}\n  services: true\n",
            settings.yaml(),
            kc.display()
        ),
    )?;
    Ok(cfg)
}

fn run_case(quick: bool, vip_bin: &Path, n: usize, mode: Mode) -> Result<Case> {
    let b = Bounds {
        cold: Duration::from_secs(if quick { 60 } else { 180 }),
        stall: Duration::from_secs(if quick { 10 } else { 20 }),
        phase: Duration::from_secs(if quick { 20 } else { 60 }),
        settle: Duration::from_secs(if quick { 30 } else { 150 }),
    };
    let settings = Settings::new(n, mode);
    let mut case = Case {
        n,
        settings: settings.describe(),
        ..Case::default()
    };
    let prefix = format!("{PREFIX}sc");
    let bed = Bed::new(
        &prefix,
        &[
            ("client", "192.0.2.10/24"),
            ("node1", "192.0.2.11/24"),
            ("node2", "192.0.2.12/24"),
            ("api", "192.0.2.2/24"),
        ],
    );
    let api_ns = &bed.host("api").ns;
    let (api, url) = ApiThread::start(format!("{}:0", bed.host("api").addr).parse()?, |job| {
        api_ns.spawn(job)
    })?;
    let server = api.server();
    let dir = std::env::temp_dir().join("vip-bench-scale");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    // Setup: the pool, N Services and their EndpointSlices, straight into the store.
    let t = Instant::now();
    server
        .insert(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubevip", "namespace": "kube-system"},
            "data": {"range-global": POOL}
        }))
        .map_err(anyhow::Error::msg)?;
    for i in 0..n {
        server.insert(slice_for(i)).map_err(anyhow::Error::msg)?;
        server
            .insert(service(&service_name(i), mode))
            .map_err(anyhow::Error::msg)?;
    }
    case.setup = t.elapsed();
    eprintln!(
        "  {n} {} services + slices inserted in {:.2} s",
        mode.name(),
        case.setup.as_secs_f64()
    );

    let statuses = Statuses::start(server);
    let mut garps = Garps {
        cap: Capture::start(bed.host("client"), 0x0806),
        read: 0,
        first: HashMap::new(),
    };
    let mut nodes = Vec::new();
    let t0 = Instant::now();
    for (k, name) in NODES.iter().enumerate() {
        let cfg = config(&dir, name, &url, &settings)?;
        let log = dir.join(format!("{name}.log"));
        let mut cmd = bed.host(name).ns.command(vip_bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&log)?));
        die_with_parent(&mut cmd);
        nodes.push(Node {
            proc: Proc {
                child: cmd
                    .spawn()
                    .with_context(|| format!("starting {}", vip_bin.display()))?,
            },
            log,
            pins: PathBuf::from(format!("{PIN_DIR}/{name}")),
            token: NODES[k],
            mac: parse_mac(&bed.host(name).mac),
        });
    }

    // Profiling (`VIP_BENCH_SCALE_PERF=<dir>`): both daemons' cold start, sampled by perf.
    let mut cold_perf = Profile::start("cold", n, mode, &nodes);

    // Cold start. The holder is the node whose MAC announces.
    let mut holder: Option<usize> = None;
    let (mut t_dp, mut t_an) = (None, None);
    let mut last_unplaced: Option<u64> = None;
    let reached = until(b.cold, b.stall, Duration::from_millis(100), || {
        for nd in nodes.iter_mut() {
            if !nd.alive() {
                bail!("vip on {} exited:\n{}", nd.token, nd.log_tail());
            }
        }
        garps.update();
        // Reading the whole store is not free: only once the data plane is done.
        if t_dp.is_some() && t_an.is_some() {
            statuses.rescan(server);
        }
        let written = statuses.count();
        if holder.is_none() {
            // The Lease's holder, or else whoever announces first.
            let lease = server
                .objects("leases")
                .into_iter()
                .find_map(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string));
            holder = (0..2)
                .find(|&k| lease.as_deref() == Some(NODES[k]))
                .or_else(|| (0..2).find(|&k| garps.announced_by(nodes[k].mac, t0).0 > 0));
        }
        let Some(h) = holder else {
            return Ok(((0, 0, 0, 0, written), false));
        };
        let (owned, tables) = dataplane_counts(&nodes[h]);
        let (announced, last) = garps.announced_by(nodes[h].mac, t0);
        let tables_ok = mode == Mode::Local || tables >= n;
        // A scrape of /metrics costs the daemon work proportional to its services and
        // backends: asked only once the maps are complete, not on every poll (a scrape every
        // 100 ms slowed the holder's cold start it was measuring).
        if owned >= n && tables_ok && (t_dp.is_none() || last_unplaced.is_none()) {
            last_unplaced = unplaced(&bed, NODES[h]);
        }
        let unplaced = last_unplaced;
        if t_dp.is_none() && owned >= n && tables_ok && unplaced == Some(0) {
            t_dp = Some(t0.elapsed());
        }
        if t_an.is_none() && announced >= n {
            t_an = last.map(|l| l - t0);
        }
        Ok((
            (owned, tables, announced, unplaced.unwrap_or(0), written),
            t_dp.is_some() && t_an.is_some() && written >= n,
        ))
    })?;
    case.cold_dataplane = t_dp;
    case.cold_announced = t_an;
    case.cold_reached = (reached.0, reached.1, reached.2);
    case.unplaced = reached.3;
    case.statuses_seen = reached.4;
    case.statuses_written = {
        let s = statuses.seen.lock().map(|m| m.len()).unwrap_or(0);
        (s >= n).then(|| {
            statuses
                .seen
                .lock()
                .map(|m| m.values().map(|(t, _)| *t - t0).max())
                .ok()
                .flatten()
        })
    }
    .flatten();
    if let Some(p) = cold_perf.take() {
        p.stop();
    }
    let Some(h) = holder else {
        bail!(
            "no node holds the lease or announced a VIP after {:.0} s:\n{}\n{}",
            t0.elapsed().as_secs_f64(),
            nodes[0].log_tail(),
            nodes[1].log_tail()
        );
    };
    let s = 1 - h;
    eprintln!(
        "  cold start: holder {}, reached owned/tables/announced {:?} of {n}: data plane {:?}, announced {:?}",
        NODES[h], reached, t_dp, t_an
    );

    // Idle: the GARP bursts (2 s) go by, then wait for the nodes' API writes other than
    // Lease renewals to stop (the holder may still be writing Events and annotations).
    std::thread::sleep(Duration::from_secs(3));
    let tokens: Vec<&str> = nodes.iter().map(|nd| nd.token).collect();
    case.quiet = quiet(server, &tokens, QUIET, b.settle).map(|since| since - t0);
    let req0: Vec<usize> = nodes
        .iter()
        .map(|nd| server.requests_by(nd.token).len())
        .collect();
    let cpu0: Vec<Duration> = nodes.iter().map(|nd| testbed::cpu_time(nd.pid())).collect();
    let w0 = Instant::now();
    std::thread::sleep(IDLE);
    let secs = w0.elapsed().as_secs_f64();
    for k in 0..2 {
        let used = testbed::cpu_time(nodes[k].pid()) - cpu0[k];
        case.cpu_pct[k] = used.as_secs_f64() / secs * 100.0;
        case.steady[k] = Verbs::of(&requests_since(server, nodes[k].token, req0[k]), secs);
        case.rss[k] = rss_bytes(nodes[k].pid());
    }
    // Roles in the case: [holder, standby].
    case.cpu_pct = [case.cpu_pct[h], case.cpu_pct[s]];
    case.steady = [case.steady[h].clone(), case.steady[s].clone()];
    case.rss = [case.rss[h], case.rss[s]];
    // One scrape, as Prometheus would make every 15-30 s: what it costs the holder.
    let c0 = testbed::cpu_time(nodes[h].pid());
    let w0 = Instant::now();
    if let Ok((200, body)) = testbed::http_get(
        &bed.host(NODES[h]).ns,
        "127.0.0.1:9472".parse()?,
        "/metrics",
    ) {
        case.scrape = Some((
            testbed::cpu_time(nodes[h].pid()) - c0,
            w0.elapsed(),
            body.len(),
            body.lines().filter(|l| !l.starts_with('#')).count(),
        ));
    }
    let ids;
    (case.maps, case.maps_percpu, ids) = map_memlock(nodes[h].pid());
    case.map_breakdown = map_breakdown(&ids);

    // Creates, one after another, N present.
    let phase = Instant::now();
    let mut misses = 0;
    for k in 0..CREATES {
        if phase.elapsed() > b.phase || misses >= 5 || stopped() {
            break;
        }
        let i = n + k;
        let name = service_name(i);
        if mode == Mode::Dsr {
            server.insert(slice_for(i)).map_err(anyhow::Error::msg)?;
        }
        let c0 = Instant::now();
        server
            .insert(service(&name, mode))
            .map_err(anyhow::Error::msg)?;
        let mac = nodes[h].mac;
        let got = testbed::poll(Duration::from_secs(3), || {
            garps.update();
            statuses.rescan(server);
            let (ts, ip) = statuses.get(&name)?;
            garps.first_of(ip, mac).map(|g| (ts, g))
        });
        match got {
            Some((ts, g)) => {
                misses = 0;
                case.create_status.push(Some(ts - c0));
                case.create_garp.push(Some(g - c0));
            }
            None => {
                misses += 1;
                case.create_status
                    .push(statuses.get(&name).map(|(ts, _)| ts - c0));
                case.create_garp.push(None);
            }
        }
    }

    // Endpoint changes (dsr): one endpoint of one service replaced; timed to the flip of the
    // service's entry on the holder, then checked to point at a table holding the new one.
    if mode == Mode::Dsr {
        let services_map = nodes[h].services().context("holder's SERVICES map")?;
        let log_at = std::fs::metadata(&nodes[h].log).map_or(0, |m| m.len() as usize);
        let perf = Profile::start("change", n, mode, &nodes[h..=h]);
        let phase = Instant::now();
        let mut misses = 0;
        // Services not placed whole are skipped: try up to 20 candidates per sample.
        for k in 0..CHANGES * 20 {
            if case.change_live.len() >= CHANGES
                || phase.elapsed() > b.phase
                || misses >= 5
                || stopped()
            {
                break;
            }
            // Spread over the services present from the start.
            let i = (k * 7919) % n;
            let Some((_, ip)) = statuses.get(&service_name(i)) else {
                continue;
            };
            let key = ServiceKey {
                addr_be: ip.octets(),
                port_be: PORT.to_be_bytes(),
                proto: vip_common::PROTO_TCP,
                _pad: 0,
            };
            let Ok(mut before) = services_map.get(&key, 0) else {
                case.change_skipped += 1;
                continue;
            };
            let mut addrs: Vec<String> = (0..ENDPOINTS).map(|j| endpoint_addr(100, i, j)).collect();
            // Only services placed whole (a limit can leave backends out of the table).
            if !ring_holds(&nodes[h].pins, &before, addrs[1].parse()?)? {
                case.change_skipped += 1;
                continue;
            }
            let fresh: Ipv4Addr = endpoint_addr(120, k, 0).parse()?;
            addrs[0] = fresh.to_string();
            let c0 = Instant::now();
            server
                .update(slice(&service_name(i), &addrs))
                .map_err(anyhow::Error::msg)?;
            // Live = the entry flipped to a table that holds the new backend (checked on
            // each flip, so a flip to a table without it does not count).
            let mut live = None;
            while c0.elapsed() < Duration::from_secs(2) && live.is_none() {
                if let Ok(v) = services_map.get(&key, 0) {
                    if v != before {
                        let t = c0.elapsed();
                        if ring_holds(&nodes[h].pins, &v, fresh)? {
                            live = Some(t);
                        }
                        before = v;
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            if live.is_some() {
                misses = 0;
            } else {
                misses += 1;
            }
            case.change_live.push(live);
        }
        if let Some(p) = perf {
            p.stop();
        }
        let log = std::fs::read_to_string(&nodes[h].log).unwrap_or_default();
        case.change_costs = change_costs(log.get(log_at..).unwrap_or(""));
    }

    // Failover: the holder stops (SIGTERM); the other node must own and announce every VIP
    // the holder had.
    let (had, _) = dataplane_counts(&nodes[h]);
    let r0 = server.requests_by(nodes[s].token).len();
    let f0 = Instant::now();
    nodes[h].stop();
    let mut t_take = None;
    let took = until(b.phase, b.stall, Duration::from_millis(200), || {
        if !nodes[s].alive() {
            bail!("vip on {} exited:\n{}", nodes[s].token, nodes[s].log_tail());
        }
        garps.update();
        let (owned, _) = dataplane_counts(&nodes[s]);
        let (announced, last) = garps.announced_by(nodes[s].mac, f0);
        if t_take.is_none() && owned >= had && announced >= had {
            t_take = last.map(|l| l.max(f0) - f0);
        }
        Ok(((owned, announced), t_take.is_some()))
    })?;
    case.takeover = t_take;
    case.takeover_reached = took;
    case.takeover_vips = had;
    // Until the new holder's writes stop (what a failover costs the API in all), and at
    // least the idle window's length, so a quick takeover is not a rate over a blip.
    std::thread::sleep(IDLE.saturating_sub(f0.elapsed()));
    case.failover_quiet = quiet(server, &[nodes[s].token], QUIET, b.settle).is_some();
    let secs = f0.elapsed().as_secs_f64();
    case.failover = Verbs::of(&requests_since(server, nodes[s].token, r0), secs);

    for nd in nodes.iter() {
        let log = std::fs::read_to_string(&nd.log).unwrap_or_default();
        let warn = log.lines().filter(|l| l.contains("WARN")).count();
        let err = log.lines().filter(|l| l.contains("ERROR")).count();
        if warn + err > 0 {
            let first = log
                .lines()
                .find(|l| l.contains("ERROR") || l.contains("WARN"))
                .unwrap_or("");
            case.log_notes.push(format!(
                "{} {} N={n}: {warn} warnings, {err} errors in the log; first: `{}`",
                mode.name(),
                nd.token,
                first
                    .chars()
                    .take(300)
                    .collect::<String>()
                    .replace('|', "/")
            ));
        }
    }
    drop(nodes);
    drop(statuses);
    drop(api);
    drop(bed);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(PIN_DIR);
    Ok(case)
}

/// Whether the table `v` points at holds a backend with address `want`.
fn ring_holds(pins: &Path, v: &ServiceValue, want: Ipv4Addr) -> Result<bool> {
    let rings: Array<_, u32> =
        Array::try_from(Map::Array(MapData::from_pin(pins.join(pin_names::RINGS))?))?;
    let backends: Array<_, BackendValue> = Array::try_from(Map::Array(MapData::from_pin(
        pins.join(pin_names::BACKENDS),
    )?))?;
    let mut ids = HashSet::new();
    for slot in v.ring_off..v.ring_off + v.ring_size {
        if let Ok(id) = rings.get(&slot, 0) {
            if id != RING_EMPTY {
                ids.insert(id);
            }
        }
    }
    Ok(ids.into_iter().any(|id| {
        backends
            .get(&id, 0)
            .is_ok_and(|b| Ipv4Addr::from(b.addr_be) == want)
    }))
}

/// A goal not reached at all: no ratio to miss it by.
fn missed(mut row: Row, goal: &str, why: &str) -> Row {
    row.goal = format!("≤ {goal}");
    row.met = format!("**missed**: {why}");
    row
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "not reached".into(), ms)
}

fn ratio_of(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    Some(a?.as_secs_f64() / b?.as_secs_f64().max(1e-9))
}

fn with_ratio(row: Row, r: Option<f64>) -> Row {
    match r {
        Some(r) if r.is_finite() => row.ratio(r),
        _ => row,
    }
}

fn latency_row(
    label: String,
    big: &Case,
    small: &Case,
    pick: impl Fn(&Case) -> &[Option<Duration>],
    goal: Option<f64>,
) -> Row {
    let show = |c: &Case| {
        let samples = pick(c);
        match p50_p99(samples) {
            (Some((p50, p99)), k) => format!(
                "p50 {} / p99 {} ({k}/{} done)",
                ms(p50),
                ms(p99),
                samples.len()
            ),
            (None, _) if samples.is_empty() => "not run".into(),
            (None, _) => format!("none of {} done", samples.len()),
        }
    };
    let p99 = |c: &Case| p50_p99(pick(c)).0.map(|x| x.1);
    let mut row =
        Row::new(label)
            .result(show(big))
            .baseline(format!("N={}: {}", small.n, show(small)));
    row = with_ratio(row, ratio_of(p99(big), p99(small)));
    if let Some(g) = goal {
        let shown = format!("p99 {}", ms(Duration::from_secs_f64(g)));
        // A run where some did not complete at all misses whatever the completed ones say.
        let samples = pick(big);
        let missing = samples.iter().filter(|s| s.is_none()).count();
        row = match p99(big) {
            Some(d) if missing == 0 => row.goal_at_most(d.as_secs_f64(), g, &shown),
            _ => missed(
                row,
                &shown,
                &format!("{missing} of {} never done", samples.len()),
            ),
        };
    }
    row
}

fn rows(mode: Mode, small: &Case, big: &Case, out: &mut Vec<Row>) {
    let m = mode.name();
    let nn = big.n;
    let n_label = |s: &str| format!("scale {m}, N={nn}: {s}");
    let reached = |c: &Case| {
        let (o, t, a) = c.cold_reached;
        if mode == Mode::Dsr {
            format!(
                "{o} owned, {t} with tables, {} unplaced, {a} announced of {}",
                c.unplaced, c.n
            )
        } else {
            format!(
                "{o} owned, {} unplaced, {a} announced of {}",
                c.unplaced, c.n
            )
        }
    };
    let cold = |c: &Case, d: Option<Duration>| match d {
        Some(d) => ms(d),
        None => format!("not reached ({})", reached(c)),
    };
    out.push(with_ratio(
        Row::new(n_label(
            "cold start → every VIP in the data plane (holder's maps)",
        ))
        .result(cold(big, big.cold_dataplane))
        .baseline(format!(
            "N={}: {}",
            small.n,
            cold(small, small.cold_dataplane)
        )),
        ratio_of(big.cold_dataplane, small.cold_dataplane),
    ));
    let row = with_ratio(
        Row::new(n_label(
            "cold start → every VIP announced (last first GARP)",
        ))
        .result(cold(big, big.cold_announced))
        .baseline(format!(
            "N={}: {}",
            small.n,
            cold(small, small.cold_announced)
        )),
        ratio_of(big.cold_announced, small.cold_announced),
    );
    out.push(match (big.cold_announced, big.cold_dataplane) {
        (Some(a), Some(_)) => row.goal_at_most(a.as_secs_f64(), 5.0, "5 s"),
        (Some(a), None) => missed(
            row,
            "5 s",
            &format!(
                "announced in {} but not all in the data plane ({})",
                ms(a),
                reached(big)
            ),
        ),
        (None, _) => missed(row, "5 s", "not every VIP announced"),
    });
    out.push(with_ratio(
        Row::new(n_label("cold start → every status written"))
            .result(opt_ms(big.statuses_written))
            .baseline(format!("N={}: {}", small.n, opt_ms(small.statuses_written))),
        ratio_of(big.statuses_written, small.statuses_written),
    ));
    let q = |c: &Case| {
        c.quiet.map_or_else(
            || "writes still going after the 150 s bound".to_string(),
            ms,
        )
    };
    out.push(with_ratio(
        Row::new(n_label(&format!(
            "cold start → first {} s without API writes but Lease renewals (the rows below wait for it; writes may resume)",
            QUIET.as_secs()
        )))
        .result(q(big))
        .baseline(format!("N={}: {}", small.n, q(small))),
        ratio_of(big.quiet, small.quiet),
    ));
    out.push(latency_row(
        n_label(&format!(
            "Service create → status written, {CREATES} creates"
        )),
        big,
        small,
        |c| &c.create_status,
        None,
    ));
    out.push(latency_row(
        n_label(&format!("Service create → first GARP, {CREATES} creates")),
        big,
        small,
        |c| &c.create_garp,
        Some(0.150),
    ));
    if mode == Mode::Dsr {
        out.push(latency_row(
            n_label(&format!(
                "one endpoint change → new ring live, {CHANGES} changes"
            )),
            big,
            small,
            |c| &c.change_live,
            Some(0.020),
        ));
    }
    for (k, role) in ["holder", "standby"].iter().enumerate() {
        out.push(
            Row::new(n_label(&format!(
                "daemon RSS (BPF map mappings left out), {role}"
            )))
            .result(mib(big.rss[k]))
            .baseline(format!("N={}: {}", small.n, mib(small.rss[k])))
            .ratio(big.rss[k] as f64 / small.rss[k].max(1) as f64)
            .goal_at_most(big.rss[k] as f64, 128.0 * 1048576.0, "128 MiB"),
        );
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    // The daemon's own sizing for the case's settings on 64 possible CPUs (its formula
    // matches the kernel's charge: a kernel test checks it against fdinfo).
    let at64 = |c: &Case| -> u64 {
        use vip_userspace::dataplane::{load::Sizes, memory::map_memory};
        let s = Settings::new(c.n, mode);
        let sizes = Sizes {
            max_services: s.max_services,
            ring_slots: s.ring_slots.unwrap_or(vip_common::RING_SLOTS),
            max_vips: s.max_vips,
            max_backends: s.max_backends.unwrap_or(vip_common::MAX_BACKENDS),
            ..Sizes::default()
        };
        map_memory(&sizes, 64).iter().map(|(_, b)| b).sum()
    };
    out.push(
        Row::new(n_label(&format!(
            "BPF maps, holder (kernel memlock, {ncpu} CPUs)"
        )))
        .result(mib(big.maps))
        .baseline(format!("N={}: {}", small.n, mib(small.maps)))
        .ratio(big.maps as f64 / small.maps.max(1) as f64)
        .goal_at_most(big.maps as f64, 256.0 * 1048576.0, "256 MiB"),
    );
    out.push(
        Row::new(n_label(
            "BPF maps, computed for a 64-CPU node (vip's map_memory, these settings)",
        ))
        .result(mib(at64(big)))
        .baseline(format!("N={}: {}", small.n, mib(at64(small))))
        .ratio(at64(big) as f64 / at64(small).max(1) as f64)
        .goal_at_most(at64(big) as f64, 256.0 * 1048576.0, "256 MiB"),
    );
    for (k, role) in ["holder", "standby"].iter().enumerate() {
        out.push(
            Row::new(n_label(&format!(
                "idle CPU, {role} ({} s window)",
                IDLE.as_secs()
            )))
            .result(format!("{:.2} % of a core", big.cpu_pct[k]))
            .baseline(format!("N={}: {:.2} %", small.n, small.cpu_pct[k]))
            .ratio(big.cpu_pct[k] / small.cpu_pct[k].max(1e-6))
            .goal_at_most(big.cpu_pct[k], 0.3, "0.3 %"),
        );
    }
    let scrape = |c: &Case| match c.scrape {
        Some((cpu, wall, bytes, series)) => format!(
            "{:.1} ms CPU ({:.1} ms wall), {:.0} KiB, {series} series",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3,
            bytes as f64 / 1024.0
        ),
        None => "failed".into(),
    };
    let mut row = Row::new(n_label("one /metrics scrape, holder"))
        .result(scrape(big))
        .baseline(format!("N={}: {}", small.n, scrape(small)));
    if let (Some(b), Some(s)) = (big.scrape, small.scrape) {
        row = row.ratio(b.0.as_secs_f64() / s.0.as_secs_f64().max(1e-6));
    }
    out.push(row);
    for (k, role) in ["holder", "standby"].iter().enumerate() {
        let (b, s) = (&big.steady[k], &small.steady[k]);
        let r = b.writes_per_s() / s.writes_per_s().max(1e-9);
        let mut row = Row::new(n_label(&format!("API writes/s at steady state, {role}")))
            .result(format!("{:.2}/s ({}/s)", b.writes_per_s(), b.describe()))
            .baseline(format!(
                "N={}: {:.2}/s ({}/s)",
                small.n,
                s.writes_per_s(),
                s.describe()
            ));
        if s.writes_per_s() > 0.0 {
            row = row.ratio(r);
        }
        // "Independent of N": within 20 % of the smaller cluster's figure (a 10 s window
        // counts whole requests).
        let v = if s.writes_per_s() > 0.0 {
            r
        } else if b.writes_per_s() > 0.0 {
            f64::INFINITY
        } else {
            1.0
        };
        let goal = format!("1.2× N={} (independent of N)", small.n);
        out.push(if v.is_finite() {
            row.goal_at_most(v, 1.2, &goal)
        } else {
            missed(row, &goal, &format!("none at N={}", small.n))
        });
    }
    let take = |c: &Case| match c.takeover {
        Some(d) => format!("{} ({} VIPs)", ms(d), c.takeover_vips),
        None => format!(
            "not reached ({} owned, {} announced)",
            c.takeover_reached.0, c.takeover_reached.1
        ),
    };
    out.push(with_ratio(
        Row::new(n_label(
            "failover (holder SIGTERM) → other node owns and announced every VIP",
        ))
        .result(take(big))
        .baseline(format!("N={}: {}", small.n, take(small))),
        ratio_of(big.takeover, small.takeover),
    ));
    let (b, s) = (&big.failover, &small.failover);
    let mut row = Row::new(n_label(&format!(
        "API requests/s during failover, new holder (over {:.0} s{})",
        b.secs,
        if big.failover_quiet {
            format!(", until {} s without its writes", QUIET.as_secs())
        } else {
            ", its writes still going".to_string()
        }
    )))
    .result(format!(
        "writes {:.2}/s ({}/s)",
        b.writes_per_s(),
        b.describe()
    ))
    .baseline(format!(
        "N={}: writes {:.2}/s ({}/s)",
        small.n,
        s.writes_per_s(),
        s.describe()
    ));
    if s.writes_per_s() > 0.0 {
        row = row.ratio(b.writes_per_s() / s.writes_per_s());
    }
    out.push(row);
}

pub fn run(
    quick: bool,
    vip_bin: Option<&Path>,
    out: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let vip_bin = crate::vip_bin(vip_bin)?;
    let sizes = if quick { [100, 1000] } else { [1000, 10_000] };
    let mut desc = Vec::new();
    // `VIP_BENCH_SCALE_MODES=dsr` (or `local`): one mode only, for profiling (the table it
    // writes into BENCHMARKS.md then lacks the other mode: not one to commit).
    let only = std::env::var("VIP_BENCH_SCALE_MODES").ok();
    for mode in [Mode::Local, Mode::Dsr] {
        if only.as_deref().is_some_and(|m| m != mode.name()) {
            continue;
        }
        let mut cases = Vec::new();
        for n in sizes {
            if stopped() {
                bail!("interrupted");
            }
            eprintln!("  scale: {} N={n}", mode.name());
            let t = Instant::now();
            let c = run_case(quick, vip_bin, n, mode)?;
            eprintln!("  case took {:.1} s", t.elapsed().as_secs_f64());
            desc.push(format!(
                "{} N={n}: setup (inserting {n} Services + {n} EndpointSlices into the store) {:.2} s, not counted; settings {}",
                mode.name(),
                c.setup.as_secs_f64(),
                c.settings
            ));
            desc.push(format!(
                "{} N={n}: holder's largest maps: {}; `vip_services_unplaced` at the end of cold start {}",
                mode.name(),
                c.map_breakdown,
                c.unplaced
            ));
            if mode == Mode::Dsr && !c.change_costs.is_empty() {
                desc.push(format!(
                    "dsr N={n}: where an endpoint change's time goes, from the holder's log over the change phase: {}",
                    c.change_costs
                ));
            }
            if mode == Mode::Dsr && c.change_skipped > 0 {
                desc.push(format!(
                    "dsr N={n}: {} services picked for an endpoint change were skipped: not placed whole in the data plane (their live table lacks one of their backends)",
                    c.change_skipped
                ));
            }
            notes.extend(c.log_notes.iter().cloned());
            cases.push(c);
        }
        rows(mode, &cases[0], &cases[1], out);
    }
    notes.push(format!(
        "scale: testbed bed (bridge; client, node1, node2, API server host), two `vip run` daemons (XDP on eth0, `election: {{kubeconfig, identity, services: true}}`, default lease timings 15/10/2 s, one shared lease) and the in-process fake API server, all on the same 2 cores; N LoadBalancer Services (one TCP port) × one EndpointSlice of {ENDPOINTS} ready endpoints (`nodeName` alternating node1/node2, addresses off the bed), pool `range-global: {POOL}` in `kube-system/kubevip`; dsr Services annotated `vip.dev/forwarding-mode: dsr`. Each N=big row's baseline is the same measurement at the smaller N in the same run. Cold start: both daemons spawned at once on a cluster whose Services have no address yet, until the holder's pinned VIPS map owns all N (dsr: every SERVICES entry has a table) and the client captured a first gratuitous ARP for each (and `vip_services_unplaced` is 0; polled every 100 ms; GARP times are capture times); bounded at {} s or 20 s without progress. Creates: one Service (dsr: its slice first) at a time, {CREATES} at most, each waited for up to 3 s (status from the server's change feed, GARP from the capture), phase bounded at 60 s or 5 misses in a row; endpoint changes likewise: one endpoint of an existing Service replaced, timed to the holder's SERVICES entry flipping to a table that holds the new backend (entry polled every 0.2 ms, the table read on each flip; only Services whose live table holds all their backends are picked). Memory and CPU after cold start + 3 s and once no node made an API write but Lease renewals for {} s (bounded at 150 s); idle CPU = utime+stime over {} s; API rates by verb from the server's request log per client (`watch` = a watch request opened), writes = create+update+patch+delete. Failover: SIGTERM to the holder, rates of the other node from then until its writes but Lease renewals stopped for {} s (at least 10 s, at most 10 + 150 s).",
        if quick { 60 } else { 180 },
        QUIET.as_secs(),
        IDLE.as_secs(),
        QUIET.as_secs()
    ));
    notes.extend(desc);
    Ok(())
}

/// The daemon's "apply pass took long" and "view publication took long" lines (logged over
/// 5 ms) in `log`: how many, and p50/p99 of each part.
fn change_costs(log: &str) -> String {
    let field = |l: &str, k: &str| -> Option<f64> {
        let i = l.find(&format!("{k}="))? + k.len() + 1;
        l[i..].split_whitespace().next()?.parse().ok()
    };
    let pct = |v: &mut Vec<f64>| -> String {
        if v.is_empty() {
            return "none".into();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        format!("p50 {:.1} ms / p99 {:.1} ms", at(0.5), at(0.99))
    };
    let (mut plan, mut converge, mut copy) = (Vec::new(), Vec::new(), Vec::new());
    for l in log.lines() {
        if l.contains("apply pass took long") {
            plan.extend(field(l, "plan_ms"));
            converge.extend(field(l, "converge_ms"));
        } else if l.contains("view publication took long") {
            copy.extend(field(l, "copy_ms"));
        }
    }
    if plan.is_empty() && copy.is_empty() {
        return String::new();
    }
    format!(
        "{} apply passes over 5 ms (planning {}, converging {}), {} view copies over 5 ms ({})",
        plan.len(),
        pct(&mut plan),
        pct(&mut converge),
        copy.len(),
        pct(&mut copy)
    )
}
