//! The HTTP server: which requests get an answer, what each endpoint returns, and what a
//! client may cost it.
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{atomic::Ordering, Arc},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::{http::*, registry, State};

#[test]
fn routes_and_metrics_without_dataplane() {
    let st = Arc::new(State::default());
    *st.mode.write().unwrap() = "kernel".into();
    st.bus
        .owned
        .send_replace(vec![Ipv4Addr::new(192, 0, 2, 100).into()]);
    st.garp_sent.inc_by(3);
    let reg = registry(st.clone());
    let (s, _, body) = route("/metrics", &reg, &st);
    assert_eq!(s, "200 OK");
    assert!(body.contains("vip_vips_owned 1"), "{body}");
    assert!(body.contains("vip_garp_sent_total 3"), "{body}");
    assert!(body.contains("mode=\"kernel\""), "{body}");
    assert_eq!(route("/readyz", &reg, &st).0, "503 Service Unavailable");
    st.ready.store(true, Ordering::Relaxed);
    assert_eq!(route("/readyz", &reg, &st).0, "200 OK");
    assert_eq!(route("/healthz", &reg, &st).0, "200 OK");
    assert_eq!(route("/nope", &reg, &st).0, "404 Not Found");
}

/// A server on 127.0.0.1 with short timeouts; the address to connect to.
async fn server(timeout_ms: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        timeout: std::time::Duration::from_millis(timeout_ms),
        ..Limits::default()
    };
    tokio::spawn(serve_with(listener, Arc::new(State::default()), limits));
    addr
}

/// Send `parts` (a pause between them), then read the answer to the end.
async fn ask(addr: SocketAddr, parts: &[&[u8]], pause_ms: u64) -> String {
    let c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    // Written while the answer is read: the server may answer (408, 431) and close
    // before everything is sent.
    let writer = tokio::spawn(async move {
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            }
            if wr.write_all(p).await.is_err() {
                return;
            }
        }
        // Kept open (not shut down): the server must end the exchange by itself.
        std::future::pending::<()>().await;
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = rd.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

#[tokio::test]
async fn http_answers_get_on_known_paths_only() {
    let addr = server(2000).await;
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n");
    for (req, want) in [
        (get("/healthz"), "HTTP/1.1 200 OK"),
        (get("/metrics"), "HTTP/1.1 200 OK"),
        (get("/bgp"), "HTTP/1.1 200 OK"),
        (get("/readyz"), "HTTP/1.1 503 Service Unavailable"),
        (get("/healthz?x=1"), "HTTP/1.1 200 OK"),
        (get("/"), "HTTP/1.1 404 Not Found"),
        (get("/metrics/../etc"), "HTTP/1.1 404 Not Found"),
        (
            "POST /metrics HTTP/1.1\r\n\r\n".into(),
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (
            "DELETE /healthz HTTP/1.1\r\n\r\n".into(),
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (
            "POST /nope HTTP/1.1\r\n\r\n".into(),
            "HTTP/1.1 404 Not Found",
        ),
        ("GET /healthz\r\n\r\n".into(), "HTTP/1.1 400 Bad Request"),
        (
            "\x16\x03\x01garbage\r\n\r\n".into(),
            "HTTP/1.1 400 Bad Request",
        ),
    ] {
        let resp = ask(addr, &[req.as_bytes()], 0).await;
        assert_eq!(status(&resp), want, "{req:?} -> {resp}");
    }
    let resp = ask(addr, &[b"PUT /metrics HTTP/1.1\r\n\r\n"], 0).await;
    assert!(resp.contains("\r\nAllow: GET\r\n"), "{resp}");
    // A head in several segments is put together.
    let resp = ask(addr, &[b"GET /hea", b"lthz HTTP/1.1\r\n", b"\r\n"], 20).await;
    assert_eq!(status(&resp), "HTTP/1.1 200 OK", "{resp}");
}

#[tokio::test]
async fn http_head_is_bounded() {
    let addr = server(2000).await;
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let resp = ask(addr, &[big.as_bytes()], 0).await;
    assert_eq!(
        status(&resp),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Without the blank line it is refused as soon as it passes the limit, not read on.
    let endless = "a".repeat(Limits::default().max_head + 1);
    let resp = ask(addr, &[endless.as_bytes()], 0).await;
    assert_eq!(
        status(&resp),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let fits = format!(
        "GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(8000)
    );
    let resp = ask(addr, &[fits.as_bytes()], 0).await;
    assert_eq!(status(&resp), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let addr = server(300).await;
    // Slowloris: a byte every 50 ms would keep a per-read timeout happy forever; the
    // deadline is for the whole head.
    let t = std::time::Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let parts: Vec<&[u8]> = head.chunks(1).collect();
    let resp = ask(addr, &parts, 50).await;
    assert_eq!(status(&resp), "HTTP/1.1 408 Request Timeout", "{resp}");
    // ask returns once the server closed: it stopped listening within its deadline
    // plus one pause, not after the ~3 s the whole trickle would take.
    assert!(
        t.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // Connected and silent: closed too.
    let t = std::time::Instant::now();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out).await;
    assert!(
        t.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // And the server still answers others.
    let resp = ask(addr, &[b"GET /healthz HTTP/1.1\r\n\r\n"], 0).await;
    assert_eq!(status(&resp), "HTTP/1.1 200 OK");
}
