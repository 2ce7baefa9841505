//! The receive side shared by every session of a speaker: the port-3784 sockets, the
//! registry of sessions by discriminator, and the loop that checks GTSM and hands each
//! packet to its session. Sessions start here because their discriminator must be
//! registered before their first packet goes out.
use std::{
    collections::HashMap,
    net::IpAddr,
    os::fd::AsRawFd,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::Interest,
    net::UdpSocket,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::{
    machine::Machine,
    packet::{BfdState, Packet},
    random_u64, sock, task, BfdConfig, BfdError, Control, CONTROL_PORT,
};

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
            sockets.push(Arc::new(sock::rx_socket(false).map_err(|source| {
                BfdError::Bind {
                    port: CONTROL_PORT,
                    family: "IPv4",
                    source,
                }
            })?));
        }
        if v6 {
            sockets.push(Arc::new(sock::rx_socket(true).map_err(|source| {
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
    pub(in crate::bgp) async fn run_until(self, mut control: watch::Receiver<Control>) {
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
        let sock = sock::tx_socket(local, peer).map_err(|source| BfdError::Socket {
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
        let machine = Machine::new(discr, &cfg);
        let task = tokio::spawn(task::run_session(sock, rx, machine, state_tx, peer));
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

async fn rx_loop(sock: Arc<UdpSocket>, registry: Arc<Mutex<Registry>>) {
    let mut buf = [0u8; 512];
    loop {
        let fd = sock.as_raw_fd();
        let r = sock
            .async_io(Interest::READABLE, || sock::recv_with_ttl(fd, &mut buf))
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
