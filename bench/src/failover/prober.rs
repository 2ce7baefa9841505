//! The instrument: ARP requests for the VIP from the client every millisecond on one
//! AF_PACKET socket, every reply kept with its arrival and sender MAC, and what is read from
//! them (the sole owner, two owners at once). It runs at SCHED_FIFO 1 so the load cases
//! do not measure its own starvation.
use std::{
    net::Ipv4Addr,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use testbed::{parse_mac, Host};
use testkit::packet::Packet;

use super::{BUCKET, PROBE_EVERY, VIP};

/// ARP requests for the VIP from the client every `PROBE_EVERY`; every reply (arrival,
/// sender MAC) is kept.
pub(super) struct Prober {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) threads: Vec<JoinHandle<()>>,
    pub(super) replies: Arc<Mutex<Vec<Reply>>>,
}

/// An ARP reply for the VIP: arrival and sender MAC.
pub(super) type Reply = (Instant, [u8; 6]);

pub(super) fn arp_socket(proto: u16, ifindex: u32) -> Result<std::os::fd::OwnedFd> {
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
    pub(super) fn start(client: &Host) -> Result<Prober> {
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
    pub(super) fn since(&self, t: Instant) -> Vec<Reply> {
        self.replies
            .lock()
            .map(|r| r.iter().filter(|x| x.0 > t).copied().collect())
            .unwrap_or_default()
    }

    /// Forget replies before `t` (memory stays bounded over hundreds of failovers).
    pub(super) fn forget_before(&self, t: Instant) {
        if let Ok(mut r) = self.replies.lock() {
            r.retain(|x| x.0 >= t);
        }
    }

    /// The one MAC that answered during the last `window`, if exactly one did (and often).
    pub(super) fn sole_owner(&self, window: Duration) -> Option<[u8; 6]> {
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
pub(super) fn instrument_priority() {
    let p = libc::sched_param { sched_priority: 1 };
    // SAFETY: a valid sched_param; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
}

/// The longest run of `BUCKET`s in which two or more MACs answered.
pub(super) fn two_owner_window(replies: &[Reply]) -> Duration {
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
