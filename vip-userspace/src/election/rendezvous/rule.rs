//! The claim rule: from what a pass sees (claims, live nodes, what this node serves), what it
//! should do with each VIP. No API calls and no locks, so every branch of the rule can be
//! tested with plain values; the pass ([`super::pass`]) turns the result into writes, and
//! reads a node lease again only where the rule asks whether it lapsed.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;

use super::{objects::holder, placement::choose, writes::Action, Wanted, RETIRE_WAIT};

/// What one pass works from, taken once at its start.
pub(super) struct View {
    pub(super) me: String,
    /// This node's fence session (`None`: not live, so nothing is claimed).
    pub(super) session: Option<u64>,
    /// The uplink is there.
    pub(super) able: bool,
    /// Live for a couple of retry periods already: free VIPs may be claimed.
    pub(super) settled: bool,
    /// Some VIP was wanted once (see `State::wanted_ever`).
    pub(super) wanted_ever: bool,
    pub(super) lease_duration: Duration,
    /// Live nodes, this one included while its fence holds.
    pub(super) live: BTreeSet<String>,
    /// What this node serves, and in which fence session its claim was written.
    pub(super) serving: BTreeMap<IpAddr, u64>,
}

/// What a pass decided for one VIP (before reading or writing anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Release,
    Create,
    /// Take a free claim, or re-write ours in a new fence session.
    Rewrite,
    /// Take it if its owner's node lease has lapsed.
    Takeover(String),
}

/// What to do with the claim of a VIP no longer wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stale {
    /// Ours and served: stop serving, then release as usual.
    Release,
    /// Not (yet) ours to clean up.
    Keep,
    Delete,
    /// Delete it if its holder's node lease has lapsed.
    DeleteIfLapsed(String),
}

/// The steps for the wanted VIPs, and the VIPs this node serves but no longer owns.
#[derive(Debug, Default)]
pub(super) struct Decision {
    pub(super) steps: Vec<(IpAddr, Step)>,
    pub(super) not_ours: Vec<IpAddr>,
}

impl View {
    /// The claim rule over every wanted VIP (those being released wait for that first).
    /// Decided on references only: a pass runs over every VIP.
    pub(super) fn decide(
        &self,
        wanted: &Wanted,
        claims: &BTreeMap<IpAddr, Lease>,
        releasing: &BTreeMap<IpAddr, Instant>,
    ) -> Decision {
        let mut d = Decision::default();
        for (vip, eligible) in wanted {
            if releasing.contains_key(vip) {
                continue;
            }
            let claim = claims.get(vip);
            let ours = claim.and_then(holder) == Some(self.me.as_str());
            if !ours && self.serving.contains_key(vip) {
                d.not_ours.push(*vip);
            }
            if let Some(s) = self.step(*vip, eligible.as_ref(), claim) {
                d.steps.push((*vip, s));
            }
        }
        d
    }

    /// One wanted VIP: a live eligible owner keeps it; otherwise the preferred node claims it
    /// if it is free or its owner may have lapsed.
    fn step(
        &self,
        vip: IpAddr,
        eligible: Option<&BTreeSet<String>>,
        claim: Option<&Lease>,
    ) -> Option<Step> {
        let me = self.me.as_str();
        let ok_here = self.able && eligible.is_none_or(|e| e.contains(me));
        let owner = claim.and_then(holder);
        if owner == Some(me) {
            if !ok_here {
                return Some(Step::Release);
            }
            let s = self.session?;
            // Ours from an earlier session (a gap in the fence, or a restart).
            return (self.serving.get(&vip) != Some(&s)).then_some(Step::Rewrite);
        }
        if self.session.is_none() || !ok_here {
            return None;
        }
        let cands = self
            .live
            .iter()
            .filter(|n| eligible.is_none_or(|e| e.contains(*n)))
            .map(String::as_str);
        if choose(vip, cands) != Some(me) {
            return None;
        }
        match (claim.is_some(), owner) {
            (false, _) if self.settled => Some(Step::Create),
            (true, None) if self.settled => Some(Step::Rewrite),
            (_, None) => None,
            (_, Some(o)) => Some(Step::Takeover(o.to_string())),
        }
    }

    /// The claim of a VIP that no longer exists (and is not being released). `unwanted`:
    /// since when each such claim has been seen (this one's clock starts here, once the
    /// first Services were seen). It is cleaned up by the rendezvous choice among live
    /// nodes, once nobody can be serving it: free, ours from before, or its holder lapsed.
    pub(super) fn stale(
        &self,
        vip: IpAddr,
        claim: &Lease,
        unwanted: &mut BTreeMap<IpAddr, Instant>,
    ) -> Stale {
        let me = self.me.as_str();
        let owner = holder(claim);
        if owner == Some(me) && self.serving.contains_key(&vip) {
            return Stale::Release;
        }
        if !self.wanted_ever {
            return Stale::Keep;
        }
        let since = *unwanted.entry(vip).or_insert_with(Instant::now);
        if since.elapsed() < self.lease_duration || self.session.is_none() {
            return Stale::Keep;
        }
        if choose(vip, self.live.iter().map(String::as_str)) != Some(me) {
            return Stale::Keep;
        }
        match owner {
            None => Stale::Delete,
            Some(o) if o == me => Stale::Delete,
            Some(o) => Stale::DeleteIfLapsed(o.to_string()),
        }
    }
}

/// Releases whose VIP the data plane has dropped (or that waited long enough).
pub(super) fn due(releasing: &BTreeMap<IpAddr, Instant>, applied: &[IpAddr]) -> Vec<IpAddr> {
    releasing
        .iter()
        .filter(|(v, at)| !applied.contains(v) || at.elapsed() >= RETIRE_WAIT)
        .map(|(v, _)| *v)
        .collect()
}

/// The write that hands on a claim of ours: cleared while its VIP is still wanted, deleted
/// otherwise. `None`: the claim is not ours (any more), nothing to release.
pub(super) fn release_action(
    me: &str,
    vip: IpAddr,
    claim: Option<&Lease>,
    still_wanted: bool,
) -> Option<Action> {
    let c = claim.filter(|c| holder(c) == Some(me))?.clone();
    Some(if still_wanted {
        Action::Clear(vip, c)
    } else {
        Action::Delete(vip, c)
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;
    use std::net::Ipv4Addr;

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

    fn claim(holder: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                ..Default::default()
            }),
        }
    }

    /// A settled, live, able node `me` among `live`, serving nothing.
    fn view(me: &str, live: &[&str]) -> View {
        View {
            me: me.into(),
            session: Some(1),
            able: true,
            settled: true,
            wanted_ever: true,
            lease_duration: Duration::ZERO,
            live: live.iter().map(|n| n.to_string()).collect(),
            serving: BTreeMap::new(),
        }
    }

    /// The live node the rendezvous choice names for `VIP`, and another one.
    fn preferred_and_other(live: &[&'static str]) -> (&'static str, &'static str) {
        let p = choose(VIP, live.iter().copied()).unwrap_or_default();
        let o = live.iter().copied().find(|n| *n != p).unwrap_or_default();
        (p, o)
    }

    fn decide_one(v: &View, eligible: Option<&[&str]>, c: Option<Lease>) -> Decision {
        let wanted: Wanted = [(
            VIP,
            eligible.map(|e| e.iter().map(|n| n.to_string()).collect()),
        )]
        .into();
        let claims: BTreeMap<IpAddr, Lease> = c.into_iter().map(|c| (VIP, c)).collect();
        v.decide(&wanted, &claims, &BTreeMap::new())
    }

    #[test]
    fn the_preferred_node_only_asks_whether_another_owner_lapsed() {
        let (p, o) = preferred_and_other(&["n1", "n2", "n3"]);
        // Claimed by `o`: the preferred node `p` may take it only once `o`'s node lease has
        // lapsed (the pass confirms that with a fresh read: a live owner keeps its VIPs).
        let d = decide_one(&view(p, &["n1", "n2", "n3"]), None, Some(claim(Some(o))));
        assert_eq!(d.steps, vec![(VIP, Step::Takeover(o.into()))]);
        // The owner itself does nothing while it serves in this session.
        let mut v = view(o, &["n1", "n2", "n3"]);
        v.serving.insert(VIP, 1);
        let d = decide_one(&v, None, Some(claim(Some(o))));
        assert!(d.steps.is_empty() && d.not_ours.is_empty());
    }

    #[test]
    fn an_owner_rewrites_after_a_fence_gap_and_releases_when_ineligible() {
        let mut v = view("n1", &["n1"]);
        v.serving.insert(VIP, 0);
        let d = decide_one(&v, None, Some(claim(Some("n1"))));
        assert_eq!(d.steps, vec![(VIP, Step::Rewrite)]);
        let d = decide_one(&v, Some(&["n2"]), Some(claim(Some("n1"))));
        assert_eq!(d.steps, vec![(VIP, Step::Release)]);
        v.able = false;
        let d = decide_one(&v, None, Some(claim(Some("n1"))));
        assert_eq!(d.steps, vec![(VIP, Step::Release)]);
    }

    #[test]
    fn only_the_preferred_settled_node_takes_a_free_vip() {
        let (p, o) = preferred_and_other(&["n1", "n2"]);
        let d = decide_one(&view(p, &["n1", "n2"]), None, None);
        assert_eq!(d.steps, vec![(VIP, Step::Create)]);
        let d = decide_one(&view(p, &["n1", "n2"]), None, Some(claim(None)));
        assert_eq!(d.steps, vec![(VIP, Step::Rewrite)]);
        let d = decide_one(&view(o, &["n1", "n2"]), None, None);
        assert!(d.steps.is_empty());
        let mut v = view(p, &["n1", "n2"]);
        v.settled = false;
        assert!(decide_one(&v, None, None).steps.is_empty());
        v.settled = true;
        v.session = None;
        assert!(decide_one(&v, None, None).steps.is_empty());
        // Ineligible nodes are not candidates: `o` is preferred among the eligible.
        let d = decide_one(&view(o, &["n1", "n2"]), Some(&[o]), None);
        assert_eq!(d.steps, vec![(VIP, Step::Create)]);
    }

    #[test]
    fn a_served_vip_claimed_by_another_node_is_not_ours() {
        let (p, o) = preferred_and_other(&["n1", "n2"]);
        let mut v = view(o, &["n1", "n2"]);
        v.serving.insert(VIP, 1);
        let d = decide_one(&v, None, Some(claim(Some(p))));
        assert_eq!(d.not_ours, vec![VIP]);
        assert!(d.steps.is_empty());
    }

    #[test]
    fn a_stale_claim_waits_for_the_first_services_and_is_released_by_its_server() {
        let mut unwanted = BTreeMap::new();
        let mut v = view("n1", &["n1"]);
        v.wanted_ever = false;
        assert_eq!(v.stale(VIP, &claim(None), &mut unwanted), Stale::Keep);
        assert!(unwanted.is_empty(), "no clock before the first Services");
        v.serving.insert(VIP, 1);
        assert_eq!(
            v.stale(VIP, &claim(Some("n1")), &mut unwanted),
            Stale::Release
        );
        v.wanted_ever = true;
        v.serving.clear();
        assert_eq!(
            v.stale(VIP, &claim(Some("n1")), &mut unwanted),
            Stale::Delete
        );
        assert_eq!(
            v.stale(VIP, &claim(Some("n9")), &mut unwanted),
            Stale::DeleteIfLapsed("n9".into())
        );
        v.lease_duration = Duration::from_secs(3600);
        unwanted.clear();
        assert_eq!(v.stale(VIP, &claim(None), &mut unwanted), Stale::Keep);
        assert!(unwanted.contains_key(&VIP));
    }

    #[test]
    fn only_our_claims_are_handed_on() {
        let ours = claim(Some("n1"));
        assert!(matches!(
            release_action("n1", VIP, Some(&ours), true),
            Some(Action::Clear(VIP, _))
        ));
        assert!(matches!(
            release_action("n1", VIP, Some(&ours), false),
            Some(Action::Delete(VIP, _))
        ));
        assert!(release_action("n1", VIP, Some(&claim(Some("n2"))), true).is_none());
        assert!(release_action("n1", VIP, None, true).is_none());
        let releasing: BTreeMap<IpAddr, Instant> = [(VIP, Instant::now())].into();
        assert!(due(&releasing, &[VIP]).is_empty());
        assert_eq!(due(&releasing, &[]), vec![VIP]);
    }
}
