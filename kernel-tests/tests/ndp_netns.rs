//! An IPv6 VIP with the real daemon on a namespace bed: NDP answered from XDP (multicast
//! with `ndisc6`, unicast NUD from the client's kernel), the unsolicited NA burst at
//! acquisition, a claim by another host fought for, local traffic (`ping -6`, TCP) served by
//! the node's stack, and the kernel fallback (the VIP bound on the uplink without DAD).
//! Each test builds its own bed and tears it down on drop.
use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

mod common;
use common::{metrics, Daemon};
use testbed::{
    has_xdp, parse_mac, poll, require_root_and_bpf, tcp_request, Bed, Capture, Host, TcpServer,
};

const VIP6: &str = "2001:db8:1::100";

fn vip6() -> Ipv6Addr {
    VIP6.parse().unwrap()
}

/// Client, node and a third host, `other` (for claims), on the bed's switch; the bed gives
/// each an IPv6 address in 2001:db8:1::/64 beside its IPv4 one (`nodad`: usable at once).
fn bed(tag: &str) -> Bed {
    require_root_and_bpf();
    Bed::new(
        &format!("v6{tag}"),
        &[
            ("client", "192.0.2.10/24"),
            ("node", "192.0.2.11/24"),
            ("other", "192.0.2.12/24"),
        ],
    )
}

/// The daemon in XDP mode owning [`VIP6`], maps pinned under `pins`.
fn start_xdp(bed: &Bed, pins: &std::path::Path) -> Daemon {
    let pins = pins.to_str().unwrap();
    Daemon::start(bed, &["--vip", VIP6, "--mode", "xdp", "--pin-dir", pins])
}

fn pin_dir(tag: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/vip-test-{tag}"))
}

/// ICMPv6 NDP frames of one type (135 NS, 136 NA) the capture holds, as (IPv6 destination,
/// NA flags byte, target, Ethernet source).
fn ndp(cap: &Capture, typ: u8) -> Vec<(Ipv6Addr, u8, Ipv6Addr, [u8; 6])> {
    cap.frames()
        .into_iter()
        .filter(|(_, f)| f.len() >= 78 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == typ)
        .map(|(_, f)| {
            let dst: [u8; 16] = f[38..54].try_into().unwrap();
            let target: [u8; 16] = f[62..78].try_into().unwrap();
            (
                Ipv6Addr::from(dst),
                f[58],
                Ipv6Addr::from(target),
                f[6..12].try_into().unwrap(),
            )
        })
        .collect()
}

/// Unsolicited NAs for the VIP from `mac`: to all-nodes, override set, solicited clear.
fn unsolicited(cap: &Capture, mac: [u8; 6]) -> usize {
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    ndp(cap, 136)
        .into_iter()
        .filter(|(dst, flags, target, src)| {
            *dst == all_nodes && *flags == 0x20 && *target == vip6() && *src == mac
        })
        .count()
}

fn ndisc6(host: &Host, target: &str) -> Option<[u8; 6]> {
    testbed::ndisc6(host, target, Duration::from_millis(500))
}

fn ping6(host: &Host, target: &str) -> bool {
    testbed::ping6(host, target, Duration::from_secs(2))
}

fn vip6_metric(m: &str, name: &str) -> u64 {
    common::metric(m, &format!("{name}{{vip=\"{VIP6}\"}}"))
}

fn bound_on(host: &Host, dev: &str) -> Vec<String> {
    testbed::addrs6(&host.ns, dev)
        .into_iter()
        .filter(|a| a.starts_with(&format!("{VIP6}/")))
        .collect()
}

#[test]
fn xdp_mode_answers_ndp_announces_and_serves_an_ipv6_vip() {
    let bed = bed("xdp");
    let pins = pin_dir("v6xdp");
    let client = bed.host("client");
    let node = bed.host("node");
    let node_mac = parse_mac(&node.mac);
    let cap = Capture::start(client, 0x86dd);
    let mut d = start_xdp(&bed, &pins);
    assert!(has_xdp(&node.ns, "eth0"), "XDP attached to the uplink");

    // The burst: unsolicited NAs from the node's MAC, the first one sent before ready.
    let burst = poll(Duration::from_secs(5), || {
        let n = unsolicited(&cap, node_mac);
        (n >= 2).then_some(n)
    });
    assert!(burst.is_some(), "no unsolicited NA burst:\n{}", d.logs());
    // Bound on lo, never on the uplink (where the kernel would answer NS itself).
    assert_eq!(bound_on(node, "lo"), vec![format!("{VIP6}/128")]);
    assert!(
        bound_on(node, "eth0").is_empty(),
        "{:?}",
        testbed::addrs6(&node.ns, "eth0")
    );

    // A multicast NS (ndisc6) is answered by XDP with the node's MAC.
    let before = vip6_metric(&metrics(&bed), "vip_vip_ndp_replies_total");
    assert_eq!(ndisc6(client, VIP6), Some(node_mac));
    let m = metrics(&bed);
    assert!(vip6_metric(&m, "vip_vip_ndp_replies_total") > before, "{m}");
    assert!(common::metric(&m, "vip_na_sent_total") >= 2, "{m}");

    // `vip status` lists the IPv6 VIP, owned, with its NDP counters.
    let out = node
        .ns
        .command(testkit::daemon::vip_bin())
        .args(["status", "--pin-dir", pins.to_str().unwrap()])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{VIP6} ")))
        .unwrap_or_else(|| panic!("no line for {VIP6} in `vip status`:\n{status}"));
    assert!(
        line.contains("owned") && line.contains("ndp replies"),
        "{line}"
    );

    // Traffic to the VIP reaches the node's stack: ping and TCP over IPv6.
    assert!(ping6(client, VIP6), "ping -6 {VIP6}");
    let _server = TcpServer::start(&node.ns, "[::]:8080".parse().unwrap(), "hello over v6\n");
    let vip: SocketAddr = format!("[{VIP6}]:8080").parse().unwrap();
    assert_eq!(tcp_request(&client.ns, vip).unwrap(), "hello over v6\n");

    // Neighbour unreachability detection: a stale entry is probed by unicast NS (to the
    // VIP itself, at the cached MAC), which XDP answers, and the entry is reachable again.
    client
        .ns
        .sysctl("net.ipv6.neigh.eth0.delay_first_probe_time", "1");
    let out = client.ns.ip(&[
        "-6", "neigh", "replace", VIP6, "lladdr", &node.mac, "dev", "eth0", "nud", "stale",
    ]);
    assert!(out.status.success(), "{out:?}");
    let reachable = poll(Duration::from_secs(10), || {
        ping6(client, VIP6);
        testbed::neighbour6(client, VIP6).filter(|n| n.state == "REACHABLE")
    });
    assert_eq!(
        reachable.and_then(|n| n.lladdr),
        Some(node_mac),
        "the stale entry was confirmed by the node"
    );
    let solicited: Vec<_> = ndp(&cap, 136)
        .into_iter()
        .filter(|(dst, flags, target, src)| {
            *target == vip6() && *src == node_mac && flags & 0x40 != 0 && !dst.is_multicast()
        })
        .collect();
    assert!(
        !solicited.is_empty(),
        "a solicited unicast NA answered the probe"
    );

    // Stopped: unbound, and nobody answers for the VIP any more.
    assert!(d.stop().success(), "clean exit:\n{}", d.logs());
    assert!(bound_on(node, "lo").is_empty());
    assert_eq!(ndisc6(client, VIP6), None, "still answered after stop");
}

#[test]
fn an_ipv6_vip_claimed_by_another_host_is_reannounced() {
    let bed = bed("cl");
    let pins = pin_dir("v6cl");
    let client = bed.host("client");
    let node = bed.host("node");
    let node_mac = parse_mac(&node.mac);
    let cap = Capture::start(client, 0x86dd);
    let d = start_xdp(&bed, &pins);
    // The whole burst (default `garp.count` 5 over 2 s) is out before the claim.
    poll(Duration::from_secs(10), || {
        (common::metric(&metrics(&bed), "vip_na_sent_total") == 5).then_some(())
    })
    .expect("the burst of 5");
    let settled = poll(Duration::from_secs(2), || {
        let n = unsolicited(&cap, node_mac);
        (n == 5).then_some(n)
    })
    .expect("the client saw the burst");
    common::claim(bed.host("other"), IpAddr::V6(vip6()));
    let other = bed.host("other").mac.clone();
    let fought = poll(Duration::from_secs(5), || {
        (unsolicited(&cap, node_mac) > settled && d.logs().contains(&other)).then_some(())
    });
    assert!(
        fought.is_some(),
        "not re-announced, or the other host ({other}) not named in the log:\n{}",
        d.logs()
    );
    let m = metrics(&bed);
    assert!(vip6_metric(&m, "vip_vip_ndp_conflicts_total") >= 1, "{m}");
}

#[test]
fn kernel_mode_binds_the_ipv6_vip_without_dad_and_the_kernel_answers() {
    let bed = bed("k");
    let client = bed.host("client");
    let node = bed.host("node");
    let cap = Capture::start(client, 0x86dd);
    let mut d = Daemon::start(&bed, &["--vip", VIP6, "--mode", "kernel"]);
    assert!(!has_xdp(&node.ns, "eth0"), "no XDP in kernel mode");
    // On the uplink, /128, never tentative (nodad): the kernel answers NS at once.
    let out = node.ns.ip(&["-6", "addr", "show", "dev", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("{VIP6}/128")))
        .unwrap_or_else(|| panic!("VIP not on eth0:\n{text}"));
    assert!(line.contains("nodad"), "{line}");
    assert!(!line.contains("tentative"), "{line}");
    assert_eq!(ndisc6(client, VIP6), Some(parse_mac(&node.mac)));
    assert!(ping6(client, VIP6), "ping -6 {VIP6}");
    let burst = poll(Duration::from_secs(5), || {
        (unsolicited(&cap, parse_mac(&node.mac)) >= 1).then_some(())
    });
    assert!(burst.is_some(), "kernel mode announces too:\n{}", d.logs());
    assert!(d.stop().success(), "clean exit:\n{}", d.logs());
    assert!(bound_on(node, "eth0").is_empty(), "unbound at stop");
}
