//! Shared by the namespace tests: the daemon (testkit's launcher), load-balancer beds, its
//! metrics, and ARP probes of the VIP.
#![allow(dead_code)]
pub mod raft;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use testbed::{
    arping, http_get, make_dsr_backend, parse_mac, poll, Bed, Capture, Host, Netns, TcpServer,
};
use testkit::packet::Packet;
use vip_userspace::{dataplane::maps::StatsReader, net::garp::GarpSocket};

#[allow(unused_imports)] // each test file uses some
pub use testkit::daemon::{wait_ready, Daemon, METRICS, VIP};

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
            let f = Packet::eth([0xff; 6], mac)
                .arp(1, mac, src.octets(), [0; 6], vip.octets())
                .build();
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

/// `host` claims `ip` as its own: one gratuitous ARP (IPv6: one unsolicited override NA)
/// from its eth0, with its MAC.
pub fn claim(host: &Host, ip: std::net::IpAddr) {
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
