//! The real daemon on a namespace bed: client and node on a bridge "switch".
//! Each test builds its own bed (named after the test) and tears it down on drop.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

mod common;
use common::{answered_probe, garps, metric, metrics, Daemon, METRICS, VIP};
use testbed::{
    addrs, arping, has_xdp, http_get, neighbour, parse_mac, poll, require_root_and_bpf,
    tcp_request, Bed, Capture, TcpServer,
};

fn bed(tag: &str) -> Bed {
    require_root_and_bpf();
    Bed::new(
        &format!("vt{tag}"),
        &[("client", "192.0.2.10/24"), ("node", "192.0.2.11/24")],
    )
}

fn pin_dir(tag: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/vip-test-{tag}"))
}

/// No answer for the VIP from anyone: polled, since the last in-flight reply may land.
fn assert_silent(bed: &Bed) {
    let client = bed.host("client");
    let silent = poll(Duration::from_secs(5), || {
        arping(client, VIP).is_none().then_some(())
    });
    assert!(silent.is_some(), "someone still answers ARP for {VIP}");
}

/// After `wait`: how long after `since` the last ARP answer came. Silence, not a quiet
/// client: asserts the prober kept asking (`asked` times at least) after that answer.
fn silent_since(
    cap: &Capture,
    probe: &common::Prober,
    since: std::time::Instant,
    wait: Duration,
    asked: usize,
) -> Duration {
    std::thread::sleep(wait);
    let last = common::replies(cap)
        .into_iter()
        .map(|(t, _)| t)
        .max()
        .unwrap();
    let unanswered = probe.sent_after(last);
    assert!(
        unanswered >= asked,
        "no answers after the fault, though asked {unanswered} times"
    );
    last.saturating_duration_since(since)
}

/// Least privilege once the daemon is up: the pin directory is root's alone (0700), every
/// pin in it 0600, and no thread of the daemon holds CAP_SYS_ADMIN any more, while it
/// keeps BPF and NET_ADMIN (what re-attaching XDP later needs).
fn assert_least_privilege(pins: &std::path::Path, pid: i32) {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::metadata(pins).unwrap();
    assert_eq!(dir.mode() & 0o7777, 0o700, "mode of {}", pins.display());
    assert_eq!(dir.uid(), 0, "owner of {}", pins.display());
    let mut n = 0;
    for e in std::fs::read_dir(pins).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600, "mode of {}", e.path().display());
        assert_eq!(m.uid(), 0, "owner of {}", e.path().display());
        n += 1;
    }
    assert!(n > 10, "maps and links pinned ({n})");
    const SYS_ADMIN: u32 = 21;
    const NET_ADMIN: u32 = 12;
    const BPF: u32 = 39;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let caps = status
                .lines()
                .find_map(|l| l.strip_prefix(set))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap();
            let has = |cap: u32| (caps >> cap) & 1 == 1;
            assert!(!has(SYS_ADMIN), "{set} {caps:x} has SYS_ADMIN");
            if set != "CapBnd:" {
                assert!(
                    has(NET_ADMIN) && has(BPF),
                    "{set} {caps:x} lacks NET_ADMIN or BPF"
                );
            }
        }
    }
}

fn assert_tcp_through_vip(bed: &Bed) {
    let node = bed.host("node");
    let client = bed.host("client");
    let _server = TcpServer::start(
        &node.ns,
        "0.0.0.0:8080".parse().unwrap(),
        "hello from node\n",
    );
    let vip: SocketAddr = format!("{VIP}:8080").parse().unwrap();
    let got = tcp_request(&client.ns, vip).expect("TCP to the VIP");
    assert_eq!(got, "hello from node\n");
    assert_eq!(
        neighbour(client, VIP).as_deref(),
        Some(node.mac.as_str()),
        "client's neighbour table maps the VIP to the node"
    );
}

#[test]
fn xdp_mode_answers_arp_serves_tcp_and_cleans_up() {
    let bed = bed("xdp");
    let pins = pin_dir("xdp");
    let node = bed.host("node");
    let mut d = Daemon::start_xdp(&bed, &pins);
    assert!(has_xdp(&node.ns, "eth0"), "XDP attached to the uplink");
    assert_least_privilege(&pins, d.pid());
    assert!(
        addrs(&node.ns, "lo").contains(&format!("{VIP}/32")),
        "VIP bound on lo"
    );
    assert!(
        !addrs(&node.ns, "eth0").iter().any(|a| a.starts_with(VIP)),
        "VIP not on the uplink"
    );

    common::assert_answered_by_xdp(&bed, &pins);

    assert_tcp_through_vip(&bed);

    // Idle means idle: a steady daemon waits on its timers and channels. (A closed watch
    // channel once made its main loop spin at 100 % of a core.)
    let busy = testbed::cpu_time(d.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = testbed::cpu_time(d.pid()) - busy;
    assert!(
        used < Duration::from_millis(150),
        "the idle daemon used {used:?} of CPU in 1 s"
    );

    let m = metrics(&bed);
    assert!(
        m.contains("vip_dataplane_info{mode=\"xdp-native\",interface=\"eth0\"} 1"),
        "{m}"
    );
    assert_eq!(metric(&m, "vip_vips_owned"), 1);
    assert!(metric(&m, "vip_arp_replies_total") >= 1);
    assert!(
        metric(&m, "vip_garp_sent_total") >= 1,
        "gratuitous ARP sent at once"
    );

    let st = d.stop();
    assert!(st.success(), "clean exit: {st}\n{}", d.logs());
    assert_silent(&bed);
    assert!(!has_xdp(&node.ns, "eth0"), "XDP detached");
    assert!(
        !addrs(&node.ns, "lo").iter().any(|a| a.starts_with(VIP)),
        "VIP unbound from lo"
    );
    assert!(!pins.exists(), "pins removed: {}", pins.display());
}

#[test]
fn gratuitous_arp_burst_announces_the_vip_at_once() {
    let bed = bed("garp");
    let pins = pin_dir("garp");
    let node = bed.host("node");
    let client = bed.host("client");
    let cap = Capture::start(client, 0x0806);
    let started = std::time::Instant::now();
    let mut d = Daemon::start_xdp(&bed, &pins);
    let ready_at = started.elapsed();
    let vip: [u8; 4] = [192, 0, 2, 100];
    let node_mac = parse_mac(&node.mac);
    let is_garp = |f: &[u8]| {
        f.len() >= 42
            && f[0..6] == [0xff; 6]
            && f[6..12] == node_mac
            && f[20..22] == [0, 1]
            && f[22..28] == node_mac
            && f[28..32] == vip
            && f[38..42] == vip
    };
    // Default burst: 5 frames over 2 s.
    let garps = poll(Duration::from_secs(5), || {
        let g: Vec<_> = cap
            .frames()
            .into_iter()
            .filter(|(_, f)| is_garp(f))
            .collect();
        (g.len() >= 5).then_some(g)
    })
    .expect("5 gratuitous ARPs for the VIP from the node's MAC");
    // Nothing beyond the burst.
    std::thread::sleep(Duration::from_millis(300));
    let total = cap.frames().iter().filter(|(_, f)| is_garp(f)).count();
    assert_eq!(total, 5, "exactly the configured burst");
    let first = garps[0].0.duration_since(started);
    assert!(
        first <= ready_at,
        "the first announcement leaves before the daemon reports ready ({first:?} vs {ready_at:?})"
    );
    let span = garps[4].0.duration_since(garps[0].0);
    assert!(
        span >= Duration::from_millis(1800) && span <= Duration::from_millis(2600),
        "burst spread over ~2 s, was {span:?}"
    );
    assert!(d.stop().success());
}

#[test]
fn uplink_removed_and_replaced_is_recovered() {
    let bed = bed("link");
    let pins = pin_dir("link");
    let node = bed.host("node");
    let client = bed.host("client");
    let mut d = Daemon::start_xdp(&bed, &pins);
    assert_eq!(arping(client, VIP).as_deref(), Some(node.mac.as_str()));
    let metrics_addr: SocketAddr = METRICS.parse().unwrap();

    bed.unplug("node");
    let not_ready = poll(Duration::from_secs(5), || {
        matches!(http_get(&node.ns, metrics_addr, "/readyz"), Ok((503, _))).then_some(())
    });
    assert!(
        not_ready.is_some(),
        "not ready without an uplink:\n{}",
        d.logs()
    );
    assert_eq!(metric(&metrics(&bed), "vip_uplink_present"), 0);
    assert!(
        !addrs(&node.ns, "lo").iter().any(|a| a.starts_with(VIP)),
        "VIP released"
    );
    assert!(d.logs().contains("uplink disappeared"), "{}", d.logs());

    let new_mac = bed.replug("node");
    assert_ne!(new_mac, node.mac);
    let ready = poll(Duration::from_secs(5), || {
        matches!(http_get(&node.ns, metrics_addr, "/readyz"), Ok((200, _))).then_some(())
    });
    assert!(
        ready.is_some(),
        "ready again on the new uplink:\n{}",
        d.logs()
    );
    assert!(has_xdp(&node.ns, "eth0"), "XDP attached to the new device");
    // Re-attached (maps, program, link, pins) without CAP_SYS_ADMIN, dropped at start.
    assert_least_privilege(&pins, d.pid());
    let answered = poll(Duration::from_secs(5), || arping(client, VIP));
    assert_eq!(
        answered.as_deref(),
        Some(new_mac.as_str()),
        "answered with the new MAC"
    );
    let m = metrics(&bed);
    assert_eq!(metric(&m, "vip_uplink_present"), 1);
    assert_eq!(metric(&m, "vip_dataplane_restarts_total"), 1);
    assert!(d.stop().success(), "{}", d.logs());
    assert!(!pins.exists());
}

#[test]
fn kernel_mode_binds_on_uplink_and_cleans_up() {
    let bed = bed("krn");
    let node = bed.host("node");
    let client = bed.host("client");
    let mut d = Daemon::start(
        &bed,
        &["--vip", VIP, "--mode", "kernel", "--log-format", "json"],
    );
    assert!(!has_xdp(&node.ns, "eth0"), "no XDP in kernel mode");
    assert!(
        addrs(&node.ns, "eth0").contains(&format!("{VIP}/32")),
        "VIP bound on the uplink"
    );
    assert_eq!(arping(client, VIP).as_deref(), Some(node.mac.as_str()));
    assert_tcp_through_vip(&bed);
    let m = metrics(&bed);
    assert!(m.contains("mode=\"kernel\""), "{m}");

    let st = d.stop();
    assert!(st.success(), "{}", d.logs());
    assert_silent(&bed);
    assert!(
        !addrs(&node.ns, "eth0").iter().any(|a| a.starts_with(VIP)),
        "VIP unbound"
    );
    let logs = d.logs();
    assert!(
        logs.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with('{') && l.ends_with('}')),
        "--log-format json writes JSON lines:\n{logs}"
    );
}

#[test]
fn auto_mode_falls_back_to_kernel_when_xdp_cannot_load() {
    let bed = bed("auto");
    let node = bed.host("node");
    let client = bed.host("client");
    // A pin directory on a filesystem that is not bpffs makes the XDP path fail.
    let not_bpffs = std::env::temp_dir().join("vip-not-bpffs");
    let mut d = Daemon::start(
        &bed,
        &[
            "--vip",
            VIP,
            "--mode",
            "auto",
            "--pin-dir",
            not_bpffs.to_str().unwrap(),
        ],
    );
    assert!(!has_xdp(&node.ns, "eth0"));
    assert!(addrs(&node.ns, "eth0").contains(&format!("{VIP}/32")));
    assert_eq!(arping(client, VIP).as_deref(), Some(node.mac.as_str()));
    assert!(d.logs().contains("falling back to kernel"), "{}", d.logs());
    assert!(d.stop().success());
    let _ = std::fs::remove_dir_all(&not_bpffs);
}

#[test]
fn bad_config_exits_2_naming_the_field() {
    let bed = bed("cfg");
    let node = bed.host("node");
    let dir = std::env::temp_dir().join("vip-cfg-test");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--config".into(),
                write("typo.yaml", "interface: eth0\nvipz: [192.0.2.100]\n")
                    .display()
                    .to_string(),
            ],
            "vipz",
        ),
        (
            vec![
                "--config".into(),
                write(
                    "badip.yaml",
                    "interface: eth0\nvips: [192.0.2.100, 300.1.1.1]\n",
                )
                .display()
                .to_string(),
            ],
            "vips[1]",
        ),
        (
            vec![
                "--interface".into(),
                "nosuch0".into(),
                "--vip".into(),
                VIP.into(),
            ],
            "interface",
        ),
        (
            vec![
                "--interface".into(),
                "eth0".into(),
                "--vip".into(),
                "192.0.2.11".into(),
            ],
            "vips[0]",
        ),
        (
            vec![
                "--interface".into(),
                "eth0".into(),
                "--vip".into(),
                VIP.into(),
                "--mode".into(),
                "turbo".into(),
            ],
            "mode",
        ),
        (
            vec![
                "--config".into(),
                dir.join("missing.yaml").display().to_string(),
            ],
            "--config",
        ),
    ];
    for (args, field) in cases {
        let out = node
            .ns
            .command(testkit::daemon::vip_bin())
            .arg("run")
            .args(&args)
            .args(["--metrics-addr", METRICS])
            .env_remove("VIP_INTERFACE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("field `{field}`")),
            "{args:?}: stderr should name `{field}`: {stderr}"
        );
    }
    assert!(
        !has_xdp(&node.ns, "eth0"),
        "a config error attaches nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hung_daemon_goes_silent_by_its_dead_man_and_foreign_claims_are_fought() {
    let bed = bed("dm");
    let pins = pin_dir("dm");
    let client = bed.host("client");
    let node = bed.host("node");
    let cfg = std::env::temp_dir().join("vtdm.yaml");
    let mut d = Daemon::start_with_config(
        &bed,
        "node",
        &cfg,
        &format!(
            "interface: eth0\nvips: [{VIP}]\nmode: xdp\npin_dir: {}\ndead_man_ms: 400\n",
            pins.display()
        ),
    );
    assert_eq!(arping(client, VIP).as_deref(), Some(node.mac.as_str()));

    // Another host claims the VIP (gratuitous ARP from its own MAC): counted, logged with
    // that MAC, and answered by a fresh announcement from the owner. After the start-up
    // burst (5 frames), so that an announcement after the claim can only be the answer.
    poll(Duration::from_secs(5), || {
        (metric(&metrics(&bed), "vip_garp_sent_total") >= 5).then_some(())
    })
    .expect("start-up burst sent");
    let cap = Capture::start(client, 0x0806);
    let claim_at = std::time::Instant::now();
    common::claim(client, VIP.parse().unwrap());
    let node_mac = parse_mac(&node.mac);
    let reannounced = poll(Duration::from_secs(3), || {
        garps(&cap)
            .into_iter()
            .find(|(t, mac)| *t > claim_at && *mac == node_mac)
    });
    assert!(
        reannounced.is_some(),
        "owner re-announces after a foreign claim:\n{}",
        d.logs()
    );
    let m = metrics(&bed);
    assert!(metric(&m, "vip_arp_conflicts_total") >= 1, "{m}");
    // At least our claim (exact counting is pinned by the test_run fixtures).
    assert!(
        metric(&m, &format!("vip_vip_arp_conflicts_total{{vip=\"{VIP}\"}}")) >= 1,
        "{m}"
    );
    let client_mac = client.mac.clone();
    assert!(
        poll(Duration::from_secs(2), || (d
            .logs()
            .contains("another host claims")
            && d.logs().contains(&client_mac))
        .then_some(()))
        .is_some(),
        "{}",
        d.logs()
    );

    // The daemon hangs (SIGSTOP): its map still says "owned", but XDP goes silent once the
    // dead-man deadline passes (400 ms), and answers again when it resumes.
    let (cap, probe) = answered_probe(client, Duration::from_millis(20));
    let stopped = std::time::Instant::now();
    d.proc.signal(libc::SIGSTOP);
    let silent_after = silent_since(&cap, &probe, stopped, Duration::from_millis(1200), 10);
    assert!(
        silent_after <= Duration::from_millis(400 + 150),
        "last ARP answer {silent_after:?} after the daemon stopped (dead-man 400 ms)"
    );
    eprintln!("hung daemon: last ARP answer {silent_after:?} after SIGSTOP (dead-man 400 ms)");
    d.proc.signal(libc::SIGCONT);
    let resumed = poll(Duration::from_secs(3), || {
        common::replies(&cap)
            .into_iter()
            .any(|(t, _)| t > stopped + Duration::from_millis(1200))
            .then_some(())
    });
    drop(probe);
    assert!(
        resumed.is_some(),
        "answers again after SIGCONT:\n{}",
        d.logs()
    );
    assert!(metric(&metrics(&bed), "vip_arp_deadman_drops_total") >= 1);

    // The daemon dies (SIGKILL: no cleanup, the VIP stays bound on lo). Whatever is left of
    // the data plane, nothing may answer for the VIP past the dead-man: not XDP, and not the
    // kernel for the address on lo (strict ARP on the uplink).
    assert_eq!(node.ns.sysctl_value("net.ipv4.conf.eth0.arp_ignore"), "1");
    let (cap, probe) = answered_probe(client, Duration::from_millis(20));
    let killed = std::time::Instant::now();
    d.proc.signal(libc::SIGKILL);
    assert!(d.proc.wait_timeout(Duration::from_secs(5)).is_some());
    let silent_after = silent_since(&cap, &probe, killed, Duration::from_millis(1500), 20);
    assert!(
        silent_after <= Duration::from_millis(400 + 150),
        "last ARP answer {silent_after:?} after SIGKILL (dead-man 400 ms)"
    );
    eprintln!("killed daemon: last ARP answer {silent_after:?} after SIGKILL");
    drop(probe);
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_file(&cfg);
}

/// Make `/proc/sys` read-only for the daemon alone, as container runtimes mount it for every
/// unprivileged container: a mount namespace of its own, /proc/sys bound read-only there.
fn read_only_proc_sys(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; unshare and mount are plain syscalls
    // on C strings that outlive the calls.
    unsafe {
        cmd.pre_exec(|| {
            let err = std::io::Error::last_os_error;
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(err());
            }
            let root = c"/".as_ptr();
            let sys = c"/proc/sys".as_ptr();
            let none = std::ptr::null();
            if libc::mount(none, root, none, libc::MS_REC | libc::MS_PRIVATE, none as _) != 0
                || libc::mount(sys, sys, none, libc::MS_BIND, none as _) != 0
                || libc::mount(
                    none,
                    sys,
                    none,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    none as _,
                ) != 0
            {
                return Err(err());
            }
            Ok(())
        });
    }
}

fn conf(bed: &Bed, key: &str) -> String {
    let path = format!("/proc/sys/net/ipv4/conf/eth0/{key}");
    bed.host("node")
        .ns
        .run(move || std::fs::read_to_string(path))
        .unwrap()
        .trim()
        .to_string()
}

/// The fence's kernel layer (arp_ignore) and the setting XDP forwarding needs (forwarding)
/// are applied through rtnetlink, so a daemon that cannot write /proc/sys (any unprivileged
/// container) still gets them; and the daemon really could not write it.
#[test]
fn interface_settings_are_applied_without_a_writable_proc_sys() {
    let bed = bed("rosys");
    let pins = pin_dir("rosys");
    let _ = std::fs::remove_dir_all(&pins);
    assert_eq!(conf(&bed, "arp_ignore"), "0");
    assert_eq!(conf(&bed, "forwarding"), "0");
    let cfg = std::env::temp_dir().join("vtrosys.yaml");
    std::fs::write(
        &cfg,
        format!(
            "interface: eth0\nvips: [{VIP}]\nmode: xdp\npin_dir: {}\nservices:\n  - vip: {VIP}\n    port: 80\n    mode: dsr\n    backends: [{{addr: 192.0.2.21, port: 80}}]\n",
            pins.display()
        ),
    )
    .unwrap();
    Daemon::fresh_log(&bed, "node");
    let mut d = Daemon::spawn_with(
        &bed,
        "node",
        &["--config", cfg.to_str().unwrap()],
        &[],
        read_only_proc_sys,
    );
    d.wait_ready(&bed, "node");
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", d.pid())).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/proc/sys") && l.contains(" ro,")),
        "the daemon's /proc/sys is read-only:\n{mounts}"
    );
    assert_eq!(conf(&bed, "arp_ignore"), "1", "\n{}", d.logs());
    assert_eq!(conf(&bed, "forwarding"), "1", "\n{}", d.logs());
    assert!(arping(bed.host("client"), VIP).is_some(), "ARP answered");
    assert_eq!(metric(&metrics(&bed), "vip_fence_ready"), 1);
    assert!(d.stop().success());
    // forwarding was ours to turn on, so it is restored; arp_ignore stays (see docs/running.md, Run it).
    assert_eq!(conf(&bed, "forwarding"), "0");
    assert_eq!(conf(&bed, "arp_ignore"), "1");
    let _ = std::fs::remove_file(&cfg);
}

/// A node that cannot put the fence's kernel layer in place claims nothing: a daemon
/// without CAP_NET_ADMIN (dropped from its bounding set, so it cannot set arp_ignore) is not
/// ready, exports `vip_fence_ready 0`, logs an error naming the setting, loads no data
/// plane and answers no ARP; the kernel does not answer for it either.
/// From linux/capability.h (libc does not carry the capability numbers).
const CAP_NET_ADMIN: u64 = 12;

#[test]
fn unmet_fence_claims_nothing() {
    let bed = bed("nofence");
    let pins = pin_dir("nofence");
    let _ = std::fs::remove_dir_all(&pins);
    let node = bed.host("node");
    let pins_s = pins.to_str().unwrap();
    Daemon::fresh_log(&bed, "node");
    let mut d = Daemon::spawn_with(
        &bed,
        "node",
        &["--vip", VIP, "--mode", "xdp", "--pin-dir", pins_s],
        &[],
        |cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl in the forked child before exec, no memory involved.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    let logged = poll(Duration::from_secs(10), || {
        d.logs().contains("fence not in place").then_some(())
    });
    assert!(logged.is_some(), "error logged:\n{}", d.logs());
    assert!(
        d.logs().contains("arp_ignore"),
        "names the setting:\n{}",
        d.logs()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    assert_eq!(eff & (1 << CAP_NET_ADMIN), 0, "NET_ADMIN really dropped");
    let m: SocketAddr = METRICS.parse().unwrap();
    assert_eq!(
        http_get(&node.ns, m, "/readyz").map(|r| r.0).ok(),
        Some(503)
    );
    assert_eq!(metric(&metrics(&bed), "vip_fence_ready"), 0);
    assert_eq!(metric(&metrics(&bed), "vip_leader"), 0, "nothing owned");
    assert!(!pins.exists(), "no data plane loaded");
    assert_eq!(conf(&bed, "arp_ignore"), "0");
    assert!(arping(bed.host("client"), VIP).is_none(), "nobody answers");
    assert!(
        d.stop().success(),
        "stops cleanly while waiting:\n{}",
        d.logs()
    );
}

/// More VIPs than the data plane's VIP map holds (`max_vips: 2`, three VIPs): the daemon
/// starts and answers for the two that fit; the third fails alone, logged and counted.
#[test]
fn vips_beyond_the_map_fail_alone() {
    let bed = bed("maxvip");
    let pins = pin_dir("maxvip");
    let _ = std::fs::remove_dir_all(&pins);
    let cfg = std::env::temp_dir().join("vtmaxvip.yaml");
    let mut d = Daemon::start_with_config(&bed, "node", &cfg, &format!(
            "interface: eth0\nvips: [192.0.2.100, 192.0.2.101, 192.0.2.102]\nmode: xdp\npin_dir: {}\nmax_vips: 2\n",
            pins.display()
        ));
    let client = bed.host("client");
    let answered: Vec<bool> = ["192.0.2.100", "192.0.2.101", "192.0.2.102"]
        .iter()
        .map(|v| arping(client, v).is_some())
        .collect();
    assert_eq!(answered, [true, true, false], "{}", d.logs());
    assert!(d.logs().contains("VIPs not applied"), "{}", d.logs());
    assert!(metric(&metrics(&bed), "vip_reconcile_errors_total") >= 1);
    assert!(d.stop().success(), "{}", d.logs());
    let _ = std::fs::remove_file(&cfg);
}
