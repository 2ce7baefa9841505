//! A namespace test bed, shared by the kernel tests and `cargo xtask demo`.
//!
//! ```text
//!  ns <prefix>-client ─veth─┐
//!  ns <prefix>-node   ─veth─┤ ns <prefix>-sw (bridge br0)
//! ```
//!
//! Every namespace is created here and deleted on drop; nothing touches the root namespace's
//! links or addresses. Commands run inside a namespace by `setns(CLONE_NEWNET)` only (not
//! `ip netns exec`, which also remounts /sys and would hide /sys/fs/bpf from the daemon).
#![allow(clippy::new_without_default)]

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Panics with a clear message unless we are root and the kernel lets us use BPF.
/// Kernel tests call this first: they must fail loudly, never skip.
pub fn require_root_and_bpf() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests need root (network namespaces, XDP, bpffs); run them as root: \
         `cargo test -p vip-kernel-tests -- --test-threads=1` or `cargo xtask test`"
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "kernel tests need a kernel with BPF and BTF (/sys/kernel/btf/vmlinux is missing)"
    );
}

/// Run a command, panicking with its output if it fails.
pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> Output {
    sh(Command::new("ip").args(args))
}

/// Poll `f` every 10 ms until it returns Some or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let name = &scoped(name);
        // A leftover from an interrupted run would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that will run inside this namespace (network namespace only).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let path = self.path();
        // SAFETY: pre_exec runs in the forked child before exec; it only opens a file and
        // calls setns, both async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || {
                let f = File::open(&path)?;
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Run `f` on a thread that has entered this namespace; sockets it opens live here.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
            // SAFETY: setns on the current thread with a valid namespace fd.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A host on the bed: its namespace, its uplink `eth0` and address.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub iface: String,
    pub addr: String,
    /// `addr/len` as configured.
    pub cidr: String,
    pub mac: String,
}

/// `VIP_NETNS_PREFIX` (default empty) before a namespace name: two checkouts can run the
/// same kernel tests at once without deleting each other's namespaces.
pub fn scoped(name: &str) -> String {
    let pre = std::env::var("VIP_NETNS_PREFIX").unwrap_or_default();
    if name.starts_with(&pre) {
        name.to_string()
    } else {
        format!("{pre}{name}")
    }
}

/// Delete every namespace whose name starts with `prefix` (Ctrl-C cleanup, leftovers).
pub fn cleanup_prefix(prefix: &str) {
    let prefix = &scoped(prefix);
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(prefix) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Where `cargo xtask build-ebpf` leaves its objects.
pub fn ebpf_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VIP_EBPF_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/bpfel-unknown-none/release")
}

/// A flat L2 segment: a bridge in its own namespace and hosts hanging off it.
#[derive(Debug)]
pub struct Bed {
    pub prefix: String,
    pub hosts: Vec<Host>,
    // Dropped last: hosts' veths die with their namespaces first.
    pub switch: Netns,
}

impl Bed {
    /// `hosts`: (role, "addr/len"). Namespaces are named `<prefix>-<role>`.
    pub fn new(prefix: &str, hosts: &[(&str, &str)]) -> Bed {
        let prefix = &scoped(prefix);
        cleanup_prefix(&format!("{prefix}-"));
        let switch = Netns::new(&format!("{prefix}-sw"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        // Forward at once: no STP listening delay.
        switch.ip(&["link", "set", "br0", "type", "bridge", "forward_delay", "0"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut bed = Bed {
            prefix: prefix.to_string(),
            hosts: Vec::new(),
            switch,
        };
        for (role, addr) in hosts {
            bed.add_host(role, addr);
        }
        bed
    }

    fn add_host(&mut self, role: &str, addr: &str) {
        let ns = Netns::new(&format!("{}-{role}", self.prefix));
        let mac = self.plug(&ns, role, addr);
        self.hosts.push(Host {
            ns,
            iface: "eth0".into(),
            addr: addr.split('/').next().unwrap_or_default().to_string(),
            cidr: addr.to_string(),
            mac,
        });
    }

    /// Remove a host's uplink (both ends of its veth), as when a NIC or driver goes away.
    pub fn unplug(&self, role: &str) {
        self.host(role).ns.ip(&["link", "del", "eth0"]);
    }

    /// Cut a host's cable at the switch: its own link, address and sockets stay, so only
    /// its peers (and timeouts) can notice, as when a node dies or is partitioned.
    pub fn cut(&self, role: &str) {
        self.switch
            .ip(&["link", "set", &format!("p-{role}"), "down"]);
    }

    /// Reconnect a host cut with [`Bed::cut`].
    pub fn heal(&self, role: &str) {
        self.switch.ip(&["link", "set", &format!("p-{role}"), "up"]);
    }

    /// Give a host a new uplink `eth0` with the same address (new ifindex and MAC); the
    /// host's recorded MAC is returned, not updated.
    pub fn replug(&self, role: &str) -> String {
        let h = self.host(role);
        self.plug(&h.ns, role, &h.cidr)
    }

    fn plug(&self, ns: &Netns, role: &str, addr: &str) -> String {
        let port = format!("p-{role}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch.name,
        ]);
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"]);
        // A veth delivers XDP_TX frames only if its peer runs an XDP program.
        let pass = ebpf_dir().join("xdp-pass");
        assert!(
            pass.exists(),
            "{} missing: run `cargo xtask build-ebpf --release`",
            pass.display()
        );
        self.switch.ip(&[
            "link",
            "set",
            "dev",
            &port,
            "xdpdrv",
            "obj",
            pass.to_str().unwrap_or_default(),
            "sec",
            "xdp",
        ]);
        ns.ip(&["addr", "add", addr, "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        // A veth hands its peer packets whose checksum is still to be filled in (offload);
        // a frame that XDP forwards loses that mark and would arrive with a bad checksum.
        // Real NICs finish the checksum on the wire, so the bed computes it in software.
        sh(ns
            .command("ethtool")
            .args(["-K", "eth0", "tx", "off"])
            .stdout(Stdio::null()));
        link_mac(ns, "eth0")
    }

    pub fn host(&self, role: &str) -> &Host {
        let name = scoped(&format!("{}-{role}", self.prefix));
        self.hosts
            .iter()
            .find(|h| h.ns.name == name)
            .unwrap_or_else(|| panic!("no host {role}"))
    }
}

/// MAC address of `dev` in `ns`, lower case.
pub fn link_mac(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {text}"))
        .to_lowercase()
}

/// Whether an XDP program is attached to `dev` in `ns`.
pub fn has_xdp(ns: &Netns, dev: &str) -> bool {
    let out = ns.ip(&["-d", "link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("prog/xdp")
}

/// Addresses (with prefix) on `dev` in `ns`.
pub fn addrs(ns: &Netns, dev: &str) -> Vec<String> {
    let out = ns.ip(&["-o", "-4", "addr", "show", "dev", dev]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .map(str::to_string)
        })
        .collect()
}

/// One ARP request from `host` for `ip` with arping; the MAC that answered, if any.
pub fn arping(host: &Host, ip: &str) -> Option<String> {
    let out = host
        .ns
        .command("arping")
        .args(["-c", "1", "-w", "1", "-i", &host.iface, ip])
        .output()
        .unwrap_or_else(|e| panic!("arping: {e} (is the arping package installed?)"));
    let text = String::from_utf8_lossy(&out.stdout);
    // "60 bytes from 66:30:55:29:ed:25 (192.0.2.100): index=0 ..."
    text.lines()
        .find(|l| l.contains("bytes from"))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(str::to_lowercase)
}

/// The neighbour entry (MAC) `host` has for `ip`.
pub fn neighbour(host: &Host, ip: &str) -> Option<String> {
    let out = host.ns.ip(&["neigh", "show", ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_lowercase)
}

/// A TCP server in a namespace answering every connection with `greeting`.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(ns: &Netns, addr: SocketAddr, greeting: &str) -> TcpServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let greeting = greeting.to_string();
        let stop2 = stop.clone();
        let thread = ns.spawn(move || {
            let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            l.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
            let _ = ready_tx.send(());
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(greeting.as_bytes());
                        // Then echo until the client closes: long-lived connections can
                        // prove they still reach the same server.
                        let stop3 = stop2.clone();
                        std::thread::spawn(move || {
                            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
                            let mut buf = [0u8; 512];
                            while !stop3.load(Ordering::Relaxed) {
                                match s.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                    Err(e)
                                        if e.kind() == std::io::ErrorKind::WouldBlock
                                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                                    Err(_) => return,
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("server did not start: {e}"));
        TcpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connect from `ns` to `addr` and read the server's greeting line.
pub fn tcp_request(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    ns.run(move || {
        greeting(&mut TcpStream::connect_timeout(
            &addr,
            Duration::from_secs(3),
        )?)
    })
}

/// Many connections from `ns`, one after another: the greeting of each (or the error).
pub fn tcp_requests(ns: &Netns, addr: SocketAddr, n: usize) -> Vec<std::io::Result<String>> {
    ns.run(move || {
        (0..n)
            .map(|_| {
                greeting(&mut TcpStream::connect_timeout(
                    &addr,
                    Duration::from_secs(3),
                )?)
            })
            .collect()
    })
}

fn greeting(s: &mut TcpStream) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.last() != Some(&b'\n') {
        if s.read(&mut b)? == 0 {
            break;
        }
        out.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A connection held open from inside a namespace (the stream's socket lives there).
pub struct LongConn {
    pub stream: TcpStream,
    pub greeting: String,
}

impl LongConn {
    pub fn open(ns: &Netns, addr: SocketAddr) -> std::io::Result<LongConn> {
        ns.run(move || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            let greeting = greeting(&mut stream)?;
            Ok(LongConn { stream, greeting })
        })
    }

    /// Send a line and read it back from the same server.
    pub fn echo(&mut self, line: &str) -> std::io::Result<String> {
        self.stream.write_all(format!("{line}\n").as_bytes())?;
        greeting(&mut self.stream).map(|s| s.trim_end().to_string())
    }
}

/// A UDP server in a namespace answering each datagram with `reply`.
pub struct UdpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(ns: &Netns, addr: SocketAddr, reply: &str) -> UdpServer {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let reply = reply.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let s = std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = tx.send(());
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(reply.as_bytes(), peer);
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("udp server did not start: {e}"));
        UdpServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One UDP request from `ns` to `addr`: the reply and who it came from.
pub fn udp_request(ns: &Netns, addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    ns.run(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(b"ping", addr)?;
        let mut buf = [0u8; 1500];
        let (n, from) = s.recv_from(&mut buf)?;
        Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    })
}

/// Make `host` a direct-server-return backend for `vip`: the VIP on lo (so it accepts the
/// packets), and no ARP answers for it (only the VIP's owner may answer).
pub fn make_dsr_backend(host: &Host, vip: &str) {
    host.ns
        .ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    for dev in ["all", host.iface.as_str()] {
        host.ns
            .sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1");
        host.ns
            .sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2");
    }
}

impl Netns {
    /// Write an IPv4 sysctl inside this namespace (`net/ipv4/...`).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let v = value.to_string();
        self.run(move || std::fs::write(&path, v).unwrap_or_else(|e| panic!("{path}: {e}")));
    }

    /// Read an IPv4 sysctl inside this namespace (`net.ipv4...`), trimmed.
    pub fn sysctl_value(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(move || {
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .trim()
                .to_string()
        })
    }
}

/// HTTP GET over plain TCP from inside `ns` (metrics endpoints).
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(req.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Ok((code, body))
    })
}

/// A child process killed (and reaped) on drop, so a failing test leaves nothing running.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Proc { child }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Wait up to `timeout` for exit; the exit status if it ended.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        poll(timeout, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Frames of one ethertype received on a host's interface, captured with AF_PACKET from
/// a thread inside the host's namespace.
/// A captured frame and when it arrived.
pub type Frame = (Instant, Vec<u8>);

pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<std::sync::Mutex<Vec<Frame>>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    pub fn start(host: &Host, ethertype: u16) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let iface = host.iface.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let frames = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = frames.clone();
        let thread = host.ns.spawn(move || {
            let proto = ethertype.to_be() as i32;
            // SAFETY: plain socket(2); checked below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let c = std::ffi::CString::new(iface).unwrap_or_default();
            // SAFETY: sockaddr_ll is plain data; fd is ours; c outlives the call.
            unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = ethertype.to_be();
                sll.sll_ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
                let rc = libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 20_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
            }
            let _ = ready_tx.send(());
            let mut buf = vec![0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                // SAFETY: buf is valid for its length.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    if let Ok(mut f) = sink.lock() {
                        f.push((Instant::now(), buf[..n as usize].to_vec()));
                    }
                }
            }
            // SAFETY: closing our own descriptor once.
            unsafe { libc::close(fd) };
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("capture did not start: {e}"));
        Capture {
            stop,
            frames,
            thread: Some(thread),
        }
    }

    /// (arrival time, frame) for everything captured so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames_from(0)
    }

    /// The frames captured after the first `skip` (for readers that go through a long
    /// capture a piece at a time instead of copying all of it on every look).
    pub fn frames_from(&self, skip: usize) -> Vec<Frame> {
        self.frames
            .lock()
            .map(|f| f.get(skip..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CPU time (user + system) a process has used so far, from /proc/<pid>/stat.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.get(stat.rfind(')').unwrap_or(0) + 2..).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 of `rest` (0-based: 11, 12).
    let field = |i: usize| -> u64 {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("/proc/{pid}/stat field {}: {stat}", i + 3))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((field(11) + field(12)) * 1000 / hz)
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).unwrap_or_else(|e| panic!("bad MAC {s}: {e}"));
    }
    m
}
