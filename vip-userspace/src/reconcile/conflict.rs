//! Another host answering for a VIP we own (its ARP reply, gratuitous ARP or probe from the
//! VIP; for an IPv6 VIP its Neighbor Advertisement; counted by XDP) means two owners: clients' caches flip between us. We win them back
//! by announcing again, at once the first time, then no more often than a back-off that
//! doubles up to a minute while the claims go on (so two misconfigured owners don't flood the
//! segment), and resets after a quiet minute. The other host is named in the log and the
//! counters are in the metrics.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::dataplane::maps::VipRow;

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Track {
    count: u64,
    last_claim: Option<Instant>,
    next: Option<Instant>,
    backoff: Duration,
}

/// What to do about one VIP's new claims.
#[derive(Debug, PartialEq, Eq)]
pub struct Claim {
    pub vip: IpAddr,
    pub mac: [u8; 6],
    /// New claims since the last look.
    pub new: u64,
    /// Announce again now (the back-off allows it).
    pub reannounce: bool,
}

#[derive(Debug, Default)]
pub struct Conflicts {
    seen: BTreeMap<IpAddr, Track>,
}

impl Conflicts {
    /// Take the counters as they are as the baseline: what kept pins carry from an earlier
    /// run was that run's business (and would otherwise be re-reported at every start).
    pub fn prime(&mut self, rows: &[(IpAddr, VipRow)]) {
        for (vip, s) in rows {
            self.seen.insert(
                *vip,
                Track {
                    count: s.claims(),
                    last_claim: None,
                    next: None,
                    backoff: FIRST,
                },
            );
        }
    }

    /// Compare the counters with the last look; VIPs not owned only update their baseline.
    pub fn observe(
        &mut self,
        now: Instant,
        rows: &[(IpAddr, VipRow)],
        owned: &BTreeSet<IpAddr>,
    ) -> Vec<Claim> {
        let mut out = Vec::new();
        for (vip, s) in rows {
            // Counters start at zero with the VIP's stats entry: a claim that arrived before
            // our first look is still a claim (entries from before this run are primed).
            let t = self.seen.entry(*vip).or_insert(Track {
                count: 0,
                last_claim: None,
                next: None,
                backoff: FIRST,
            });
            // A counter below the baseline belongs to a new stats entry (the VIP left the
            // map and came back): all of it is new.
            let claims = s.claims();
            let new = if claims < t.count {
                claims
            } else {
                claims - t.count
            };
            t.count = claims;
            if t.last_claim.is_some_and(|l| now.duration_since(l) > QUIET) {
                t.backoff = FIRST;
                t.next = None;
            }
            if new == 0 || !owned.contains(vip) {
                continue;
            }
            t.last_claim = Some(now);
            let reannounce = t.next.is_none_or(|n| now >= n);
            if reannounce {
                t.next = Some(now + t.backoff);
                t.backoff = (t.backoff * 2).min(MAX);
            }
            out.push(Claim {
                vip: *vip,
                mac: s.claim_mac(),
                new,
                reannounce,
            });
        }
        let present: BTreeSet<IpAddr> = rows.iter().map(|(v, _)| *v).collect();
        self.seen.retain(|v, _| present.contains(v));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use vip_common::{Vip6Stats, VipStats};

    fn row(n: u64) -> Vec<(IpAddr, VipRow)> {
        vec![(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
            VipRow::V4(VipStats {
                arp_conflict: n,
                conflict_mac: [2, 0, 0, 0, 0, 9],
                ..Default::default()
            }),
        )]
    }

    #[test]
    fn an_ipv6_vip_is_fought_for_by_its_ndp_claims() {
        let vip: IpAddr = "2001:db8::100".parse().unwrap();
        let rows = |n: u64| {
            vec![(
                vip,
                VipRow::V6(Vip6Stats {
                    ndp_conflict: n,
                    conflict_mac: [2, 0, 0, 0, 0, 7],
                    ..Default::default()
                }),
            )]
        };
        let owned: BTreeSet<IpAddr> = [vip].into();
        let mut c = Conflicts::default();
        let t0 = Instant::now();
        assert!(c.observe(t0, &rows(0), &owned).is_empty());
        let got = c.observe(t0, &rows(2), &owned);
        assert_eq!(
            got,
            vec![Claim {
                vip,
                mac: [2, 0, 0, 0, 0, 7],
                new: 2,
                reannounce: true
            }]
        );
    }

    #[test]
    fn reannounces_at_once_then_backs_off_then_resets() {
        let owned: BTreeSet<IpAddr> = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))].into();
        let mut c = Conflicts::default();
        let t0 = Instant::now();
        let got = c.observe(t0, &row(3), &owned);
        assert_eq!(got.len(), 1, "claims before the first look count");
        assert!(got[0].reannounce);
        assert_eq!((got[0].new, got[0].mac), (3, [2, 0, 0, 0, 0, 9]));
        // Within the back-off: counted, not re-announced.
        let got = c.observe(t0 + Duration::from_millis(500), &row(5), &owned);
        assert_eq!(got[0].new, 2);
        assert!(!got[0].reannounce);
        let got = c.observe(t0 + Duration::from_millis(600), &row(6), &owned);
        assert!(!got[0].reannounce);
        let got = c.observe(t0 + Duration::from_millis(1100), &row(7), &owned);
        assert!(got[0].reannounce, "after 1 s");
        let got = c.observe(t0 + Duration::from_millis(2000), &row(8), &owned);
        assert!(!got[0].reannounce, "the next gap is 2 s");
        // A quiet minute resets the back-off.
        let later = t0 + Duration::from_secs(70);
        assert!(c.observe(later, &row(8), &owned).is_empty());
        assert!(c.observe(later, &row(9), &owned)[0].reannounce);
        assert!(!c.observe(later + Duration::from_millis(100), &row(10), &owned)[0].reannounce);
    }

    #[test]
    fn claims_on_vips_we_do_not_own_are_not_ours_to_fight() {
        let mut c = Conflicts::default();
        let t0 = Instant::now();
        assert!(c.observe(t0, &row(4), &BTreeSet::new()).is_empty());
    }

    #[test]
    fn counts_kept_from_an_earlier_run_are_not_new_claims() {
        let owned: BTreeSet<IpAddr> = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))].into();
        let mut c = Conflicts::default();
        c.prime(&row(4));
        let t0 = Instant::now();
        assert!(c.observe(t0, &row(4), &owned).is_empty());
        let got = c.observe(t0, &row(5), &owned);
        assert_eq!((got[0].new, got[0].reannounce), (1, true));
    }

    #[test]
    fn a_counter_that_restarted_below_the_baseline_is_all_new() {
        // The VIP left the map and came back between two looks: its new entry counts
        // from zero, and 2 claims on it are 2 claims, not "none until it passes 6".
        let owned: BTreeSet<IpAddr> = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))].into();
        let mut c = Conflicts::default();
        let t0 = Instant::now();
        c.prime(&row(6));
        let got = c.observe(t0, &row(2), &owned);
        assert_eq!((got.len(), got[0].new), (1, 2));
    }
}
