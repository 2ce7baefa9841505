//! The load balancer end to end: client -> node (vip, XDP) -> three backend namespaces with
//! real TCP and UDP servers, for each forwarding mode.
mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{lb_bed, metric, metrics, Daemon, VIP};
use testbed::{
    poll, require_root_and_bpf, tcp_request, tcp_requests, udp_request, Bed, LongConn, TcpServer,
    UdpServer,
};

const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];

struct Lb {
    bed: Bed,
    cfg: PathBuf,
    pins: PathBuf,
    _tcp: Vec<TcpServer>,
    _udp: Vec<UdpServer>,
}

impl Lb {
    /// dsr: backends on the client's segment, VIP on their lo, not answering ARP for it.
    /// nat: backends on their own subnet behind the node (their gateway), one arm.
    fn new(tag: &str, nat: bool) -> Lb {
        require_root_and_bpf();
        let (bed, tcp) = lb_bed(&format!("vl{tag}"), &BACKENDS, nat);
        let mut udp = Vec::new();
        for b in BACKENDS {
            // In dsr a UDP server must answer from the VIP: bound to 0.0.0.0 it would
            // reply from its own address (the route's source), which the client rejects.
            let udp_bind = if nat {
                "0.0.0.0:9000".to_string()
            } else {
                format!("{VIP}:9000")
            };
            udp.push(UdpServer::start(
                &bed.host(b).ns,
                udp_bind.parse().unwrap(),
                b,
            ));
        }
        let cfg = std::env::temp_dir().join(format!("vl{tag}.yaml"));
        let pins = PathBuf::from(format!("/sys/fs/bpf/vip-test-lb{tag}"));
        Lb {
            bed,
            cfg,
            pins,
            _tcp: tcp,
            _udp: udp,
        }
    }

    fn backend_addr(&self, b: &str) -> String {
        self.bed.host(b).addr.clone()
    }

    fn write_config(&self, mode: &str, backends: &[&str]) {
        let (tport, uport, bport) = if mode == "nat" {
            (80, 53, "port: 8080")
        } else {
            (8080, 9000, "")
        };
        let list = |port: &str| -> String {
            backends
                .iter()
                .map(|b| {
                    format!(
                        "      - {{addr: {}{}}}\n",
                        self.backend_addr(b),
                        if port.is_empty() {
                            String::new()
                        } else {
                            format!(", {port}")
                        }
                    )
                })
                .collect()
        };
        let uport_b = if mode == "nat" { "port: 9000" } else { "" };
        let yaml = format!(
            "interface: eth0\nmode: xdp\npin_dir: {}\nservices:\n  - vip: {VIP}\n    port: {tport}\n    protocol: tcp\n    mode: {mode}\n    backends:\n{}  - vip: {VIP}\n    port: {uport}\n    protocol: udp\n    mode: {mode}\n    backends:\n{}",
            self.pins.display(),
            list(bport),
            list(uport_b),
        );
        std::fs::write(&self.cfg, yaml).unwrap();
    }

    fn start(&self, extra: &[&str]) -> Daemon {
        let mut args = vec!["--config", self.cfg.to_str().unwrap()];
        args.extend_from_slice(extra);
        Daemon::start(&self.bed, &args)
    }

    fn tcp_port(mode: &str) -> u16 {
        if mode == "nat" {
            80
        } else {
            8080
        }
    }

    fn udp_port(mode: &str) -> u16 {
        if mode == "nat" {
            53
        } else {
            9000
        }
    }
}

fn spread(greetings: &[std::io::Result<String>]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for g in greetings {
        let g = g
            .as_ref()
            .unwrap_or_else(|e| panic!("connection failed: {e}"));
        *m.entry(g.trim().to_string()).or_insert(0) += 1;
    }
    m
}

fn reload(d: &Daemon, bed: &Bed, n: u64) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.pid(), libc::SIGHUP) };
    let ok = poll(Duration::from_secs(10), || {
        (metric(&metrics(bed), "vip_config_reloads_total") >= n).then_some(())
    });
    assert!(ok.is_some(), "reload not applied:\n{}", d.logs());
}

/// On-link backends with a `managed` neighbour entry on the node's uplink (the daemon's, so
/// XDP's FIB lookup finds a MAC for the first packet).
fn managed_neighbours(bed: &Bed) -> Vec<String> {
    let out = bed
        .host("node")
        .ns
        .command("ip")
        .args(["-4", "neigh", "show", "dev", "eth0"])
        .output()
        .expect("ip neigh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "managed"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// dsr: every on-link backend gets a managed entry; one the kernel loses (as on a carrier
/// loss) is put back by the daemon's periodic repair (about every 10 s).
fn neighbours_managed_and_repaired(lb: &Lb, d: &Daemon) {
    let want = |n: &[String]| BACKENDS.iter().all(|b| n.contains(&lb.backend_addr(b)));
    let ok = poll(Duration::from_secs(5), || {
        want(&managed_neighbours(&lb.bed)).then_some(())
    });
    assert!(
        ok.is_some(),
        "managed entries for every backend: {:?}\n{}",
        managed_neighbours(&lb.bed),
        d.logs()
    );
    let lost = lb.backend_addr(BACKENDS[0]);
    let del = lb
        .bed
        .host("node")
        .ns
        .command("ip")
        .args(["neigh", "del", &lost, "dev", "eth0"])
        .status()
        .expect("ip neigh del");
    assert!(del.success());
    assert!(!managed_neighbours(&lb.bed).contains(&lost));
    let back = poll(Duration::from_secs(25), || {
        managed_neighbours(&lb.bed).contains(&lost).then_some(())
    });
    assert!(
        back.is_some(),
        "lost entry for {lost} re-created: {:?}\n{}",
        managed_neighbours(&lb.bed),
        d.logs()
    );
}

/// The scenario every forwarding mode must pass.
fn scenario(tag: &str, mode: &str) {
    let lb = Lb::new(tag, mode == "nat");
    lb.write_config(mode, &BACKENDS);
    // dsr runs with --keep-pinned: after the stop, `vip status` still reads the last state.
    let keep = mode == "dsr";
    let mut d = lb.start(if keep { &["--keep-pinned"] } else { &[] });
    let client = lb.bed.host("client");
    let vip: SocketAddr = format!("{VIP}:{}", Lb::tcp_port(mode)).parse().unwrap();

    // 300 connections spread over the three backends.
    let got = spread(&tcp_requests(&client.ns, vip, 300));
    assert_eq!(got.values().sum::<usize>(), 300);
    for b in BACKENDS {
        let n = got.get(b).copied().unwrap_or(0);
        assert!(
            (60..=138).contains(&n),
            "{mode}: {b} got {n} of 300 (want 20-46 %): {got:?}\n{}",
            d.logs()
        );
    }

    if mode == "dsr" {
        neighbours_managed_and_repaired(&lb, &d);
    }

    // UDP request/response, answered from the VIP:port the client asked.
    let uvip: SocketAddr = format!("{VIP}:{}", Lb::udp_port(mode)).parse().unwrap();
    let mut seen = HashMap::new();
    for _ in 0..30 {
        let (reply, from) = udp_request(&client.ns, uvip).expect("UDP answered");
        assert_eq!(from, uvip, "{mode}: reply must come from the VIP");
        *seen.entry(reply).or_insert(0) += 1;
    }
    assert!(
        seen.len() >= 2,
        "{mode}: UDP spread over backends: {seen:?}"
    );

    // A long-lived connection keeps its backend while another backend goes away.
    let mut long = LongConn::open(&client.ns, vip).expect("long-lived connection");
    let home = long.greeting.trim().to_string();
    assert_eq!(long.echo("before").unwrap(), "before");
    let removed = BACKENDS.iter().find(|b| **b != home).copied().unwrap();
    let remaining: Vec<&str> = BACKENDS.iter().copied().filter(|b| *b != removed).collect();
    lb.write_config(mode, &remaining);
    reload(&d, &lb.bed, 1);
    assert_eq!(
        long.echo("after").unwrap(),
        "after",
        "{mode}: long-lived connection survives"
    );
    let again = LongConn::open(&client.ns, vip).unwrap();
    drop(again);
    if mode == "dsr" {
        assert!(
            !managed_neighbours(&lb.bed).contains(&lb.backend_addr(removed)),
            "the removed backend's managed entry goes: {:?}",
            managed_neighbours(&lb.bed)
        );
    }
    let got = spread(&tcp_requests(&client.ns, vip, 100));
    assert!(
        !got.contains_key(removed),
        "{mode}: removed {removed} still gets new connections: {got:?}"
    );
    assert_eq!(
        got.values().sum::<usize>(),
        100,
        "{mode}: every new connection succeeds"
    );
    assert_eq!(long.echo("still").unwrap(), "still");
    // The backend comes back: new connections reach it again, the long one stays put.
    lb.write_config(mode, &BACKENDS);
    reload(&d, &lb.bed, 2);
    let got = spread(&tcp_requests(&client.ns, vip, 100));
    assert!(
        got.contains_key(removed),
        "{mode}: {removed} is back in rotation: {got:?}"
    );
    assert_eq!(
        long.echo("back").unwrap(),
        "back",
        "{mode}: long-lived connection unaffected"
    );
    lb.write_config(mode, &remaining);
    reload(&d, &lb.bed, 3);

    let m = metrics(&lb.bed);
    assert!(metric(&m, "vip_lb_forwarded_packets_total") > 0, "{m}");
    let svc = format!(
        "vip_service_new_flows_total{{service=\"{VIP}:{}/tcp\",mode=\"{mode}\"}}",
        Lb::tcp_port(mode)
    );
    assert!(
        m.lines().any(|l| l.starts_with(&svc)),
        "per-service counters: {m}"
    );
    // `vip status` reads the same pinned maps: the remaining backends share the ring.
    let out = std::process::Command::new(testkit::daemon::vip_bin())
        .args(["status", "--pin-dir", lb.pins.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for b in &remaining {
        assert!(
            text.contains(&lb.backend_addr(b)),
            "status lists {b}:\n{text}"
        );
    }
    assert!(
        !text.contains(&format!("-> {}:", lb.backend_addr(removed))),
        "removed backend not in the ring:\n{text}"
    );
    assert!(d.stop().success(), "{}", d.logs());
    if keep {
        let after = std::process::Command::new(testkit::daemon::vip_bin())
            .args(["status", "--pin-dir", lb.pins.to_str().unwrap()])
            .output()
            .unwrap();
        let after = String::from_utf8_lossy(&after.stdout);
        assert!(
            after.contains(&format!("{VIP}:8080/tcp")) && after.contains(&lb.backend_addr(&home)),
            "status after a --keep-pinned stop:\n{after}"
        );
        vip_userspace::dataplane::load::remove_pins(&lb.pins);
    }
    assert!(!lb.pins.exists());
    let _ = std::fs::remove_file(&lb.cfg);
}

#[test]
fn dsr_spreads_keeps_flows_and_drains_removed_backend() {
    scenario("dsr", "dsr");
}

#[test]
fn nat_spreads_keeps_flows_and_replies_from_vip() {
    scenario("nat", "nat");
}

#[test]
fn local_mode_serves_on_the_node() {
    require_root_and_bpf();
    let bed = Bed::new(
        "vlloc",
        &[("client", "192.0.2.10/24"), ("node", "192.0.2.11/24")],
    );
    let node = bed.host("node");
    let cfg = std::env::temp_dir().join("vlloc.yaml");
    let pins = Path::new("/sys/fs/bpf/vip-test-lbloc");
    let _srv = TcpServer::start(&node.ns, "0.0.0.0:7000".parse().unwrap(), "node\n");
    let mut d = Daemon::start_with_config(&bed, "node", &cfg, &format!("interface: eth0\nmode: xdp\npin_dir: {}\nservices:\n  - {{vip: {VIP}, port: 7000, mode: local}}\n", pins.display()));
    let got = tcp_request(
        &bed.host("client").ns,
        format!("{VIP}:7000").parse().unwrap(),
    )
    .unwrap();
    assert_eq!(got, "node\n");
    assert!(metric(&metrics(&bed), "vip_lb_local_packets_total") > 0);
    assert!(d.stop().success());
    let _ = std::fs::remove_file(&cfg);
}
