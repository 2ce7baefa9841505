//! Everything a service needs around the maps: backends' neighbour entries (so XDP's FIB
//! lookup finds their MACs) and the interface settings forwarding depends on.
use std::{collections::BTreeSet, net::Ipv4Addr};

use rtnetlink::Handle;

use super::services::{Changes, ServiceError, ServiceSync};
use crate::{
    model::{LbMode, Service},
    net::{
        addr,
        devconf::{self, Setting},
        neigh,
    },
};

pub struct LbSide {
    pub sync: ServiceSync,
    uplink: String,
    uplink_index: u32,
    neighbours: BTreeSet<Ipv4Addr>,
    /// (device, setting, value before we changed it), restored on release.
    restore: Vec<(String, Setting, i32)>,
    /// `net.ipv4.conf.all` keys we changed (through /proc/sys), with their old values.
    restore_all: Vec<(&'static str, String)>,
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
            restore_all: Vec::new(),
        }
    }

    /// A setting forwarding needs: a failure is logged and counted, and the service keeps
    /// its maps (traffic XDP cannot forward goes to the stack).
    async fn set(&mut self, handle: &Handle, setting: Setting, value: u32) {
        let dev = self.uplink.clone();
        match devconf::set(handle, &dev, setting, value).await {
            Ok(Some(old)) => {
                if !self
                    .restore
                    .iter()
                    .any(|(d, k, _)| *d == dev && *k == setting)
                {
                    self.restore.push((dev, setting, old));
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %crate::Chain(&e), "interface setting not applied"),
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
            self.set(handle, Setting::Forwarding, 1).await;
        }
        if nat {
            // nat replies are forwarded out of the interface they came in on; redirects
            // would tell backends to bypass us, and the reverse NAT with it.
            // The kernel sends redirects if `all` or the device says so.
            self.set(handle, Setting::SendRedirects, 0).await;
            match devconf::set_all("send_redirects", "0") {
                Ok(Some(old)) if !self.restore_all.iter().any(|(k, _)| *k == "send_redirects") => {
                    self.restore_all.push(("send_redirects", old))
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::Chain(&e), "net.ipv4.conf.all.send_redirects not set to 0 (it has no rtnetlink form; /proc/sys is read-only in a container): set it on the node, or backends may be told to bypass the reverse NAT")
                }
            }
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
                tracing::warn!(error = %crate::Chain(&e), "cannot list uplink addresses; backend neighbours not managed");
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
                    tracing::warn!(backend = %ip, error = %crate::Chain(&e), "managed neighbour entry failed; first packets may be dropped until the kernel resolves it")
                }
            }
        }
        for ip in self.neighbours.clone().difference(&want) {
            let _ = neigh::remove_managed(handle, self.uplink_index, *ip).await;
            self.neighbours.remove(ip);
        }
        Ok(changes)
    }

    /// Remove what we added to the node (neighbour entries, interface settings).
    pub async fn release(&mut self, handle: &Handle) {
        for ip in std::mem::take(&mut self.neighbours) {
            let _ = neigh::remove_managed(handle, self.uplink_index, ip).await;
        }
        for (dev, setting, old) in std::mem::take(&mut self.restore) {
            if let Err(e) = devconf::set(handle, &dev, setting, old as u32).await {
                tracing::warn!(error = %crate::Chain(&e), "cannot restore an interface setting");
            }
        }
        for (key, old) in std::mem::take(&mut self.restore_all) {
            if let Err(e) = devconf::set_all(key, &old) {
                tracing::warn!(key, error = %crate::Chain(&e), "cannot restore a net.ipv4.conf.all setting");
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
