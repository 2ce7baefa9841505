//! Everything a service needs around the maps: backends' neighbour entries (so XDP's FIB
//! lookup finds their MACs) and the interface settings forwarding depends on, per family:
//! IPv4's through rtnetlink (`devconf::set`), IPv6's through /proc/sys (`devconf::set_ipv6`:
//! the kernel takes no IPv6 conf value over rtnetlink), each only while a service of that
//! family forwards.
use std::{collections::BTreeSet, net::IpAddr};

use prometheus_client::metrics::counter::Counter;
use rtnetlink::Handle;

use super::services::{Changes, ServiceError, ServiceSync, SvcKey};
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
    neighbours: BTreeSet<IpAddr>,
    /// (device, setting, value before we changed it), restored on release.
    restore: Vec<(String, Setting, i32)>,
    /// `net.ipv4.conf.all` keys we changed (through /proc/sys), with their old values.
    restore_all: Vec<(&'static str, String)>,
    /// `net.ipv6.conf.<uplink>` keys we changed (through /proc/sys), with their old values.
    restore6: Vec<(&'static str, String)>,
    /// The uplink's own addresses at the last pass (which backends are on-link).
    prefixes: Vec<(IpAddr, u8)>,
    /// Each service's on-link backends, and how many services want each address.
    on_link: std::collections::BTreeMap<SvcKey, Vec<IpAddr>>,
    refs: std::collections::BTreeMap<IpAddr, u32>,
    forwarding_set: bool,
    forwarding6_set: bool,
    nat_set: bool,
    nat6_set: bool,
    /// The kernel has no `force_forwarding` and the node does not forward IPv6: said once.
    nat6_warned: bool,
    strict: Option<Handle>,
    strict_failed: bool,
    /// Interface settings forwarding needs that could not be applied
    /// (`vip_interface_setting_failures`).
    setting_failures: Counter,
}

/// Whether `ip` is in `net/len` (same family only).
fn in_prefix(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
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
            restore6: Vec::new(),
            prefixes: Vec::new(),
            on_link: Default::default(),
            refs: Default::default(),
            forwarding_set: false,
            forwarding6_set: false,
            nat_set: false,
            nat6_set: false,
            nat6_warned: false,
            strict: None,
            strict_failed: false,
            setting_failures: Counter::default(),
        }
    }

    /// Count failed interface settings in `c` (the daemon's metric) from now on.
    pub fn count_setting_failures(&mut self, c: Counter) {
        self.setting_failures = c;
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
            Err(e) => {
                self.setting_failures.inc();
                tracing::warn!(error = %crate::Chain(&e), "interface setting not applied")
            }
        }
    }

    /// IPv6 forwarding on the uplink: `bpf_fib_lookup` answers AF_INET6 lookups with
    /// FWD_DISABLED unless the ingress device forwards (`idev->cnf.forwarding`), so no IPv6
    /// dsr or nat packet would leave XDP. A forwarding interface ignores Router
    /// Advertisements at `accept_ra=1`; 2 keeps taking them, so a node configured by SLAAC
    /// keeps its default route. Both are restored on release.
    fn set_forwarding6(&mut self) {
        if self.set6("accept_ra", |old| (old == "1").then_some("2")) {
            self.set6("forwarding", |_| Some("1"));
        }
    }

    /// nat replies come back through this node's stack, which forwards them out again (tc
    /// egress then restores the VIP): IPv6 forwards only if `net.ipv6.conf.all.forwarding`
    /// is on or, since Linux 6.17, the ingress device has `force_forwarding` (the device's
    /// own `forwarding` is not enough, unlike IPv4's). The per-device switch where the
    /// kernel has it; else a warning that the node must forward IPv6 (`all` would change
    /// every interface, RA handling included: not done behind the operator's back).
    fn set_nat6(&mut self) {
        let has_force = std::path::Path::new("/proc/sys/net/ipv6/conf")
            .join(&self.uplink)
            .join("force_forwarding")
            .exists();
        if has_force {
            self.set6("force_forwarding", |_| Some("1"));
        } else if !self.nat6_warned
            && devconf::get_ipv6("all", "forwarding").ok().as_deref() != Some("1")
        {
            self.nat6_warned = true;
            self.setting_failures.inc();
            tracing::warn!(dev = %self.uplink, "this kernel (before 6.17) has no net.ipv6.conf.<dev>.force_forwarding: IPv6 nat replies are forwarded only with net.ipv6.conf.all.forwarding=1, which vip leaves to the operator");
        }
    }

    /// `net.ipv6.conf.<uplink>.<key>` to what `want` says for its current value (None:
    /// leave it), the first old value kept for release. False (warned and counted) when it
    /// cannot be read or written.
    fn set6(&mut self, key: &'static str, want: impl Fn(&str) -> Option<&'static str>) -> bool {
        let r = devconf::get_ipv6(&self.uplink, key).and_then(|cur| match want(&cur) {
            Some(v) => devconf::set_ipv6(&self.uplink, key, v),
            None => Ok(None),
        });
        match r {
            Ok(Some(old)) => {
                if !self.restore6.iter().any(|(k, _)| *k == key) {
                    self.restore6.push((key, old));
                }
                true
            }
            Ok(None) => true,
            Err(e) => {
                self.setting_failures.inc();
                tracing::warn!(dev = %self.uplink, key, error = %e, "net.ipv6.conf setting not applied (the kernel takes IPv6 settings only through /proc/sys, read-only in an unprivileged container): set net.ipv6.conf.<uplink>.forwarding=1 on the node, or IPv6 dsr and nat services are not forwarded by XDP");
                false
            }
        }
    }

    /// Put back what the node may have lost since it was set: the interface settings
    /// forwarding needs, and managed neighbour entries the kernel dropped (it flushes even
    /// those when the uplink loses carrier, a cut cable; a dsr flow would then find no MAC
    /// after the link came back). Called periodically and on every ownership change, apart
    /// from the passes, so a pass costs only what changed.
    pub async fn repair(&mut self, handle: &Handle) {
        if self.forwarding_set {
            self.set(handle, Setting::Forwarding, 1).await;
        }
        if self.forwarding6_set {
            self.set_forwarding6();
        }
        if self.nat6_set {
            self.set_nat6();
        }
        if self.nat_set {
            self.set_nat(handle).await;
        }
        // Wanted but never made (the kernel refused earlier): try again.
        let missing: Vec<IpAddr> = self
            .refs
            .keys()
            .filter(|ip| !self.neighbours.contains(ip))
            .copied()
            .collect();
        for ip in missing {
            self.ensure(handle, ip).await;
        }
        if self.neighbours.is_empty() {
            return;
        }
        let present = match neigh::present(handle, self.uplink_index).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %crate::Chain(&e), "cannot list neighbour entries; lost backend entries not re-created");
                return;
            }
        };
        let lost: Vec<IpAddr> = self.neighbours.difference(&present).copied().collect();
        for ip in lost {
            match neigh::ensure_managed(handle, self.uplink_index, ip).await {
                Ok(()) => tracing::info!(backend = %ip, "managed neighbour entry re-created"),
                Err(e) => {
                    tracing::warn!(backend = %ip, error = %crate::Chain(&e), "managed neighbour entry lost and not re-created");
                    self.neighbours.remove(&ip);
                }
            }
        }
    }

    /// A handle whose dumps the kernel filters by interface (strict checking), made on first
    /// use; `None` (logged once) falls back to the daemon's handle, filtered here.
    fn strict(&mut self) -> Option<Handle> {
        if self.strict.is_none() && !self.strict_failed {
            match rtnetlink::new_connection_with_strict_check() {
                Ok((conn, h, _)) => {
                    tokio::spawn(conn);
                    self.strict = Some(h);
                }
                Err(e) => {
                    self.strict_failed = true;
                    tracing::warn!(error = %e, "no strict-checking netlink socket; address dumps list every interface");
                }
            }
        }
        self.strict.clone()
    }

    /// Services into the maps, then what they need around them: interface settings when
    /// first needed, neighbour entries when the services or the uplink's prefixes changed
    /// (`repair` puts back what the node lost). A pass for an unchanged set of services
    /// costs the diff and one dump of the uplink's own addresses, not of the node's.
    pub async fn apply(
        &mut self,
        handle: &Handle,
        services: &[Service],
    ) -> Result<Changes, ServiceError> {
        let forwards = |v6: bool| {
            services
                .iter()
                .any(|s| s.mode != LbMode::Local && s.vip.is_ipv6() == v6)
        };
        // send_redirects is IPv4's (the IPv6 nat settings are `set_nat6`'s).
        let nat = services
            .iter()
            .any(|s| s.mode == LbMode::Nat && s.vip.is_ipv4());
        if forwards(false) && !self.forwarding_set {
            // bpf_fib_lookup refuses to route for a device without IPv4 forwarding.
            self.set(handle, Setting::Forwarding, 1).await;
            self.forwarding_set = true;
        }
        if forwards(true) && !self.forwarding6_set {
            self.set_forwarding6();
            self.forwarding6_set = true;
        }
        let nat6 = services
            .iter()
            .any(|s| s.mode == LbMode::Nat && s.vip.is_ipv6());
        if nat6 && !self.nat6_set {
            self.set_nat6();
            self.nat6_set = true;
        }
        if nat && !self.nat_set {
            self.set_nat(handle).await;
            self.nat_set = true;
        }
        let changes = self.sync.apply(services)?;

        // Managed neighbour entries for on-link backends, so the first packet finds a MAC.
        let lister = self.strict().unwrap_or_else(|| handle.clone());
        let prefixes: Vec<(IpAddr, u8)> = match addr::on_link(&lister, self.uplink_index).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %crate::Chain(&e), "cannot list uplink addresses; backend neighbours not managed");
                Vec::new()
            }
        };
        // Which on-link backends are wanted: per service, kept between passes, so a pass
        // recomputes only the services it touched (all of them when the uplink's prefixes
        // changed, or for a list not in key order).
        let (gained, lost) = if prefixes != self.prefixes || !crate::model::sorted_unique(services)
        {
            self.prefixes = prefixes;
            self.want_all(services)
        } else if changes.touched.is_empty() {
            return Ok(changes);
        } else {
            self.want_touched(services, &changes.touched)
        };
        for ip in gained {
            self.ensure(handle, ip).await;
        }
        for ip in lost {
            let _ = neigh::remove_managed(handle, self.uplink_index, ip).await;
            self.neighbours.remove(&ip);
        }
        Ok(changes)
    }

    /// On-link backends of `s` (none for `local`, which hands packets to the stack), both
    /// families: NTF_EXT_MANAGED entries work for NDP as for ARP.
    fn on_link_of(&self, s: &Service) -> Vec<IpAddr> {
        if s.mode == LbMode::Local {
            return Vec::new();
        }
        let mut out: Vec<IpAddr> = s
            .backends
            .iter()
            .map(|b| b.addr)
            .filter(|ip| {
                self.prefixes
                    .iter()
                    .any(|(n, l)| *l < addr::host_prefix(*n) && in_prefix(*ip, *n, *l))
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every service's on-link backends afresh: (addresses now wanted, no longer wanted).
    fn want_all(&mut self, services: &[Service]) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let before: BTreeSet<IpAddr> = self.refs.keys().copied().collect();
        self.on_link.clear();
        self.refs.clear();
        for s in services {
            let ips = self.on_link_of(s);
            if !ips.is_empty() {
                for ip in &ips {
                    *self.refs.entry(*ip).or_default() += 1;
                }
                self.on_link.insert(super::services::key_of(s), ips);
            }
        }
        let after: BTreeSet<IpAddr> = self.refs.keys().copied().collect();
        (
            after
                .difference(&before)
                .filter(|ip| !self.neighbours.contains(ip))
                .copied()
                .collect(),
            before.difference(&after).copied().collect(),
        )
    }

    /// Only the `touched` services (`services` sorted by key): (gained, lost) addresses.
    fn want_touched(
        &mut self,
        services: &[Service],
        touched: &[SvcKey],
    ) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let (mut gained, mut lost) = (Vec::new(), Vec::new());
        for k in touched {
            for ip in self.on_link.remove(k).unwrap_or_default() {
                if let Some(n) = self.refs.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.refs.remove(&ip);
                        lost.push(ip);
                    }
                }
            }
            let now = services
                .binary_search_by(|s| super::services::key_of(s).cmp(k))
                .ok()
                .map(|i| self.on_link_of(&services[i]))
                .unwrap_or_default();
            for ip in &now {
                let n = self.refs.entry(*ip).or_default();
                *n += 1;
                if *n == 1 {
                    gained.push(*ip);
                }
            }
            if !now.is_empty() {
                self.on_link.insert(*k, now);
            }
        }
        // An address lost by one service and gained by another in the same pass stays.
        lost.retain(|ip| !self.refs.contains_key(ip));
        gained.retain(|ip| !self.neighbours.contains(ip));
        (gained, lost)
    }

    async fn ensure(&mut self, handle: &Handle, ip: IpAddr) {
        match neigh::ensure_managed(handle, self.uplink_index, ip).await {
            Ok(()) => {
                self.neighbours.insert(ip);
            }
            Err(e) => {
                tracing::warn!(backend = %ip, error = %crate::Chain(&e), "managed neighbour entry failed; first packets may be dropped until the kernel resolves it (retried on the next repair)")
            }
        }
    }

    /// nat replies are forwarded out of the interface they came in on; redirects would tell
    /// backends to bypass us, and the reverse NAT with it. The kernel sends redirects if
    /// `all` or the device says so.
    async fn set_nat(&mut self, handle: &Handle) {
        self.set(handle, Setting::SendRedirects, 0).await;
        match devconf::set_all("send_redirects", "0") {
            Ok(Some(old)) if !self.restore_all.iter().any(|(k, _)| *k == "send_redirects") => {
                self.restore_all.push(("send_redirects", old))
            }
            Ok(_) => {}
            Err(e) => {
                self.setting_failures.inc();
                tracing::warn!(error = %crate::Chain(&e), "net.ipv4.conf.all.send_redirects not set to 0 (it has no rtnetlink form; /proc/sys is read-only in a container): set it on the node, or backends may be told to bypass the reverse NAT")
            }
        }
    }

    /// Remove what we added to the node (neighbour entries, interface settings).
    pub async fn release(&mut self, handle: &Handle) {
        self.on_link.clear();
        self.refs.clear();
        self.prefixes.clear();
        self.forwarding_set = false;
        self.forwarding6_set = false;
        self.nat_set = false;
        self.nat6_set = false;
        self.nat6_warned = false;
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
        // forwarding before accept_ra: the order they were raised in, reversed.
        for (key, old) in std::mem::take(&mut self.restore6).into_iter().rev() {
            if let Err(e) = devconf::set_ipv6(&self.uplink, key, &old) {
                tracing::warn!(key, error = %e, "cannot restore a net.ipv6.conf setting");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::in_prefix;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_match() {
        let n = ip("198.51.100.1");
        assert!(in_prefix(ip("198.51.100.21"), n, 24));
        assert!(!in_prefix(ip("198.51.101.21"), n, 24));
        assert!(in_prefix(ip("8.8.8.8"), n, 0));
    }

    #[test]
    fn ipv6_prefix_match_and_families_apart() {
        let n = ip("2001:db8::1");
        assert!(in_prefix(ip("2001:db8::21"), n, 64));
        assert!(!in_prefix(ip("2001:db8:1::21"), n, 64));
        assert!(in_prefix(ip("2001:db8:1::21"), n, 32));
        assert!(in_prefix(ip("fe80::1"), n, 0));
        assert!(in_prefix(n, n, 128));
        assert!(!in_prefix(ip("198.51.100.21"), n, 0));
        assert!(!in_prefix(n, ip("198.51.100.1"), 0));
    }
}
