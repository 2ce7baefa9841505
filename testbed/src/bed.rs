//! The L2 segment itself: a bridge namespace as the switch, hosts on veths hanging off it,
//! and the faults a test plays on a host's cable (unplug, cut, heal, replug). Each switch
//! port carries the `xdp-pass` program, which is why the bed needs the eBPF objects.
//!
//! Every host is dual-stack: beside its IPv4 address it gets an IPv6 twin on the same veth,
//! `2001:db8:<n>::<d>/64` for `a.b.c.d/len`, where `<n>` numbers the bed's IPv4 /24s in
//! the order they first appear (so 192.0.2.10 and 192.0.2.11 are `2001:db8:1::10` and
//! `::11`, and a second /24 such as the nat backends' 198.51.100.0/24 is `2001:db8:2::/64`:
//! separate on-link prefixes, as in IPv4). The digits of `d` are written as they are, so
//! the twin reads like the IPv4 address (`::10` is 0x10, not 10). Added with `nodad`: a
//! test never waits out duplicate address detection, and they send no DAD probes.
//! IPv6 traffic on the bed is only what the kernel already sent for the veths' link-local
//! addresses (MLD reports, router solicitations) plus MLD reports for the new groups;
//! every capture counts one ethertype (ARP or IPv4), so none of it shows there.
use std::process::Stdio;

use crate::{
    ebpf_dir,
    inspect::link_mac,
    netns::{cleanup_prefix, scoped, Netns},
    process::{ip, sh},
};

/// A host on the bed: its namespace, its uplink `eth0` and address.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub iface: String,
    pub addr: String,
    /// `addr/len` as configured.
    pub cidr: String,
    pub mac: String,
    /// The IPv6 twin of `addr` on the same uplink (see the module comment).
    pub addr6: String,
    /// `addr6/64`.
    pub cidr6: String,
}

/// A flat L2 segment: a bridge in its own namespace and hosts hanging off it.
#[derive(Debug)]
pub struct Bed {
    pub prefix: String,
    pub hosts: Vec<Host>,
    // Dropped last: hosts' veths die with their namespaces first.
    pub switch: Netns,
}

impl Bed {
    /// `hosts`: (role, "addr/len"). Namespaces are named `<prefix>-<role>`.
    pub fn new(prefix: &str, hosts: &[(&str, &str)]) -> Bed {
        let prefix = &scoped(prefix);
        cleanup_prefix(&format!("{prefix}-"));
        let switch = Netns::new(&format!("{prefix}-sw"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        // Forward at once: no STP listening delay.
        switch.ip(&["link", "set", "br0", "type", "bridge", "forward_delay", "0"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let mut bed = Bed {
            prefix: prefix.to_string(),
            hosts: Vec::new(),
            switch,
        };
        let twins = ipv6_twins(&hosts.iter().map(|(_, a)| *a).collect::<Vec<_>>());
        for ((role, addr), cidr6) in hosts.iter().zip(twins) {
            bed.add_host(role, addr, cidr6);
        }
        bed
    }

    fn add_host(&mut self, role: &str, addr: &str, cidr6: String) {
        let ns = Netns::new(&format!("{}-{role}", self.prefix));
        let mac = self.plug(&ns, role, addr, &cidr6);
        self.hosts.push(Host {
            ns,
            iface: "eth0".into(),
            addr: addr.split('/').next().unwrap_or_default().to_string(),
            cidr: addr.to_string(),
            mac,
            addr6: cidr6.split('/').next().unwrap_or_default().to_string(),
            cidr6,
        });
    }

    /// Remove a host's uplink (both ends of its veth), as when a NIC or driver goes away.
    pub fn unplug(&self, role: &str) {
        self.host(role).ns.ip(&["link", "del", "eth0"]);
    }

    /// Cut a host's cable at the switch: its own link, address and sockets stay, so only
    /// its peers (and timeouts) can notice, as when a node dies or is partitioned.
    pub fn cut(&self, role: &str) {
        self.switch
            .ip(&["link", "set", &format!("p-{role}"), "down"]);
    }

    /// Reconnect a host cut with [`Bed::cut`].
    pub fn heal(&self, role: &str) {
        self.switch.ip(&["link", "set", &format!("p-{role}"), "up"]);
    }

    /// Give a host a new uplink `eth0` with the same addresses (new ifindex and MAC); the
    /// host's recorded MAC is returned, not updated.
    pub fn replug(&self, role: &str) -> String {
        let h = self.host(role);
        self.plug(&h.ns, role, &h.cidr, &h.cidr6)
    }

    fn plug(&self, ns: &Netns, role: &str, addr: &str, addr6: &str) -> String {
        let port = format!("p-{role}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch.name,
        ]);
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"]);
        // A veth delivers XDP_TX frames only if its peer runs an XDP program.
        let pass = ebpf_dir().join("xdp-pass");
        assert!(
            pass.exists(),
            "{} missing: run `cargo xtask build-ebpf --release`",
            pass.display()
        );
        self.switch.ip(&[
            "link",
            "set",
            "dev",
            &port,
            "xdpdrv",
            "obj",
            pass.to_str().unwrap_or_default(),
            "sec",
            "xdp",
        ]);
        ns.ip(&["addr", "add", addr, "dev", "eth0"]);
        ns.ip(&["addr", "add", addr6, "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        // A veth hands its peer packets whose checksum is still to be filled in (offload);
        // a frame that XDP forwards loses that mark and would arrive with a bad checksum.
        // Real NICs finish the checksum on the wire, so the bed computes it in software.
        sh(ns
            .command("ethtool")
            .args(["-K", "eth0", "tx", "off"])
            .stdout(Stdio::null()));
        link_mac(ns, "eth0")
    }

    pub fn host(&self, role: &str) -> &Host {
        let name = scoped(&format!("{}-{role}", self.prefix));
        self.hosts
            .iter()
            .find(|h| h.ns.name == name)
            .unwrap_or_else(|| panic!("no host {role}"))
    }
}

/// The IPv6 twin (`2001:db8:<n>::<d>/64`) of each IPv4 `a.b.c.d/len` in `addrs`: `<n>`
/// numbers the distinct `a.b.c` in order of first appearance, from 1.
fn ipv6_twins(addrs: &[&str]) -> Vec<String> {
    let mut nets: Vec<&str> = Vec::new();
    addrs
        .iter()
        .map(|a| {
            let ip = a.split('/').next().unwrap_or_default();
            let (net, host) = ip
                .rsplit_once('.')
                .unwrap_or_else(|| panic!("bed host address {a} is not a.b.c.d/len"));
            let n = match nets.iter().position(|m| *m == net) {
                Some(i) => i + 1,
                None => {
                    nets.push(net);
                    nets.len()
                }
            };
            format!("2001:db8:{n}::{host}/64")
        })
        .collect()
}

/// Make `host` a direct-server-return backend for `vip`: the VIP on lo (so it accepts the
/// packets), and no ARP answers for it (only the VIP's owner may answer).
pub fn make_dsr_backend(host: &Host, vip: &str) {
    host.ns
        .ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    for dev in ["all", host.iface.as_str()] {
        host.ns
            .sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1");
        host.ns
            .sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2");
    }
}

/// The IPv6 twin of [`make_dsr_backend`]: `vip6` on lo. Nothing else is needed: the kernel
/// never answers a Neighbor Solicitation on the uplink for an address bound on lo, yet
/// delivers packets for it that arrive there (`ipv6_kernel_facts`, fact a).
pub fn make_dsr_backend6(host: &Host, vip6: &str) {
    host.ns
        .ip(&["addr", "add", &format!("{vip6}/128"), "dev", "lo"]);
}

#[cfg(test)]
mod tests {
    use super::ipv6_twins;

    #[test]
    fn twins_read_like_the_ipv4_address_and_keep_subnets_apart() {
        assert_eq!(
            ipv6_twins(&[
                "192.0.2.10/24",
                "192.0.2.11/24",
                "198.51.100.21/24",
                "192.0.2.21/24",
                "10.9.0.255/24",
            ]),
            [
                "2001:db8:1::10/64",
                "2001:db8:1::11/64",
                "2001:db8:2::21/64",
                "2001:db8:1::21/64",
                "2001:db8:3::255/64",
            ]
        );
        for t in ipv6_twins(&["10.0.0.0/8", "10.0.0.199/8"]) {
            let a = t.split('/').next().unwrap();
            assert!(a.parse::<std::net::Ipv6Addr>().is_ok(), "{t}");
        }
    }
}
