//! The pools as kube-vip's ConfigMap configures them: address ranges per namespace and
//! global, sharing, and the BGP policy that goes with each pool. Parsing and lookups only;
//! what is held lives in the parent's `Ipam`, so a pool change swaps this whole value.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{Family, IpamError};

/// Inclusive address ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    pub(super) ranges: Vec<(u128, u128, Family)>,
}

pub(super) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

pub(super) fn from_u128(n: u128, f: Family) -> IpAddr {
    match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

impl Pool {
    /// `cidr-*`: "192.0.2.0/28,2001:db8::/120". IPv4 networks of /30 and wider leave out
    /// the network and broadcast addresses.
    pub fn parse_cidrs(key: &str, value: &str) -> Result<Pool, IpamError> {
        let bad = |m: String| IpamError::BadPool {
            key: key.to_string(),
            message: m,
        };
        let mut p = Pool::default();
        for c in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let (a, len) = c
                .split_once('/')
                .ok_or_else(|| bad(format!("`{c}` is not a CIDR")))?;
            let ip: IpAddr = a
                .parse()
                .map_err(|_| bad(format!("`{a}` is not an address")))?;
            let len: u32 = len
                .parse()
                .map_err(|_| bad(format!("`{c}` has a bad prefix")))?;
            let f = Family::of(&ip);
            let bits = if f == Family::V4 { 32 } else { 128 };
            if len > bits {
                return Err(bad(format!("`{c}` has a bad prefix")));
            }
            let host = bits - len;
            let mask: u128 = if host >= 128 {
                u128::MAX
            } else {
                (1u128 << host) - 1
            };
            let base = to_u128(ip) & !mask;
            let (mut lo, mut hi) = (base, base | mask);
            if f == Family::V4 && host >= 2 {
                lo += 1;
                hi -= 1;
            }
            p.ranges.push((lo, hi, f));
        }
        Ok(p)
    }

    /// `range-*`: "192.0.2.10-192.0.2.20,192.0.2.40-192.0.2.41".
    pub fn parse_ranges(key: &str, value: &str) -> Result<Pool, IpamError> {
        let bad = |m: String| IpamError::BadPool {
            key: key.to_string(),
            message: m,
        };
        let mut p = Pool::default();
        for r in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (a, b) = r
                .split_once('-')
                .ok_or_else(|| bad(format!("`{r}` is not a range a-b")))?;
            let a: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{a}` is not an address")))?;
            let b: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| bad(format!("`{b}` is not an address")))?;
            if Family::of(&a) != Family::of(&b) || to_u128(a) > to_u128(b) {
                return Err(bad(format!(
                    "`{r}` is not an ascending range of one family"
                )));
            }
            p.ranges.push((to_u128(a), to_u128(b), Family::of(&a)));
        }
        Ok(p)
    }

    fn merge(&mut self, o: Pool) {
        self.ranges.extend(o.ranges);
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (n, f) = (to_u128(ip), Family::of(&ip));
        self.ranges
            .iter()
            .any(|(lo, hi, rf)| *rf == f && (*lo..=*hi).contains(&n))
    }

    /// Number of addresses (saturating), for the pool-usage metric.
    pub fn size(&self) -> u128 {
        self.ranges.iter().fold(0u128, |a, (lo, hi, _)| {
            a.saturating_add((hi - lo).saturating_add(1))
        })
    }
}

/// Pools as configured: per namespace, global, and which namespaces allow sharing.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    pub per_ns: HashMap<String, Pool>,
    pub global: Option<Pool>,
    pub allow_share: HashSet<String>,
    /// BGP communities / LOCAL_PREF per pool (`global` or a namespace).
    pub bgp: BTreeMap<String, crate::bgp::RoutePolicy>,
}

impl Pools {
    /// From the data of kube-vip's `kubevip` ConfigMap (unknown keys are ignored, as
    /// kube-vip does; a malformed value of a known key is an error naming the key).
    pub fn from_configmap(data: &BTreeMap<String, String>) -> Result<Pools, IpamError> {
        let mut p = Pools::default();
        for (k, v) in data {
            if let Some(scope) = k.strip_prefix("bgp-communities-") {
                let cs =
                    crate::bgp::parse_communities(v).map_err(|message| IpamError::BadPool {
                        key: k.clone(),
                        message,
                    })?;
                p.bgp.entry(scope.to_string()).or_default().communities = cs;
                continue;
            }
            if let Some(scope) = k.strip_prefix("bgp-local-pref-") {
                let lp = v.trim().parse::<u32>().map_err(|_| IpamError::BadPool {
                    key: k.clone(),
                    message: format!("`{v}` is not a LOCAL_PREF (0..=4294967295)"),
                })?;
                p.bgp.entry(scope.to_string()).or_default().local_pref = Some(lp);
                continue;
            }
            let (kind, scope) = match k.split_once('-') {
                Some(("cidr", s)) => ("cidr", s),
                Some(("range", s)) => ("range", s),
                Some(("allow", s)) if s.starts_with("share-") => {
                    if v.trim() == "true" {
                        p.allow_share
                            .insert(s.trim_start_matches("share-").to_string());
                    }
                    continue;
                }
                _ => continue,
            };
            let pool = if kind == "cidr" {
                Pool::parse_cidrs(k, v)?
            } else {
                Pool::parse_ranges(k, v)?
            };
            if scope == "global" {
                p.global.get_or_insert_with(Pool::default).merge(pool);
            } else {
                p.per_ns.entry(scope.to_string()).or_default().merge(pool);
            }
        }
        Ok(p)
    }

    /// BGP communities / LOCAL_PREF for an address: the global pool's, refined by those of
    /// the namespace pool holding it (as MetalLB's advertisements select pools).
    pub fn bgp_policy(&self, ip: IpAddr) -> crate::bgp::RoutePolicy {
        let mut out = crate::bgp::RoutePolicy::default();
        if self.global.as_ref().is_some_and(|g| g.contains(ip)) {
            if let Some(p) = self.bgp.get("global") {
                out = out.merged(p);
            }
        }
        let mut scopes: Vec<&String> = self
            .per_ns
            .iter()
            .filter(|(_, pool)| pool.contains(ip))
            .map(|(ns, _)| ns)
            .collect();
        scopes.sort();
        for ns in scopes {
            if let Some(p) = self.bgp.get(ns) {
                out = out.merged(p);
            }
        }
        out
    }

    pub(super) fn for_ns(&self, ns: &str) -> Option<&Pool> {
        self.per_ns.get(ns).or(self.global.as_ref())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn pools(kv: &[(&str, &str)]) -> Pools {
        let m: BTreeMap<String, String> = kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Pools::from_configmap(&m).unwrap()
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bgp_policy_per_pool() {
        use crate::bgp::Community;
        let p = pools(&[
            ("cidr-global", "192.0.2.0/24"),
            ("cidr-prod", "192.0.2.128/28"),
            ("bgp-communities-global", "65000:1"),
            ("bgp-local-pref-global", "100"),
            ("bgp-communities-prod", "65000:2,65000:7:8"),
            ("bgp-local-pref-prod", "300"),
        ]);
        let g = p.bgp_policy(ip("192.0.2.10"));
        assert_eq!(g.communities, vec![Community::new(65000, 1)]);
        assert_eq!(g.local_pref, Some(100));
        let prod = p.bgp_policy(ip("192.0.2.130"));
        assert_eq!(
            prod.communities,
            vec![
                Community::new(65000, 1),
                Community::new(65000, 2),
                Community::Large(65000, 7, 8)
            ]
        );
        assert_eq!(prod.local_pref, Some(300));
        assert_eq!(p.bgp_policy(ip("198.51.100.1")), Default::default());
        let bad: BTreeMap<String, String> =
            [("bgp-local-pref-prod".to_string(), "high".to_string())].into();
        assert!(matches!(
            Pools::from_configmap(&bad),
            Err(IpamError::BadPool { key, .. }) if key == "bgp-local-pref-prod"
        ));
    }

    #[test]
    fn kube_vip_configmap_format() {
        let p = pools(&[
            ("cidr-default", "192.0.2.0/30"),
            ("range-team", "198.51.100.10-198.51.100.11"),
            ("cidr-global", "203.0.113.0/29,2001:db8::/126"),
            ("allow-share-team", "true"),
            ("unrelated", "x"),
        ]);
        assert!(p.per_ns["default"].contains(ip("192.0.2.1")));
        assert!(
            !p.per_ns["default"].contains(ip("192.0.2.0")),
            "network address left out"
        );
        assert!(
            !p.per_ns["default"].contains(ip("192.0.2.3")),
            "broadcast left out"
        );
        assert_eq!(p.per_ns["team"].size(), 2);
        assert!(p.global.as_ref().unwrap().contains(ip("2001:db8::3")));
        assert!(p.allow_share.contains("team"));
        let bad: BTreeMap<String, String> =
            [("range-x".to_string(), "10.0.0.5-10.0.0.1".to_string())].into();
        assert!(
            matches!(Pools::from_configmap(&bad), Err(IpamError::BadPool { key, .. }) if key == "range-x")
        );
    }
}
