//! IPv6 services end to end with the real daemon: client -> node (vip, XDP) -> three backend
//! namespaces with TCP and UDP servers on IPv6, through `dsr` and through `nat`; the IPv6
//! twins of `lb_netns`. The services come from the config file (`services:` with an IPv6
//! VIP and backends), so this covers the daemon's writer (`SERVICES6`, `BACKENDS6`), the
//! prefilter bit, the uplink's IPv6 forwarding settings and the managed NDP entries.
//!
//! ```text
//!  client 2001:db8:1::10 ──► node 2001:db8:1::11, eth0 (vip, XDP; VIP 2001:db8:1::100)
//!     dsr: be1..3 2001:db8:1::21..23, the VIP on lo, reply straight to the client
//!     nat: be1..3 2001:db8:2::21..23 behind the node (2001:db8:2::1, their default
//!          route), reply through the node, tc egress restores the VIP as the source
//! ```
mod common;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use common::{metric, metrics, Daemon};
use testbed::{make_dsr_backend6, poll, tcp_requests, udp_request, Bed, TcpServer, UdpServer};

const VIP6: &str = "2001:db8:1::100";
const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 9000;

struct Lb6 {
    bed: Bed,
    cfg: PathBuf,
    pins: PathBuf,
    _tcp: Vec<TcpServer>,
    _udp: Vec<UdpServer>,
}

impl Lb6 {
    /// The bed's IPv6 twins: dsr backends on the client's prefix with the VIP on their lo;
    /// nat backends on their own prefix behind the node, their IPv6 default route.
    fn new(tag: &str, nat: bool) -> Lb6 {
        testbed::require_root_and_bpf();
        let mut hosts = vec![
            ("client", "192.0.2.10/24".to_string()),
            ("node", "192.0.2.11/24".to_string()),
        ];
        for (i, b) in BACKENDS.iter().enumerate() {
            let net = if nat { "198.51.100" } else { "192.0.2" };
            hosts.push((b, format!("{net}.{}/24", 21 + i)));
        }
        let hosts: Vec<(&str, &str)> = hosts.iter().map(|(r, a)| (*r, a.as_str())).collect();
        let bed = Bed::new(&format!("v6l{tag}"), &hosts);
        if nat {
            bed.host("node").ns.ip(&[
                "-6",
                "addr",
                "add",
                "2001:db8:2::1/64",
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        let (mut tcp, mut udp) = (Vec::new(), Vec::new());
        for b in BACKENDS {
            let h = bed.host(b);
            if nat {
                h.ns.ip(&["-6", "route", "add", "default", "via", "2001:db8:2::1"]);
                for dev in ["all", "eth0"] {
                    h.ns.sysctl(&format!("net.ipv6.conf.{dev}.accept_redirects"), "0");
                }
            } else {
                make_dsr_backend6(h, VIP6);
            }
            tcp.push(TcpServer::start(
                &h.ns,
                format!("[::]:{TCP_PORT}").parse().unwrap(),
                &format!("{b}\n"),
            ));
            // dsr: a UDP server must answer from the VIP (bound to [::] it would reply from
            // the route's source, which the client rejects).
            let ubind = if nat {
                format!("[::]:{UDP_PORT}")
            } else {
                format!("[{VIP6}]:{UDP_PORT}")
            };
            udp.push(UdpServer::start(&h.ns, ubind.parse().unwrap(), b));
        }
        Lb6 {
            bed,
            cfg: std::env::temp_dir().join(format!("v6l{tag}.yaml")),
            pins: PathBuf::from(format!("/sys/fs/bpf/vip-test-lb6{tag}")),
            _tcp: tcp,
            _udp: udp,
        }
    }

    fn write_config(&self, mode: &str) {
        let list = |port: u16| -> String {
            BACKENDS
                .iter()
                .map(|b| {
                    format!(
                        "      - {{addr: \"{}\", port: {port}}}\n",
                        self.bed.host(b).addr6
                    )
                })
                .collect()
        };
        let yaml = format!(
            "interface: eth0\nmode: xdp\npin_dir: {}\nservices:\n  - vip: \"{VIP6}\"\n    port: {TCP_PORT}\n    protocol: tcp\n    mode: {mode}\n    backends:\n{}  - vip: \"{VIP6}\"\n    port: {UDP_PORT}\n    protocol: udp\n    mode: {mode}\n    backends:\n{}",
            self.pins.display(),
            list(TCP_PORT),
            list(UDP_PORT),
        );
        std::fs::write(&self.cfg, yaml).unwrap();
    }
}

/// On-link backends with a `managed` IPv6 neighbour entry on the node's uplink.
fn managed_neighbours6(bed: &Bed) -> Vec<String> {
    let out = bed
        .host("node")
        .ns
        .ip(&["-6", "neigh", "show", "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "managed"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn scenario(tag: &str, mode: &str) {
    let lb = Lb6::new(tag, mode == "nat");
    let node = &lb.bed.host("node").ns;
    let sysctl = |k: &str| node.sysctl_value(&format!("net.ipv6.conf.eth0.{k}"));
    let settings = || {
        (
            sysctl("forwarding"),
            sysctl("accept_ra"),
            sysctl("force_forwarding"),
        )
    };
    let before = settings();
    lb.write_config(mode);
    let mut d = Daemon::start(&lb.bed, &["--config", lb.cfg.to_str().unwrap()]);
    let client = lb.bed.host("client");

    // bpf_fib_lookup needs the uplink to forward IPv6; RAs stay accepted (accept_ra 2).
    assert_eq!(sysctl("forwarding"), "1", "{}", d.logs());
    if before.1 == "1" {
        assert_eq!(sysctl("accept_ra"), "2");
    }
    // nat replies are forwarded by the node's stack: the uplink forces IPv6 forwarding
    // (Linux 6.17+; the device's `forwarding` alone does not make the kernel forward).
    if mode == "nat" {
        assert_eq!(sysctl("force_forwarding"), "1", "{}", d.logs());
    }

    // TCP: every connection answered (by the VIP: the client connected to it), every
    // backend reached.
    let vip: SocketAddr = format!("[{VIP6}]:{TCP_PORT}").parse().unwrap();
    let mut got: HashMap<String, usize> = HashMap::new();
    for g in tcp_requests(&client.ns, vip, 90) {
        let g = g.unwrap_or_else(|e| panic!("{mode}: connection failed: {e}\n{}", d.logs()));
        *got.entry(g.trim().to_string()).or_insert(0) += 1;
    }
    assert_eq!(got.values().sum::<usize>(), 90);
    for b in BACKENDS {
        assert!(
            got.get(b).copied().unwrap_or(0) >= 10,
            "{mode}: {b} got too few of 90: {got:?}\n{}",
            d.logs()
        );
    }

    // UDP: replies from the VIP:port the client asked, from every backend.
    let uvip: SocketAddr = format!("[{VIP6}]:{UDP_PORT}").parse().unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (reply, from) = udp_request(&client.ns, uvip)
            .unwrap_or_else(|e| panic!("{mode}: UDP unanswered: {e}\n{}", d.logs()));
        assert_eq!(from, uvip, "{mode}: reply must come from the VIP");
        *seen.entry(reply).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{mode}: UDP reached every backend: {seen:?}");

    if mode == "dsr" {
        // The on-link backends got managed NDP entries.
        let want = |n: &[String]| BACKENDS.iter().all(|b| n.contains(&lb.bed.host(b).addr6));
        let ok = poll(Duration::from_secs(5), || {
            want(&managed_neighbours6(&lb.bed)).then_some(())
        });
        assert!(
            ok.is_some(),
            "managed entries: {:?}\n{}",
            managed_neighbours6(&lb.bed),
            d.logs()
        );
    }

    // The daemon's metrics count the forwards, per service too.
    let m = metrics(&lb.bed);
    assert!(metric(&m, "vip_lb_forwarded_packets_total") >= 90, "{m}");
    for (port, proto) in [(TCP_PORT, "tcp"), (UDP_PORT, "udp")] {
        let svc = format!(
            "vip_service_new_flows_total{{service=\"[{VIP6}]:{port}/{proto}\",mode=\"{mode}\"}}"
        );
        let n = m
            .lines()
            .find(|l| l.starts_with(&svc))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(n.is_some_and(|n| n > 0), "{svc} in:\n{m}");
    }
    assert_eq!(metric(&m, "vip_interface_setting_failures_total"), 0, "{m}");

    // `vip status` lists the IPv6 services and their backends.
    let out = std::process::Command::new(testkit::daemon::vip_bin())
        .args(["status", "--pin-dir", lb.pins.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("[{VIP6}]:{TCP_PORT}/tcp")), "{text}");
    for b in BACKENDS {
        assert!(
            text.contains(&format!("[{}]:{TCP_PORT}", lb.bed.host(b).addr6)),
            "status lists {b}:\n{text}"
        );
    }

    assert!(d.stop().success(), "{}", d.logs());
    assert!(!lb.pins.exists());
    // What the daemon changed is put back.
    assert_eq!(settings(), before);
    if mode == "dsr" {
        assert!(managed_neighbours6(&lb.bed).is_empty());
    }
    let _ = std::fs::remove_file(&lb.cfg);
}

#[test]
fn dsr6_spreads_tcp_and_udp_over_every_backend() {
    scenario("dsr", "dsr");
}

#[test]
fn nat6_spreads_tcp_and_udp_and_replies_from_the_vip() {
    scenario("nat", "nat");
}
