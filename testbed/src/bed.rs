//! The L2 segment itself: a bridge namespace as the switch, hosts on veths hanging off it,
//! and the faults a test plays on a host's cable (unplug, cut, heal, replug). Each switch
//! port carries the `xdp-pass` program, which is why the bed needs the eBPF objects.
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
        for (role, addr) in hosts {
            bed.add_host(role, addr);
        }
        bed
    }

    fn add_host(&mut self, role: &str, addr: &str) {
        let ns = Netns::new(&format!("{}-{role}", self.prefix));
        let mac = self.plug(&ns, role, addr);
        self.hosts.push(Host {
            ns,
            iface: "eth0".into(),
            addr: addr.split('/').next().unwrap_or_default().to_string(),
            cidr: addr.to_string(),
            mac,
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

    /// Give a host a new uplink `eth0` with the same address (new ifindex and MAC); the
    /// host's recorded MAC is returned, not updated.
    pub fn replug(&self, role: &str) -> String {
        let h = self.host(role);
        self.plug(&h.ns, role, &h.cidr)
    }

    fn plug(&self, ns: &Netns, role: &str, addr: &str) -> String {
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
