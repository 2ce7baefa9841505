//! Who owns which VIP. `single`: one node, always the owner (standalone); `lease`: the
//! holder of a Kubernetes Lease (fenced); `per_vip`: one Lease per service VIP;
//! `rendezvous`: one Lease per node, service VIPs placed by rendezvous hashing.
pub mod lease;
pub mod per_vip;
pub mod raft;
pub mod rendezvous;
pub mod single;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A VIP as part of a Kubernetes object name (DNS-1123: lowercase letters, digits, `-`):
/// `192-0-2-10`, and for IPv6 the eight groups written out in full,
/// `2001-0db8-0000-0000-0000-0000-0000-0100` (the compressed form could end in `-`, which a
/// name may not, and would not parse back unambiguously).
pub fn name_part(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.segments().map(|g| format!("{g:04x}")).join("-"),
    }
}

/// The VIP in a name written by [`name_part`]; None for anything else.
pub fn parse_name_part(s: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = s.split('-').collect();
    match parts.len() {
        4 => parts
            .join(".")
            .parse::<Ipv4Addr>()
            .ok()
            .filter(|v4| name_part(IpAddr::V4(*v4)) == s)
            .map(IpAddr::V4),
        8 => {
            let mut g = [0u16; 8];
            for (i, p) in parts.iter().enumerate() {
                if p.len() != 4 {
                    return None;
                }
                g[i] = u16::from_str_radix(p, 16).ok()?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(g)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_names_are_valid_object_names_and_parse_back() {
        for (ip, name) in [
            ("192.0.2.10", "192-0-2-10"),
            ("2001:db8::100", "2001-0db8-0000-0000-0000-0000-0000-0100"),
            ("2001:db8::", "2001-0db8-0000-0000-0000-0000-0000-0000"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(name_part(ip), name);
            assert_eq!(parse_name_part(name), Some(ip));
            assert!(name
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '-'));
        }
        for bad in [
            "",
            "192-0-2",
            "192-0-2-010",
            "2001-db8-0-0-0-0-0-100",
            "x-y-z-w",
        ] {
            assert_eq!(parse_name_part(bad), None, "{bad}");
        }
    }
}
