//! Traffic from inside namespaces: TCP and UDP servers on backends, and the client side
//! (one request, many, a long-lived connection, an HTTP GET of a metrics endpoint). Every
//! socket is opened on a thread that entered the namespace, so it lives there.
//!
//! Every helper takes a `SocketAddr` of either family. The IPv6 twins are the same calls
//! with a v6 address: a server on `[::]:port` (dual-stack, as Linux binds `[::]` by default:
//! it also takes IPv4, so it cannot share its port with a `0.0.0.0` server in the same
//! namespace), a client to `[2001:db8:1::100]:port`. [`any6`] and [`sock6`] spell them.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Netns;

/// `[::]:port`: a server's address for the IPv6 twins (IPv4 too, see the module comment).
pub fn any6(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
}

/// `[addr]:port` for a client of the IPv6 twins; panics unless `addr` is IPv6.
pub fn sock6(addr: &str, port: u16) -> SocketAddr {
    let ip: std::net::Ipv6Addr = addr
        .parse()
        .unwrap_or_else(|e| panic!("not an IPv6 address {addr}: {e}"));
    SocketAddr::from((ip, port))
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

/// One UDP request from `ns` to `addr` (either family; the client socket is of the same
/// family): the reply and who it came from.
pub fn udp_request(ns: &Netns, addr: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => any6(0),
    };
    ns.run(move || {
        let s = std::net::UdpSocket::bind(local)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(b"ping", addr)?;
        let mut buf = [0u8; 1500];
        let (n, from) = s.recv_from(&mut buf)?;
        Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    })
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
