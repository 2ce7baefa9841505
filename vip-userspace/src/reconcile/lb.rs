//! Everything a service needs around the maps: backends' neighbour entries (so XDP's FIB
//! lookup finds their MACs) and the sysctls forwarding depends on.
use std::{collections::BTreeSet, net::Ipv4Addr};

use rtnetlink::Handle;

use super::services::{Changes, ServiceError, ServiceSync};
use crate::{
    config::{LbMode, Service},
    net::{addr, neigh, sysctl},
};

pub struct LbSide {
    pub sync: ServiceSync,
    uplink: String,
    uplink_index: u32,
    neighbours: BTreeSet<Ipv4Addr>,
    /// (device, key, value before we changed it), restored on release.
    restore: Vec<(String, &'static str, String)>,
}

fn in_prefix(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

impl LbSide {
    pub fn new(sync: ServiceSync, uplink: &str, uplink_index: u32) -> Self {
        Self {
            sync,
            uplink: uplink.to_string(),
            uplink_index,
            neighbours: BTreeSet::new(),
            restore: Vec::new(),
        }
    }

    fn set_sysctl(&mut self, dev: &str, key: &'static str, value: &str) {
        match sysctl::set(dev, key, value) {
            Ok(Some(old)) => {
                if !self.restore.iter().any(|(d, k, _)| d == dev && *k == key) {
                    self.restore.push((dev.to_string(), key, old));
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(dev, key, error = %e, "cannot set sysctl"),
        }
    }

    pub async fn apply(
        &mut self,
        handle: &Handle,
        services: &[Service],
    ) -> Result<Changes, ServiceError> {
        let forwarding = services.iter().any(|s| s.mode != LbMode::Local);
        let nat = services.iter().any(|s| s.mode == LbMode::Nat);
        let uplink = self.uplink.clone();
        if forwarding {
            // bpf_fib_lookup refuses to route for a device without IPv4 forwarding.
            self.set_sysctl(&uplink, "forwarding", "1");
        }
        if nat {
            // nat replies are forwarded out of the interface they came in on; redirects
            // would tell backends to bypass us, and the reverse NAT with it.
            self.set_sysctl(&uplink, "send_redirects", "0");
            self.set_sysctl("all", "send_redirects", "0");
        }
        let changes = self.sync.apply(services)?;

        // Managed neighbour entries for on-link backends, so the first packet finds a MAC.
        let prefixes: Vec<(Ipv4Addr, u8)> = match addr::list_v4(handle).await {
            Ok(a) => a
                .into_iter()
                .filter(|(_, _, dev)| *dev == uplink)
                .map(|(ip, len, _)| (ip, len))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list uplink addresses; backend neighbours not managed");
                Vec::new()
            }
        };
        let want: BTreeSet<Ipv4Addr> = services
            .iter()
            .filter(|s| s.mode != LbMode::Local)
            .flat_map(|s| s.backends.iter().map(|b| b.addr))
            .filter(|ip| {
                prefixes
                    .iter()
                    .any(|(n, l)| *l < 32 && in_prefix(*ip, *n, *l))
            })
            .collect();
        // The kernel drops even managed entries when the uplink loses carrier (a cut cable):
        // re-create any that went missing, or a dsr flow would find no MAC after the link
        // came back (checked on every apply, so at least on every ownership change).
        if let Ok(present) = neigh::present(handle, self.uplink_index).await {
            self.neighbours.retain(|ip| present.contains(ip));
        }
        for ip in want.difference(&self.neighbours.clone()) {
            match neigh::ensure_managed(handle, self.uplink_index, *ip).await {
                Ok(()) => {
                    self.neighbours.insert(*ip);
                }
                Err(e) => {
                    tracing::warn!(backend = %ip, error = %e, "managed neighbour entry failed; first packets may be dropped until the kernel resolves it")
                }
            }
        }
        for ip in self.neighbours.clone().difference(&want) {
            let _ = neigh::remove_managed(handle, self.uplink_index, *ip).await;
            self.neighbours.remove(ip);
        }
        Ok(changes)
    }

    /// Remove what we added to the node (neighbour entries, sysctls).
    pub async fn release(&mut self, handle: &Handle) {
        for ip in std::mem::take(&mut self.neighbours) {
            let _ = neigh::remove_managed(handle, self.uplink_index, ip).await;
        }
        for (dev, key, old) in std::mem::take(&mut self.restore) {
            if let Err(e) = sysctl::set(&dev, key, &old) {
                tracing::warn!(dev, key, error = %e, "cannot restore sysctl");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::in_prefix;
    use std::net::Ipv4Addr;

    #[test]
    fn prefix_match() {
        let n = Ipv4Addr::new(198, 51, 100, 1);
        assert!(in_prefix(Ipv4Addr::new(198, 51, 100, 21), n, 24));
        assert!(!in_prefix(Ipv4Addr::new(198, 51, 101, 21), n, 24));
        assert!(in_prefix(Ipv4Addr::new(8, 8, 8, 8), n, 0));
    }
}
