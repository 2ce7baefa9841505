//! IPv6 on a host: one Neighbor Solicitation with ndisc6 (the NDP twin of `arping`), one
//! `ping -6`, the host's neighbour entry for an address (read, set, flush, forced stale), an
//! address's flags (`tentative`, `nodad`), and the Neighbor Advertisements in a capture.
//! Apart from `inspect` because NDP has more moving parts than ARP (states, flags, DAD) and
//! changes for its own reasons.
use std::{net::Ipv6Addr, time::Duration};

use crate::{bed::Host, capture::Frame, netns::Netns};

/// One Neighbor Solicitation from `host` for `addr` (`ndisc6 -1 -r 1 -w <ms>`), waiting up
/// to `wait`: the MAC of the Target Link-Layer Address option of the first answer.
///
/// ndisc6 sends from the uplink's link-local address and keeps only an answer whose IPv6
/// source has the target's scope: an NA from a link-local source for a global target (what
/// the kernel's proxy NDP may send) is ignored and this returns None. The kernel answering for
/// its own address, and vip's XDP, send from the target itself, which ndisc6 sees. To see
/// every answer, capture ethertype 0x86dd and read it with [`neighbor_adverts`].
pub fn ndisc6(host: &Host, addr: &str, wait: Duration) -> Option<[u8; 6]> {
    let out = host
        .ns
        .command("ndisc6")
        .args(["-1", "-r", "1", "-w", &wait.as_millis().to_string(), addr])
        .arg(&host.iface)
        .output()
        .unwrap_or_else(|e| panic!("ndisc6: {e} (is the ndisc6 package installed?)"));
    let text = String::from_utf8_lossy(&out.stdout);
    // Exit 0: answered; 2: no answer; anything else is a failure to ask (bad address or
    // interface, no raw socket), which must not pass for silence.
    match out.status.code() {
        Some(0) => Some(
            parse_ndisc6(&text).unwrap_or_else(|| panic!("ndisc6 answered without a MAC: {text}")),
        ),
        Some(2) => None,
        _ => panic!(
            "ndisc6 {addr} on {} failed ({}): {text}{}",
            host.iface,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The MAC in ndisc6's "Target link-layer address: B6:31:CD:E5:80:6B" line.
fn parse_ndisc6(stdout: &str) -> Option<[u8; 6]> {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Target link-layer address:"))
        .and_then(|m| mac_bytes(m.trim()))
}

/// "aa:bb:cc:dd:ee:ff" (either case) as bytes; None unless exactly six hex pairs.
pub fn mac_bytes(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// One `ping -6` from `host` to `addr`, waiting up to `timeout` (whole milliseconds) for the
/// reply: whether it came.
pub fn ping6(host: &Host, addr: &str, timeout: Duration) -> bool {
    let secs = format!("{:.3}", timeout.as_secs_f64());
    let out = host
        .ns
        .command("ping")
        .args(["-6", "-n", "-c", "1", "-W", &secs, "-I", &host.iface, addr])
        .output()
        .unwrap_or_else(|e| panic!("ping: {e} (is the iputils-ping package installed?)"));
    // Exit 0: a reply; 1: none; 2: an error (bad address, no route), not an answer.
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "ping -6 {addr} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A host's neighbour entry for one IPv6 address, as `ip -6 neigh show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neigh6 {
    /// None while unresolved (INCOMPLETE, FAILED).
    pub lladdr: Option<[u8; 6]>,
    /// The NUD state in capitals: REACHABLE, STALE, DELAY, PROBE, INCOMPLETE, FAILED,
    /// PERMANENT, NOARP.
    pub state: String,
    /// The neighbour said it is a router (the R flag of its NA).
    pub router: bool,
}

/// `host`'s neighbour entry for `addr` on its uplink, if it has one.
pub fn neighbour6(host: &Host, addr: &str) -> Option<Neigh6> {
    let out = host
        .ns
        .ip(&["-6", "neigh", "show", addr, "dev", &host.iface]);
    parse_neigh6(&String::from_utf8_lossy(&out.stdout))
}

/// "2001:db8:1::11 lladdr b6:31:cd:e5:80:6b router STALE" (the address and `dev` are left
/// out when asked for one address on one device, but tolerated).
fn parse_neigh6(text: &str) -> Option<Neigh6> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let lladdr = w
        .iter()
        .position(|x| *x == "lladdr")
        .and_then(|i| w.get(i + 1))
        .and_then(|m| mac_bytes(m));
    let state = w
        .iter()
        .rev()
        .find(|x| x.chars().all(|c| c.is_ascii_uppercase()))?
        .to_string();
    Some(Neigh6 {
        lladdr,
        state,
        router: w.contains(&"router"),
    })
}

/// Pin `host`'s neighbour entry for `addr` to `mac` (PERMANENT): traffic to `addr` goes to
/// that MAC without any Neighbor Solicitation.
pub fn set_neighbour6(host: &Host, addr: &str, mac: &str) {
    host.ns.ip(&[
        "-6",
        "neigh",
        "replace",
        addr,
        "lladdr",
        mac,
        "dev",
        &host.iface,
        "nud",
        "permanent",
    ]);
}

/// Remove `host`'s neighbour entry for `addr`, whatever its state (PERMANENT included);
/// nothing to do if it has none.
pub fn flush_neighbour6(host: &Host, addr: &str) {
    host.ns.ip(&[
        "-6",
        "neigh",
        "flush",
        "to",
        addr,
        "dev",
        &host.iface,
        "nud",
        "all",
    ]);
}

/// Make `host`'s resolved entry for `addr` STALE, keeping its MAC: the next packet to
/// `addr` goes to that MAC and starts neighbour unreachability detection (DELAY, then a
/// unicast NS to that MAC), as when an entry ages. Panics if there is no resolved entry.
pub fn stale_neighbour6(host: &Host, addr: &str) {
    let mac = neighbour6(host, addr)
        .and_then(|n| n.lladdr)
        .unwrap_or_else(|| panic!("{}: no resolved neighbour entry for {addr}", host.ns.name));
    let mac = format_mac(&mac);
    host.ns.ip(&[
        "-6",
        "neigh",
        "replace",
        addr,
        "lladdr",
        &mac,
        "dev",
        &host.iface,
        "nud",
        "stale",
    ]);
}

/// Lower case "aa:bb:cc:dd:ee:ff", as `Host::mac` and `ip` write it.
pub fn format_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The flags `ip -6 addr` shows for `addr` on `dev` in `ns` (`tentative`, `nodad`,
/// `dadfailed`, `deprecated`, ...), or None if `dev` does not hold it.
pub fn addr6_flags(ns: &Netns, dev: &str, addr: &str) -> Option<Vec<String>> {
    let out = ns.ip(&["-o", "-6", "addr", "show", "dev", dev]);
    let want: Ipv6Addr = addr
        .parse()
        .unwrap_or_else(|e| panic!("not an IPv6 address {addr}: {e}"));
    parse_addr6_flags(&String::from_utf8_lossy(&out.stdout), want)
}

/// From `ip -o -6 addr` lines ("2: eth0    inet6 2001:db8:1::11/64 scope global tentative
/// \       valid_lft forever ..."): the words between the scope and the lifetimes.
fn parse_addr6_flags(text: &str, want: Ipv6Addr) -> Option<Vec<String>> {
    text.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let at = w.iter().position(|x| *x == "inet6")?;
        let ip: Ipv6Addr = w.get(at + 1)?.split('/').next()?.parse().ok()?;
        if ip != want {
            return None;
        }
        let scope = w.iter().position(|x| *x == "scope")?;
        Some(
            w.iter()
                .skip(scope + 2)
                .take_while(|x| **x != "\\" && !x.ends_with("_lft"))
                .map(|x| x.to_string())
                .collect(),
        )
    })
}

/// IPv6 addresses (with prefix) on `dev` in `ns`, link-local ones included.
pub fn addrs6(ns: &Netns, dev: &str) -> Vec<String> {
    let out = ns.ip(&["-o", "-6", "addr", "show", "dev", dev]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)
                .map(str::to_string)
        })
        .collect()
}

/// A Neighbor Advertisement seen in a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub eth_src: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    /// Router, Solicited, Override: the top three bits of the flags byte.
    pub router: bool,
    pub solicited: bool,
    pub overrides: bool,
    /// The Target Link-Layer Address option, if present.
    pub tlla: Option<[u8; 6]>,
}

/// The Neighbor Advertisements among captured frames (ethertype 0x86dd, no VLAN tag, ICMPv6
/// directly after the IPv6 header), with their arrival times.
pub fn neighbor_adverts(frames: &[Frame]) -> Vec<(std::time::Instant, Advert)> {
    frames
        .iter()
        .filter_map(|(t, f)| parse_advert(f).map(|a| (*t, a)))
        .collect()
}

fn parse_advert(f: &[u8]) -> Option<Advert> {
    const ETH: usize = 14;
    const IP6: usize = 40;
    let addr = |at: usize| -> Option<Ipv6Addr> {
        let b: [u8; 16] = f.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    };
    if f.get(12..14)? != [0x86, 0xdd] || f.get(ETH + 6)? != &58 || f.get(ETH + IP6)? != &136 {
        return None;
    }
    let icmp = ETH + IP6;
    let flags = *f.get(icmp + 4)?;
    // Options after the 24-byte NA, in units of 8 bytes; type 2 is the target's MAC.
    let mut at = icmp + 24;
    let mut tlla = None;
    while let (Some(&kind), Some(&units)) = (f.get(at), f.get(at + 1)) {
        if units == 0 {
            break;
        }
        if kind == 2 {
            tlla = f.get(at + 2..at + 8).and_then(|m| m.try_into().ok());
        }
        at += usize::from(units) * 8;
    }
    Some(Advert {
        eth_src: f.get(6..12)?.try_into().ok()?,
        src: addr(ETH + 8)?,
        dst: addr(ETH + 24)?,
        target: addr(icmp + 8)?,
        router: flags & 0x80 != 0,
        solicited: flags & 0x40 != 0,
        overrides: flags & 0x20 != 0,
        tlla,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndisc6_answer_and_silence() {
        let answered = "Soliciting 2001:db8:1::11 (2001:db8:1::11) on eth0...\n\
                        Target link-layer address: B6:31:CD:E5:80:6B\n from 2001:db8:1::11\n";
        assert_eq!(
            parse_ndisc6(answered),
            Some([0xb6, 0x31, 0xcd, 0xe5, 0x80, 0x6b])
        );
        let silent = "Soliciting 2001:db8:1::100 (2001:db8:1::100) on eth0...\n\
                      Timed out.\nNo response.\n";
        assert_eq!(parse_ndisc6(silent), None);
    }

    #[test]
    fn macs_need_six_hex_pairs() {
        assert_eq!(mac_bytes("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(mac_bytes("02:00:00:00:00"), None);
        assert_eq!(mac_bytes("02:00:00:00:00:0a:0b"), None);
        assert_eq!(mac_bytes("02:00:00:00:00:zz"), None);
        assert_eq!(
            format_mac(&[0xb6, 0x31, 0xcd, 0xe5, 0x80, 0x6b]),
            "b6:31:cd:e5:80:6b"
        );
    }

    #[test]
    fn neighbour_lines() {
        let n = parse_neigh6("2001:db8:1::11 dev eth0 lladdr b6:31:cd:e5:80:6b router STALE \n")
            .unwrap();
        assert_eq!(n.lladdr, Some([0xb6, 0x31, 0xcd, 0xe5, 0x80, 0x6b]));
        assert_eq!(n.state, "STALE");
        assert!(n.router);
        let n = parse_neigh6("lladdr b6:31:cd:e5:80:6b PERMANENT\n").unwrap();
        assert_eq!((n.state.as_str(), n.router), ("PERMANENT", false));
        let n = parse_neigh6("2001:db8:1::100 INCOMPLETE\n").unwrap();
        assert_eq!((n.lladdr, n.state.as_str()), (None, "INCOMPLETE"));
        assert_eq!(parse_neigh6(""), None);
    }

    #[test]
    fn address_flags() {
        let text = "2: eth0    inet6 2001:db8:1::102/128 scope global tentative \\       \
                    valid_lft forever preferred_lft forever\n\
                    2: eth0    inet6 2001:db8:1::11/64 scope global nodad \\       \
                    valid_lft forever preferred_lft forever\n\
                    2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever\n";
        let f = |a: &str| parse_addr6_flags(text, a.parse().unwrap());
        assert_eq!(f("2001:db8:1::102"), Some(vec!["tentative".to_string()]));
        assert_eq!(f("2001:db8:1::11"), Some(vec!["nodad".to_string()]));
        assert_eq!(f("fe80::1"), Some(vec![]));
        assert_eq!(f("2001:db8:1::99"), None);
    }

    #[test]
    fn advert_from_a_frame() {
        // The kernel's proxied NA seen in ipv6_kernel_facts: Solicited, not Override.
        let mut f = vec![0u8; 14 + 40 + 32];
        f[0..6].copy_from_slice(&[0xf6, 0xe4, 0xee, 0xee, 0xdf, 0x9c]);
        f[6..12].copy_from_slice(&[0xb6, 0x31, 0xcd, 0xe5, 0x80, 0x6b]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[14 + 6] = 58;
        f[14 + 7] = 255;
        let src: Ipv6Addr = "fe80::b431:cdff:fee5:806b".parse().unwrap();
        let dst: Ipv6Addr = "fe80::f4e4:eeff:feee:df9c".parse().unwrap();
        let target: Ipv6Addr = "2001:db8:1::103".parse().unwrap();
        f[22..38].copy_from_slice(&src.octets());
        f[38..54].copy_from_slice(&dst.octets());
        f[54] = 136;
        f[58] = 0x40;
        f[62..78].copy_from_slice(&target.octets());
        f[78] = 2;
        f[79] = 1;
        f[80..86].copy_from_slice(&[0xb6, 0x31, 0xcd, 0xe5, 0x80, 0x6b]);
        let a = parse_advert(&f).unwrap();
        assert_eq!((a.src, a.dst, a.target), (src, dst, target));
        assert_eq!((a.router, a.solicited, a.overrides), (false, true, false));
        assert_eq!(a.tlla, Some([0xb6, 0x31, 0xcd, 0xe5, 0x80, 0x6b]));
        f[54] = 135;
        assert_eq!(parse_advert(&f), None, "an NS is not an NA");
    }
}
