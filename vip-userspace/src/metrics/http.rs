//! The HTTP endpoints, `/metrics`, `/healthz`, `/readyz` and `/bgp`, served by a small
//! HTTP/1.1 responder: one GET per connection, answered and closed. It answers GET on those
//! paths only (404 elsewhere, 405 for other methods) and bounds what a client may cost it
//! ([`Limits`]).
//!
//! Why not hyper's server (hyper 1.x is in the tree through kube): for four read-only GETs
//! that close after answering it saves only the head parsing, and it would change what
//! clients see where this one is deliberate: hyper's header-read timeout closes the
//! connection without a 408, its automatic 400/431 answers have no body, and it drops a
//! refused head's unread rest with the socket, whose reset can discard the answer before the
//! client reads it (see [`handle`]). Keep-alive and pipelining, what hyper adds, buy nothing
//! for a scrape every few seconds.
use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
};

use prometheus_client::registry::Registry;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::{registry, State};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("binding metrics listener on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Bind now (so a bad address fails at startup), serve until the task is dropped.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// What the server accepts from a client. The endpoints are read by Prometheus, kubelet
/// probes and `vip status` on the node network, where anyone can connect: a client gets
/// `timeout` for its whole request head (not per read, so trickling bytes does not keep a
/// connection open, "slowloris") and as long again to take the answer, sends at most
/// `max_head` bytes of head, and at most `max_conns` connections are served at a time
/// (the next wait in the kernel's backlog).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub timeout: std::time::Duration,
    pub max_conns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            timeout: std::time::Duration::from_secs(5),
            max_conns: 64,
        }
    }
}

pub async fn serve(listener: TcpListener, state: Arc<State>) {
    serve_with(listener, state, Limits::default()).await
}

pub async fn serve_with(listener: TcpListener, state: Arc<State>, limits: Limits) {
    let registry = Arc::new(registry(state.clone()));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_conns));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %crate::Chain(&e), "metrics accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let state = state.clone();
        tokio::spawn(async move {
            handle(sock, &registry, &state, limits).await;
            drop(permit);
        });
    }
}

/// One request, one answer, then the connection is closed.
async fn handle(
    mut sock: tokio::net::TcpStream,
    registry: &Registry,
    state: &State,
    limits: Limits,
) {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let head = tokio::time::timeout_at(deadline, read_head(&mut sock, limits.max_head)).await;
    let (status, extra, ctype, body) = match head {
        // Too slow: nothing is owed to a client that never finished asking.
        Err(_) => (
            "408 Request Timeout",
            "",
            TEXT,
            "request timeout\n".to_string(),
        ),
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => (
            "431 Request Header Fields Too Large",
            "",
            TEXT,
            "request head too large\n".to_string(),
        ),
        Ok(Ok(head)) => match request_line(&head) {
            None => ("400 Bad Request", "", TEXT, "bad request\n".to_string()),
            Some((method, path)) => respond(method, path, registry, state),
        },
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    answer(sock, resp.as_bytes(), limits).await;
}

/// Write `resp`, then close the connection.
async fn answer(mut sock: tokio::net::TcpStream, resp: &[u8], limits: Limits) {
    // The answer gets its own deadline: a client that stops reading cannot hold the task.
    let _ = tokio::time::timeout(limits.timeout, async {
        sock.write_all(resp).await?;
        sock.shutdown().await?;
        // Read what the client still sends (a refused head's rest) until it closes: a
        // socket closed with unread bytes sends a reset, which can discard the answer
        // before the client has read it.
        let mut sink = [0u8; 1024];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match sock.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

enum HeadError {
    Closed,
    TooLarge,
}

/// Bytes up to and including the blank line that ends the request head.
async fn read_head(
    sock: &mut (impl tokio::io::AsyncRead + Unpin),
    max: usize,
) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(n) => n,
        };
        // Only the new bytes (and the three before them) can complete the terminator.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(from + end + 4);
            return if head.len() > max {
                Err(HeadError::TooLarge)
            } else {
                Ok(head)
            };
        }
        if head.len() > max {
            return Err(HeadError::TooLarge);
        }
    }
}

/// `METHOD /path HTTP/1.x` from the head's first line; the query, if any, is dropped.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

const TEXT: &str = "text/plain; charset=utf-8";

/// (status, extra header lines, content type, body). Only GET, and only on the known paths.
fn respond(
    method: &str,
    path: &str,
    registry: &Registry,
    state: &State,
) -> (&'static str, &'static str, &'static str, String) {
    if !PATHS.contains(&path) {
        return ("404 Not Found", "", TEXT, "not found\n".into());
    }
    if method != "GET" {
        return (
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            TEXT,
            "method not allowed\n".into(),
        );
    }
    let (status, ctype, body) = route(path, registry, state);
    (status, "", ctype, body)
}

/// Every path `route` answers.
const PATHS: [&str; 4] = ["/metrics", "/healthz", "/readyz", "/bgp"];

pub(super) fn route(
    path: &str,
    registry: &Registry,
    state: &State,
) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, registry) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Err(_) => (
                    "500 Internal Server Error",
                    TEXT,
                    "encoding failed\n".into(),
                ),
            }
        }
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        // BGP sessions and what each announces, for `vip status`.
        "/bgp" => {
            let peers = state.bgp.lock().map(|b| b.clone()).unwrap_or_default();
            (
                "200 OK",
                "application/json",
                crate::bgp::status::to_json(&peers).to_string(),
            )
        }
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
                ("200 OK", TEXT, "ready\n".into())
            } else {
                ("503 Service Unavailable", TEXT, "not ready\n".into())
            }
        }
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}
