//! Reading what a host's network looks like (its MAC, whether XDP is attached, its
//! addresses, who answers ARP, its neighbour entries): the assertions tests make, apart from
//! the code that builds the bed.
use crate::{bed::Host, netns::Netns};

/// MAC address of `dev` in `ns`, lower case.
pub fn link_mac(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {text}"))
        .to_lowercase()
}

/// Whether an XDP program is attached to `dev` in `ns`.
pub fn has_xdp(ns: &Netns, dev: &str) -> bool {
    let out = ns.ip(&["-d", "link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("prog/xdp")
}

/// Addresses (with prefix) on `dev` in `ns`.
pub fn addrs(ns: &Netns, dev: &str) -> Vec<String> {
    let out = ns.ip(&["-o", "-4", "addr", "show", "dev", dev]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .map(str::to_string)
        })
        .collect()
}

/// One ARP request from `host` for `ip` with arping; the MAC that answered, if any.
pub fn arping(host: &Host, ip: &str) -> Option<String> {
    let out = host
        .ns
        .command("arping")
        .args(["-c", "1", "-w", "1", "-i", &host.iface, ip])
        .output()
        .unwrap_or_else(|e| panic!("arping: {e} (is the arping package installed?)"));
    let text = String::from_utf8_lossy(&out.stdout);
    // "60 bytes from 66:30:55:29:ed:25 (192.0.2.100): index=0 ..."
    text.lines()
        .find(|l| l.contains("bytes from"))
        .and_then(|l| l.split_whitespace().nth(3))
        .map(str::to_lowercase)
}

/// The neighbour entry (MAC) `host` has for `ip`.
pub fn neighbour(host: &Host, ip: &str) -> Option<String> {
    let out = host.ns.ip(&["neigh", "show", ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_lowercase)
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).unwrap_or_else(|e| panic!("bad MAC {s}: {e}"));
    }
    m
}
