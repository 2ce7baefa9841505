//! Watching what the daemons write from outside them: the first gratuitous ARP of each
//! (VIP, MAC) at the client, and when each Service's status first carried an address (the
//! API server's change feed, with a rescan of the store when the feed lagged).
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use fake_apiserver::FakeApiServer;
use testbed::Capture;

/// First gratuitous ARP per (VIP, sender MAC) seen at the client, read from the capture a
/// piece at a time.
pub(super) struct Garps {
    pub(super) cap: Capture,
    pub(super) read: usize,
    pub(super) first: HashMap<(Ipv4Addr, [u8; 6]), Instant>,
}

impl Garps {
    pub(super) fn update(&mut self) {
        let new = self.cap.frames_from(self.read);
        self.read += new.len();
        for (t, f) in new {
            // RFC 5227 announcement: ARP request, sender address = target address.
            if f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 1] && f[28..32] == f[38..42]
            {
                let ip = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
                let mac: [u8; 6] = f[22..28].try_into().unwrap_or_default();
                self.first.entry((ip, mac)).or_insert(t);
            }
        }
    }

    /// VIPs of the pool announced by `mac`, and when the last of them was first announced.
    pub(super) fn announced_by(&self, mac: [u8; 6], since: Instant) -> (usize, Option<Instant>) {
        let ts: Vec<Instant> = self
            .first
            .iter()
            .filter(|((ip, m), t)| *m == mac && ip.octets()[..2] == [10, 77] && **t >= since)
            .map(|(_, t)| *t)
            .collect();
        (ts.len(), ts.iter().max().copied())
    }

    pub(super) fn first_of(&self, ip: Ipv4Addr, mac: [u8; 6]) -> Option<Instant> {
        self.first.get(&(ip, mac)).copied()
    }
}

/// When each Service's status first carried an address (from the server's change feed).
pub(super) struct Statuses {
    pub(super) seen: Arc<Mutex<HashMap<String, (Instant, Ipv4Addr)>>>,
    /// The change feed dropped events (a burst beyond its 4,096): [`Statuses::rescan`] reads
    /// the store for what was missed.
    pub(super) lagged: Arc<AtomicBool>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl Statuses {
    pub(super) fn start(server: &FakeApiServer) -> Statuses {
        let mut rx = server.subscribe();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let lagged = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, lagged2) = (seen.clone(), stop.clone(), lagged.clone());
        let thread = std::thread::spawn(move || {
            use tokio::sync::broadcast::error::TryRecvError;
            while !stop2.load(Ordering::Relaxed) {
                match rx.try_recv() {
                    Ok(e) if e.res.ends_with("/services") => {
                        let ip = e.obj["status"]["loadBalancer"]["ingress"][0]["ip"]
                            .as_str()
                            .and_then(|s| s.parse::<Ipv4Addr>().ok());
                        let name = e.obj["metadata"]["name"].as_str().unwrap_or("");
                        if let (Some(ip), Ok(mut m)) = (ip, seen2.lock()) {
                            m.entry(name.to_string()).or_insert((Instant::now(), ip));
                        }
                    }
                    Ok(_) => {}
                    Err(TryRecvError::Lagged(_)) => lagged2.store(true, Ordering::Relaxed),
                    Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_micros(200)),
                    Err(TryRecvError::Closed) => return,
                }
            }
        });
        Statuses {
            seen,
            lagged,
            stop,
            thread: Some(thread),
        }
    }

    /// After the feed lagged: statuses in the store not seen yet are taken as written now (a
    /// bound from above on when they were).
    pub(super) fn rescan(&self, server: &FakeApiServer) {
        if !self.lagged.swap(false, Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let objs = server.objects("services");
        let Ok(mut m) = self.seen.lock() else { return };
        for o in objs {
            let ip = o["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok());
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            if let Some(ip) = ip {
                m.entry(name.to_string()).or_insert((now, ip));
            }
        }
    }

    pub(super) fn count(&self) -> usize {
        self.seen.lock().map_or(0, |m| m.len())
    }

    pub(super) fn get(&self, name: &str) -> Option<(Instant, Ipv4Addr)> {
        self.seen.lock().ok()?.get(name).copied()
    }
}

impl Drop for Statuses {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
