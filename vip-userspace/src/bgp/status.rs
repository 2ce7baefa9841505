//! The speaker's status as the daemon serves it (`GET /bgp` on the metrics address, JSON)
//! and as `vip status` prints it.
use serde_json::{json, Value};

use super::{BfdState, PeerStatus};

fn bfd_name(b: BfdState) -> &'static str {
    match b {
        BfdState::AdminDown => "admindown",
        BfdState::Down => "down",
        BfdState::Init => "init",
        BfdState::Up => "up",
    }
}

pub fn to_json(peers: &[PeerStatus]) -> Value {
    let peers: Vec<Value> = peers
        .iter()
        .map(|p| {
            json!({
                "address": p.address.to_string(),
                "remote_as": p.remote_as,
                "state": p.state.as_str(),
                "uptime_s": p.uptime.map(|u| u.as_secs()),
                "flaps": p.flaps,
                "prefixes_announced": p.prefixes_announced,
                "prefixes": p.prefixes.iter().map(|a| {
                    format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 })
                }).collect::<Vec<_>>(),
                "last_error": p.last_error,
                "bfd": p.bfd.map(bfd_name),
            })
        })
        .collect();
    json!({ "peers": peers })
}

fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Human-readable form of [`to_json`]'s output; fields it does not know are skipped.
pub fn render(v: &Value) -> String {
    let Some(peers) = v.get("peers").and_then(Value::as_array) else {
        return "BGP: no status\n".into();
    };
    if peers.is_empty() {
        return "BGP: no peers configured\n".into();
    }
    let mut out = String::from("BGP peers:\n");
    for p in peers {
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let n = |k: &str| p.get(k).and_then(Value::as_u64);
        let mut line = format!(
            "  {:<39} AS {:<10} {:<12}",
            s("address"),
            n("remote_as").unwrap_or(0),
            s("state")
        );
        if let Some(u) = n("uptime_s") {
            line += &format!(" up {}", duration(u));
        }
        line += &format!(
            "  flaps {}  prefixes {}",
            n("flaps").unwrap_or(0),
            n("prefixes_announced").unwrap_or(0)
        );
        if let Some(b) = p.get("bfd").and_then(Value::as_str) {
            line += &format!("  bfd {b}");
        }
        out += line.trim_end();
        out.push('\n');
        if let Some(e) = p.get("last_error").and_then(Value::as_str) {
            out += &format!("    last error: {e}\n");
        }
        for pf in p
            .get("prefixes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            out += &format!("    {pf}\n");
        }
    }
    out
}

/// `GET /bgp` from the daemon at `addr` (plain HTTP/1.1, one-second timeouts).
pub fn fetch(addr: std::net::SocketAddr) -> std::io::Result<Value> {
    use std::io::{Read, Write};
    let t = std::time::Duration::from_secs(1);
    let mut s = std::net::TcpStream::connect_timeout(&addr, t)?;
    s.set_read_timeout(Some(t))?;
    s.set_write_timeout(Some(t))?;
    s.write_all(
        format!("GET /bgp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| std::io::Error::other("no HTTP body"))?;
    serde_json::from_str(body).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::SessionState;
    use std::time::Duration;

    #[test]
    fn json_and_text() {
        let peers = vec![
            PeerStatus {
                address: "10.0.0.1".parse().unwrap(),
                remote_as: 65000,
                state: SessionState::Established,
                uptime: Some(Duration::from_secs(125)),
                flaps: 1,
                prefixes_announced: 2,
                prefixes: vec!["192.0.2.10".parse().unwrap(), "fd00::10".parse().unwrap()],
                last_error: None,
                bfd: Some(BfdState::Up),
            },
            PeerStatus {
                address: "10.0.0.3".parse().unwrap(),
                remote_as: 65000,
                state: SessionState::Active,
                uptime: None,
                flaps: 0,
                prefixes_announced: 0,
                prefixes: vec![],
                last_error: Some("connect: refused".into()),
                bfd: None,
            },
        ];
        let text = render(&to_json(&peers));
        assert!(text.contains("10.0.0.1"), "{text}");
        assert!(
            text.contains("established  up 2m05s  flaps 1  prefixes 2  bfd up"),
            "{text}"
        );
        assert!(
            text.contains("    192.0.2.10/32\n    fd00::10/128\n"),
            "{text}"
        );
        assert!(text.contains("active"), "{text}");
        assert!(text.contains("last error: connect: refused"), "{text}");
        assert_eq!(render(&json!({"peers": []})), "BGP: no peers configured\n");
    }
}
