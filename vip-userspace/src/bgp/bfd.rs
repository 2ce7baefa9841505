//! Single-hop asynchronous BFD (RFC 5880, RFC 5881) for BGP peers.
//!
//! A [`Hub`] owns the receive sockets on UDP port 3784 (one per address family, so every
//! session of the speaker shares them) and hands each valid packet to its session by
//! "your discriminator" (or by source address while the peer does not know ours yet).
//! Each [`Session`] sends from its own socket (source port 49152–65535, TTL 255) and runs
//! the state machine of RFC 5880 6.8.6. Received packets must carry TTL/hop limit 255
//! (GTSM, RFC 5881 5): anything else came from further away and is dropped.
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::Interest,
    net::UdpSocket,
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{config::BfdConfig, Control};

pub const CONTROL_PORT: u16 = 3784;

#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("binding the BFD receive socket on UDP port {port} ({family})")]
    Bind {
        port: u16,
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("BFD socket from {local} to {peer}")]
    Socket {
        local: IpAddr,
        peer: IpAddr,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BfdState {
    AdminDown,
    Down,
    Init,
    Up,
}

impl BfdState {
    fn code(self) -> u8 {
        match self {
            BfdState::AdminDown => 0,
            BfdState::Down => 1,
            BfdState::Init => 2,
            BfdState::Up => 3,
        }
    }

    fn from_code(c: u8) -> Self {
        match c & 3 {
            0 => BfdState::AdminDown,
            1 => BfdState::Down,
            2 => BfdState::Init,
            _ => BfdState::Up,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BfdState::AdminDown => "admin-down",
            BfdState::Down => "down",
            BfdState::Init => "init",
            BfdState::Up => "up",
        }
    }
}

/// Diagnostic codes we send (RFC 5880 4.1).
const DIAG_NONE: u8 = 0;
const DIAG_DETECT_EXPIRED: u8 = 1;
const DIAG_NEIGHBOR_DOWN: u8 = 3;

/// A BFD control packet (no authentication section: we neither send nor accept one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: u8,
    pub state: BfdState,
    pub poll: bool,
    pub fin: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
}

impl Packet {
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = (self.state.code() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.fin) << 4)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = 24;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b
    }

    /// The reception checks of RFC 5880 6.8.6 that need no session state.
    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < 24 || b[0] >> 5 != 1 {
            return None;
        }
        let len = usize::from(b[3]);
        let auth = b[1] & 0x04 != 0;
        let multipoint = b[1] & 0x01 != 0;
        if len < 24 || len > b.len() || auth || multipoint || b[2] == 0 {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = Packet {
            diag: b[0] & 0x1f,
            state: BfdState::from_code(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            fin: b[1] & 0x10 != 0,
            demand: b[1] & 0x02 != 0,
            detect_mult: b[2],
            my_discr: u32_at(4),
            your_discr: u32_at(8),
            desired_min_tx_us: u32_at(12),
            required_min_rx_us: u32_at(16),
        };
        if p.my_discr == 0 {
            return None;
        }
        if p.your_discr == 0 && !matches!(p.state, BfdState::Down | BfdState::AdminDown) {
            return None;
        }
        Some(p)
    }
}

fn random_u64() -> u64 {
    // RandomState is seeded from the OS per instance: enough for discriminators, source
    // ports and jitter, none of which need cryptographic strength.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

struct Registration {
    peer: IpAddr,
    tx: mpsc::Sender<Packet>,
}

#[derive(Default)]
struct Registry {
    by_discr: HashMap<u32, Registration>,
}

/// The receive side shared by all sessions of a speaker.
#[derive(Clone)]
pub struct Hub {
    sockets: Vec<Arc<UdpSocket>>,
    registry: Arc<Mutex<Registry>>,
}

impl Hub {
    pub fn start(v4: bool, v6: bool) -> Result<Hub, BfdError> {
        let mut sockets = Vec::new();
        if v4 {
            sockets.push(Arc::new(rx_socket(false).map_err(|source| {
                BfdError::Bind {
                    port: CONTROL_PORT,
                    family: "IPv4",
                    source,
                }
            })?));
        }
        if v6 {
            sockets.push(Arc::new(rx_socket(true).map_err(|source| {
                BfdError::Bind {
                    port: CONTROL_PORT,
                    family: "IPv6",
                    source,
                }
            })?));
        }
        Ok(Hub {
            sockets,
            registry: Arc::new(Mutex::new(Registry::default())),
        })
    }

    /// Receive until the speaker stops.
    pub(super) async fn run_until(self, mut control: watch::Receiver<Control>) {
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for s in &self.sockets {
            tasks.push(tokio::spawn(rx_loop(s.clone(), self.registry.clone())));
        }
        while *control.borrow_and_update() == Control::Run {
            if control.changed().await.is_err() {
                break;
            }
        }
        for t in tasks {
            t.abort();
        }
    }

    /// Start a session to `peer` from `local` (the BGP session's local address).
    pub fn session(
        &self,
        local: IpAddr,
        peer: IpAddr,
        cfg: BfdConfig,
    ) -> Result<Session, BfdError> {
        let sock = tx_socket(local, peer).map_err(|source| BfdError::Socket {
            local,
            peer,
            source,
        })?;
        let (tx, rx) = mpsc::channel(64);
        let discr = {
            let mut reg = lock(&self.registry);
            let mut d = 0;
            while d == 0 || reg.by_discr.contains_key(&d) {
                d = random_u64() as u32;
            }
            reg.by_discr.insert(d, Registration { peer, tx });
            d
        };
        let (state_tx, state_rx) = watch::channel(BfdState::Down);
        let task = tokio::spawn(run_session(sock, rx, discr, cfg, state_tx, peer));
        Ok(Session {
            state: state_rx,
            task,
            discr,
            registry: self.registry.clone(),
        })
    }
}

fn lock(r: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    match r.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One BFD session; stops (and unregisters) on drop.
pub struct Session {
    state: watch::Receiver<BfdState>,
    task: JoinHandle<()>,
    discr: u32,
    registry: Arc<Mutex<Registry>>,
}

impl Session {
    pub async fn changed(&mut self) -> BfdState {
        if self.state.changed().await.is_err() {
            // The session task ended: nothing more will come.
            return std::future::pending().await;
        }
        *self.state.borrow_and_update()
    }

    pub fn state(&self) -> BfdState {
        *self.state.borrow()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
        lock(&self.registry).by_discr.remove(&self.discr);
    }
}

fn rx_socket(v6: bool) -> io::Result<UdpSocket> {
    let (domain, addr): (socket2::Domain, SocketAddr) = if v6 {
        (
            socket2::Domain::IPV6,
            (Ipv6Addr::UNSPECIFIED, CONTROL_PORT).into(),
        )
    } else {
        (
            socket2::Domain::IPV4,
            (Ipv4Addr::UNSPECIFIED, CONTROL_PORT).into(),
        )
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let one: libc::c_int = 1;
    let (level, opt) = if v6 {
        s.set_only_v6(true)?;
        (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVTTL)
    };
    // SAFETY: setsockopt with an int option on our own socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

fn tx_socket(local: IpAddr, peer: IpAddr) -> io::Result<UdpSocket> {
    let domain = if peer.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if peer.is_ipv6() {
        s.set_unicast_hops_v6(255)?;
    } else {
        s.set_ttl_v4(255)?;
    }
    s.set_nonblocking(true)?;
    // RFC 5881 4: the source port is in 49152..=65535 (and stays the same for the session).
    let mut last = io::Error::other("no free source port");
    let mut bound = false;
    for _ in 0..32 {
        let port = 49152 + (random_u64() % 16384) as u16;
        match s.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => {
                bound = true;
                break;
            }
            Err(e) => last = e,
        }
    }
    if !bound {
        return Err(last);
    }
    s.connect(&SocketAddr::new(peer, CONTROL_PORT).into())?;
    UdpSocket::from_std(s.into())
}

/// recvmsg with the TTL / hop limit of the packet.
fn recv_with_ttl(fd: i32, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // SAFETY: all-zero is valid for these C structs; every pointer we hand to recvmsg
    // points into locals that outlive the call, with their true lengths.
    unsafe {
        let mut from: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // size_t in glibc, socklen_t in musl (the static build of the image).
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ttl = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (l, t) = ((*c).cmsg_level, (*c).cmsg_type);
            if (l == libc::IPPROTO_IP && t == libc::IP_TTL)
                || (l == libc::IPPROTO_IPV6 && t == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let sa = socket2::SockAddr::new(
            std::mem::transmute::<libc::sockaddr_storage, socket2::SockAddrStorage>(from),
            msg.msg_namelen,
        );
        let addr = sa
            .as_socket()
            .ok_or_else(|| io::Error::other("recvmsg: not an IP source address"))?;
        Ok((n as usize, addr, ttl))
    }
}

async fn rx_loop(sock: Arc<UdpSocket>, registry: Arc<Mutex<Registry>>) {
    let mut buf = [0u8; 512];
    loop {
        let fd = sock.as_raw_fd();
        let r = sock
            .async_io(Interest::READABLE, || recv_with_ttl(fd, &mut buf))
            .await;
        let (n, from, ttl) = match r {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %crate::Chain(&e), "BFD receive");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ttl != Some(255) {
            debug!(%from, ?ttl, "BFD packet without TTL 255 dropped");
            continue;
        }
        let Some(p) = Packet::decode(&buf[..n]) else {
            debug!(%from, "invalid BFD packet dropped");
            continue;
        };
        let src = match from.ip() {
            IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a)),
            a => a,
        };
        let reg = lock(&registry);
        let target = if p.your_discr != 0 {
            reg.by_discr.get(&p.your_discr).filter(|r| r.peer == src)
        } else {
            reg.by_discr.values().find(|r| r.peer == src)
        };
        match target {
            Some(r) => {
                let _ = r.tx.try_send(p);
            }
            None => debug!(%from, discr = p.your_discr, "BFD packet for no session"),
        }
    }
}

/// While a session is not Up, RFC 5880 6.8.3 wants at least one second between packets.
const SLOW_TX_US: u32 = 1_000_000;

struct State {
    local: BfdState,
    diag: u8,
    remote_discr: u32,
    remote_state: BfdState,
    remote_min_rx_us: u32,
    remote_desired_tx_us: u32,
    remote_mult: u8,
    /// Poll sequence in progress (our timing parameters changed).
    polling: bool,
}

async fn run_session(
    sock: UdpSocket,
    mut rx: mpsc::Receiver<Packet>,
    discr: u32,
    cfg: BfdConfig,
    state_tx: watch::Sender<BfdState>,
    peer: IpAddr,
) {
    let fast_tx_us = cfg.min_tx_ms.saturating_mul(1000);
    let min_rx_us = cfg.min_rx_ms.saturating_mul(1000);
    let mut st = State {
        local: BfdState::Down,
        diag: DIAG_NONE,
        remote_discr: 0,
        remote_state: BfdState::Down,
        remote_min_rx_us: 1,
        remote_desired_tx_us: SLOW_TX_US,
        remote_mult: 1,
        polling: false,
    };
    let desired_tx = |s: &State| {
        if s.local == BfdState::Up {
            fast_tx_us
        } else {
            fast_tx_us.max(SLOW_TX_US)
        }
    };
    let packet = |s: &State, fin: bool| Packet {
        diag: s.diag,
        state: s.local,
        poll: s.polling && !fin,
        fin,
        demand: false,
        detect_mult: cfg.multiplier,
        my_discr: discr,
        your_discr: s.remote_discr,
        desired_min_tx_us: desired_tx(s),
        required_min_rx_us: min_rx_us,
    };
    let send = |p: Packet| {
        let b = p.encode();
        if let Err(e) = sock.try_send(&b) {
            debug!(%peer, error = %crate::Chain(&e), "BFD send");
        }
    };
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut next_tx = Instant::now();
    let mut detect_at = far;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_tx) => {
                send(packet(&st, false));
                // RFC 5880 6.8.7: the interval is the larger of what we want to send and
                // what the peer can receive, jittered down by up to 25 %.
                let iv = u64::from(desired_tx(&st).max(st.remote_min_rx_us));
                let jitter = 75 + random_u64() % 26;
                next_tx = Instant::now() + Duration::from_micros(iv * jitter / 100);
            }
            _ = tokio::time::sleep_until(detect_at), if detect_at != far => {
                if matches!(st.local, BfdState::Init | BfdState::Up) {
                    info!(%peer, "BFD down: detection time expired");
                    st.local = BfdState::Down;
                    st.diag = DIAG_DETECT_EXPIRED;
                    st.remote_discr = 0;
                    st.polling = false;
                    let _ = state_tx.send(BfdState::Down);
                }
                detect_at = far;
            }
            p = rx.recv() => {
                let Some(p) = p else { return };
                if p.your_discr != 0 && p.your_discr != discr {
                    continue;
                }
                st.remote_discr = p.my_discr;
                st.remote_state = p.state;
                st.remote_min_rx_us = p.required_min_rx_us;
                st.remote_desired_tx_us = p.desired_min_tx_us;
                st.remote_mult = p.detect_mult;
                if p.fin {
                    st.polling = false;
                }
                let before = st.local;
                match (st.local, p.state) {
                    (BfdState::AdminDown, _) => continue,
                    (BfdState::Down, BfdState::AdminDown) => {}
                    (BfdState::Down, BfdState::Down) => st.local = BfdState::Init,
                    (BfdState::Down, BfdState::Init) => st.local = BfdState::Up,
                    (BfdState::Init, BfdState::Init | BfdState::Up) => st.local = BfdState::Up,
                    (_, BfdState::AdminDown) | (BfdState::Up, BfdState::Down) => {
                        st.local = BfdState::Down;
                        st.diag = DIAG_NEIGHBOR_DOWN;
                    }
                    _ => {}
                }
                // Detection time (async mode): the peer's multiplier times the agreed
                // interval of its transmissions to us.
                let agreed = u64::from(min_rx_us.max(st.remote_desired_tx_us));
                detect_at = Instant::now() + Duration::from_micros(agreed * u64::from(st.remote_mult));
                if st.local != before {
                    info!(%peer, from = before.as_str(), to = st.local.as_str(), "BFD state");
                    if st.local == BfdState::Up {
                        st.diag = DIAG_NONE;
                        // Our desired TX interval drops from the 1 s used while down.
                        st.polling = true;
                    }
                    let _ = state_tx.send(st.local);
                    send(packet(&st, false));
                }
                if p.poll {
                    send(packet(&st, true));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_roundtrip_and_checks() {
        let p = Packet {
            diag: 3,
            state: BfdState::Up,
            poll: true,
            fin: false,
            demand: false,
            detect_mult: 3,
            my_discr: 7,
            your_discr: 9,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
        };
        assert_eq!(Packet::decode(&p.encode()), Some(p));
        let mut b = p.encode();
        b[2] = 0;
        assert_eq!(Packet::decode(&b), None, "zero multiplier");
        let up_without_your = Packet { your_discr: 0, ..p };
        assert_eq!(Packet::decode(&up_without_your.encode()), None);
        let mut b = p.encode();
        b[1] |= 0x04;
        assert_eq!(Packet::decode(&b), None, "authentication not supported");
    }
}
