//! kube-vip's `bgp_peers` string form, read from a kube-vip environment when there is no
//! `bgp:` section; kept apart from the YAML shape because it is a different syntax with
//! its own error positions (`bgp_peers[1]`).
use std::net::IpAddr;

use super::{BgpConfigError, PeerConfig};

/// TTL for kube-vip's `multihop=true`: kube-vip leaves it to GoBGP's default for eBGP
/// multihop, which is "any number of hops"; 255 is the closest we can say.
pub const KUBE_VIP_MULTIHOP_TTL: u8 = 255;

/// kube-vip's `bgp_peers`: comma-separated `address:AS[:password[:multihop[:port]]]`, an
/// IPv6 address in brackets (`[fd00::1]:65000`). Errors name the entry (`bgp_peers[1]`).
pub fn parse_kube_vip_peers(s: &str) -> Result<Vec<PeerConfig>, BgpConfigError> {
    let mut out = Vec::new();
    for (i, entry) in s.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        out.push(parse_entry(i, entry)?);
    }
    if out.is_empty() {
        return Err(BgpConfigError::new("bgp_peers", "no peers given"));
    }
    Ok(out)
}

/// One `address:AS[:password[:multihop[:port]]]`, the `i`th of the list.
fn parse_entry(i: usize, entry: &str) -> Result<PeerConfig, BgpConfigError> {
    let field = |name: &str| format!("bgp_peers[{i}].{name}");
    let (address, rest) = split_address(entry, field("address"))?;
    let mut parts = rest.split(':');
    let as_str = parts.next().unwrap_or("");
    if as_str.is_empty() {
        return Err(BgpConfigError::new(
            field("remote_as"),
            format!("`{entry}`: expected `address:AS[:password[:multihop[:port]]]`"),
        ));
    }
    let remote_as: u32 = as_str.parse().map_err(|_| {
        BgpConfigError::new(
            field("remote_as"),
            format!("`{as_str}` is not an AS number"),
        )
    })?;
    let mut peer = PeerConfig::new(address, remote_as);
    if let Some(pw) = parts.next() {
        if !pw.is_empty() {
            peer.password = Some(pw.to_string());
        }
    }
    if let Some(mh) = parts.next() {
        match mh {
            "" | "false" => {}
            "true" => peer.multihop_ttl = Some(KUBE_VIP_MULTIHOP_TTL),
            other => {
                return Err(BgpConfigError::new(
                    field("multihop"),
                    format!("`{other}` is not true or false"),
                ))
            }
        }
    }
    if let Some(port) = parts.next() {
        if !port.is_empty() {
            peer.port = port.parse().map_err(|_| {
                BgpConfigError::new(field("port"), format!("`{port}` is not a TCP port"))
            })?;
        }
    }
    if let Some(extra) = parts.next() {
        return Err(BgpConfigError::new(
            field("address"),
            format!("`{entry}`: unexpected `{extra}` after the port"),
        ));
    }
    Ok(peer)
}

/// The entry's address (an IPv6 one in brackets) and what follows its `:`; errors are
/// reported against `field`.
fn split_address(entry: &str, field: String) -> Result<(IpAddr, &str), BgpConfigError> {
    let (addr_str, rest) = if let Some(after) = entry.strip_prefix('[') {
        let Some(end) = after.find(']') else {
            return Err(BgpConfigError::new(
                field,
                format!("`{entry}`: no `]` closing the IPv6 address"),
            ));
        };
        let rest = &after[end + 1..];
        (&after[..end], rest.strip_prefix(':').unwrap_or(rest))
    } else {
        entry.split_once(':').unwrap_or((entry, ""))
    };
    let address: IpAddr = addr_str.parse().map_err(|_| {
        BgpConfigError::new(
            field,
            format!("`{addr_str}` is not an IP address (IPv6 goes in brackets)"),
        )
    })?;
    Ok((address, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_vip_peers() {
        let p = parse_kube_vip_peers("192.168.0.2:65000::true,[fd00::1]:65001:secret:false:1179")
            .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].address, "192.168.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(p[0].remote_as, 65000);
        assert_eq!(p[0].password, None);
        assert_eq!(p[0].multihop_ttl, Some(KUBE_VIP_MULTIHOP_TTL));
        assert_eq!(p[1].address, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(p[1].password.as_deref(), Some("secret"));
        assert_eq!(p[1].multihop_ttl, None);
        assert_eq!(p[1].port, 1179);
        let p = parse_kube_vip_peers("10.0.0.1:64512").unwrap();
        assert_eq!((p[0].remote_as, p[0].port), (64512, 179));
    }

    #[test]
    fn kube_vip_peer_errors_name_the_entry() {
        let e = parse_kube_vip_peers("10.0.0.1:1,10.0.0.2:x").unwrap_err();
        assert_eq!(e.field, "bgp_peers[1].remote_as");
        let e = parse_kube_vip_peers("[fd00::1:65000").unwrap_err();
        assert_eq!(e.field, "bgp_peers[0].address");
        let e = parse_kube_vip_peers("10.0.0.1:1:pw:maybe").unwrap_err();
        assert_eq!(e.field, "bgp_peers[0].multihop");
        let e = parse_kube_vip_peers("10.0.0.1").unwrap_err();
        assert_eq!(e.field, "bgp_peers[0].remote_as");
        assert!(parse_kube_vip_peers("").is_err());
    }
}
