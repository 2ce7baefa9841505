//! The configuration's parsing and resolution, field by field.
use super::election::kube_vip_secs_to_ms;
use super::*;
use std::net::Ipv4Addr;

fn file(y: &str) -> FileConfig {
    parse_file(y).unwrap()
}

#[test]
fn a_log_level_that_crashed_the_filter_parser_is_a_config_error() {
    // fuzz/kube_vip_env: VIP_LOG_LEVEL=" Т[" panicked inside tracing-subscriber.
    let ov = Overrides {
        log_level: Some(" \u{422}[".into()),
        ..Default::default()
    };
    let e = resolve(file("interface: eth0\nvips: [192.0.2.10]\n"), ov).unwrap_err();
    assert_eq!(e.field, "log_level");
}

#[test]
fn kube_vip_seconds_that_overflow_milliseconds_are_ignored() {
    // Found by fuzz/fuzz_targets/kube_vip_env.rs: `vip_leaseduration=18446744073709552`
    // overflowed `s * 1000` (a panic with overflow checks, a wrapped lease without).
    assert_eq!(kube_vip_secs_to_ms("15"), Some(15_000));
    assert_eq!(
        kube_vip_secs_to_ms("18446744073709551"),
        Some(18_446_744_073_709_551_000)
    );
    assert_eq!(kube_vip_secs_to_ms("18446744073709552"), None);
    assert_eq!(kube_vip_secs_to_ms("x"), None);
}

#[test]
fn full_file_resolves() {
    let c = resolve(
        file("interface: eth0\nvips: [192.0.2.100, 192.0.2.101]\nmode: xdp\nmetrics_addr: 0.0.0.0:9000\ngarp: {count: 3, window_ms: 500}\n"),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.interface, "eth0");
    assert_eq!(c.vips.len(), 2);
    assert_eq!(c.mode, Mode::Xdp);
    assert_eq!(c.metrics_addr.port(), 9000);
    assert_eq!(c.garp.count, 3);
    assert_eq!(c.garp.window, Duration::from_millis(500));
    assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/vip"));
}

#[test]
fn dead_man_defaults_validates_and_fits_the_fence() {
    let base = "interface: eth0\nvips: [192.0.2.1]\n";
    let c = resolve(file(base), Overrides::default()).unwrap();
    assert_eq!(c.dead_man, Duration::from_secs(2));
    let c = resolve(
        file(&format!("{base}dead_man_ms: 0\n")),
        Overrides::default(),
    )
    .unwrap();
    assert!(c.dead_man.is_zero(), "0 turns it off");
    let e = resolve(
        file(&format!("{base}dead_man_ms: 5\n")),
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "dead_man_ms");
    let c = resolve(
        file(&format!("{base}election: {{identity: n1, lease_duration_ms: 2000, renew_deadline_ms: 1000, retry_period_ms: 100}}\n")),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        c.dead_man,
        Duration::from_secs(1),
        "never past the renew deadline"
    );
}

#[test]
fn restart_grace_defaults_validates_and_fits_the_fence() {
    let base = "interface: eth0\nvips: [192.0.2.1]\n";
    let c = resolve(file(base), Overrides::default()).unwrap();
    assert_eq!(c.restart_grace, Duration::from_secs(10));
    assert!(!c.handover, "SIGTERM releases unless asked");
    let c = resolve(
        file(&format!("{base}restart_grace_ms: 3000\nhandover: true\n")),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.restart_grace, Duration::from_secs(3));
    assert!(c.handover);
    let e = resolve(
        file(&format!("{base}restart_grace_ms: 900000\n")),
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "restart_grace_ms");
    let c = resolve(
        file(&format!("{base}election: {{identity: n1, lease_duration_ms: 2000, renew_deadline_ms: 1000, retry_period_ms: 100}}\n")),
        Overrides {
            handover: Some(true),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(
        c.restart_grace,
        Duration::from_secs(1),
        "never past the renew deadline"
    );
    assert!(c.handover, "--handover flag");
}

#[test]
fn lease_election_config() {
    let c = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, lease_duration_ms: 2000, renew_deadline_ms: 1000, retry_period_ms: 100}\n"),
        Overrides::default(),
    )
    .unwrap();
    let Election::Lease {
        lease,
        service_election,
        ..
    } = c.election
    else {
        panic!("lease")
    };
    assert_eq!(
        service_election,
        ServiceElection::Shared,
        "one shared lease by default, as kube-vip"
    );
    assert_eq!(lease.identity, "n1");
    assert_eq!(lease.name, "plndr-cp-lock");
    let c = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, service_election: per-vip}\n"),
        Overrides::default(),
    )
    .unwrap();
    assert!(matches!(
        c.election,
        Election::Lease {
            service_election: ServiceElection::PerVip,
            ..
        }
    ));
    let c = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, service_election: rendezvous}\n"),
        Overrides::default(),
    )
    .unwrap();
    assert!(matches!(
        c.election,
        Election::Lease {
            service_election: ServiceElection::Rendezvous,
            ..
        }
    ));
    let e = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, service_election: each}\n"),
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "election.service_election");
    assert!(crate::Chain(&e).to_string().contains("rendezvous"), "{e}");
    assert_eq!(lease.renew_deadline, Duration::from_millis(1000));
    let e = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, lease_duration_ms: 1000, renew_deadline_ms: 1000}\n"),
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "election.renew_deadline_ms");
    // The error names the setting that is wrong, not always the renew deadline.
    let e = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nelection: {identity: n1, lease_duration_ms: 3000, renew_deadline_ms: 1000, retry_period_ms: 1000}\n"),
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "election.retry_period_ms", "{e}");
    let e = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nelection: {mode: paxos}\n"),
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "election.mode");
}

#[test]
fn raft_election_config() {
    let base =
        "interface: eth0\nvips: [192.0.2.1]\nelection:\n  mode: raft\n  raft:\n    insecure: true\n";
    let peers = "    peers: {1: \"10.0.0.1:7946\", 2: \"10.0.0.2:7946\", 3: \"10.0.0.3:7946\"}\n";
    let c = resolve(
        file(&format!("{base}    id: 2\n{peers}")),
        Overrides::default(),
    )
    .unwrap();
    let Election::Raft(r) = c.election else {
        panic!("raft")
    };
    assert_eq!(r.id, 2);
    assert_eq!(r.peers.len(), 3);
    assert_eq!(r.listen, "0.0.0.0:7946".parse().unwrap(), "default listen");
    assert_eq!(r.state_dir, PathBuf::from("/var/lib/vip"));
    assert_eq!(r.heartbeat, crate::election::raft::DEFAULT_HEARTBEAT);
    assert_eq!(r.priority, Default::default(), "real time by default");
    let c = resolve(
        file(&format!(
            "{base}    id: 2\n{peers}    realtime_priority: 0\n    nice: 0\n"
        )),
        Overrides::default(),
    )
    .unwrap();
    let Election::Raft(r) = c.election else {
        panic!("raft")
    };
    assert_eq!(
        r.priority,
        crate::election::raft::sched::Priority {
            realtime: 0,
            nice: 0
        }
    );
    let c = resolve(
        file(&format!("{base}    id: 1\n{peers}    heartbeat_ms: 20\n    election_timeout_min_ms: 70\n    election_timeout_max_ms: 110\n    lease_ms: 50\n    state_dir: /tmp/x\n")),
        Overrides::default(),
    )
    .unwrap();
    let Election::Raft(r) = c.election else {
        panic!("raft")
    };
    assert_eq!(
        (r.heartbeat, r.election_timeout, r.lease),
        (
            Duration::from_millis(20),
            (Duration::from_millis(70), Duration::from_millis(110)),
            Duration::from_millis(50)
        )
    );
    // Each mistake names its field.
    for (extra, field) in [
        ("    id: 9\n", "election.raft.id"),
        (
            "    peers: {1: \"10.0.0.1\"}\n    id: 1\n",
            "election.raft.peers.1",
        ),
        ("    id: 1\n    listen: nowhere\n", "election.raft.listen"),
        (
            "    id: 1\n    listen: \"0.0.0.0:1\"\n",
            "election.raft.listen",
        ),
        ("    id: 1\n    lease_ms: 600\n", "election.raft.lease_ms"),
        (
            "    id: 1\n    realtime_priority: 100\n",
            "election.raft.realtime_priority",
        ),
        (
            "    id: 1\n    realtime_priority: -1\n",
            "election.raft.realtime_priority",
        ),
        ("    id: 1\n    nice: -21\n", "election.raft.nice"),
        ("    id: 1\n    nice: 20\n", "election.raft.nice"),
        (
            "    id: 1\n    election_timeout_max_ms: 100\n",
            "election.raft.election_timeout_max_ms",
        ),
    ] {
        let p = if extra.contains("peers") { "" } else { peers };
        let e = resolve(file(&format!("{base}{extra}{p}")), Overrides::default()).unwrap_err();
        assert_eq!(e.field, field, "{extra}: {e}");
    }
    let e = resolve(file(&format!("{base}{peers}")), Overrides::default()).unwrap_err();
    assert_eq!(e.field, "election.raft.id");
    let e = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nelection: {mode: raft}\n"),
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "election.raft");
}

#[test]
fn raft_keys_are_required_and_checked() {
    use crate::election::raft::{RaftAuth, RaftKey};
    let d = std::env::temp_dir().join(format!("vip-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let (good, old, short) = (d.join("good"), d.join("old"), d.join("short"));
    std::fs::write(&good, RaftKey::generate().unwrap()).unwrap();
    std::fs::write(&old, RaftKey::generate().unwrap()).unwrap();
    std::fs::write(&short, "c2hvcnQ=\n").unwrap();
    let base = "interface: eth0\nvips: [192.0.2.1]\nelection:\n  raft:\n    id: 1\n    peers: {1: \"10.0.0.1:7946\", 2: \"10.0.0.2:7946\"}\n";
    let raft = |extra: &str| {
        resolve(file(&format!("{base}{extra}")), Overrides::default()).map(|c| match c.election {
            Election::Raft(r) => r.auth,
            other => panic!("{other:?}"),
        })
    };
    let p = |f: &Path| f.display().to_string();
    let RaftAuth::Keys { primary, previous } = raft(&format!(
        "    key_file: {}\n    previous_key_file: {}\n",
        p(&good),
        p(&old)
    ))
    .unwrap() else {
        panic!("keyed")
    };
    assert_eq!(primary, RaftKey::from_file(&good).unwrap());
    assert_eq!(previous, Some(RaftKey::from_file(&old).unwrap()));
    assert_eq!(raft("    insecure: true\n").unwrap(), RaftAuth::Insecure);
    for (extra, field, says) in [
        (String::new(), "election.raft.key_file", "insecure: true"),
        (
            format!("    key_file: {}\n", p(&short)),
            "election.raft.key_file",
            "5-byte",
        ),
        (
            format!("    key_file: {}\n", p(&d.join("nope"))),
            "election.raft.key_file",
            "No such file",
        ),
        (
            format!(
                "    key_file: {}\n    previous_key_file: {}\n",
                p(&good),
                p(&short)
            ),
            "election.raft.previous_key_file",
            "at least 32",
        ),
        (
            format!("    key_file: {}\n    insecure: true\n", p(&good)),
            "election.raft.insecure",
            "choose one",
        ),
        (
            format!("    insecure: true\n    previous_key_file: {}\n", p(&old)),
            "election.raft.previous_key_file",
            "without key_file",
        ),
    ] {
        let e = raft(&extra).unwrap_err();
        assert_eq!(e.field, field, "{extra}: {e}");
        assert!(e.message.contains(says), "{e}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn services_resolve_and_add_their_vips() {
    let c = resolve(
        file("interface: eth0\nservices:\n  - vip: 192.0.2.50\n    port: 80\n    mode: nat\n    backends:\n      - {addr: 198.51.100.21, port: 8080}\n      - {addr: 198.51.100.22, weight: 2}\n"),
        Overrides::default(),
    )
    .unwrap();
    assert!(c.vips.contains(&IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50))));
    let s = &c.services[0];
    assert_eq!((s.port, s.proto, s.mode), (80, Proto::Tcp, LbMode::Nat));
    assert_eq!(s.backends[0].port, 8080);
    assert_eq!(s.backends[1].port, 80);
    assert_eq!(s.backends[1].weight, 2);
    assert_eq!(c.maglev_size, 65537);
}

#[test]
fn bad_service_fields_are_named() {
    let base = "interface: eth0\nservices:\n";
    let cases = [
        ("  - {port: 80}\n", "services[0].vip"),
        ("  - {vip: 192.0.2.5}\n", "services[0].port"),
        (
            "  - {vip: 192.0.2.5, port: 80, protocol: sctp}\n",
            "services[0].protocol",
        ),
        (
            "  - {vip: 192.0.2.5, port: 80, mode: magic}\n",
            "services[0].mode",
        ),
        (
            "  - {vip: 192.0.2.5, port: 80, backends: [{addr: x}]}\n",
            "services[0].backends[0].addr",
        ),
        (
            "  - {vip: 192.0.2.5, port: 80, backends: [{addr: 192.0.2.9, port: 81}]}\n",
            "services[0].backends[0].port",
        ),
        (
            "  - {vip: 192.0.2.5, port: 80}\n  - {vip: 192.0.2.5, port: 80}\n",
            "services[1].port",
        ),
    ];
    for (svc, field) in cases {
        let e = resolve(file(&format!("{base}{svc}")), Overrides::default()).unwrap_err();
        assert_eq!(e.field, field, "{svc}: {e}");
    }
    let e = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nmaglev_size: 1000\n"),
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(e.field, "maglev_size");
    for (line, field) in [
        ("maglev_sizing: auto", "maglev_sizing"),
        ("ring_slots: 10", "ring_slots"),
        ("max_services: 0", "max_services"),
        ("max_backends: 0", "max_backends"),
        ("max_vips: 0", "max_vips"),
        ("conntrack_flows: 100", "conntrack_flows"),
        ("conntrack_flows: 300000000", "conntrack_flows"),
    ] {
        let e = resolve(
            file(&format!("interface: eth0\nvips: [192.0.2.1]\n{line}\n")),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, field, "{line}: {e}");
    }
    let c = resolve(
        file("interface: eth0\nvips: [192.0.2.1]\nmaglev_sizing: by-need\n"),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.sizing(), crate::maglev::Sizing::by_need(65537));
}

#[test]
fn overrides_win_over_file() {
    let ov = Overrides {
        interface: Some("eth1".into()),
        vips: Some(vec!["198.51.100.7".into()]),
        mode: Some("kernel".into()),
        ..Default::default()
    };
    let c = resolve(
        file("interface: eth0\nvips: [192.0.2.100]\nmode: xdp\n"),
        ov,
    )
    .unwrap();
    assert_eq!(c.interface, "eth1");
    assert_eq!(c.vips.iter().next().unwrap().to_string(), "198.51.100.7");
    assert_eq!(c.mode, Mode::Kernel);
}

#[test]
fn unknown_field_is_named() {
    let e = parse_file("interface: eth0\nvipz: [1.2.3.4]\n").unwrap_err();
    assert_eq!(e.field, "vipz", "{e}");
}

#[test]
fn each_bad_field_is_named() {
    let cases = [
        ("vips: [192.0.2.1]\n", "interface"),
        ("interface: eth0\n", "vips"),
        ("interface: eth0\nvips: [192.0.2.1, nope]\n", "vips[1]"),
        ("interface: eth0\nvips: [192.0.2.1, 192.0.2.1]\n", "vips[1]"),
        ("interface: eth0\nvips: ['fe80::1']\n", "vips[0]"),
        ("interface: eth0\nvips: ['::ffff:192.0.2.1']\n", "vips[0]"),
        (
            "interface: eth0\nservices: [{vip: '2001:db8::1', port: 80, backends: [{addr: 10.0.0.1}]}]\n",
            "services[0].backends[0].addr",
        ),
        ("interface: eth0\nvips: [255.255.255.255]\n", "vips[0]"),
        ("interface: eth0\nvips: [192.0.2.1]\nmode: fast\n", "mode"),
        (
            "interface: eth0\nvips: [192.0.2.1]\nmetrics_addr: nowhere\n",
            "metrics_addr",
        ),
        (
            "interface: eth0\nvips: [192.0.2.1]\nmetrics_addr: '$(VIP_NODE_IP):9472'\n",
            "metrics_addr",
        ),
        (
            "interface: eth0\nvips: [192.0.2.1]\nmetrics_addr: '192.0.2.1'\n",
            "metrics_addr",
        ),
        (
            "interface: eth0\nvips: [192.0.2.1]\npin_dir: relative/dir\n",
            "pin_dir",
        ),
        (
            "interface: eth0\nvips: [192.0.2.1]\nlog_format: xml\n",
            "log_format",
        ),
        (
            "interface: eth0\nvips: [192.0.2.1]\ngarp: {count: 0}\n",
            "garp.count",
        ),
        (
            "interface: this-name-is-too-long\nvips: [192.0.2.1]\n",
            "interface",
        ),
    ];
    for (yaml, field) in cases {
        let e = resolve(file(yaml), Overrides::default()).unwrap_err();
        assert_eq!(e.field, field, "for {yaml:?}: {e}");
        assert!(crate::Chain(&e).to_string().contains(field));
    }
}

#[test]
fn listen_addresses() {
    for (raw, want) in [
        ("127.0.0.1:9472", "127.0.0.1:9472"),
        ("[fd00::1]:9472", "[fd00::1]:9472"),
        // `$(VIP_NODE_IP):9472` on an IPv6 node
        ("fd00::1:9472", "[fd00::1]:9472"),
    ] {
        assert_eq!(parse_listen_addr(raw).unwrap().to_string(), want, "{raw}");
    }
    for bad in ["", "192.0.2.1", "fd00::1", "host:9472", "192.0.2.1:99999"] {
        assert!(parse_listen_addr(bad).is_err(), "{bad}");
    }
    let e = parse_listen_addr("$(VIP_NODE_IP):9472").unwrap_err();
    assert!(e.contains("no variable NAME"), "{e}");
}

#[test]
fn vip_equal_to_node_address_is_rejected_but_own_slash32_adopted() {
    let c = resolve(
        file("interface: eth0\nvips: [192.0.2.1, 192.0.2.100]\n"),
        Overrides::default(),
    )
    .unwrap();
    let addrs = vec![(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
        32,
        "lo".to_string(),
    )];
    check_system(&c, Some(2), &addrs).unwrap();
    let addrs = vec![(
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        24,
        "eth0".to_string(),
    )];
    let e = check_system(&c, Some(2), &addrs).unwrap_err();
    assert_eq!(e.field, "vips[0]");
    let e = check_system(&c, None, &[]).unwrap_err();
    assert_eq!(e.field, "interface");
}

#[test]
fn ipv6_vips_resolve_and_their_own_slash128_is_adopted() {
    let c = resolve(
        file("interface: eth0\nvips: ['2001:db8::100', 192.0.2.100, '2001:db8::1']\n"),
        Overrides::default(),
    )
    .unwrap();
    let v6: IpAddr = "2001:db8::100".parse().unwrap();
    assert!(c.vips.contains(&v6));
    assert_eq!(c.vips.len(), 3);
    // A /128 of the VIP is a binding left by an earlier run; the node's /64 is its own.
    let addrs = vec![(v6, 128, "lo".to_string())];
    check_system(&c, Some(2), &addrs).unwrap();
    let addrs = vec![("2001:db8::1".parse().unwrap(), 64, "eth0".to_string())];
    let e = check_system(&c, Some(2), &addrs).unwrap_err();
    assert_eq!(e.field, "vips[1]", "{e}");
}
