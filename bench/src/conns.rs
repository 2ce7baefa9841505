//! TCP connections per second through the VIP on the project's namespace bed (a bridge, a
//! client, a node, two backends): the vip daemon in dsr mode vs HAProxy in TCP mode on the
//! same node, and the same client talking to the backends directly (no LB).
//!
//! Each connection: connect, read the backend's 3-byte greeting to EOF (the backend closes
//! first), close. A fixed number of client threads loop for a fixed time.
use std::{
    fs::File,
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use testbed::{http_get, poll, Bed, Netns, Proc};
use vip_userspace::counters;

use crate::{die_with_parent, stopped, table::Row, PREFIX};

const VIP: &str = "192.0.2.100";
const PORT: u16 = 8080;
const BACKENDS: [&str; 2] = ["be1", "be2"];
const METRICS: &str = "127.0.0.1:9472";
/// The daemon's pins (removed by the bench and by xtask).
pub const PIN_DIR: &str = "/sys/fs/bpf/vip-bench";
const CLIENT_THREADS: usize = 4;
const SERVER_THREADS: usize = 2;

/// A backend: accept, write "ok\n", close; a few accept threads on one listener.
struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &Netns) -> Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let l = ns.run(|| -> std::io::Result<TcpListener> {
            let l = TcpListener::bind(("0.0.0.0", PORT))?;
            // accept() honours SO_RCVTIMEO: the threads wake up to see `stop`.
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: valid fd and a timeval that outlives the call.
            unsafe {
                libc::setsockopt(
                    l.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
            }
            Ok(l)
        })?;
        let l = Arc::new(l);
        let threads = (0..SERVER_THREADS)
            .map(|_| {
                let l = l.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((mut s, _)) = l.accept() {
                            let _ = std::io::Write::write_all(&mut s, b"ok\n");
                        }
                    }
                })
            })
            .collect();
        Ok(Server { stop, threads })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Load {
    ok: u64,
    failed: u64,
    secs: f64,
}

/// `CLIENT_THREADS` threads in `ns`, each connecting to `targets` in turn for `secs`.
fn load(ns: &Netns, targets: Vec<SocketAddr>, secs: Duration) -> Result<Load> {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + secs;
    let hs: Vec<_> = (0..CLIENT_THREADS)
        .map(|i| {
            let (ok, failed, targets) = (ok.clone(), failed.clone(), targets.clone());
            ns.spawn(move || {
                let mut k = i;
                let mut buf = [0u8; 16];
                while Instant::now() < until && !stopped() {
                    let t = targets[k % targets.len()];
                    k += 1;
                    let r = (|| -> std::io::Result<bool> {
                        let mut s = TcpStream::connect_timeout(&t, Duration::from_secs(2))?;
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        let mut got = 0;
                        loop {
                            let n = s.read(&mut buf[got..])?;
                            if n == 0 {
                                break;
                            }
                            got += n;
                            if got == buf.len() {
                                break;
                            }
                        }
                        Ok(&buf[..got] == b"ok\n")
                    })();
                    match r {
                        Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for h in hs {
        h.join().map_err(|_| anyhow!("client thread panicked"))?;
    }
    if stopped() {
        bail!("interrupted");
    }
    Ok(Load {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
    })
}

/// A child process stopped with SIGTERM (then killed) when dropped.
struct Daemon {
    proc: Proc,
    log: PathBuf,
}

impl Daemon {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.proc.signal(libc::SIGTERM);
        if self.proc.wait_timeout(Duration::from_secs(10)).is_none() {
            let _ = self.proc.child.kill();
            let _ = self.proc.child.wait();
        }
    }
}

/// The `nat` address of backend `i` (0-based): on the node's second subnet.
fn nat_addr(i: usize) -> String {
    format!("198.51.100.{}", 21 + i)
}

fn metric(node: &Netns, name: &str) -> Result<u64> {
    let (code, body) = http_get(node, METRICS.parse()?, "/metrics")?;
    ensure!(code == 200, "metrics: HTTP {code}");
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .with_context(|| format!("metric {name} missing"))
}

fn start_vip(bed: &Bed, vip_bin: &Path, nat: bool) -> Result<Daemon> {
    let node = bed.host("node");
    let backends: String = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if nat {
                format!("      - {{addr: {}, port: {PORT}}}\n", nat_addr(i))
            } else {
                format!("      - {{addr: {}}}\n", bed.host(b).addr)
            }
        })
        .collect();
    let mode = if nat { "nat" } else { "dsr" };
    let cfg = std::env::temp_dir().join("vip-bench.yaml");
    std::fs::write(
        &cfg,
        format!(
            "interface: eth0\nmode: xdp\nmetrics_addr: {METRICS}\npin_dir: {PIN_DIR}\nservices:\n  - vip: {VIP}\n    port: {PORT}\n    protocol: tcp\n    mode: {mode}\n    backends:\n{backends}"
        ),
    )?;
    let log = std::env::temp_dir().join("vip-bench-daemon.log");
    let mut cmd = node.ns.command(vip_bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log)?));
    die_with_parent(&mut cmd);
    let mut d = Daemon {
        proc: Proc {
            child: cmd
                .spawn()
                .with_context(|| format!("starting {}", vip_bin.display()))?,
        },
        log,
    };
    let metrics: SocketAddr = METRICS.parse()?;
    let ready = poll(Duration::from_secs(15), || {
        if let Ok(Some(_)) = d.proc.child.try_wait() {
            return Some(false);
        }
        match http_get(&node.ns, metrics, "/readyz") {
            Ok((200, _)) => Some(true),
            _ => None,
        }
    });
    if ready != Some(true) {
        bail!("vip daemon not ready in 15 s:\n{}", d.logs());
    }
    Ok(d)
}

fn start_haproxy(bed: &Bed) -> Result<Daemon> {
    let node = bed.host("node");
    let servers: String = BACKENDS
        .iter()
        .map(|b| format!("    server {b} {}:{PORT}\n", bed.host(b).addr))
        .collect();
    let cfg = std::env::temp_dir().join("vip-bench-haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 8000\n    nbthread 2\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\nfrontend vip\n    bind {VIP}:{PORT}\n    default_backend be\n\nbackend be\n    balance roundrobin\n{servers}"
        ),
    )?;
    node.ns
        .ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"]);
    let log = std::env::temp_dir().join("vip-bench-haproxy.log");
    let mut cmd = node.ns.command("haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log)?));
    die_with_parent(&mut cmd);
    let mut d = Daemon {
        proc: Proc {
            child: cmd.spawn().context(
                "starting haproxy (`cargo xtask bench` installs the Debian package haproxy)",
            )?,
        },
        log,
    };
    let client = &bed.host("client").ns;
    let target: SocketAddr = format!("{VIP}:{PORT}").parse()?;
    let up = poll(Duration::from_secs(10), || {
        if let Ok(Some(_)) = d.proc.child.try_wait() {
            return Some(false);
        }
        client
            .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok())
            .then_some(true)
    });
    if up != Some(true) {
        bail!("haproxy not serving in 10 s:\n{}", d.logs());
    }
    Ok(d)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    VipDsr,
    VipNat,
    Haproxy,
    Direct,
}

/// nat: the backends reach the client through the node (their route to it), so replies pass
/// the node's tc egress, which restores VIP:port.
fn nat_routes(bed: &Bed, add: bool) {
    let op = if add { "add" } else { "del" };
    let node = &bed.host("node").ns;
    node.ip(&["addr", op, "198.51.100.1/24", "dev", "eth0"]);
    for b in BACKENDS {
        let h = bed.host(b);
        let client = &bed.host("client").addr;
        h.ns.ip(&["route", op, &format!("{client}/32"), "via", "198.51.100.1"]);
    }
}

/// Run the load through the vip daemon; checks that its data plane placed every connection.
fn through_vip(bed: &Bed, vip_bin: &Path, nat: bool, secs: Duration) -> Result<Load> {
    let d = start_vip(bed, vip_bin, nat)?;
    let node = &bed.host("node").ns;
    let vip: SocketAddr = format!("{VIP}:{PORT}").parse()?;
    // Flows Maglev placed, as the daemon exports them.
    let new_flows = counters::by_field(counters::TOTALS, "ct_new").sample();
    let before = metric(node, &new_flows)?;
    let l = load(&bed.host("client").ns, vec![vip], secs)?;
    let placed = metric(node, &new_flows)? - before;
    ensure!(
        placed >= l.ok,
        "vip placed {placed} flows for {} connections: not through XDP?\n{}",
        l.ok,
        d.logs()
    );
    Ok(l)
}

pub fn run(
    quick: bool,
    vip_bin: Option<&Path>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let vip_bin = crate::vip_bin(vip_bin)?;
    let secs = Duration::from_millis(if quick { 1000 } else { 3000 });
    let reps = if quick { 1 } else { 3 };
    let bed = Bed::new(
        &format!("{PREFIX}c"),
        &[
            ("client", "192.0.2.10/24"),
            ("node", "192.0.2.11/24"),
            ("be1", "192.0.2.21/24"),
            ("be2", "192.0.2.22/24"),
        ],
    );
    for h in ["client", "node"] {
        let ns = &bed.host(h).ns;
        ns.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    }
    let mut servers = Vec::new();
    for (i, b) in BACKENDS.iter().enumerate() {
        let h = bed.host(b);
        h.ns.ip(&["addr", "add", &format!("{}/24", nat_addr(i)), "dev", "eth0"]);
        // The node would redirect them to the client directly (same link).
        for dev in ["all", "eth0"] {
            h.ns.sysctl(&format!("net.ipv4.conf.{dev}.accept_redirects"), "0");
        }
        // dsr: the backend holds the VIP on lo and never answers ARP for it.
        testbed::make_dsr_backend(h, VIP);
        servers.push(Server::start(&h.ns)?);
    }
    let client = &bed.host("client").ns;
    let vip: SocketAddr = format!("{VIP}:{PORT}").parse()?;
    let direct: Vec<SocketAddr> = BACKENDS
        .iter()
        .map(|b| format!("{}:{PORT}", bed.host(b).addr).parse())
        .collect::<Result<_, _>>()?;
    let mut got: Vec<(Case, Vec<f64>)> = vec![
        (Case::VipDsr, vec![]),
        (Case::VipNat, vec![]),
        (Case::Haproxy, vec![]),
        (Case::Direct, vec![]),
    ];
    let mut failures = Vec::new();
    for _ in 0..reps {
        for case in [Case::Direct, Case::VipDsr, Case::VipNat, Case::Haproxy] {
            let (name, l) = match case {
                Case::Direct => ("direct", load(client, direct.clone(), secs)?),
                Case::VipDsr => ("vip dsr", through_vip(&bed, vip_bin, false, secs)?),
                Case::VipNat => {
                    nat_routes(&bed, true);
                    let l = through_vip(&bed, vip_bin, true, secs);
                    nat_routes(&bed, false);
                    ("vip nat", l?)
                }
                Case::Haproxy => {
                    let d = start_haproxy(&bed)?;
                    let l = load(client, vec![vip], secs)?;
                    drop(d);
                    bed.host("node")
                        .ns
                        .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
                    ("haproxy", l)
                }
            };
            let rate = l.ok as f64 / l.secs;
            eprintln!(
                "   {name}: {:.0} conn/s ({} ok, {} failed)",
                rate, l.ok, l.failed
            );
            ensure!(l.ok > 0, "{name}: no connection succeeded");
            if l.failed > 0 {
                failures.push(format!("{name}: {} of {}", l.failed, l.ok + l.failed));
            }
            if let Some((_, v)) = got.iter_mut().find(|(c, _)| *c == case) {
                v.push(rate);
            }
        }
    }
    let _ = std::fs::remove_dir_all(PIN_DIR);
    let med = |c: Case| -> f64 {
        let mut v = got
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (v, n, h, d) = (
        med(Case::VipDsr),
        med(Case::VipNat),
        med(Case::Haproxy),
        med(Case::Direct),
    );
    rows.push(
        Row::new("TCP connections/s through the VIP: vip daemon (dsr) vs HAProxy 2.6 (mode tcp)")
            .result(format!("{v:.0}/s"))
            .baseline(format!("HAProxy {h:.0}/s"))
            .ratio(v / h),
    );
    rows.push(
        Row::new("TCP connections/s through the VIP: vip daemon (nat) vs HAProxy 2.6 (mode tcp)")
            .result(format!("{n:.0}/s"))
            .baseline(format!("HAProxy {h:.0}/s"))
            .ratio(n / h),
    );
    rows.push(
        Row::new("TCP connections/s: vip daemon (dsr) vs the client straight to the backends")
            .result(format!("{v:.0}/s"))
            .baseline(format!("direct {d:.0}/s"))
            .ratio(v / d),
    );
    notes.push(format!(
        "TCP connections/s: testbed bed (bridge; client, node, 2 backends on veths), all on the same 2 cores; \
         {CLIENT_THREADS} client threads connect, read a 3-byte greeting to EOF (the backend closes first) and close, \
         for {:.0} s per case, {reps} interleaved runs, median shown; each backend serves with {SERVER_THREADS} accept threads. \
         vip: the real daemon (`vip run`, XDP on the node's uplink; dsr: backends hold the VIP on lo and answer the client directly; \
         nat: backends on a second subnet reach the client through the node, whose tc egress restores VIP:port); \
         every connection checked to be placed by the XDP program ({}). \
         HAProxy: nbthread 2, mode tcp, roundrobin, bound to the VIP on the node. Failed connections: {}.",
        secs.as_secs_f64(),
        counters::by_field(counters::TOTALS, "ct_new").sample(),
        if failures.is_empty() {
            "none".to_string()
        } else {
            failures.join(", ")
        }
    ));
    drop(servers);
    Ok(())
}
