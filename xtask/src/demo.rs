//! `cargo xtask demo`: a client and a node on a bridge, vip on the node. First XDP answers ARP
//! for the VIP (counter before/after) and TCP reaches a server on the node through the VIP;
//! then the same with `mode: kernel`. Everything is removed on exit, Ctrl-C included.
use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use testbed::{
    arping, has_xdp, http_get, make_dsr_backend, neighbour, poll, tcp_request, tcp_requests, Bed,
    Proc, TcpServer,
};

use crate::{ebpf, setup, util};

const PREFIX: &str = "vipdemo";
const VIP: &str = "192.0.2.100";
const METRICS: &str = "127.0.0.1:9472";
const PIN_DIR: &str = "/sys/fs/bpf/vip-demo";

static DAEMON_PID: AtomicU32 = AtomicU32::new(0);

fn say(s: &str) {
    println!("\n\x1b[1m== {s}\x1b[0m");
}

fn cleanup() {
    let pid = DAEMON_PID.swap(0, Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: kill(2) on the daemon this demo started and has not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    testbed::cleanup_prefix(&format!("{PREFIX}-"));
    let _ = std::fs::remove_dir_all(PIN_DIR);
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
    let res = demo(&vip).and_then(|()| demo_lb(&vip));
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
        DAEMON_PID.store(0, Ordering::SeqCst);
        print_log(&log, &mut seen);
        println!(
            "exit: {st}; ARP answer now: {}",
            arping(client, VIP).unwrap_or_else(|| "none".into())
        );
    }
    Ok(())
}

fn start(bed: &Bed, vip: &Path, cfg: &PathBuf, log: &PathBuf) -> Result<Proc> {
    let node = bed.host("node");
    let mut cmd = node.ns.command(vip);
    cmd.args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(log)?))
        .env("NO_COLOR", "1");
    let mut p = Proc::spawn(cmd);
    DAEMON_PID.store(p.child.id(), Ordering::SeqCst);
    let metrics: SocketAddr = METRICS.parse()?;
    let ready = poll(Duration::from_secs(10), || {
        if let Ok(Some(_)) = p.child.try_wait() {
            return Some(false);
        }
        matches!(http_get(&node.ns, metrics, "/readyz"), Ok((200, _))).then_some(true)
    });
    if ready != Some(true) {
        print_log(log, &mut 0);
        bail!("vip did not become ready");
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
    let (_, body) = http_get(&bed.host("node").ns, METRICS.parse().ok()?, "/metrics").ok()?;
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
    DAEMON_PID.store(0, Ordering::SeqCst);
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
