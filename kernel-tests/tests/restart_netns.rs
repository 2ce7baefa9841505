//! Hitless restarts: the real daemon stopped (planned hand-over, or SIGKILL) and started
//! again on a namespace bed, while a client keeps asking ARP for the VIP and holds a TCP
//! connection through it to a backend namespace.
mod common;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{
    answered_probe, attachment, garps, last_answer, lb_bed, longest_silence, metric, metrics,
    replies, Daemon, VIP,
};
use testbed::{
    addrs, has_xdp, parse_mac, poll, require_root_and_bpf, tcp_request, Bed, Capture, LongConn,
    TcpServer,
};

const BACKENDS: [&str; 2] = ["be1", "be2"];
/// Short, so a data plane left without its deadline pushed out would go silent inside the
/// gap the tests leave between daemons.
const DEAD_MAN_MS: u64 = 400;

struct Fixture {
    bed: Bed,
    cfg: PathBuf,
    pins: PathBuf,
    port: u16,
    _tcp: Vec<TcpServer>,
}

impl Fixture {
    /// client, node (vip) and two backends: dsr (VIP on the backends' lo, same segment) or
    /// nat (backends on their own subnet behind the node).
    fn new(tag: &str, nat: bool) -> Fixture {
        require_root_and_bpf();
        let (bed, tcp) = lb_bed(&format!("vr{tag}"), &BACKENDS, nat);
        let pins = PathBuf::from(format!("/sys/fs/bpf/vip-test-restart-{tag}"));
        vip_userspace::dataplane::load::remove_pins(&pins);
        let (mode, port) = if nat { ("nat", 80) } else { ("dsr", 8080) };
        let backends: String = BACKENDS
            .iter()
            .map(|b| format!("      - {{addr: {}, port: 8080}}\n", bed.host(b).addr))
            .collect();
        let cfg = std::env::temp_dir().join(format!("vr{tag}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "interface: eth0\nmode: xdp\npin_dir: {}\ndead_man_ms: {DEAD_MAN_MS}\nrestart_grace_ms: 5000\nservices:\n  - vip: {VIP}\n    port: {port}\n    protocol: tcp\n    mode: {mode}\n    backends:\n{backends}",
                pins.display()
            ),
        )
        .unwrap();
        Fixture {
            bed,
            cfg,
            pins,
            port,
            _tcp: tcp,
        }
    }

    fn vip(&self) -> SocketAddr {
        format!("{VIP}:{}", self.port).parse().unwrap()
    }

    /// A daemon; `first` truncates the log, later ones append to it.
    fn start(&self, first: bool, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut args = vec!["--config", self.cfg.to_str().unwrap()];
        args.extend_from_slice(extra);
        if first {
            assert!(env.is_empty());
            Daemon::start(&self.bed, &args)
        } else {
            Daemon::start_with_env(&self.bed, "node", &args, env)
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        vip_userspace::dataplane::load::remove_pins(&self.pins);
        let _ = std::fs::remove_file(&self.cfg);
    }
}

fn vip_arp_replies(bed: &Bed) -> u64 {
    metric(
        &metrics(bed),
        &format!("vip_vip_arp_replies_total{{vip=\"{VIP}\"}}"),
    )
}

/// Gratuitous ARPs for the VIP sent by the node after `from`.
fn garps_after(cap: &Capture, node_mac: [u8; 6], from: Instant) -> usize {
    garps(cap)
        .into_iter()
        .filter(|(t, mac)| *t > from && *mac == node_mac)
        .count()
}

/// The log lines written after the last occurrence of `marker`.
fn logs_after(d: &Daemon, marker: &str) -> String {
    let l = d.logs();
    l.rsplit(marker).next().unwrap_or_default().to_string()
}

/// Planned restart (SIGTERM with --handover), then an upgrade (SIGUSR2, program forced to
/// differ): ARP for the VIP is answered throughout, a nat connection through the VIP keeps
/// working, the link is never detached (same id), the program is kept and then replaced in
/// place, and the VIP is adopted (no re-acquisition, one gratuitous ARP).
#[test]
fn planned_restart_and_upgrade_are_hitless() {
    let fx = Fixture::new("plan", true);
    let client = fx.bed.host("client");
    let node = fx.bed.host("node");
    let node_mac = parse_mac(&node.mac);
    let mut d = fx.start(true, &["--handover"], &[]);
    let (how, link, prog) = attachment(&metrics(&fx.bed));
    assert_eq!(how, "fresh");
    assert!(link > 0 && prog > 0, "XDP attached through a bpf_link");

    let mut long = LongConn::open(&client.ns, fx.vip()).expect("connection through the VIP");
    let home = long.greeting.trim().to_string();
    assert_eq!(long.echo("before").unwrap(), "before");
    let (cap, prober) = answered_probe(client, Duration::from_millis(5));
    let arp_before = vip_arp_replies(&fx.bed);

    // 1. Planned restart: the daemon exits, the data plane stays.
    let t0 = Instant::now();
    let st = d.stop();
    assert!(st.success(), "hand-over exits cleanly: {st}\n{}", d.logs());
    assert!(
        has_xdp(&node.ns, "eth0"),
        "XDP still attached without a daemon"
    );
    // Longer than the dead-man: only the restart grace keeps ARP answered now.
    std::thread::sleep(Duration::from_millis(3 * DEAD_MAN_MS));
    assert_eq!(
        long.echo("no daemon").unwrap(),
        "no daemon",
        "established nat flow forwarded while no daemon runs"
    );
    assert!(
        tcp_request(&client.ns, fx.vip()).is_ok(),
        "new connections too"
    );
    let t_start = Instant::now();
    let mut d = fx.start(false, &["--handover"], &[]);
    let t_ready = Instant::now();
    let (how, link2, prog2) = attachment(&metrics(&fx.bed));
    assert_eq!(
        (how.as_str(), link2, prog2),
        ("unchanged", link, prog),
        "same link, same program"
    );
    let run2 = logs_after(&d, "handing over");
    assert!(
        run2.contains("adopted pinned data plane (program unchanged)"),
        "{run2}"
    );
    assert!(run2.contains("adopted VIP"), "{run2}");
    assert!(
        !run2.contains("acquired VIP") && !run2.contains("released VIP"),
        "the VIP was not removed and re-added:\n{run2}"
    );
    assert_eq!(long.echo("after").unwrap(), "after");
    // One gratuitous ARP, not a burst (its second frame would leave ~130 ms later).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        garps_after(&cap, node_mac, t_start),
        1,
        "adoption announces once"
    );
    assert!(
        vip_arp_replies(&fx.bed) > arp_before,
        "the VIP's counters went on (not reset by a re-add)"
    );
    let silence = longest_silence(&cap, t0, Instant::now());
    eprintln!(
        "planned restart: daemon down {:?}, new one ready in {:?}, longest ARP silence {silence:?}",
        t_start - t0,
        t_ready - t_start
    );
    assert!(
        silence < Duration::from_millis(100),
        "ARP answered throughout the restart (probing every 5 ms); longest silence {silence:?}"
    );

    // 2. Upgrade: SIGUSR2 hands over too; the next program differs (forced) and replaces
    // the running one through the same link.
    let t1 = Instant::now();
    d.proc.signal(libc::SIGUSR2);
    assert!(
        d.proc.wait_timeout(Duration::from_secs(10)).is_some(),
        "SIGUSR2 ends the daemon:\n{}",
        d.logs()
    );
    let mut d = fx.start(false, &[], &[("VIP_FORCE_PROGRAM_REPLACE", "1")]);
    let (how, link3, prog3) = attachment(&metrics(&fx.bed));
    assert_eq!(how, "replaced");
    assert_eq!(link3, link, "the link was never detached");
    assert_ne!(prog3, prog, "the new program runs in it");
    assert!(d
        .logs()
        .contains("adopted pinned data plane (program replaced)"));
    assert_eq!(long.echo("upgraded").unwrap(), "upgraded");
    assert_eq!(
        long.greeting.trim(),
        home,
        "still the same backend connection"
    );
    std::thread::sleep(Duration::from_millis(200));
    let silence = longest_silence(&cap, t1, Instant::now());
    eprintln!("upgrade: longest ARP silence {silence:?}");
    assert!(
        silence < Duration::from_millis(100),
        "ARP answered throughout the upgrade; longest silence {silence:?}"
    );
    drop(prober);

    // 3. Without --handover, SIGTERM still releases everything.
    assert!(d.stop().success(), "{}", d.logs());
    assert!(!has_xdp(&node.ns, "eth0"), "XDP detached on a clean stop");
    assert!(!fx.pins.exists(), "pins (maps and links) removed");
    assert!(
        !addrs(&node.ns, "lo").iter().any(|a| a.starts_with(VIP)),
        "VIP unbound"
    );
}

/// SIGKILL: nothing is handed over, yet established flows keep forwarding (the pinned link
/// keeps XDP attached); ARP goes silent by the dead-man (the fence), and the next daemon
/// takes over the same link and answers again.
#[test]
fn sigkill_keeps_flows_and_the_next_daemon_takes_over() {
    let fx = Fixture::new("kill", false);
    let client = fx.bed.host("client");
    let node = fx.bed.host("node");
    let d = fx.start(true, &[], &[]);
    let (_, link, prog) = attachment(&metrics(&fx.bed));
    let mut long = LongConn::open(&client.ns, fx.vip()).expect("dsr connection through the VIP");
    assert_eq!(long.echo("before").unwrap(), "before");

    let (cap, prober) = answered_probe(client, Duration::from_millis(5));

    let mut d = d;
    d.proc.signal(libc::SIGKILL);
    let killed = Instant::now();
    assert!(d.proc.wait_timeout(Duration::from_secs(5)).is_some());
    assert!(
        has_xdp(&node.ns, "eth0"),
        "XDP still attached after SIGKILL"
    );
    assert_eq!(
        long.echo("orphaned").unwrap(),
        "orphaned",
        "established flow forwarded with no daemon"
    );
    // Silent once no answer came for a while (probes every 5 ms).
    let last = last_answer(&cap, &prober, Duration::from_millis(300), 20);
    let silent_after = last.saturating_duration_since(killed);
    eprintln!(
        "SIGKILL: last ARP answer {silent_after:?} after the kill (dead_man_ms {DEAD_MAN_MS})"
    );
    assert!(
        silent_after <= Duration::from_millis(DEAD_MAN_MS + 50),
        "fenced by the dead-man: last answer {silent_after:?} after the kill"
    );
    assert_eq!(
        long.echo("silent").unwrap(),
        "silent",
        "flows keep forwarding while ARP is fenced"
    );

    let mut d = fx.start(false, &[], &[]);
    let (how, link2, prog2) = attachment(&metrics(&fx.bed));
    assert_eq!(
        (how.as_str(), link2, prog2),
        ("unchanged", link, prog),
        "the new daemon took over the pinned link"
    );
    let back = Instant::now();
    assert!(
        poll(Duration::from_secs(2), || replies(&cap)
            .iter()
            .any(|(t, mac)| *t > back && *mac == parse_mac(&node.mac))
            .then_some(()))
        .is_some(),
        "ARP answered again by the node"
    );
    assert_eq!(long.echo("after").unwrap(), "after");
    assert!(d.stop().success(), "{}", d.logs());
    assert!(!has_xdp(&node.ns, "eth0"));
    assert!(!fx.pins.exists());
}

/// A restart with another `conntrack_flows`: the pinned flow table has another shape, so it
/// is replaced (logged, naming the map and the cost), and the running program is swapped in
/// place even though its instructions are the same (it still held the old table). An
/// established nat connection keeps its backend: its next packets miss the new table and
/// are placed by Maglev again, onto the same backend. The kernel's charge for the new table
/// is exported and is what `map_memory` computes.
#[test]
fn a_resized_flow_table_is_replaced_and_the_program_follows() {
    use vip_userspace::dataplane::{load, memory};
    let fx = Fixture::new("resz", true);
    let client = fx.bed.host("client");
    let mut d = fx.start(true, &["--handover"], &[]);
    let (how, link, prog) = attachment(&metrics(&fx.bed));
    assert_eq!(how, "fresh");
    let mut long = LongConn::open(&client.ns, fx.vip()).expect("connection through the VIP");
    let home = long.greeting.trim().to_string();
    assert_eq!(long.echo("before").unwrap(), "before");
    let ct_bytes = || metric(&metrics(&fx.bed), "vip_bpf_map_bytes{map=\"CONNTRACK\"}");
    let before = ct_bytes();
    let st = d.stop();
    assert!(st.success(), "hand-over exits cleanly: {st}\n{}", d.logs());

    let flows = 4096 * vip_common::CT_WAYS * load::possible_cpus();
    let mut cfg = std::fs::read_to_string(&fx.cfg).unwrap();
    cfg.push_str(&format!("conntrack_flows: {flows}\n"));
    std::fs::write(&fx.cfg, cfg).unwrap();
    let mut d = fx.start(false, &["--handover"], &[]);
    let (how, link2, prog2) = attachment(&metrics(&fx.bed));
    let run2 = logs_after(&d, "handing over");
    assert_eq!(
        how, "replaced",
        "the program holding the old table is swapped:\n{run2}"
    );
    assert_eq!(link2, link, "through the same link");
    assert_ne!(prog2, prog);
    assert!(
        run2.contains("pinned map has another shape; replacing it") && run2.contains("CONNTRACK"),
        "{run2}"
    );
    assert_eq!(long.echo("after").unwrap(), "after");
    assert_eq!(
        long.greeting.trim(),
        home,
        "still the same backend connection"
    );
    let want = memory::map_memory(
        &load::Sizes {
            conntrack_flows: flows,
            ..load::Sizes::default()
        },
        load::possible_cpus(),
    )
    .into_iter()
    .find(|(m, _)| *m == vip_common::map_names::CONNTRACK)
    .map(|(_, b)| b);
    let after = ct_bytes();
    assert_eq!(Some(after), want, "exported charge is the computed one");
    assert!(after < before, "{before} -> {after}");
    // The same settings again: nothing replaced, the program kept.
    assert!(d.stop().success(), "{}", d.logs());
    let mut d = fx.start(false, &[], &[]);
    let (how, _, prog3) = attachment(&metrics(&fx.bed));
    assert_eq!((how.as_str(), prog3), ("unchanged", prog2));
    assert_eq!(long.echo("again").unwrap(), "again");
    assert!(d.stop().success(), "{}", d.logs());
}
