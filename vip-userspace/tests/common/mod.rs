//! Shared by the namespace tests: the daemon as a child process in the node's namespace,
//! and its metrics.
#![allow(dead_code)]
pub mod raft;

use std::{
    fs::File,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use testbed::{
    arping, http_get, make_dsr_backend, parse_mac, poll, Bed, Capture, Host, Netns, Proc, TcpServer,
};
use vip_userspace::{dataplane::maps::StatsReader, net::garp::GarpSocket};

pub const METRICS: &str = "127.0.0.1:9472";
pub const VIP: &str = "192.0.2.100";

pub struct Daemon {
    pub proc: Proc,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(bed: &Bed, args: &[&str]) -> Daemon {
        Self::start_in(bed, "node", args)
    }

    /// The daemon on host `role` of the bed.
    pub fn start_in(bed: &Bed, role: &str, args: &[&str]) -> Daemon {
        Self::fresh_log(bed, role);
        Self::start_with_env(bed, role, args, &[])
    }

    /// Empty the log of host `role`'s daemon (the launchers append to it).
    pub fn fresh_log(bed: &Bed, role: &str) {
        let log = std::env::temp_dir().join(format!("{}-{role}-vip.log", bed.prefix));
        File::create(&log).unwrap();
    }

    /// The daemon on host `role` with extra environment variables; its log is appended to
    /// (a restarted daemon's log follows its predecessor's).
    pub fn start_with_env(bed: &Bed, role: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut d = Self::spawn_with(bed, role, args, env, |_| {});
        d.wait_ready(bed, role);
        d
    }

    /// The daemon on host `role`, `configure` applied to its command, not waited for.
    pub fn spawn_with(
        bed: &Bed,
        role: &str,
        args: &[&str],
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut std::process::Command),
    ) -> Daemon {
        let node = bed.host(role);
        let log = std::env::temp_dir().join(format!("{}-{role}-vip.log", bed.prefix));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = node.ns.command(env!("CARGO_BIN_EXE_vip"));
        cmd.arg("run")
            .args(["--interface", "eth0", "--metrics-addr", METRICS])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(f));
        configure(&mut cmd);
        Daemon {
            proc: Proc::spawn(cmd),
            log,
        }
    }

    /// Until `/readyz` answers 200 (10 s at most); panics with the log if it exits first.
    pub fn wait_ready(&mut self, bed: &Bed, role: &str) {
        let log = self.log.clone();
        let child = &mut self.proc.child;
        wait_ready(
            &bed.host(role).ns,
            METRICS.parse().unwrap(),
            || match child.try_wait() {
                Ok(Some(st)) => Some(st.to_string()),
                _ => None,
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }

    pub fn pid(&self) -> i32 {
        self.proc.child.id() as i32
    }

    /// XDP mode owning VIP, maps pinned under `pins`.
    pub fn start_xdp(bed: &Bed, pins: &std::path::Path) -> Daemon {
        let pins = pins.to_str().unwrap();
        Daemon::start(bed, &["--vip", VIP, "--mode", "xdp", "--pin-dir", pins])
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit status within 10 s.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.proc.signal(libc::SIGTERM);
        self.proc
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("daemon did not exit on SIGTERM:\n{}", self.logs()))
    }
}

/// A load-balancer bed `prefix`: client 192.0.2.10, node 192.0.2.11 and `backends`, each
/// with a TCP server on :8080 greeting with its name and a newline. dsr (`nat` false):
/// backends on the client's segment (192.0.2.21..) with the VIP on their lo, not answering
/// ARP for it; nat: backends on their own subnet (198.51.100.21..) behind the node
/// (198.51.100.1, their gateway), one arm.
pub fn lb_bed(prefix: &str, backends: &[&str], nat: bool) -> (Bed, Vec<TcpServer>) {
    if nat {
        lb_bed_with(prefix, &[], backends)
    } else {
        lb_bed_with(prefix, backends, &[])
    }
}

/// [`lb_bed`] with both kinds of backend: `dsr` ones on the client's segment and `nat` ones
/// behind the node.
pub fn lb_bed_with(prefix: &str, dsr: &[&str], nat: &[&str]) -> (Bed, Vec<TcpServer>) {
    let mut hosts = vec![
        ("client", "192.0.2.10/24".to_string()),
        ("node", "192.0.2.11/24".to_string()),
    ];
    for (i, b) in dsr.iter().enumerate() {
        hosts.push((b, format!("192.0.2.{}/24", 21 + i)));
    }
    for (i, b) in nat.iter().enumerate() {
        hosts.push((b, format!("198.51.100.{}/24", 21 + i)));
    }
    let hosts: Vec<(&str, &str)> = hosts.iter().map(|(r, a)| (*r, a.as_str())).collect();
    let bed = Bed::new(prefix, &hosts);
    if !nat.is_empty() {
        bed.host("node")
            .ns
            .ip(&["addr", "add", "198.51.100.1/24", "dev", "eth0"]);
    }
    let mut tcp = Vec::new();
    for b in dsr.iter().chain(nat) {
        let h = bed.host(b);
        if nat.contains(b) {
            h.ns.ip(&["route", "add", "default", "via", "198.51.100.1"]);
            h.ns.sysctl("net.ipv4.conf.all.accept_redirects", "0");
            h.ns.sysctl("net.ipv4.conf.eth0.accept_redirects", "0");
        } else {
            make_dsr_backend(h, VIP);
        }
        tcp.push(TcpServer::start(
            &h.ns,
            "0.0.0.0:8080".parse().unwrap(),
            &format!("{b}\n"),
        ));
    }
    (bed, tcp)
}

/// Polls `/readyz` at `metrics` in `ns` until it answers 200, for 10 s. `exited` says
/// whether (and how) the daemon ended, `logs` what it wrote; both go into the panic.
pub fn wait_ready(
    ns: &Netns,
    metrics: SocketAddr,
    mut exited: impl FnMut() -> Option<String>,
    logs: impl Fn() -> String,
) {
    let ready = poll(Duration::from_secs(10), || {
        if let Some(st) = exited() {
            panic!("daemon exited early ({st}):\n{}", logs());
        }
        match http_get(ns, metrics, "/readyz") {
            Ok((200, _)) => Some(()),
            _ => None,
        }
    });
    assert!(ready.is_some(), "daemon not ready in 10 s:\n{}", logs());
}

pub fn metrics(bed: &Bed) -> String {
    metrics_of(bed, "node")
}

/// The metrics of the daemon on host `role`.
pub fn metrics_of(bed: &Bed, role: &str) -> String {
    metrics_at(&bed.host(role).ns, METRICS.parse().unwrap())
}

/// The metrics served at `addr` in `ns`.
pub fn metrics_at(ns: &Netns, addr: SocketAddr) -> String {
    let (code, body) = http_get(ns, addr, "/metrics").expect("metrics reachable");
    assert_eq!(code, 200);
    body
}

/// A gauge that may be negative or not there yet (e.g. `vip_raft_leader_id`: -1 with no
/// leader known, absent before the election started): for polling.
pub fn gauge(body: &str, name: &str) -> Option<i64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// (how the attachment came about, link id, program id) from the daemon's metrics `m`.
pub fn attachment(m: &str) -> (String, u64, u64) {
    let how = m
        .lines()
        .find_map(|l| l.strip_prefix("vip_dataplane_attachment{program=\""))
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no attachment metric:\n{m}"))
        .to_string();
    (
        how,
        metric(m, "vip_xdp_link_id"),
        metric(m, "vip_xdp_program_id"),
    )
}

pub fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{body}"))
}

/// Sends an ARP request for the VIP from the client every 20 ms (or `period`) until dropped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// When each request left.
    sent: Arc<std::sync::Mutex<Vec<Instant>>>,
}

impl Prober {
    pub fn start(client: &Host) -> Prober {
        Self::start_every(client, Duration::from_millis(20))
    }

    /// Requests every `interval`.
    pub fn start_every(client: &Host, interval: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let mac = parse_mac(&client.mac);
        let src: std::net::Ipv4Addr = client.addr.parse().unwrap();
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sent2 = sent.clone();
        let thread = client.ns.spawn(move || {
            let sock = eth0_socket();
            let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
            let mut f = vip_userspace::net::garp::frame(mac, vip);
            f[28..32].copy_from_slice(&src.octets()); // a request from the client
            while !stop2.load(Ordering::Relaxed) {
                if sock.send(&f).is_ok() {
                    sent2.lock().unwrap().push(Instant::now());
                }
                std::thread::sleep(interval);
            }
        });
        Prober {
            stop,
            thread: Some(thread),
            sent,
        }
    }

    /// Requests sent after `t`.
    pub fn sent_after(&self, t: Instant) -> usize {
        self.sent.lock().unwrap().iter().filter(|s| **s > t).count()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw ARP socket on eth0 of the namespace the calling thread is in.
fn eth0_socket() -> GarpSocket {
    let c = std::ffi::CString::new("eth0").unwrap();
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    GarpSocket::open(idx).unwrap()
}

/// `host` claims `ip` as its own: one gratuitous ARP from its eth0, with its MAC.
pub fn claim(host: &Host, ip: std::net::Ipv4Addr) {
    let mac = parse_mac(&host.mac);
    host.ns.run(move || {
        eth0_socket()
            .send(&vip_userspace::net::garp::frame(mac, ip))
            .unwrap();
    });
}

/// A capture of ARP at the client and a prober asking for the VIP every `interval`, once
/// the VIP is answered.
pub fn answered_probe(client: &Host, interval: Duration) -> (Capture, Prober) {
    let cap = Capture::start(client, 0x0806);
    let probe = Prober::start_every(client, interval);
    poll(Duration::from_secs(3), || {
        (!replies(&cap).is_empty()).then_some(())
    })
    .expect("the VIP is answered before the fault");
    (cap, probe)
}

/// (arrival, sender MAC) of every ARP reply for the VIP seen by the client.
pub fn replies(cap: &Capture) -> Vec<(Instant, [u8; 6])> {
    let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
    cap.frames()
        .into_iter()
        .filter(|(_, f)| f.len() >= 42 && f[20..22] == [0, 2] && f[28..32] == vip.octets())
        .map(|(t, f)| (t, f[22..28].try_into().unwrap()))
        .collect()
}

/// One ARP request from the client for the VIP: answered with the node's MAC, by the XDP
/// program whose counters are pinned under `pins` (its reply counter moved).
pub fn assert_answered_by_xdp(bed: &Bed, pins: &std::path::Path) {
    let reader = StatsReader::open(pins).expect("pinned counters readable");
    let before = reader.totals().unwrap();
    let mac = arping(bed.host("client"), VIP).expect("ARP answered");
    assert_eq!(mac, bed.host("node").mac, "answered with the node's MAC");
    let after = reader.totals().unwrap();
    assert!(
        after.arp_reply > before.arp_reply,
        "the answer came from XDP (arp_reply {} -> {})",
        before.arp_reply,
        after.arp_reply
    );
}

/// The last ARP answer for the VIP the client saw, once none came for `quiet` (within 5 s).
/// Silence, not a quiet client: the prober must have asked `asked` times after it.
pub fn last_answer(cap: &Capture, probe: &Prober, quiet: Duration, asked: usize) -> Instant {
    let last = poll(Duration::from_secs(5), || {
        let last = replies(cap).last().map(|(t, _)| *t)?;
        (last.elapsed() > quiet).then_some(last)
    })
    .expect("ARP for the VIP went silent");
    let unanswered = probe.sent_after(last);
    assert!(
        unanswered >= asked,
        "asked only {unanswered} times after the last answer"
    );
    last
}

/// Longest time without an ARP answer for the VIP at the client between `from` and `to`.
pub fn longest_silence(cap: &Capture, from: Instant, to: Instant) -> Duration {
    let mut last = from;
    let mut worst = Duration::ZERO;
    for (t, _) in replies(cap)
        .into_iter()
        .filter(|(t, _)| *t > from && *t < to)
    {
        worst = worst.max(t - last);
        last = t;
    }
    worst.max(to - last)
}

/// (arrival, sender MAC) of every gratuitous ARP (RFC 5227 announcement: request with
/// sender = target = the VIP) seen by the client.
pub fn garps(cap: &Capture) -> Vec<(Instant, [u8; 6])> {
    let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
    cap.frames()
        .into_iter()
        .filter(|(_, f)| {
            f.len() >= 42
                && f[20..22] == [0, 1]
                && f[28..32] == vip.octets()
                && f[38..42] == vip.octets()
        })
        .map(|(t, f)| (t, f[22..28].try_into().unwrap()))
        .collect()
}

/// The in-process API server on its own runtime and thread.
pub type Api = fake_apiserver::ApiThread;

/// The API server on `host`'s address (a port of its own), and its URL.
pub fn start_api(host: &Host) -> (Api, String) {
    start_api_in(&host.ns, format!("{}:0", host.addr).parse().unwrap())
}

/// The API server listening on `addr` inside `ns`, and its URL.
pub fn start_api_in(ns: &Netns, addr: SocketAddr) -> (Api, String) {
    Api::start(addr, |job| ns.spawn(job)).unwrap()
}

/// A kubeconfig in `dir` for the API server at `url`, authenticating with bearer `token`.
pub fn kubeconfig(dir: &std::path::Path, url: &str, token: &str) -> PathBuf {
    fake_apiserver::kubeconfig(dir, url, token).unwrap()
}

/// A kube client of the in-process API server, as the node `token` (the server applies
/// faults per bearer token).
pub fn kube_client(server: &fake_apiserver::FakeApiServer, token: &str) -> kube::Client {
    let mut cfg = kube::Config::new(server.url().parse().unwrap());
    cfg.headers.push((
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    ));
    kube::Client::try_from(cfg).unwrap()
}
