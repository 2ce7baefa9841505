//! IP address management for LoadBalancer Services, compatible with kube-vip's pool
//! ConfigMap (`kube-system/kubevip`): keys `cidr-<ns>`, `range-<ns>`, `cidr-global`,
//! `range-global` (comma-separated lists) and `allow-share-<ns>: "true"`. For BGP,
//! `bgp-communities-<ns|global>` (comma-separated, `ASN:VALUE` or large `ASN:D1:D2`) and
//! `bgp-local-pref-<ns|global>` go with the announcements of addresses from that pool.
//!
//! Rules an operator can rely on:
//! - a requested address (`spec.loadBalancerIP`, or the `kube-vip.io/loadbalancerIPs` /
//!   `vip.dev/loadbalancerIPs` annotations) is honoured even outside the pools, unless
//!   another Service holds it and sharing is not allowed;
//! - otherwise the namespace's pool is used, else the global pool; the lowest free address
//!   is taken, so allocation is deterministic;
//! - two Services share an address only with the same sharing key (annotation
//!   `vip.dev/sharing-key`, or kube-vip's `kube-vip.io/loadbalancer-ips-sharing-key`) and
//!   disjoint (port, protocol) sets, or when their namespace allows sharing;
//! - one address per requested family (`spec.ipFamilies`), dual-stack included;
//! - the state is rebuilt from existing Service statuses at start, so a restart never hands
//!   out an address twice.
//!
//! `pools` parses and looks up what the ConfigMap configures; this file keeps what is held
//! (by whom, with which sharing key and ports) and allocates from it.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

mod pools;

use pools::{from_u128, to_u128};
pub use pools::{Pool, Pools};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("pool key `{key}`: {message}")]
    BadPool { key: String, message: String },
    #[error("no pool for namespace `{0}` and no global pool")]
    NoPool(String),
    #[error("pool for namespace `{ns}` has no free {family} address")]
    Exhausted { ns: String, family: &'static str },
    #[error("{ip} is held by {holder} and cannot be shared")]
    Conflict { ip: IpAddr, holder: String },
    #[error("`{0}` is not an IP address")]
    BadRequest(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A Service asking for addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub namespace: String,
    pub name: String,
    /// Addresses the Service asks for by spec or annotation.
    pub requested: Vec<String>,
    pub families: Vec<Family>,
    pub sharing_key: Option<String>,
    /// (port, protocol) pairs the Service exposes.
    pub ports: Vec<(u16, String)>,
}

impl Request {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone)]
struct Holder {
    id: String,
    namespace: String,
    sharing_key: Option<String>,
    ports: Vec<(u16, String)>,
}

#[derive(Debug, Default)]
pub struct Ipam {
    pools: Pools,
    held: BTreeMap<IpAddr, Vec<Holder>>,
    /// Addresses per holder id (`ns/name`): `of` and `release` cost the Service's own
    /// addresses, not the whole pool.
    by_id: HashMap<String, BTreeSet<IpAddr>>,
    /// Per pool range (lo, hi, family): every address below the value is held, so the
    /// search for the lowest free one starts there (lowered again by `release`).
    low_free: HashMap<(u128, u128, Family), u128>,
    /// `usage()` as last computed, kept in step by `hold` and `release` (the controller asks
    /// on every step, and counting is O(addresses held)); cleared when the pools change.
    usage: std::sync::Mutex<Option<Vec<(String, u128, usize)>>>,
}

impl Ipam {
    pub fn new(pools: Pools) -> Self {
        Self {
            pools,
            ..Default::default()
        }
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn set_pools(&mut self, pools: Pools) {
        self.pools = pools;
        self.low_free.clear();
        self.changed();
    }

    fn changed(&mut self) {
        if let Ok(u) = self.usage.get_mut() {
            *u = None;
        }
    }

    /// Addresses currently held by the Service `ns/name`.
    pub fn of(&self, ns: &str, name: &str) -> Vec<IpAddr> {
        let id = format!("{ns}/{name}");
        self.by_id
            .get(&id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The lowest address of `f` in `pool` that nobody holds.
    fn lowest_free(&mut self, pool: &Pool, f: Family) -> Option<IpAddr> {
        let mut ranges: Vec<(u128, u128, Family)> =
            pool.ranges.iter().filter(|x| x.2 == f).copied().collect();
        ranges.sort();
        for r in ranges {
            let (lo, hi, _) = r;
            let mut n = self.low_free.get(&r).copied().unwrap_or(lo).max(lo);
            if n > hi {
                continue;
            }
            // Held addresses of the range from `n` on, in order: the first gap is free.
            let mut taken = self
                .held
                .range(from_u128(n, f)..=from_u128(hi, f))
                .map(|(ip, _)| to_u128(*ip));
            let found = loop {
                if n > hi {
                    break None;
                }
                match taken.next() {
                    Some(t) if t == n => n += 1,
                    _ => break Some(n),
                }
            };
            self.low_free.insert(r, n);
            if let Some(n) = found {
                return Some(from_u128(n, f));
            }
        }
        None
    }

    /// (pool, addresses, held) for every configured pool: `global` or the namespace name.
    pub fn usage(&self) -> Vec<(String, u128, usize)> {
        let mut cached = match self.usage.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        cached.get_or_insert_with(|| self.count_usage()).clone()
    }

    fn count_usage(&self) -> Vec<(String, u128, usize)> {
        let used = |p: &Pool| self.held.keys().filter(|ip| p.contains(**ip)).count();
        let mut out: Vec<_> = self
            .pools
            .per_ns
            .iter()
            .map(|(ns, p)| (ns.clone(), p.size(), used(p)))
            .collect();
        out.sort();
        if let Some(g) = &self.pools.global {
            out.push(("global".into(), g.size(), used(g)));
        }
        out
    }

    fn can_share(&self, ip: &IpAddr, r: &Request) -> Result<(), IpamError> {
        let Some(hs) = self.held.get(ip) else {
            return Ok(());
        };
        for h in hs.iter().filter(|h| h.id != r.id()) {
            let keyed = r.sharing_key.is_some() && h.sharing_key == r.sharing_key;
            let ns_ok = self.pools.allow_share.contains(&r.namespace) && h.namespace == r.namespace;
            let disjoint = !h.ports.iter().any(|p| r.ports.contains(p));
            if !((keyed || ns_ok) && disjoint) {
                return Err(IpamError::Conflict {
                    ip: *ip,
                    holder: h.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Keep the cached `usage` in step with an address coming into (`true`) or going out of
    /// `held`: the pools holding it count one more or one less, without a recount.
    fn count(&mut self, ip: IpAddr, held: bool) {
        let pools = &self.pools;
        let Ok(cache) = self.usage.get_mut() else {
            return;
        };
        let Some(rows) = cache.as_mut() else {
            return;
        };
        // The rows of `count_usage`: the namespaces' pools, then `global` last if there is one.
        let global_row = pools.global.as_ref().map(|_| rows.len().saturating_sub(1));
        for (i, (name, _, n)) in rows.iter_mut().enumerate() {
            let pool = if Some(i) == global_row {
                pools.global.as_ref()
            } else {
                pools.per_ns.get(name.as_str())
            };
            if pool.is_some_and(|p| p.contains(ip)) {
                *n = if held { *n + 1 } else { n.saturating_sub(1) };
            }
        }
    }

    fn hold(&mut self, ip: IpAddr, r: &Request) {
        if !self.held.contains_key(&ip) {
            self.count(ip, true);
        }
        self.by_id.entry(r.id()).or_default().insert(ip);
        let hs = self.held.entry(ip).or_default();
        hs.retain(|h| h.id != r.id());
        hs.push(Holder {
            id: r.id(),
            namespace: r.namespace.clone(),
            sharing_key: r.sharing_key.clone(),
            ports: r.ports.clone(),
        });
    }

    /// Addresses for `r`, one per family; already-held addresses are kept (idempotent).
    pub fn allocate(&mut self, r: &Request) -> Result<Vec<IpAddr>, IpamError> {
        let mut out = Vec::new();
        if !r.requested.is_empty() {
            let mut ips = Vec::new();
            for s in &r.requested {
                let ip: IpAddr = s
                    .trim()
                    .parse()
                    .map_err(|_| IpamError::BadRequest(s.clone()))?;
                self.can_share(&ip, r)?;
                ips.push(ip);
            }
            self.release(&r.namespace, &r.name);
            for ip in ips {
                self.hold(ip, r);
                out.push(ip);
            }
            return Ok(out);
        }
        let current = self.of(&r.namespace, &r.name);
        for f in &r.families {
            if let Some(ip) = current.iter().find(|ip| Family::of(ip) == *f) {
                out.push(*ip);
                continue;
            }
            // A shareable address first (same key), then the lowest free one.
            let shared = r.sharing_key.as_ref().and_then(|_| {
                self.held
                    .iter()
                    .find(|(ip, hs)| {
                        Family::of(ip) == *f && hs.iter().any(|h| h.sharing_key == r.sharing_key)
                    })
                    .map(|(ip, _)| *ip)
                    .filter(|ip| self.can_share(ip, r).is_ok())
            });
            let ip = match shared {
                Some(ip) => ip,
                None => {
                    let pool = self
                        .pools
                        .for_ns(&r.namespace)
                        .ok_or_else(|| IpamError::NoPool(r.namespace.clone()))?
                        .clone();
                    self.lowest_free(&pool, *f).ok_or(IpamError::Exhausted {
                        ns: r.namespace.clone(),
                        family: f.name(),
                    })?
                }
            };
            self.hold(ip, r);
            out.push(ip);
        }
        Ok(out)
    }

    /// Forget everything `ns/name` holds (Service deleted or no longer a LoadBalancer).
    pub fn release(&mut self, ns: &str, name: &str) {
        let id = format!("{ns}/{name}");
        let Some(ips) = self.by_id.remove(&id) else {
            return;
        };
        for ip in ips {
            let empty = self.held.get_mut(&ip).is_some_and(|hs| {
                hs.retain(|h| h.id != id);
                hs.is_empty()
            });
            if empty {
                self.held.remove(&ip);
                self.count(ip, false);
                let n = to_u128(ip);
                for ((lo, hi, f), low) in self.low_free.iter_mut() {
                    if *f == Family::of(&ip) && (*lo..=*hi).contains(&n) {
                        *low = (*low).min(n);
                    }
                }
            }
        }
    }

    /// Restore what existing Services already have (their status), before any allocation.
    pub fn restore(&mut self, r: &Request, ips: &[IpAddr]) {
        for ip in ips {
            self.hold(*ip, r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ns: &str, name: &str) -> Request {
        Request {
            namespace: ns.into(),
            name: name.into(),
            requested: vec![],
            families: vec![Family::V4],
            sharing_key: None,
            ports: vec![(80, "TCP".into())],
        }
    }

    use super::pools::tests::{ip, pools};

    #[test]
    fn whole_address_space_pool_has_a_saturated_size() {
        // Found by fuzz/fuzz_targets/k8s_annotations.rs: `cidr-global: ::/0` spans 2^128
        // addresses, one more than u128 holds (`hi - lo + 1` overflowed).
        let p = pools(&[
            ("cidr-global", "::/0"),
            ("range-x", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ]);
        assert_eq!(p.global.as_ref().unwrap().size(), u128::MAX);
        assert_eq!(p.per_ns["x"].size(), u128::MAX);
        let mut ipam = Ipam::new(p);
        let mut r = req("default", "a");
        r.families = vec![Family::V6];
        assert_eq!(ipam.allocate(&r).unwrap(), vec![ip("::")]);
        let usage = vec![
            ("x".to_string(), u128::MAX, 1),
            ("global".to_string(), u128::MAX, 1),
        ];
        assert_eq!(ipam.usage(), usage);
    }

    #[test]
    fn usage_kept_in_step_with_allocations_and_releases_matches_a_recount() {
        let mut a = Ipam::new(pools(&[
            ("range-default", "192.0.2.10-192.0.2.20"),
            ("range-global", "198.51.100.1-198.51.100.9"),
        ]));
        // Asked once first, so the kept count is the one updated from then on.
        assert_eq!(a.usage(), a.count_usage());
        for name in ["a", "b", "c"] {
            a.allocate(&req("default", name)).unwrap();
            a.allocate(&req("other", name)).unwrap();
            assert_eq!(a.usage(), a.count_usage());
        }
        a.release("default", "b");
        a.release("other", "a");
        a.release("other", "zz");
        assert_eq!(a.usage(), a.count_usage());
        assert_eq!(
            a.usage(),
            vec![("default".to_string(), 11, 2), ("global".to_string(), 9, 2),]
        );
    }

    #[test]
    fn lowest_free_then_exhausted_then_released() {
        let mut a = Ipam::new(pools(&[("range-default", "192.0.2.10-192.0.2.11")]));
        assert_eq!(
            a.allocate(&req("default", "a")).unwrap(),
            vec![ip("192.0.2.10")]
        );
        assert_eq!(
            a.allocate(&req("default", "a")).unwrap(),
            vec![ip("192.0.2.10")],
            "idempotent"
        );
        assert_eq!(
            a.allocate(&req("default", "b")).unwrap(),
            vec![ip("192.0.2.11")]
        );
        for _ in 0..2 {
            // Asked again while the pool is still full (the search starts past its end).
            assert!(matches!(
                a.allocate(&req("default", "c")),
                Err(IpamError::Exhausted { .. })
            ));
        }
        a.release("default", "a");
        assert_eq!(
            a.allocate(&req("default", "c")).unwrap(),
            vec![ip("192.0.2.10")]
        );
        assert!(matches!(
            a.allocate(&req("other", "x")),
            Err(IpamError::NoPool(_))
        ));
    }

    #[test]
    fn namespace_pool_before_global_and_dual_stack() {
        let mut a = Ipam::new(pools(&[
            ("cidr-global", "203.0.113.0/29,2001:db8::/126"),
            ("range-team", "198.51.100.10-198.51.100.10"),
        ]));
        assert_eq!(
            a.allocate(&req("team", "s")).unwrap(),
            vec![ip("198.51.100.10")]
        );
        let mut ds = req("other", "d");
        ds.families = vec![Family::V4, Family::V6];
        assert_eq!(
            a.allocate(&ds).unwrap(),
            vec![ip("203.0.113.1"), ip("2001:db8::")]
        );
    }

    #[test]
    fn requested_addresses_and_sharing() {
        let mut a = Ipam::new(pools(&[("range-default", "192.0.2.10-192.0.2.20")]));
        let mut s1 = req("default", "web");
        s1.requested = vec!["192.0.2.15".into()];
        s1.sharing_key = Some("k".into());
        assert_eq!(a.allocate(&s1).unwrap(), vec![ip("192.0.2.15")]);
        // Same address, no key: conflict.
        let mut s2 = req("default", "api");
        s2.requested = vec!["192.0.2.15".into()];
        s2.ports = vec![(443, "TCP".into())];
        assert!(matches!(a.allocate(&s2), Err(IpamError::Conflict { .. })));
        // Same key, disjoint ports: shared.
        s2.sharing_key = Some("k".into());
        assert_eq!(a.allocate(&s2).unwrap(), vec![ip("192.0.2.15")]);
        // Same key but overlapping ports: conflict.
        let mut s3 = req("default", "dup");
        s3.requested = vec!["192.0.2.15".into()];
        s3.sharing_key = Some("k".into());
        assert!(matches!(a.allocate(&s3), Err(IpamError::Conflict { .. })));
        // Without a requested address, the same key joins the shared address.
        let mut s4 = req("default", "dns");
        s4.sharing_key = Some("k".into());
        s4.ports = vec![(53, "UDP".into())];
        assert_eq!(a.allocate(&s4).unwrap(), vec![ip("192.0.2.15")]);
        // Outside the pools is honoured.
        let mut s5 = req("default", "pinned");
        s5.requested = vec!["203.0.113.9".into()];
        assert_eq!(a.allocate(&s5).unwrap(), vec![ip("203.0.113.9")]);
        assert!(matches!(
            a.allocate(&Request {
                requested: vec!["nope".into()],
                ..req("default", "x")
            }),
            Err(IpamError::BadRequest(_))
        ));
    }

    #[test]
    fn restore_prevents_double_allocation_after_restart() {
        let mut a = Ipam::new(pools(&[("range-default", "192.0.2.10-192.0.2.11")]));
        a.restore(&req("default", "old"), &[ip("192.0.2.10")]);
        assert_eq!(
            a.allocate(&req("default", "new")).unwrap(),
            vec![ip("192.0.2.11")]
        );
        assert_eq!(a.of("default", "old"), vec![ip("192.0.2.10")]);
        assert_eq!(a.usage(), vec![("default".to_string(), 2, 2)]);
    }
}
