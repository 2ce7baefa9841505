//! Failover: three nodes share one VIP; the owner is killed (SIGKILL of the daemon) or cut
//! off (its switch port down), again and again, and a prober in the client's namespace asks
//! for the VIP by ARP every millisecond, recording which MAC answers when.
//!
//! vip (Raft election, XDP, a dsr service to two backends) against keepalived (Debian's
//! package, VRRPv3, the VIP on the uplink) on the same bed, in the same run, at matching
//! intervals: keepalived's `advert_int` and our `heartbeat_ms` of 1 s, 100 ms and 20 ms.
//! Per case: time from the fault to the first reply from another node (p50/p99/max), the
//! longest window in which two nodes answered, and long-lived TCP connections through the
//! VIP that no longer work after the failover.
use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use testbed::{http_get, parse_mac, poll, Bed, Host, LongConn, Proc, TcpServer};
use testkit::packet::Packet;

use crate::{die_with_parent, stopped, table::Row, PREFIX};

const VIP: &str = "192.0.2.100";
const PORT: u16 = 8080;
const RAFT_PORT: u16 = 7946;
const METRICS: &str = "127.0.0.1:9472";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const BACKENDS: [&str; 2] = ["be1", "be2"];
/// Long-lived connections through the VIP held across each failover.
const CONNS: usize = 8;
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// Two owners: both MACs answered within the same bucket of this width.
const BUCKET: Duration = Duration::from_millis(5);
/// The daemons' pins (removed by the bench and by xtask).
pub const PIN_DIR: &str = "/sys/fs/bpf/vip-bench-failover";

fn work_dir() -> PathBuf {
    std::env::temp_dir().join("vip-bench-failover")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Vip,
    Keepalived,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Vip => "vip (Raft)",
            System::Keepalived => "keepalived",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// SIGKILL of the owner's daemon (keepalived: its whole process group).
    Kill,
    /// The owner's switch port down (node and daemon keep running).
    Cut,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Cut => "link cut",
        }
    }
}

/// Our timing for a heartbeat `h`, proportional at every interval: election timeout
/// 2.5–3.5 h (keepalived's master-down interval is 3 adverts + skew, 3.61 at priority 100),
/// lease 1.75 h (must end 10 ms before the shortest election timeout).
#[derive(Clone, Copy, Debug)]
struct Timing {
    heartbeat: Duration,
    election: (Duration, Duration),
    lease: Duration,
}

fn timing(h: Duration) -> Timing {
    Timing {
        heartbeat: h,
        election: (h * 5 / 2, h * 7 / 2),
        lease: h * 7 / 4,
    }
}

/// ARP requests for the VIP from the client every `PROBE_EVERY`; every reply (arrival,
/// sender MAC) is kept.
struct Prober {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    replies: Arc<Mutex<Vec<Reply>>>,
}

/// An ARP reply for the VIP: arrival and sender MAC.
type Reply = (Instant, [u8; 6]);

fn arp_socket(proto: u16, ifindex: u32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); checked below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto.to_be() as i32) };
    ensure!(
        raw >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; fd is ours.
    unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = ifindex as i32;
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        ensure!(rc == 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    Ok(fd)
}

impl Prober {
    fn start(client: &Host) -> Result<Prober> {
        let mac = parse_mac(&client.mac);
        let src: Ipv4Addr = client.addr.parse()?;
        let vip: Ipv4Addr = VIP.parse()?;
        let (sock, ifindex) = client.ns.run(|| -> Result<_> {
            let idx = crate::ifindex("eth0")?;
            Ok((arp_socket(0x0806, idx)?, idx))
        })?;
        let sock = Arc::new(sock);
        let stop = Arc::new(AtomicBool::new(false));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let req = Packet::eth([0xff; 6], mac)
            .arp(1, mac, src.octets(), [0; 6], vip.octets())
            .build();
        let sender = {
            let (stop, sock) = (stop.clone(), sock.clone());
            std::thread::spawn(move || {
                instrument_priority();
                // SAFETY: sockaddr_ll is plain data.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = ifindex as i32;
                sll.sll_halen = 6;
                sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: the frame and the address outlive the call.
                    unsafe {
                        libc::sendto(
                            sock.as_raw_fd(),
                            req.as_ptr().cast(),
                            req.len(),
                            0,
                            (&sll as *const libc::sockaddr_ll).cast(),
                            std::mem::size_of::<libc::sockaddr_ll>() as u32,
                        );
                    }
                    next += PROBE_EVERY;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
        };
        let receiver = {
            let (stop, sock, sink) = (stop.clone(), sock.clone(), replies.clone());
            std::thread::spawn(move || {
                instrument_priority();
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: buf is valid for its length.
                    let n = unsafe {
                        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    let f = &buf[..n.max(0) as usize];
                    if f.len() >= 42 && f[20..22] == [0, 2] && f[28..32] == vip.octets() {
                        let mut m = [0u8; 6];
                        m.copy_from_slice(&f[22..28]);
                        if let Ok(mut r) = sink.lock() {
                            r.push((Instant::now(), m));
                        }
                    }
                }
            })
        };
        Ok(Prober {
            stop,
            threads: vec![sender, receiver],
            replies,
        })
    }

    /// Replies that arrived after `t`.
    fn since(&self, t: Instant) -> Vec<Reply> {
        self.replies
            .lock()
            .map(|r| r.iter().filter(|x| x.0 > t).copied().collect())
            .unwrap_or_default()
    }

    /// Forget replies before `t` (memory stays bounded over hundreds of failovers).
    fn forget_before(&self, t: Instant) {
        if let Ok(mut r) = self.replies.lock() {
            r.retain(|x| x.0 >= t);
        }
    }

    /// The one MAC that answered during the last `window`, if exactly one did (and often).
    fn sole_owner(&self, window: Duration) -> Option<[u8; 6]> {
        let r = self.since(Instant::now() - window);
        let first = r.first()?.1;
        let enough = r.len() as u128 >= window.as_millis() / PROBE_EVERY.as_millis() / 2;
        (enough && r.iter().all(|x| x.1 == first)).then_some(first)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The prober is the instrument: under the load case's busy loops at normal priority it
/// would measure its own starvation. SCHED_FIFO 1, below the election's default 10, so it
/// never delays what it measures. Best effort (the bench runs as root).
fn instrument_priority() {
    let p = libc::sched_param { sched_priority: 1 };
    // SAFETY: a valid sched_param; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
}

/// The longest run of `BUCKET`s in which two or more MACs answered.
fn two_owner_window(replies: &[Reply]) -> Duration {
    let Some(t0) = replies.first().map(|r| r.0) else {
        return Duration::ZERO;
    };
    let mut buckets: std::collections::BTreeMap<u128, std::collections::BTreeSet<[u8; 6]>> =
        Default::default();
    for (t, m) in replies {
        let b = (*t - t0).as_micros() / BUCKET.as_micros();
        buckets.entry(b).or_default().insert(*m);
    }
    let (mut best, mut run, mut prev) = (0u32, 0u32, None::<u128>);
    for (b, macs) in &buckets {
        if macs.len() >= 2 {
            run = if prev == Some(b.wrapping_sub(1)) {
                run + 1
            } else {
                1
            };
            prev = Some(*b);
            best = best.max(run);
        } else {
            run = 0;
            prev = None;
        }
    }
    BUCKET * best
}

/// A node's daemon: `vip run`, or keepalived in its own process group (parent and VRRP
/// child are killed together, as a crash of the service would).
struct NodeProc {
    proc: Proc,
    group: bool,
    log: PathBuf,
}

impl NodeProc {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let pid = self.proc.child.id() as i32;
        // SAFETY: signalling our own child (or its process group, which it leads).
        unsafe {
            libc::kill(if self.group { -pid } else { pid }, libc::SIGKILL);
        }
        let _ = self.proc.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.child.try_wait() {
            let pid = self.proc.child.id() as i32;
            // SAFETY: as in kill().
            unsafe {
                libc::kill(if self.group { -pid } else { pid }, libc::SIGTERM);
            }
            if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
                self.kill();
            }
        } else if self.group {
            // The parent is gone; a VRRP child may not be.
            // SAFETY: as in kill().
            unsafe {
                libc::kill(-(self.proc.child.id() as i32), libc::SIGKILL);
            }
        }
    }
}

fn start_vip(bed: &Bed, i: usize, t: Timing, vip_bin: &Path) -> Result<NodeProc> {
    let node = bed.host(NODES[i]);
    let dir = work_dir();
    let backends: String = BACKENDS
        .iter()
        .map(|b| format!("      - {{addr: {}}}\n", bed.host(b).addr))
        .collect();
    let peers: Vec<String> = (0..3)
        .map(|j| format!("{}: \"{}:{RAFT_PORT}\"", j + 1, bed.host(NODES[j]).addr))
        .collect();
    let key = dir.join("raft-key");
    if !key.exists() {
        let k = vip_userspace::election::raft::RaftKey::generate()
            .map_err(|e| anyhow::anyhow!("no randomness for the Raft key: {e}"))?;
        std::fs::write(&key, k)?;
    }
    let cfg = dir.join(format!("{}.yaml", NODES[i]));
    std::fs::write(
        &cfg,
        format!(
            "interface: eth0\nmode: xdp\nmetrics_addr: {METRICS}\npin_dir: {PIN_DIR}/{}\nlog_level: warn\n\
             services:\n  - vip: {VIP}\n    port: {PORT}\n    protocol: tcp\n    mode: dsr\n    backends:\n{backends}\
             election:\n  mode: raft\n  raft:\n    id: {}\n    peers: {{{}}}\n    key_file: {}\n    state_dir: {}\n    heartbeat_ms: {}\n    election_timeout_min_ms: {}\n    election_timeout_max_ms: {}\n    lease_ms: {}\n{}",
            NODES[i],
            i + 1,
            peers.join(", "),
            key.display(),
            dir.join(NODES[i]).display(),
            t.heartbeat.as_millis(),
            t.election.0.as_millis(),
            t.election.1.as_millis(),
            t.lease.as_millis(),
            if priority_off() {
                "    realtime_priority: 0\n    nice: 0\n"
            } else {
                ""
            },
        ),
    )?;
    let log = dir.join(format!("{}-vip.log", NODES[i]));
    let mut cmd = node.ns.command(vip_bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            File::options().create(true).append(true).open(&log)?,
        ));
    die_with_parent(&mut cmd);
    let mut p = NodeProc {
        proc: Proc {
            child: cmd
                .spawn()
                .with_context(|| format!("starting {}", vip_bin.display()))?,
        },
        group: false,
        log,
    };
    let metrics: SocketAddr = METRICS.parse()?;
    let ready = poll(Duration::from_secs(15), || {
        if let Ok(Some(_)) = p.proc.child.try_wait() {
            return Some(false);
        }
        match http_get(&node.ns, metrics, "/readyz") {
            Ok((200, _)) => Some(true),
            _ => None,
        }
    });
    if ready != Some(true) {
        let logs = p.logs();
        p.kill();
        bail!("vip on {} not ready in 15 s:\n{logs}", NODES[i]);
    }
    Ok(p)
}

/// keepalived, VRRPv3, every node BACKUP at priority 100 with nopreempt (like our election:
/// whoever wins keeps it); the VIP on the uplink, answered by the kernel.
fn start_keepalived(bed: &Bed, i: usize, advert: Duration) -> Result<NodeProc> {
    let node = bed.host(NODES[i]);
    let dir = work_dir();
    let cfg = dir.join(format!("{}-keepalived.conf", NODES[i]));
    std::fs::write(
        &cfg,
        format!(
            "global_defs {{\n    router_id {}\n    vrrp_version 3\n    vrrp_garp_master_delay 0\n    vrrp_garp_master_repeat 1\n    script_user root\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    nopreempt\n    interface eth0\n    virtual_router_id 51\n    priority 100\n    advert_int {}\n    virtual_ipaddress {{\n        {VIP}/32 dev eth0\n    }}\n}}\n",
            NODES[i],
            advert.as_secs_f64()
        ),
    )?;
    let log = dir.join(format!("{}-keepalived.log", NODES[i]));
    // A killed run's pid files (its VRRP child may not be reaped yet) would make keepalived
    // refuse to start ("daemon is already running").
    for f in ["keepalived", "vrrp"] {
        let _ = std::fs::remove_file(dir.join(format!("{}-{f}.pid", NODES[i])));
    }
    let mut cmd = node.ns.command("keepalived");
    cmd.args(["-n", "-l", "-D", "-P", "-G"])
        .arg("-f")
        .arg(&cfg)
        .arg("-p")
        .arg(dir.join(format!("{}-keepalived.pid", NODES[i])))
        .arg("-r")
        .arg(dir.join(format!("{}-vrrp.pid", NODES[i])))
        .stdout(Stdio::from(
            File::options().create(true).append(true).open(&log)?,
        ))
        .stderr(Stdio::from(
            File::options().create(true).append(true).open(&log)?,
        ))
        .process_group(0);
    die_with_parent(&mut cmd);
    let p = NodeProc {
        proc: Proc {
            child: cmd.spawn().context(
                "starting keepalived (`cargo xtask bench` installs the Debian package keepalived)",
            )?,
        },
        group: true,
        log,
    };
    Ok(p)
}

/// Take the VIP off a node's uplink (what a stopped keepalived leaves), if it is there.
fn remove_vip(node: &Host) {
    let _ = Command::new("ip")
        .args(["-n", &node.ns.name])
        .args(["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])
        .stderr(Stdio::null())
        .status();
}

struct Sample {
    takeover: Duration,
    two_owners: Duration,
    /// Two owners still answering when the observation ended (before the repair).
    two_owners_at_end: bool,
    lost: usize,
}

struct Case<'a> {
    bed: &'a Bed,
    prober: &'a Prober,
    system: System,
    timing: Timing,
    vip_bin: &'a Path,
    procs: Vec<Option<NodeProc>>,
}

impl Case<'_> {
    fn start(&mut self, i: usize) -> Result<()> {
        let p = match self.system {
            System::Vip => start_vip(self.bed, i, self.timing, self.vip_bin)?,
            System::Keepalived => start_keepalived(self.bed, i, self.timing.heartbeat)?,
        };
        self.procs[i] = Some(p);
        Ok(())
    }

    fn node_of(&self, mac: [u8; 6]) -> Option<usize> {
        (0..3).find(|i| parse_mac(&self.bed.host(NODES[*i]).mac) == mac)
    }

    /// Wait until exactly one node answers, steadily; its index.
    fn stable_owner(&self) -> Result<usize> {
        let window = Duration::from_millis(200).max(self.timing.heartbeat);
        let owner = poll(Duration::from_secs(20) + self.timing.heartbeat * 10, || {
            if stopped() {
                return Some(None);
            }
            self.prober.sole_owner(window).map(Some)
        })
        .flatten();
        let Some(mac) = owner else {
            bail!(
                "{}: no single owner answering\n{}",
                self.system.name(),
                self.logs()
            );
        };
        self.node_of(mac).context("an unknown MAC answers")
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .flatten()
            .map(|p| {
                let l = p.logs();
                l[l.len().saturating_sub(3000)..].to_string()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    /// Where flows through the VIP went when some were lost: the client's neighbour entry
    /// and each node's forwarding counters (stderr).
    fn diagnose(&self) {
        let client = self.bed.host("client");
        let n = client.ns.ip(&["neigh", "show", VIP]);
        eprintln!(
            "   client neigh: {}",
            String::from_utf8_lossy(&n.stdout).trim()
        );
        for (i, node) in NODES.iter().enumerate() {
            let h = self.bed.host(node);
            let m = http_get(
                &h.ns,
                METRICS.parse().unwrap_or(([127, 0, 0, 1], 9472).into()),
                "/metrics",
            )
            .map(|r| r.1)
            .unwrap_or_default();
            let pick: Vec<&str> = m
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.starts_with("vip_lb_")
                            || l.starts_with("vip_raft_fenced")
                            || l.starts_with("vip_vips_owned")
                            || l.starts_with("vip_xdp_verdicts"))
                })
                .collect();
            eprintln!(
                "   {node} ({}): {}",
                self.bed.host(NODES[i]).mac,
                pick.join(", ")
            );
            let neigh = h.ns.ip(&["neigh", "show"]);
            eprintln!(
                "   {node} neigh: {}",
                String::from_utf8_lossy(&neigh.stdout).replace('\n', "; ")
            );
        }
    }

    /// One failover: fault the owner, time the takeover, check the connections, repair.
    fn once(&mut self, fault: Fault) -> Result<Sample> {
        let owner = self.stable_owner()?;
        let old_mac = parse_mac(&self.bed.host(NODES[owner]).mac);
        let client = self.bed.host("client");
        let vip: SocketAddr = format!("{VIP}:{PORT}").parse()?;
        let mut conns = Vec::new();
        let mut refused = 0;
        for _ in 0..CONNS {
            match LongConn::open(&client.ns, vip) {
                Ok(c) => conns.push(c),
                Err(e) => {
                    refused += 1;
                    eprintln!("   connecting through the VIP before the fault: {e}");
                }
            }
        }
        let t0 = Instant::now();
        self.prober.forget_before(t0 - Duration::from_secs(1));
        match fault {
            Fault::Kill => {
                if let Some(p) = self.procs[owner].as_mut() {
                    p.kill();
                }
            }
            Fault::Cut => self.bed.cut(NODES[owner]),
        }
        let limit = self.timing.heartbeat * 10 + Duration::from_secs(5);
        let first_new = poll(limit, || {
            self.prober
                .since(t0)
                .into_iter()
                .find(|r| r.1 != old_mac)
                .map(|r| r.0)
        });
        let Some(first_new) = first_new else {
            bail!(
                "{} {}: no takeover within {limit:?}\n{}",
                self.system.name(),
                fault.name(),
                self.logs()
            );
        };
        // A cut is done somewhere inside `ip link set`: no frame of the old owner can reach
        // the client after it, so its last reply bounds the instant from below.
        let fault_at = match fault {
            Fault::Kill => t0,
            Fault::Cut => self
                .prober
                .since(t0)
                .iter()
                .filter(|r| r.1 == old_mac && r.0 < first_new)
                .map(|r| r.0)
                .max()
                .unwrap_or(t0)
                .max(t0),
        };
        let settle = (self.timing.heartbeat * 2).max(Duration::from_millis(300));
        std::thread::sleep(settle);
        let mut lost = refused;
        for c in conns.iter_mut() {
            let _ = c.stream.set_read_timeout(Some(Duration::from_secs(2)));
            match c.echo("still there") {
                Ok(s) if s == "still there" => {}
                _ => lost += 1,
            }
        }
        drop(conns);
        if lost > 0 && self.system == System::Vip {
            self.diagnose();
        }
        let before_repair = self.prober.since(t0);
        let end_window = Instant::now() - Duration::from_millis(50);
        let at_end = before_repair
            .iter()
            .filter(|r| r.0 > end_window)
            .map(|r| r.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 2;
        // Repair: what a crashed keepalived leaves (the VIP on the uplink) goes by hand.
        match fault {
            Fault::Kill => {
                if self.system == System::Keepalived {
                    remove_vip(self.bed.host(NODES[owner]));
                }
                self.start(owner)?;
            }
            Fault::Cut => self.bed.heal(NODES[owner]),
        }
        std::thread::sleep(settle);
        // A node cut off lost its neighbour entries; its first datagrams to a peer after the
        // heal wait for ARP (retried every second). Let that settle before the next fault,
        // or the next election may wait on it (unicast Raft; VRRP adverts are multicast).
        if fault == Fault::Cut {
            std::thread::sleep(Duration::from_millis(1200));
        }
        let all = self.prober.since(t0);
        Ok(Sample {
            takeover: first_new.saturating_duration_since(fault_at),
            two_owners: two_owner_window(&all),
            two_owners_at_end: at_end,
            lost,
        })
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub(crate) fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m >= 1000.0 {
        format!("{:.2} s", m / 1000.0)
    } else {
        format!("{m:.0} ms")
    }
}

struct Summary {
    p50: Duration,
    p99: Duration,
    max: Duration,
    two_owners: Duration,
    two_owners_persisting: usize,
    lost: usize,
    n: usize,
}

fn summarize(samples: &[Sample]) -> Summary {
    let mut t: Vec<Duration> = samples.iter().map(|s| s.takeover).collect();
    t.sort();
    Summary {
        p50: percentile(&t, 0.50),
        p99: percentile(&t, 0.99),
        max: t.last().copied().unwrap_or_default(),
        two_owners: samples
            .iter()
            .map(|s| s.two_owners)
            .max()
            .unwrap_or_default(),
        two_owners_persisting: samples.iter().filter(|s| s.two_owners_at_end).count(),
        lost: samples.iter().map(|s| s.lost).sum(),
        n: samples.len(),
    }
}

fn describe(s: &Summary) -> String {
    let two = if s.two_owners.is_zero() {
        "never".to_string()
    } else if s.two_owners_persisting > 0 {
        format!(
            "{} (still two at the end in {}/{})",
            ms(s.two_owners),
            s.two_owners_persisting,
            s.n
        )
    } else {
        ms(s.two_owners)
    };
    format!(
        "p50 {} / p99 {} / max {}; two owners: {two}; conns lost {}/{}",
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        s.lost,
        s.n * CONNS
    )
}

fn run_system(
    bed: &Bed,
    prober: &Prober,
    system: System,
    t: Timing,
    vip_bin: &Path,
    iters: usize,
) -> Result<Vec<(Fault, Vec<Sample>)>> {
    let mut case = Case {
        bed,
        prober,
        system,
        timing: t,
        vip_bin,
        procs: vec![None, None, None],
    };
    if system == System::Vip {
        // A fresh cluster: no term or pins from the previous interval.
        let _ = std::fs::remove_dir_all(PIN_DIR);
        for n in NODES {
            let _ = std::fs::remove_dir_all(work_dir().join(n));
        }
    }
    for i in 0..3 {
        case.start(i)?;
    }
    let mut out = Vec::new();
    for fault in [Fault::Kill, Fault::Cut] {
        let mut samples = Vec::new();
        for k in 0..iters {
            if stopped() {
                bail!("interrupted");
            }
            let s = case.once(fault)?;
            eprintln!(
                "   {} {:>4} ms {} #{k}: takeover {}, two owners {}, lost {}",
                system.name(),
                t.heartbeat.as_millis(),
                fault.name(),
                ms(s.takeover),
                ms(s.two_owners),
                s.lost
            );
            samples.push(s);
        }
        out.push((fault, samples));
    }
    drop(case);
    // keepalived's VIP must not outlive its run (a clean stop removes it; be sure).
    for n in NODES {
        remove_vip(bed.host(n));
    }
    Ok(out)
}

pub fn run(
    quick: bool,
    vip_bin: Option<&Path>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let vip_bin = crate::vip_bin(vip_bin)?;
    let iters = if quick { 3 } else { 20 };
    let intervals: Vec<Duration> = if quick {
        vec![Duration::from_millis(100), Duration::from_millis(20)]
    } else {
        vec![
            Duration::from_millis(1000),
            Duration::from_millis(100),
            Duration::from_millis(20),
        ]
    };
    let bed = fresh_bed()?;
    let mut servers = Vec::new();
    let listen: SocketAddr = format!("0.0.0.0:{PORT}").parse()?;
    for b in BACKENDS {
        let h = bed.host(b);
        testbed::make_dsr_backend(h, VIP);
        servers.push(TcpServer::start(&h.ns, listen, &format!("{b}\n")));
    }
    // keepalived has no load balancer: its connections end on the owner itself.
    for n in NODES {
        servers.push(TcpServer::start(&bed.host(n).ns, listen, &format!("{n}\n")));
    }
    let prober = Prober::start(bed.host("client"))?;
    let mut table = Vec::new();
    for h in &intervals {
        let t = timing(*h);
        let ours = run_system(&bed, &prober, System::Vip, t, vip_bin, iters)?;
        let theirs = run_system(&bed, &prober, System::Keepalived, t, vip_bin, iters)?;
        table.push((t, ours, theirs));
    }
    drop(prober);
    drop(servers);
    for (t, ours, theirs) in &table {
        for ((fault, o), (_, k)) in ours.iter().zip(theirs) {
            let (o, k) = (summarize(o), summarize(k));
            let mut row = Row::new(format!(
                "failover, {}: heartbeat {} (election {}–{}, lease {}) vs keepalived advert_int {}",
                fault.name(),
                ms(t.heartbeat),
                ms(t.election.0),
                ms(t.election.1),
                ms(t.lease),
                t.heartbeat.as_secs_f64()
            ))
            .result(describe(&o))
            .baseline(describe(&k))
            .ratio(o.p99.as_secs_f64() / k.p99.as_secs_f64().max(1e-6));
            if t.heartbeat == Duration::from_millis(20) {
                row = row.goal_at_most(o.p99.as_secs_f64(), 0.100, "p99 100 ms");
            }
            rows.push(row);
        }
    }
    notes.push(format!(
        "failover: testbed bed (bridge; client, 3 nodes, 2 backends on veths), all on the same 2 cores; {iters} faults per case, \
         the owner's daemon SIGKILLed (keepalived: its process group, parent and VRRP child) or its switch port set down; \
         the client asks for the VIP by ARP every {} ms and records which MAC answers. Takeover = fault to the first reply from \
         another node (for a cut, the fault instant is the old owner's last reply if later than the command's start). Two owners = \
         the longest run of {} ms buckets in which two MACs answered, from the fault until the repair has settled. Conns lost: of \
         {CONNS} long-lived TCP connections through the VIP per fault, those whose echo failed {} after the takeover (vip: a dsr \
         service to two backends, so flows can survive; keepalived has no load balancer here, its connections end on the owner). \
         Repair after each fault: the daemon restarted (a crashed keepalived's VIP removed from its uplink by hand first, as an \
         operator would have to) or the port brought up. vip: `election.mode: raft`, election timeout 2.5–3.5 heartbeats, lease \
         1.75 heartbeats; keepalived {}: VRRPv3, all BACKUP, priority 100, nopreempt, the VIP on the uplink (master down = 3 adverts + \
         skew 0.61 advert).",
        PROBE_EVERY.as_millis(),
        BUCKET.as_millis(),
        "max(2 heartbeats, 300 ms)",
        keepalived_version(),
    ));
    Ok(())
}

fn keepalived_version() -> String {
    Command::new("keepalived")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .next()
                .unwrap_or("")
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// What keeps both cores busy in a load case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    /// A plain busy loop per core at normal priority (a node running workloads).
    Busy,
    /// The veth traffic generator of the pps bench on every core: frames forwarded by the
    /// kernel, so the cores spend their time in softirq.
    Softirq,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Busy => "busy loops",
            Load::Softirq => "softirq (veth flood)",
        }
    }
}

/// A running load, stopped when dropped.
enum LoadGuard {
    Busy(Arc<AtomicBool>, Vec<JoinHandle<()>>),
    Softirq(Box<crate::pps::Flood>),
}

impl LoadGuard {
    fn start(load: Load) -> Result<LoadGuard> {
        Ok(match load {
            Load::Busy => {
                let stop = Arc::new(AtomicBool::new(false));
                let n = std::thread::available_parallelism().map_or(2, |n| n.get());
                let threads = (0..n)
                    .map(|cpu| {
                        let stop = stop.clone();
                        std::thread::spawn(move || {
                            crate::pin_cpu(cpu);
                            let mut x = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                x = std::hint::black_box(x.wrapping_add(1));
                            }
                        })
                    })
                    .collect();
                LoadGuard::Busy(stop, threads)
            }
            Load::Softirq => LoadGuard::Softirq(Box::new(crate::pps::Flood::start()?)),
        })
    }

    /// Stop; what was generated (frames; 0 for busy loops).
    fn stop(self) -> Result<u64> {
        match self {
            LoadGuard::Busy(stop, threads) => {
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                Ok(0)
            }
            LoadGuard::Softirq(f) => f.stop(),
        }
    }
}

/// (term, leader transitions) of each node, from its metrics.
fn raft_views(bed: &Bed) -> Result<Vec<(u64, u64)>> {
    let addr: SocketAddr = METRICS.parse()?;
    NODES
        .iter()
        .map(|n| {
            let (code, body) = http_get(&bed.host(n).ns, addr, "/metrics")
                .with_context(|| format!("metrics of {n}"))?;
            ensure!(code == 200, "metrics of {n}: HTTP {code}");
            let get = |name: &str| -> Result<u64> {
                body.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|v| v as u64)
                    .with_context(|| format!("{name} missing in the metrics of {n}"))
            };
            Ok((get("vip_raft_term")?, get("vip_leader_transitions_total")?))
        })
        .collect()
}

/// How late a thread at the election's priority woke over a load case: a SCHED_FIFO 10
/// thread sleeps 1 ms at a time and records each wake's lateness, per CPU it is pinned to.
/// A wake tens of milliseconds late at that priority is the machine stalling (a VM's vCPU
/// descheduled by the host, or kernel work that does not reach a preemption point on this
/// `PREEMPT_NONE` kernel), not the load: nothing else on it runs at real-time priority.
struct StallMeter {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Stalls>>,
    steal0: u64,
}

#[derive(Default, Clone, Copy)]
struct Stalls {
    over_10ms: u64,
    over_35ms: u64,
    max: Duration,
}

/// The machine's steal time so far (`/proc/stat`, the `cpu` line's 8th field, in 1/100 s).
fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(8).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

impl StallMeter {
    fn start() -> StallMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|cpu| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    crate::pin_cpu(cpu);
                    let p = libc::sched_param { sched_priority: 10 };
                    // SAFETY: a valid sched_param; pid 0 is the calling thread.
                    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
                    let mut st = Stalls::default();
                    while !stop.load(Ordering::Relaxed) {
                        let want = Instant::now() + Duration::from_millis(1);
                        std::thread::sleep(Duration::from_millis(1));
                        let late = Instant::now().saturating_duration_since(want);
                        if late > Duration::from_millis(10) {
                            st.over_10ms += 1;
                        }
                        if late > Duration::from_millis(35) {
                            st.over_35ms += 1;
                        }
                        st.max = st.max.max(late);
                    }
                    st
                })
            })
            .collect();
        StallMeter {
            stop,
            threads,
            steal0: steal_ticks(),
        }
    }

    /// Stalls summed over the CPUs (longest of any), and steal time in seconds.
    fn stop(self) -> (Stalls, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Stalls::default();
        for t in self.threads {
            if let Ok(s) = t.join() {
                all.over_10ms += s.over_10ms;
                all.over_35ms += s.over_35ms;
                all.max = all.max.max(s.max);
            }
        }
        let steal = steal_ticks().saturating_sub(self.steal0) as f64 / 100.0;
        (all, steal)
    }
}

/// What one load case saw.
struct LoadResult {
    stalls: Stalls,
    steal_secs: f64,
    secs: f64,
    elections: u64,
    transitions: u64,
    lapses: u64,
    no_owner: Duration,
    no_owner_longest: Duration,
    two_owners: Duration,
    replies: usize,
    frames: u64,
}

/// Gaps between ARP answers longer than this count as time without an owner (the prober
/// asks every `PROBE_EVERY`; a few missing answers are the prober's own jitter).
const NO_OWNER_GAP: Duration = Duration::from_millis(5);

fn load_case(
    bed: &Bed,
    prober: &Prober,
    t: Timing,
    vip_bin: &Path,
    load: Load,
    secs: u64,
) -> Result<LoadResult> {
    let mut case = Case {
        bed,
        prober,
        system: System::Vip,
        timing: t,
        vip_bin,
        procs: vec![None, None, None],
    };
    let _ = std::fs::remove_dir_all(PIN_DIR);
    for n in NODES {
        let _ = std::fs::remove_dir_all(work_dir().join(n));
    }
    for i in 0..3 {
        case.start(i)?;
    }
    case.stable_owner()?;
    // Settled: counters from here on.
    std::thread::sleep(Duration::from_secs(1));
    let before = raft_views(bed)?;
    let t0 = Instant::now();
    prober.forget_before(t0);
    let meter = StallMeter::start();
    let guard = LoadGuard::start(load)?;
    let end = t0 + Duration::from_secs(secs);
    let mut last_report = t0;
    while Instant::now() < end {
        if stopped() {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(200));
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!(
                "   {} {} ms: {:.0} s of {secs}",
                load.name(),
                t.heartbeat.as_millis(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let frames = guard.stop()?;
    let (stalls, steal_secs) = meter.stop();
    let t1 = Instant::now();
    let after = raft_views(bed)?;
    let replies: Vec<Reply> = prober.since(t0).into_iter().filter(|r| r.0 <= t1).collect();
    let (mut no_owner, mut longest) = (Duration::ZERO, Duration::ZERO);
    let mut last = t0;
    for r in replies.iter().map(|r| r.0).chain(std::iter::once(t1)) {
        let gap = r.saturating_duration_since(last);
        if gap > NO_OWNER_GAP {
            no_owner += gap;
            longest = longest.max(gap);
        }
        last = r;
    }
    let term = |v: &[(u64, u64)]| v.iter().map(|x| x.0).max().unwrap_or(0);
    let elections = term(&after).saturating_sub(term(&before));
    let transitions: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.1.saturating_sub(b.1))
        .sum();
    drop(case);
    Ok(LoadResult {
        stalls,
        steal_secs,
        secs: (t1 - t0).as_secs_f64(),
        elections,
        transitions,
        // An election that moves the VIP is two transitions (old owner off, new one on); the
        // rest are lapses of a leader's fence, two each (off and on again).
        lapses: transitions.saturating_sub(2 * elections) / 2,
        no_owner,
        no_owner_longest: longest,
        two_owners: two_owner_window(&replies),
        replies: replies.len(),
        frames,
    })
}

/// `VIP_BENCH_RAFT_PRIORITY=off`: the daemons without the election's raised priority
/// (`realtime_priority: 0, nice: 0`), to see what it buys.
fn priority_off() -> bool {
    std::env::var("VIP_BENCH_RAFT_PRIORITY").is_ok_and(|v| v == "off")
}

/// `VIP_BENCH_LOAD_SECS`, default 1800 (the recorded form: 30 minutes per case): seconds per
/// case, or `A,B` for A at 20 ms heartbeats and B at 100 ms.
fn load_secs() -> Result<(u64, u64)> {
    let Ok(v) = std::env::var("VIP_BENCH_LOAD_SECS") else {
        return Ok((1800, 1800));
    };
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .with_context(|| format!("VIP_BENCH_LOAD_SECS={v}: want seconds, or A,B"))
    };
    match v.split_once(',') {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => {
            let a = parse(&v)?;
            Ok((a, a))
        }
    }
}

/// The load case: the failover bed's three Raft nodes, both cores saturated at normal
/// priority (busy loops, or softirq from the veth generator), at 20 ms and 100 ms
/// heartbeats; nothing is faulted. Goal: no election and no fence lapse.
pub fn run_load(
    vip_bin: Option<&Path>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let vip_bin = crate::vip_bin(vip_bin)?;
    let (secs20, secs100) = load_secs()?;
    let bed = fresh_bed()?;
    let prober = Prober::start(bed.host("client"))?;
    for (h, secs) in [
        (Duration::from_millis(20), secs20),
        (Duration::from_millis(100), secs100),
    ] {
        let t = timing(h);
        for load in [Load::Busy, Load::Softirq] {
            let r = load_case(&bed, &prober, t, vip_bin, load, secs)?;
            eprintln!(
                "   {} {} ms: stalls at FIFO 10: {} over 10 ms, {} over 35 ms, longest {}; steal {:.1} s",
                load.name(),
                h.as_millis(),
                r.stalls.over_10ms,
                r.stalls.over_35ms,
                ms(r.stalls.max),
                r.steal_secs
            );
            eprintln!(
                "   {} {} ms: {} elections, {} lapses ({} transitions), no owner {} (longest {}), two owners {}, {} replies, {} frames",
                load.name(),
                h.as_millis(),
                r.elections,
                r.lapses,
                r.transitions,
                ms(r.no_owner),
                ms(r.no_owner_longest),
                ms(r.two_owners),
                r.replies,
                r.frames
            );
            let mut row = Row::new(format!(
                "raft under load, {}{}: heartbeat {} (election {}–{}, lease {}), {:.0} s",
                load.name(),
                if priority_off() {
                    ", election at normal priority"
                } else {
                    ""
                },
                ms(t.heartbeat),
                ms(t.election.0),
                ms(t.election.1),
                ms(t.lease),
                r.secs
            ))
            .result(format!(
                "{} elections, {} fence lapses ({} leader transitions); no owner {} in all (longest {}); two owners {}; machine stalls (a FIFO 10 thread woke late) {} over 10 ms, {} over 35 ms, longest {}; steal {:.1} s{}",
                r.elections,
                r.lapses,
                r.transitions,
                ms(r.no_owner),
                ms(r.no_owner_longest),
                ms(r.two_owners),
                r.stalls.over_10ms,
                r.stalls.over_35ms,
                ms(r.stalls.max),
                r.steal_secs,
                if r.frames > 0 {
                    format!("; {:.2} Mpps generated", r.frames as f64 / r.secs / 1e6)
                } else {
                    String::new()
                }
            ));
            if h == Duration::from_millis(20) {
                row = row.goal_at_most(
                    (r.elections + r.lapses) as f64,
                    0.0,
                    "0 elections, 0 lapses",
                );
            }
            rows.push(row);
        }
    }
    drop(prober);
    notes.push(format!(
        "raft under load: the failover bed, three `vip` daemons in `election.mode: raft` ({}), nothing faulted, for {secs20} s per case at 20 ms and {secs100} s at 100 ms while both cores are saturated at normal \
         priority: a busy loop pinned to each core, or the pps bench's veth generator on each core with the kernel forwarding \
         its frames (softirq). Elections = term changes; leader transitions = `vip_leader_transitions_total` summed over the \
         nodes; fence lapses = (transitions − 2 × elections) / 2. The client asks for the VIP by ARP every {} ms from a \
         SCHED_FIFO 1 thread (above the load, below the election): no owner = the sum of gaps over {} ms between answers, \
         two owners = the longest run of {} ms buckets in which two MACs answered. Machine stalls: a SCHED_FIFO 10 thread \
         (the election's priority) pinned to each core sleeps 1 ms at a time; a wake more than 10 (35) ms late is counted \
         (35 ms is the lease at 20 ms heartbeats): nothing else runs at that priority, so such a wake is the machine not \
         running its highest-priority thread (vCPU descheduled by the host, or kernel work without a preemption point on a \
         `PREEMPT_NONE` kernel); steal = the `cpu` line's steal time in /proc/stat over the case.",
        if priority_off() {
            "`realtime_priority: 0, nice: 0` (VIP_BENCH_RAFT_PRIORITY=off): the election's threads at normal priority"
        } else {
            "default `realtime_priority`, so the election's threads run SCHED_FIFO"
        },
        PROBE_EVERY.as_millis(),
        NO_OWNER_GAP.as_millis(),
        BUCKET.as_millis(),
    ));
    Ok(())
}

/// The failover bed (client, three nodes, two backends on one bridge), with a fresh work
/// directory.
fn fresh_bed() -> Result<Bed> {
    let _ = std::fs::remove_dir_all(work_dir());
    std::fs::create_dir_all(work_dir())?;
    Ok(Bed::new(
        &format!("{PREFIX}f"),
        &[
            ("client", "192.0.2.10/24"),
            ("n1", "192.0.2.11/24"),
            ("n2", "192.0.2.12/24"),
            ("n3", "192.0.2.13/24"),
            ("be1", "192.0.2.21/24"),
            ("be2", "192.0.2.22/24"),
        ],
    ))
}
