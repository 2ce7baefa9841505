//! What Linux itself does with IPv6 addresses, the facts vip's IPv6 fence and kernel mode
//! rest on. No vip daemon: the bed (client and node on a bridge, each with its IPv6 twin),
//! iproute2, ndisc6 and ping.
//!
//! ```text
//!  client 2001:db8:1::10 ──NS for ::100──►  node eth0 2001:db8:1::11
//!         (ndisc6, ping -6, capture)        ::100/128 on lo    (a: silent, delivered)
//!                                           ::100/128 on eth0  (b: answered; c: DAD)
//!                                           ::100/128 on eth1  (d: silent, proxy_ndp off)
//! ```
//!
//! a. A /128 on the node's `lo` is never answered by NDP on its veth, yet packets for it
//!    arriving on the veth are delivered: in XDP mode vip binds the VIP on lo and answers
//!    NS itself, so the kernel never answers for a VIP held elsewhere.
//! b. The same /128 on the veth is answered with the node's MAC: in XDP mode the VIP must
//!    never be bound on the uplink.
//! c. Bound on the veth with `nodad` it is usable at once; without, it is `tentative` (DAD
//!    runs on veths here) and NS for it go unanswered until DAD ends: why kernel mode binds
//!    with nodad.
//! d. An NS for an address bound on another interface is not answered while proxy_ndp is
//!    off (the default), even with forwarding on. The control: proxy_ndp on with a proxy
//!    entry does answer (captured), from a link-local source that ndisc6 ignores.
use std::{net::Ipv6Addr, time::Duration};

use testbed::{
    addr6_flags, addrs, addrs6, any6, flush_neighbour6, mac_bytes, make_dsr_backend6, ndisc6,
    neighbor_adverts, neighbour6, ping6, poll, require_root_and_bpf, set_neighbour6, sock6,
    stale_neighbour6, tcp_request, udp_request, Bed, Capture, Host, TcpServer, UdpServer,
};

const VIP6: &str = "2001:db8:1::100";
/// A second address for the DAD case (c).
const VIP6_DAD: &str = "2001:db8:1::101";
/// How long one ndisc6 waits for an answer.
const ASK: Duration = Duration::from_millis(300);

fn bed(tag: &str) -> Bed {
    require_root_and_bpf();
    let bed = Bed::new(
        &format!("v6{tag}"),
        &[("client", "192.0.2.10/24"), ("node", "192.0.2.11/24")],
    );
    // The veths' carrier comes up asynchronously: the node answering for its own twin
    // is the sign the segment carries NDP.
    let (client, node) = (bed.host("client"), bed.host("node"));
    let mac = poll(Duration::from_secs(5), || ndisc6(client, &node.addr6, ASK));
    assert_eq!(
        mac,
        Some(node_mac(node)),
        "the node does not answer NS for its own {} within 5 s",
        node.addr6
    );
    bed
}

fn node_mac(node: &Host) -> [u8; 6] {
    mac_bytes(&node.mac).unwrap_or_else(|| panic!("bad MAC {}", node.mac))
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The NAs for `target` captured so far.
fn adverts_for(cap: &Capture, target: &str) -> Vec<testbed::Advert> {
    neighbor_adverts(&cap.frames())
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| a.target == ip6(target))
        .collect()
}

/// `times` NS for `target` from the client, none answered, and no NA for it on the wire.
fn assert_unanswered(client: &Host, cap: &Capture, target: &str, times: usize, why: &str) {
    for i in 0..times {
        assert_eq!(
            ndisc6(client, target, ASK),
            None,
            "NS {} of {times} for {target} answered ({why})",
            i + 1
        );
    }
    assert_eq!(
        adverts_for(cap, target),
        vec![],
        "an NA for {target} reached the client ({why})"
    );
}

fn sysctl(host: &Host, key: &str) -> String {
    host.ns.sysctl_value(key)
}

#[test]
fn a_lo_128_is_not_answered_on_the_veth_but_traffic_to_it_is_delivered() {
    let bed = bed("lo");
    let (client, node) = (bed.host("client"), bed.host("node"));
    make_dsr_backend6(node, VIP6);
    assert!(
        addr6_flags(&node.ns, "lo", VIP6).is_some(),
        "{VIP6} not on the node's lo"
    );
    let cap = Capture::start(client, 0x86dd);
    assert_unanswered(client, &cap, VIP6, 3, "bound on lo only");

    // Delivery: the client sends to the node's MAC without asking (a static entry, as when
    // vip's XDP has answered), and the node's stack takes the packet for its lo address.
    set_neighbour6(client, VIP6, &node.mac);
    let pong = poll(Duration::from_secs(5), || {
        ping6(client, VIP6, Duration::from_millis(500)).then_some(())
    });
    assert!(
        pong.is_some(),
        "no echo reply from {VIP6} (on the node's lo) in 5 s"
    );
    let _server = TcpServer::start(&node.ns, any6(8080), "hello over v6\n");
    let got = tcp_request(&client.ns, sock6(VIP6, 8080)).expect("TCP to [VIP6]:8080");
    assert_eq!(got, "hello over v6\n");

    // The client never had to ask, and the node never answered for the VIP.
    let n = neighbour6(client, VIP6).expect("the client's entry for the VIP");
    assert_eq!(
        (n.lladdr, n.state.as_str()),
        (Some(node_mac(node)), "PERMANENT")
    );
    assert_eq!(adverts_for(&cap, VIP6), vec![], "an NA for {VIP6} appeared");
}

#[test]
fn b_uplink_128_is_answered_with_the_node_mac() {
    let bed = bed("up");
    let (client, node) = (bed.host("client"), bed.host("node"));
    let cap = Capture::start(client, 0x86dd);
    node.ns.ip(&[
        "addr",
        "add",
        &format!("{VIP6}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    assert_eq!(
        ndisc6(client, VIP6, ASK),
        Some(node_mac(node)),
        "the kernel did not answer NS for {VIP6} bound on the node's eth0"
    );
    // The answer as it crossed the wire: from the VIP itself, solicited, overriding, with
    // the node's MAC, and not claiming to be a router (forwarding is off).
    let na = poll(Duration::from_secs(1), || {
        adverts_for(&cap, VIP6).into_iter().next()
    })
    .expect("the NA ndisc6 reported is in the capture");
    assert_eq!(na.src, ip6(VIP6));
    assert_eq!(na.eth_src, node_mac(node));
    assert_eq!(na.tlla, Some(node_mac(node)));
    assert_eq!(
        (na.solicited, na.overrides, na.router),
        (true, true, false),
        "{na:?}"
    );
}

#[test]
fn c_uplink_128_with_nodad_is_usable_at_once_without_it_is_tentative() {
    let bed = bed("dad");
    let (client, node) = (bed.host("client"), bed.host("node"));
    // This environment's DAD settings on the veth: the kernel runs DAD on an interface if
    // either `all` or the interface's accept_dad is set.
    let accept_dad = (
        sysctl(node, "net.ipv6.conf.all.accept_dad"),
        sysctl(node, "net.ipv6.conf.eth0.accept_dad"),
    );
    let transmits = sysctl(node, "net.ipv6.conf.eth0.dad_transmits");
    eprintln!("node: accept_dad (all, eth0) = {accept_dad:?}, eth0 dad_transmits = {transmits}");
    assert_eq!(
        (accept_dad.1.as_str(), transmits.as_str()),
        ("1", "1"),
        "DAD on veth is not the default here (accept_dad all/eth0 {accept_dad:?}, \
         dad_transmits {transmits}): the tentative half of this test no longer holds"
    );

    node.ns.ip(&[
        "addr",
        "add",
        &format!("{VIP6}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    let flags = addr6_flags(&node.ns, "eth0", VIP6).expect("VIP6 on eth0");
    assert!(
        flags.iter().any(|f| f == "nodad") && !flags.iter().any(|f| f == "tentative"),
        "{VIP6} with nodad: flags {flags:?}"
    );
    // Usable at once: the first NS, sent right after the add, is answered.
    assert_eq!(ndisc6(client, VIP6, ASK), Some(node_mac(node)));

    let added = std::time::Instant::now();
    node.ns
        .ip(&["addr", "add", &format!("{VIP6_DAD}/128"), "dev", "eth0"]);
    let flags = addr6_flags(&node.ns, "eth0", VIP6_DAD).expect("VIP6_DAD on eth0");
    assert!(
        flags.iter().any(|f| f == "tentative"),
        "{VIP6_DAD} without nodad is not tentative right after the add: {flags:?}"
    );
    // While tentative the kernel ignores NS for it (they are not DAD probes).
    assert_eq!(ndisc6(client, VIP6_DAD, ASK), None);
    let still = addr6_flags(&node.ns, "eth0", VIP6_DAD).unwrap_or_default();
    assert!(
        still.iter().any(|f| f == "tentative"),
        "DAD ended during the probe ({:?} after the add): the probe proves nothing",
        added.elapsed()
    );
    let done = poll(Duration::from_secs(5), || {
        let f = addr6_flags(&node.ns, "eth0", VIP6_DAD)?;
        (!f.iter().any(|x| x == "tentative")).then(|| added.elapsed())
    })
    .expect("still tentative 5 s after the add");
    eprintln!("{VIP6_DAD} tentative for {done:?} after the add");
    assert!(
        !addr6_flags(&node.ns, "eth0", VIP6_DAD)
            .unwrap_or_default()
            .iter()
            .any(|f| f == "dadfailed"),
        "DAD failed: someone on the bed holds {VIP6_DAD}"
    );
    assert_eq!(ndisc6(client, VIP6_DAD, ASK), Some(node_mac(node)));
}

#[test]
fn d_target_on_another_interface_is_not_answered_with_proxy_ndp_off() {
    let bed = bed("prx");
    let (client, node) = (bed.host("client"), bed.host("node"));
    for key in [
        "net.ipv6.conf.all.proxy_ndp",
        "net.ipv6.conf.default.proxy_ndp",
        "net.ipv6.conf.eth0.proxy_ndp",
        "net.ipv6.conf.all.forwarding",
    ] {
        assert_eq!(sysctl(node, key), "0", "{key} is not off by default");
    }
    // Another interface of the node: a veth whose peer stays in the node, both up.
    node.ns.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
    ]);
    node.ns.ip(&["link", "set", "eth1", "up"]);
    node.ns.ip(&["link", "set", "eth1p", "up"]);
    node.ns.ip(&[
        "addr",
        "add",
        &format!("{VIP6}/128"),
        "dev",
        "eth1",
        "nodad",
    ]);
    let cap = Capture::start(client, 0x86dd);
    assert_unanswered(client, &cap, VIP6, 3, "bound on eth1, forwarding off");

    // A node that routes (vip's nat mode turns IPv4 forwarding on; IPv6 the same way).
    node.ns.sysctl("net.ipv6.conf.all.forwarding", "1");
    assert_unanswered(client, &cap, VIP6, 3, "bound on eth1, forwarding on");

    // Control: with proxy_ndp and a proxy entry the kernel does answer (after its random
    // proxy_delay), so the silence above is the setting, not a deaf capture.
    node.ns.sysctl("net.ipv6.conf.eth0.proxy_ndp", "1");
    node.ns
        .ip(&["-6", "neigh", "add", "proxy", VIP6, "dev", "eth0"]);
    let na = poll(Duration::from_secs(5), || {
        let _ = ndisc6(client, VIP6, Duration::from_millis(500));
        adverts_for(&cap, VIP6).into_iter().next()
    })
    .expect("no proxied NA for VIP6 within 5 s with proxy_ndp on");
    assert_eq!(na.tlla, Some(node_mac(node)));
    assert_eq!((na.solicited, na.overrides), (true, false), "{na:?}");
    // Its source is one of the node's own addresses, never the proxied target (which
    // one, link-local or global, follows the kernel's source selection for the asker).
    assert_ne!(na.src.to_string(), VIP6, "{na:?}");
}

/// The bed's own IPv6: every host's twin present with nodad, NDP and traffic between them in
/// both families' helpers, and the neighbour helpers doing what they say.
#[test]
fn bed_hosts_are_dual_stack_at_once() {
    let bed = bed("bed");
    let (client, node) = (bed.host("client"), bed.host("node"));
    assert_eq!(
        (client.addr6.as_str(), node.addr6.as_str()),
        ("2001:db8:1::10", "2001:db8:1::11")
    );
    for h in [client, node] {
        assert!(addrs6(&h.ns, "eth0").contains(&h.cidr6), "{}", h.ns.name);
        let flags = addr6_flags(&h.ns, "eth0", &h.addr6).unwrap_or_default();
        assert!(
            flags.iter().any(|f| f == "nodad") && !flags.iter().any(|f| f == "tentative"),
            "{}: {} flags {flags:?}",
            h.ns.name,
            h.addr6
        );
        // IPv4 as before: one address, the configured one.
        assert_eq!(addrs(&h.ns, "eth0"), vec![h.cidr.clone()], "{}", h.ns.name);
    }

    assert!(ping6(client, &node.addr6, Duration::from_secs(1)));
    let _tcp = TcpServer::start(&node.ns, any6(8080), "hello\n");
    assert_eq!(
        tcp_request(&client.ns, sock6(&node.addr6, 8080)).expect("TCP over v6"),
        "hello\n"
    );
    let _udp = UdpServer::start(&node.ns, any6(9000), "pong");
    let (reply, from) = udp_request(&client.ns, sock6(&node.addr6, 9000)).expect("UDP over v6");
    assert_eq!((reply.as_str(), from), ("pong", sock6(&node.addr6, 9000)));
    // The [::] server is dual-stack: it serves IPv4 too.
    let v4 = format!("{}:8080", node.addr).parse().unwrap();
    assert_eq!(tcp_request(&client.ns, v4).expect("TCP over v4"), "hello\n");

    let mac = Some(node_mac(node));
    let reachable = |within: Duration| {
        poll(within, || {
            neighbour6(client, &node.addr6).filter(|n| n.state == "REACHABLE")
        })
    };
    // TCP confirmed the entry (upper-layer reachability confirmation).
    let n = reachable(Duration::from_secs(1)).expect("client's entry for the node REACHABLE");
    assert_eq!(n.lladdr, mac);
    stale_neighbour6(client, &node.addr6);
    let n = neighbour6(client, &node.addr6).expect("entry kept");
    assert_eq!((n.lladdr, n.state.as_str()), (mac, "STALE"));
    // Traffic on a STALE entry goes to the old MAC at once and moves it to DELAY; an echo
    // reply confirms nothing, so the unicast NS waits out delay_first_probe_time (5 s by
    // default): a client holding a stale entry for a moved VIP keeps sending to the old
    // MAC that long unless an unsolicited NA with Override corrects it.
    let first_probe = sysctl(client, "net.ipv6.neigh.eth0.delay_first_probe_time");
    let sent = std::time::Instant::now();
    assert!(ping6(client, &node.addr6, Duration::from_secs(1)));
    let n = neighbour6(client, &node.addr6).expect("entry kept");
    assert_eq!((n.lladdr, n.state.as_str()), (mac, "DELAY"));
    let n = reachable(Duration::from_secs(10)).expect("NUD confirmed the entry within 10 s");
    eprintln!(
        "STALE -> DELAY -> REACHABLE {:?} after the ping (delay_first_probe_time {first_probe})",
        sent.elapsed()
    );
    assert_eq!(n.lladdr, mac);
    flush_neighbour6(client, &node.addr6);
    assert_eq!(neighbour6(client, &node.addr6), None);
    set_neighbour6(client, &node.addr6, &node.mac);
    assert_eq!(
        neighbour6(client, &node.addr6).map(|n| n.state),
        Some("PERMANENT".to_string())
    );
    flush_neighbour6(client, &node.addr6);
    assert_eq!(neighbour6(client, &node.addr6), None, "PERMANENT flushed");
}
