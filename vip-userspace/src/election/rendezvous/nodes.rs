//! What this node knows of the other nodes' leases: when each last changed on our own clock,
//! whether that makes the node live, and whether its lease has lapsed by the fence rule.
//! Kept apart from the claims because liveness is judged only from our own monotonic clock
//! and from lease changes, never from timestamps another node wrote.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;

use super::objects::{holder, node_lease_name};
use crate::election::lease::LeaseConfig;

/// What this node has seen of another node's lease, and since when (own clock).
#[derive(Debug, Clone)]
struct NodeSeen {
    /// `None`: absent (deleted, or never seen).
    rv: Option<String>,
    holder: Option<String>,
    duration: Duration,
    since: Instant,
}

/// Whether another node's lease has lapsed, before reading it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lapse {
    /// Settled without a read: live by the watch, or not yet unchanged for long enough.
    Known(bool),
    /// Unchanged for its whole duration by the watch: confirm with a fresh read (the watch
    /// may be stale), then [`Nodes::confirm`].
    Read,
}

pub(super) struct Nodes {
    seen: BTreeMap<String, NodeSeen>,
    /// Nodes whose lease was read again to confirm a lapse: when, and whether it had lapsed
    /// (one read per node per retry period, however many of its VIPs wait).
    checked: BTreeMap<String, (Instant, bool)>,
    /// Our own lease duration: no node's lease is taken to last less.
    min_duration: Duration,
    retry_period: Duration,
}

impl Nodes {
    pub(super) fn new(cfg: &LeaseConfig) -> Nodes {
        Nodes {
            seen: BTreeMap::new(),
            checked: BTreeMap::new(),
            min_duration: cfg.lease_duration,
            retry_period: cfg.retry_period,
        }
    }

    fn lease_of(&self, n: &str) -> Duration {
        self.seen.get(n).map_or(self.min_duration, |s| s.duration)
    }

    /// Node `id`'s lease as seen now (`None`: absent). Its clock restarts only when the lease
    /// changed.
    pub(super) fn seen(&mut self, id: &str, l: Option<&Lease>) {
        let rv = l.and_then(|l| l.metadata.resource_version.clone());
        let holder = l.and_then(holder).map(str::to_string);
        let secs = l
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(0)
            .max(0) as u64;
        let duration = self.min_duration.max(Duration::from_secs(secs));
        let fresh = NodeSeen {
            rv,
            holder,
            duration,
            since: Instant::now(),
        };
        match self.seen.get_mut(id) {
            Some(s) if s.rv == fresh.rv => {}
            Some(s) => {
                *s = fresh;
                self.checked.remove(id);
            }
            None => {
                self.seen.insert(id.to_string(), fresh);
            }
        }
    }

    /// Live by the watch: its lease held by itself and seen changing within its duration.
    /// (For this node itself the fence decides, not the watch: see the callers.)
    pub(super) fn live(&self, n: &str) -> bool {
        self.seen.get(n).is_some_and(|s| {
            s.rv.is_some() && s.holder.as_deref() == Some(n) && s.since.elapsed() < s.duration
        })
    }

    /// Every node but `me` that is live by the watch.
    pub(super) fn live_others(&self, me: &str) -> BTreeSet<String> {
        self.seen
            .keys()
            .filter(|n| n.as_str() != me && self.live(n))
            .cloned()
            .collect()
    }

    /// Has `n`'s node lease (not this node's) lapsed, as far as the watch and the last
    /// confirming read tell.
    pub(super) fn lapse(&mut self, n: &str) -> Lapse {
        if self.live(n) {
            return Lapse::Known(false);
        }
        let Some(unseen_for) = self.seen.get(n).map(|s| s.since.elapsed()) else {
            // Never seen at all: start its clock now (a claim of a node we know nothing of
            // waits a whole lease duration).
            self.seen(n, None);
            return Lapse::Known(false);
        };
        if unseen_for < self.lease_of(n) {
            return Lapse::Known(false);
        }
        match self.checked.get(n) {
            Some((at, lapsed)) if at.elapsed() < self.retry_period => Lapse::Known(*lapsed),
            _ => Lapse::Read,
        }
    }

    /// After [`Lapse::Read`]: the lease as read again (`None`: the read failed, so not
    /// lapsed). Remembered for a retry period.
    pub(super) fn confirm(&mut self, n: &str, read: Option<Option<&Lease>>) -> bool {
        let lapsed = match read {
            Some(l) => {
                self.seen(n, l);
                self.seen
                    .get(n)
                    .is_some_and(|s| s.since.elapsed() >= s.duration)
                    && !self.live(n)
            }
            None => false,
        };
        self.checked.insert(n.to_string(), (Instant::now(), lapsed));
        lapsed
    }

    /// After a full list: nodes we saw a lease of that was not listed are absent now.
    pub(super) fn forget_unlisted(&mut self, names: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .seen
            .iter()
            .filter(|(n, s)| s.rv.is_some() && !names.contains(&node_lease_name(n)))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.seen(&n, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn lease(rv: &str, holder: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                ..Default::default()
            }),
        }
    }

    fn nodes(lease_duration: Duration) -> Nodes {
        let mut cfg = LeaseConfig::new("ns", "unused", "me");
        cfg.lease_duration = lease_duration;
        cfg.retry_period = Duration::from_secs(3600);
        Nodes::new(&cfg)
    }

    #[test]
    fn a_node_is_live_while_it_holds_its_own_changing_lease() {
        let mut n = nodes(Duration::from_secs(3600));
        n.seen("n2", Some(&lease("1", "n2")));
        n.seen("n3", Some(&lease("1", "someone-else")));
        n.seen("me", Some(&lease("1", "me")));
        assert!(n.live("n2"));
        assert!(!n.live("n3"));
        assert_eq!(n.live_others("me"), ["n2".to_string()].into());
        assert_eq!(n.lapse("n2"), Lapse::Known(false));
        n.seen("n2", None);
        assert!(!n.live("n2"));
    }

    #[test]
    fn a_lapse_needs_a_whole_duration_unchanged_and_a_confirming_read() {
        let mut n = nodes(Duration::from_secs(3600));
        // Never seen: its clock starts now.
        assert_eq!(n.lapse("n2"), Lapse::Known(false));
        assert_eq!(n.lapse("n2"), Lapse::Known(false));
        let mut n = nodes(Duration::ZERO);
        n.seen("n2", Some(&lease("1", "n2")));
        assert_eq!(n.lapse("n2"), Lapse::Read);
        // A read that fails is no lapse, and is remembered for a retry period.
        assert!(!n.confirm("n2", None));
        assert_eq!(n.lapse("n2"), Lapse::Known(false));
        // A changed lease forgets that read; unchanged on the next read, it lapsed.
        n.seen("n2", Some(&lease("2", "n2")));
        assert_eq!(n.lapse("n2"), Lapse::Read);
        assert!(n.confirm("n2", Some(Some(&lease("2", "n2")))));
        assert_eq!(n.lapse("n2"), Lapse::Known(true));
    }
}
