//! `cargo xtask demo`: a client and a node on a bridge, vip on the node. First XDP answers ARP
//! for the VIP (counter before/after) and TCP reaches a server on the node through the VIP;
//! then the same with `mode: kernel`; then load balancing over three dsr backends; then three
//! nodes electing the owner by Raft, the owner's daemon SIGKILLed while a client asks for the
//! VIP every 10 ms: the longest gap and that one node answered at a time. Everything is
//! removed on exit, Ctrl-C included.
use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use testbed::{
    arping, has_xdp, http_get, make_dsr_backend, neighbour, parse_mac, poll, tcp_request,
    tcp_requests, Bed, Capture, Proc, TcpServer,
};

use crate::{ebpf, setup, util};

const PREFIX: &str = "vipdemo";
const VIP: &str = "192.0.2.100";
const METRICS: &str = "127.0.0.1:9472";
const PIN_DIR: &str = "/sys/fs/bpf/vip-demo";

/// Children running now (daemons, the prober; pids), stopped by `cleanup` on Ctrl-C or an
/// error.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn say(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

fn cleanup() {
    let pids = CHILDREN.lock().map(|mut d| std::mem::take(&mut *d));
    for pid in pids.unwrap_or_default() {
        // SAFETY: kill(2) on a child this demo started and has not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    testbed::cleanup_prefix(&format!("{PREFIX}-"));
    let _ = std::fs::remove_dir_all(PIN_DIR);
    let _ = std::fs::remove_dir_all(raft_dir());
}

/// The Raft nodes' files, state directories and logs.
fn raft_dir() -> PathBuf {
    std::env::temp_dir().join("vip-demo-raft")
}

pub fn run() -> Result<()> {
    if !util::is_root() {
        bail!("the demo builds network namespaces and attaches XDP: run it as root");
    }
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: cleaning up");
        cleanup();
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;
    setup::run()?;
    say("building the eBPF object and the vip binary");
    ebpf::build(true)?;
    util::cargo(&["build", "--quiet", "-p", "vip-userspace", "--bin", "vip"])?;
    let vip = util::root().join("target/debug/vip");
    let res = demo(&vip)
        .and_then(|()| demo_lb(&vip))
        .and_then(|()| demo_raft(&vip));
    cleanup();
    res?;
    say("done: namespaces, pins and addresses removed");
    Ok(())
}

fn demo(vip: &Path) -> Result<()> {
    say("test bed: namespaces client (192.0.2.10) and node (192.0.2.11) on a bridge");
    let bed = Bed::new(
        PREFIX,
        &[("client", "192.0.2.10/24"), ("node", "192.0.2.11/24")],
    );
    let node = bed.host("node");
    let client = bed.host("client");
    println!(
        "node eth0 MAC {}   client eth0 MAC {}",
        node.mac, client.mac
    );
    let cfg = std::env::temp_dir().join("vip-demo.yaml");

    for mode in ["xdp", "kernel"] {
        say(&format!("vip run with mode: {mode}"));
        let yaml = format!(
            "interface: eth0\nvips: [{VIP}]\nmode: {mode}\nmetrics_addr: {METRICS}\npin_dir: {PIN_DIR}\n"
        );
        std::fs::write(&cfg, &yaml)?;
        println!(
            "{}",
            yaml.trim_end()
                .replace('\n', "\n  ")
                .replace("interface", "  interface")
        );
        let log = std::env::temp_dir().join(format!("vip-demo-{mode}.log"));
        let mut seen = 0;
        let mut daemon = start(&bed, vip, &cfg, &log)?;
        print_log(&log, &mut seen);
        println!(
            "XDP attached on node eth0: {}",
            if has_xdp(&node.ns, "eth0") {
                "yes"
            } else {
                "no (kernel answers)"
            }
        );
        let before = metric(&bed, "vip_arp_replies_total");
        say("client: arping the VIP");
        let out = client
            .ns
            .command("arping")
            .args(["-c", "2", "-w", "2", "-i", "eth0", VIP])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        // "58 bytes from ee:fc:08:0c:97:af (192.0.2.100): index=0 ..."
        let mac = text
            .lines()
            .find(|l| l.contains("bytes from"))
            .and_then(|l| l.split_whitespace().nth(3))
            .map(str::to_lowercase);
        let after = metric(&bed, "vip_arp_replies_total");
        match (&mac, before, after) {
            (Some(m), Some(b), Some(a)) => println!(
                "answered by {m} (node's MAC: {}); XDP arp_reply counter {b} -> {a}",
                if *m == node.mac { "yes" } else { "NO" }
            ),
            (Some(m), _, _) => println!(
                "answered by {m} (node's MAC: {}); no XDP counters in this mode: the kernel answered",
                if *m == node.mac { "yes" } else { "NO" }
            ),
            _ => bail!("no ARP answer for {VIP}"),
        }
        say("client: TCP to the VIP, port 8080 (server on the node)");
        let _server = TcpServer::start(
            &node.ns,
            "0.0.0.0:8080".parse()?,
            &format!("hello from node ({mode} mode)\n"),
        );
        let reply = tcp_request(&client.ns, format!("{VIP}:8080").parse()?)?;
        print!("reply: {reply}");
        println!(
            "client neighbour table: {VIP} -> {}",
            neighbour(client, VIP).unwrap_or_else(|| "?".into())
        );
        if mode == "xdp" {
            say(&format!("bpftool map dump pinned {PIN_DIR}/vips"));
            let dump = Command::new("bpftool")
                .args(["map", "dump", "pinned", &format!("{PIN_DIR}/vips")])
                .output();
            if let Ok(d) = dump {
                print!("{}", String::from_utf8_lossy(&d.stdout));
            }
        }
        say("SIGTERM: vip releases the VIP and cleans up");
        daemon.signal(libc::SIGTERM);
        let st = daemon
            .wait_timeout(Duration::from_secs(10))
            .context("vip did not exit on SIGTERM")?;
        exited(&daemon);
        print_log(&log, &mut seen);
        println!(
            "exit: {st}; ARP answer now: {}",
            arping(client, VIP).unwrap_or_else(|| "none".into())
        );
    }
    Ok(())
}

/// A child that was waited for: `cleanup` must not signal its (reusable) pid.
fn exited(p: &Proc) {
    if let Ok(mut d) = CHILDREN.lock() {
        d.retain(|pid| *pid != p.child.id());
    }
}

fn start(bed: &Bed, vip: &Path, cfg: &PathBuf, log: &PathBuf) -> Result<Proc> {
    start_on(bed, "node", vip, cfg, log)
}

/// `vip run --config cfg` on host `role`, ready (readyz 200) when this returns.
fn start_on(bed: &Bed, role: &str, vip: &Path, cfg: &PathBuf, log: &PathBuf) -> Result<Proc> {
    let node = bed.host(role);
    let mut cmd = node.ns.command(vip);
    cmd.args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(log)?))
        .env("NO_COLOR", "1");
    let mut p = Proc::spawn(cmd);
    if let Ok(mut d) = CHILDREN.lock() {
        d.push(p.child.id());
    }
    let metrics: SocketAddr = METRICS.parse()?;
    let ready = poll(Duration::from_secs(10), || {
        if let Ok(Some(_)) = p.child.try_wait() {
            return Some(false);
        }
        matches!(http_get(&node.ns, metrics, "/readyz"), Ok((200, _))).then_some(true)
    });
    if ready != Some(true) {
        print_log(log, &mut 0);
        bail!("vip on {role} did not become ready");
    }
    Ok(p)
}

/// Print the daemon's log lines written since the last call (`seen` bytes were shown).
fn print_log(log: &Path, seen: &mut usize) {
    if let Ok(text) = std::fs::read_to_string(log) {
        for l in text.get(*seen..).unwrap_or("").lines() {
            println!("  vip| {l}");
        }
        *seen = text.len();
    }
}

fn metric(bed: &Bed, name: &str) -> Option<u64> {
    metric_of(bed, "node", name)
}

/// A metric of the daemon on host `role` (the first sample of that name).
fn metric_of(bed: &Bed, role: &str, name: &str) -> Option<u64> {
    let (_, body) = http_get(&bed.host(role).ns, METRICS.parse().ok()?, "/metrics").ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

/// Load balancing: three backends behind the VIP in dsr mode; connections spread, one backend
/// removed by a reload, `vip status` shows the rings and counters.
fn demo_lb(vip: &Path) -> Result<()> {
    say("load balancing: client, node and three dsr backends (192.0.2.21-23) on the bridge");
    let bed = Bed::new(
        PREFIX,
        &[
            ("client", "192.0.2.10/24"),
            ("node", "192.0.2.11/24"),
            ("be1", "192.0.2.21/24"),
            ("be2", "192.0.2.22/24"),
            ("be3", "192.0.2.23/24"),
        ],
    );
    let mut servers = Vec::new();
    for b in ["be1", "be2", "be3"] {
        let h = bed.host(b);
        make_dsr_backend(h, VIP);
        servers.push(TcpServer::start(
            &h.ns,
            "0.0.0.0:8080".parse()?,
            &format!("hello from {b}\n"),
        ));
    }
    let cfg = std::env::temp_dir().join("vip-demo-lb.yaml");
    let write = |backends: &[&str]| -> Result<String> {
        let list: String = backends
            .iter()
            .map(|a| format!("      - {{addr: {a}}}\n"))
            .collect();
        let yaml = format!(
            "interface: eth0\nmode: xdp\nmetrics_addr: {METRICS}\npin_dir: {PIN_DIR}\nservices:\n  - vip: {VIP}\n    port: 8080\n    mode: dsr\n    backends:\n{list}"
        );
        std::fs::write(&cfg, &yaml)?;
        Ok(yaml)
    };
    let yaml = write(&["192.0.2.21", "192.0.2.22", "192.0.2.23"])?;
    for l in yaml.lines() {
        println!("  {l}");
    }
    let log = std::env::temp_dir().join("vip-demo-lb.log");
    let mut seen = 0;
    let mut daemon = start(&bed, vip, &cfg, &log)?;
    print_log(&log, &mut seen);
    let client = bed.host("client");
    let addr: SocketAddr = format!("{VIP}:8080").parse()?;
    let count = |n: usize| -> Result<Vec<(String, usize)>> {
        let mut m = std::collections::BTreeMap::new();
        for r in tcp_requests(&client.ns, addr, n) {
            *m.entry(r?.trim().to_string()).or_insert(0usize) += 1;
        }
        Ok(m.into_iter().collect())
    };
    say("client: 90 TCP connections to the VIP");
    for (who, n) in count(90)? {
        println!("  {n:>3} x {who}");
    }
    say("vip status");
    print!("{}", status(vip)?);
    say("remove 192.0.2.23 from the file, SIGHUP: new connections avoid it");
    write(&["192.0.2.21", "192.0.2.22"])?;
    daemon.signal(libc::SIGHUP);
    let reloaded = poll(Duration::from_secs(10), || {
        metric(&bed, "vip_config_reloads_total").filter(|n| *n >= 1)
    });
    if reloaded.is_none() {
        print_log(&log, &mut seen);
        bail!("reload not applied");
    }
    print_log(&log, &mut seen);
    for (who, n) in count(60)? {
        println!("  {n:>3} x {who}");
    }
    daemon.signal(libc::SIGTERM);
    daemon
        .wait_timeout(Duration::from_secs(10))
        .context("vip did not exit on SIGTERM")?;
    exited(&daemon);
    print_log(&log, &mut seen);
    drop(servers);
    Ok(())
}

fn status(vip: &Path) -> Result<String> {
    let out = Command::new(vip)
        .args(["status", "--pin-dir", PIN_DIR])
        .output()
        .context("vip status")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const NODES: [&str; 3] = ["node1", "node2", "node3"];
const RAFT_PORT: u16 = 7946;
/// The failover bench's timing at 20 ms heartbeats (docs/election.md, "Standalone HA (Raft)").
const HEARTBEAT_MS: u64 = 20;
const ELECTION_MS: (u64, u64) = (50, 70);
const LEASE_MS: u64 = 35;
/// The client's ARP requests for the VIP: one every 10 ms, this many (~4 s).
const PROBE_EVERY: &str = "0.01";
const PROBES: u32 = 400;

/// Three nodes elect the VIP's owner by Raft; a client asks for the VIP every 10 ms while the
/// owner's daemon is SIGKILLed. Its pinned XDP program stays attached and goes silent by the
/// dead-man deadline (the lease); a follower takes over after its election timeout.
fn demo_raft(vip: &Path) -> Result<()> {
    say("Raft: three nodes (192.0.2.11-13) elect the owner of the VIP; a client on the bridge");
    let mut hosts = vec![("client", "192.0.2.10/24")];
    let addrs = ["192.0.2.11/24", "192.0.2.12/24", "192.0.2.13/24"];
    hosts.extend(NODES.iter().copied().zip(addrs));
    let bed = Bed::new(PREFIX, &hosts);
    let dir = raft_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let peers: Vec<String> = (0..3)
        .map(|j| format!("{}: \"{}:{RAFT_PORT}\"", j + 1, bed.host(NODES[j]).addr))
        .collect();
    // One shared key authenticates every election datagram (on a cluster: a Secret).
    let key = dir.join("raft-key");
    let out = Command::new(vip)
        .arg("raft-key")
        .output()
        .context("vip raft-key")?;
    if !out.status.success() {
        bail!("vip raft-key: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(&key, &out.stdout)?;
    println!("  shared key: `vip raft-key > {}`", key.display());
    let mut daemons = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        let yaml = format!(
            "interface: eth0\nmode: xdp\nvips: [{VIP}]\nmetrics_addr: {METRICS}\npin_dir: {PIN_DIR}/{n}\nlog_level: warn\n\
             election:\n  mode: raft\n  raft:\n    id: {}\n    peers: {{{}}}\n    key_file: {}\n    state_dir: {}\n    heartbeat_ms: {HEARTBEAT_MS}\n    election_timeout_min_ms: {}\n    election_timeout_max_ms: {}\n    lease_ms: {LEASE_MS}\n",
            i + 1,
            peers.join(", "),
            key.display(),
            dir.join(n).display(),
            ELECTION_MS.0,
            ELECTION_MS.1,
        );
        if i == 0 {
            println!("  {n}'s file (the others differ only in id, pin_dir, state_dir):");
            for l in yaml.lines() {
                println!("    {l}");
            }
        }
        let cfg = dir.join(format!("{n}.yaml"));
        std::fs::write(&cfg, &yaml)?;
        let log = dir.join(format!("{n}.log"));
        daemons.push(start_on(&bed, n, vip, &cfg, &log)?);
        println!("  {n}: MAC {}, vip running", bed.host(n).mac);
    }
    let logs = || {
        NODES
            .iter()
            .map(|n| {
                let l = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
                format!("--- {n}:\n{l}")
            })
            .collect::<String>()
    };
    let node_of = |mac: [u8; 6]| {
        NODES
            .iter()
            .position(|n| parse_mac(&bed.host(n).mac) == mac)
    };
    let leader = poll(Duration::from_secs(10), || {
        NODES
            .iter()
            .position(|n| metric_of(&bed, n, "vip_raft_fenced_leader") == Some(1))
    })
    .with_context(|| format!("no node became the fenced leader in 10 s\n{}", logs()))?;
    println!(
        "  elected: {} (term {}); the others follow it",
        NODES[leader],
        metric_of(&bed, NODES[leader], "vip_raft_term").unwrap_or(0)
    );

    say(&format!(
        "client: ARP request for {VIP} every 10 ms; after ~1 s of answers, SIGKILL of {}'s daemon",
        NODES[leader]
    ));
    let client = bed.host("client");
    let cap = Capture::start(client, 0x0806);
    let mut probe = client.ns.command("arping");
    probe
        .args(["-q", "-W", PROBE_EVERY, "-c", &PROBES.to_string()])
        .args(["-i", "eth0", VIP])
        .stdout(Stdio::null());
    let mut probe = Proc {
        child: probe.spawn().context("starting arping")?,
    };
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(probe.child.id());
    }
    let started = Instant::now();
    // About a second of answers from the owner alone, then the crash.
    poll(Duration::from_secs(5), || {
        let r = vip_replies(&cap);
        (r.len() >= 100 && r.iter().all(|x| node_of(x.1) == Some(leader))).then_some(())
    })
    .with_context(|| format!("the elected owner does not answer steadily\n{}", logs()))?;
    // Requests the owner's XDP left unanswered while its lease had lapsed for a moment (a
    // heartbeat acknowledged late), before the crash.
    let lapsed = metric_of(&bed, NODES[leader], "vip_arp_deadman_drops_total");
    let killed_at = Instant::now();
    let killed = &mut daemons[leader];
    let _ = killed.child.kill();
    let _ = killed.child.wait();
    exited(killed);
    let done = probe.wait_timeout(Duration::from_secs(10));
    if done.is_none() {
        bail!("arping did not finish its {PROBES} requests");
    }
    exited(&probe);
    let replies = vip_replies(&cap);
    let t = |at: Instant| at.saturating_duration_since(started).as_secs_f64();
    let runs = runs(&replies);
    let owners: std::collections::BTreeSet<[u8; 6]> = replies.iter().map(|r| r.1).collect();
    let name = |mac: [u8; 6]| node_of(mac).map_or("an unknown MAC", |i| NODES[i]);
    // The timeline: when each node began and stopped answering, and the kill.
    let mut events = vec![(
        killed_at,
        format!(
            "SIGKILL of {}'s daemon; its pinned XDP program stays attached",
            NODES[leader]
        ),
    )];
    for (i, (mac, first, last, n)) in runs.iter().enumerate() {
        events.push((*first, format!("{} answers", name(*mac))));
        let end = if i + 1 == runs.len() {
            "; the client stops asking"
        } else {
            ""
        };
        events.push((
            *last,
            format!("{}'s last answer ({n} replies){end}", name(*mac)),
        ));
    }
    events.sort_by_key(|e| e.0);
    println!("  seconds since the client started asking:");
    for (at, what) in &events {
        println!("    {:6.3} s  {what}", t(*at));
    }
    let new = runs
        .last()
        .and_then(|r| node_of(r.0).map(|i| (i, r.1)))
        .filter(|(i, _)| *i != leader)
        .with_context(|| {
            format!(
                "no other node answered after {} died\n{}",
                NODES[leader],
                logs()
            )
        })?;
    let last_old = replies
        .iter()
        .filter(|r| node_of(r.1) == Some(leader))
        .map(|r| r.0)
        .max()
        .unwrap_or(killed_at);
    let (gap, gap_end) = replies
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, w[1].0))
        .max()
        .context("too few ARP answers to measure a gap")?;
    say("result");
    println!(
        "  {}'s last answer: {:.0} ms after the kill (the dead-man silences it by its lease, {LEASE_MS} ms)",
        NODES[leader],
        ms(last_old.saturating_duration_since(killed_at))
    );
    println!(
        "  new owner: {} (term {}), first answer {:.0} ms after the kill (a follower's election timeout of {}-{} ms since the last heartbeat, the vote, the client's next request)",
        NODES[new.0],
        metric_of(&bed, NODES[new.0], "vip_raft_term").unwrap_or(0),
        ms(new.1.saturating_duration_since(killed_at)),
        ELECTION_MS.0,
        ELECTION_MS.1
    );
    let failover_gap = new.1.saturating_duration_since(last_old);
    if gap_end == new.1 {
        println!(
            "  the client's longest gap without an answer: {:.0} ms, across the failover",
            ms(gap)
        );
    } else {
        println!(
            "  the client's longest gap without an answer: {:.0} ms, ending at {:.3} s; across the failover {:.0} ms",
            ms(gap),
            t(gap_end),
            ms(failover_gap)
        );
        let why = match lapsed {
            Some(0) => "no request: frames ran late (a loaded machine)".to_string(),
            Some(n) => {
                format!("{n} requests: its lease lapsed for a moment (a late heartbeat ack)")
            }
            None => "? requests (no metrics)".to_string(),
        };
        println!(
            "  before the kill {}'s dead-man dropped {why}",
            NODES[leader]
        );
    }
    // One owner answers each request once: more replies than requests would be two owners.
    println!(
        "  requests: {PROBES} sent, {} answered, {} not",
        replies.len(),
        (PROBES as usize).saturating_sub(replies.len())
    );
    // Two owners at once would interleave their MACs: more stretches than answering nodes.
    if runs.len() != owners.len() || replies.len() > PROBES as usize {
        bail!(
            "two nodes answered at once: {} stretches of answers from {} nodes, {} replies to {PROBES} requests",
            runs.len(),
            owners.len(),
            replies.len()
        );
    }
    println!(
        "  only one node ever answered at a time: yes ({} replies from {} nodes, each node in one unbroken stretch)",
        replies.len(),
        owners.len()
    );
    for mut d in daemons {
        if let Ok(None) = d.child.try_wait() {
            d.signal(libc::SIGTERM);
            d.wait_timeout(Duration::from_secs(10))
                .context("vip did not exit on SIGTERM")?;
        }
        exited(&d);
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (arrival, sender MAC) of the ARP replies for the VIP the client captured.
fn vip_replies(cap: &Capture) -> Vec<(Instant, [u8; 6])> {
    let vip: std::net::Ipv4Addr = VIP.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    cap.frames()
        .into_iter()
        .filter(|(_, f)| f.len() >= 42 && f[20..22] == [0, 2] && f[28..32] == vip.octets())
        .filter_map(|(t, f)| Some((t, f[22..28].try_into().ok()?)))
        .collect()
}

/// Consecutive replies from the same MAC: (mac, first, last, count) per stretch.
fn runs(replies: &[(Instant, [u8; 6])]) -> Vec<([u8; 6], Instant, Instant, usize)> {
    let mut out: Vec<([u8; 6], Instant, Instant, usize)> = Vec::new();
    for (t, mac) in replies {
        match out.last_mut() {
            Some(r) if r.0 == *mac => {
                r.2 = *t;
                r.3 += 1;
            }
            _ => out.push((*mac, *t, *t, 1)),
        }
    }
    out
}
