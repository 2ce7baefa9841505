//! Planning: from the sources (the file, the Kubernetes view) and the election, the desired
//! state and the VIPs this node claims (owned, and routed for BGP).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    config::Config,
    election::{self},
    model::Desired,
    reconcile::Claims,
};

use crate::{election::rendezvous::Wanted, k8s::controller::View};

/// How service VIPs are elected on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceVips {
    /// No Services from the API server: the file's VIPs only.
    None,
    /// With the shared lease (`shared`), except `externalTrafficPolicy: Local` VIPs, which
    /// are elected one lease each among the nodes with a ready endpoint.
    Shared,
    /// One lease each (`per-vip`).
    PerVip,
    /// Placed by rendezvous hashing under one lease per node (`rendezvous`).
    Rendezvous,
}

/// What one pass reads: the file, the Kubernetes view and the elections' state.
pub(crate) struct Inputs<'a> {
    pub cfg: &'a Config,
    /// Services from the API server, when served.
    pub view: Option<&'a View>,
    pub services: ServiceVips,
    /// This node holds the shared election (Lease or Raft; always with `single`).
    pub leader: bool,
    /// Service VIPs this node holds by its per-VIP or rendezvous election.
    pub held: &'a BTreeSet<IpAddr>,
    /// The control plane is healthy and the uplink is there (BGP ECMP announces only then).
    pub fit: bool,
}

/// What to apply, and what to tell the per-VIP elections.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub desired: Desired,
    pub claims: Claims,
    /// `per-vip` (and Local VIPs under `shared`): the VIPs to compete for, those this node
    /// may hold.
    pub compete: BTreeSet<IpAddr>,
    /// `rendezvous`: every service VIP, with the nodes that may hold it (`None`: any).
    pub placed: Wanted,
}

/// The desired state (the file's, plus Services from the API server) and the VIPs this node
/// claims in it: owned (the shared election's, plus those held by a per-VIP election that
/// this node may still hold) and, with BGP, routed (announced from here although not owned).
/// Pure: no I/O, no clock.
pub(crate) fn plan(i: &Inputs) -> Plan {
    let cfg = i.cfg;
    let desired = match i.view {
        Some(v) => Desired::from_sources(cfg, &v.services),
        None => Desired::from_config(cfg),
    };
    let single = individually(i);
    let placed = placed(i);
    let mut owned: BTreeSet<IpAddr> = if i.leader {
        let all = election::single::owned(&desired);
        if single.is_empty() && placed.is_empty() {
            all
        } else {
            all.into_iter()
                .filter(|v| !single.contains_key(v) && !placed.contains_key(v))
                .collect()
        }
    } else {
        BTreeSet::new()
    };
    if i.services == ServiceVips::Rendezvous {
        // Local: only while this node has a ready endpoint (the release follows).
        let here = |v: &IpAddr| i.view.and_then(|w| w.local.get(v)).copied().unwrap_or(true);
        owned.extend(
            i.held
                .iter()
                .filter(|v| placed.contains_key(v) && desired.vips.contains(v) && here(v)),
        );
    } else {
        owned.extend(
            i.held
                .iter()
                .filter(|v| single.get(v) == Some(&true) && desired.vips.contains(v)),
        );
    }
    let compete = single
        .iter()
        .filter(|(_, eligible)| **eligible)
        .map(|(v, _)| *v)
        .collect();
    let routed = match &cfg.bgp {
        Some(b) => {
            let none = BTreeMap::new();
            let local = i.view.map_or(&none, |v| &v.local);
            routed(&b.announce, cfg, &desired, local, i.fit)
                .difference(&owned)
                .copied()
                .collect()
        }
        None => BTreeSet::new(),
    };
    Plan {
        desired,
        claims: Claims { owned, routed },
        compete,
        placed,
    }
}

/// Service VIPs elected one lease each, and whether this node may hold them. The file's
/// VIPs (the control plane's) always follow the shared lease.
fn individually(i: &Inputs) -> BTreeMap<IpAddr, bool> {
    let Some(view) = i.view else {
        return BTreeMap::new();
    };
    if !matches!(i.services, ServiceVips::Shared | ServiceVips::PerVip) {
        return BTreeMap::new();
    }
    let per_vip = i.services == ServiceVips::PerVip;
    let mut out = BTreeMap::new();
    for s in view.services.iter() {
        if i.cfg.vips.contains(&s.vip) {
            continue;
        }
        if per_vip || view.local.contains_key(&s.vip) {
            out.insert(s.vip, view.local.get(&s.vip).copied().unwrap_or(true));
        }
    }
    out
}

/// `rendezvous`: every service VIP, with the nodes that may hold it (Local VIPs: the nodes
/// with a ready endpoint of each of its Local Services; others: any live node).
fn placed(i: &Inputs) -> Wanted {
    let (Some(view), ServiceVips::Rendezvous) = (i.view, i.services) else {
        return Wanted::default();
    };
    view.services
        .iter()
        .filter(|s| !i.cfg.vips.contains(&s.vip))
        .map(|s| {
            let eligible = view
                .local
                .contains_key(&s.vip)
                .then(|| view.eligible.get(&s.vip).cloned().unwrap_or_default());
            (s.vip, eligible)
        })
        .collect()
}

/// VIPs this node announces by BGP under `bgp.announce` besides those it owns:
/// - control plane (the file's VIPs), `ecmp`: every node whose control plane is healthy;
/// - Services, `ecmp`: `externalTrafficPolicy: Local` VIPs where this node has a ready
///   endpoint (`local`), and `Cluster` VIPs all of whose services are balanced in XDP
///   (dsr/nat), since every node's data plane sends their flows to the same backends.
///   `Cluster` VIPs in `local` mode stay with the owner.
pub fn routed(
    announce: &crate::bgp::AnnounceConfig,
    cfg: &Config,
    desired: &Desired,
    local: &BTreeMap<IpAddr, bool>,
    healthy: bool,
) -> BTreeSet<IpAddr> {
    use crate::bgp::AnnounceMode;
    let mut out = BTreeSet::new();
    for vip in &desired.vips {
        let wanted = if cfg.vips.contains(vip) {
            announce.control_plane == AnnounceMode::Ecmp && healthy
        } else if announce.services == AnnounceMode::Ecmp {
            match local.get(vip) {
                Some(eligible) => *eligible,
                None => {
                    let mut svcs = desired.services.iter().filter(|s| s.vip == *vip).peekable();
                    svcs.peek().is_some() && svcs.all(|s| s.mode != crate::model::LbMode::Local)
                }
            }
        } else {
            false
        };
        if wanted {
            out.insert(*vip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::{AnnounceConfig, AnnounceMode};
    use crate::{
        config,
        model::{LbMode, Service},
    };

    fn svc(vip: &str, port: u16, mode: LbMode) -> Service {
        Service {
            vip: vip.parse().unwrap(),
            port,
            proto: crate::model::Proto::Tcp,
            mode,
            backends: Vec::new().into(),
        }
    }

    #[test]
    fn who_announces_what() {
        use crate::model::LbMode::{Dsr, Local, Nat};
        let cfg = config::resolve(
            config::parse_file("interface: eth0\nvips: [192.0.2.1]\n").unwrap(),
            Default::default(),
        )
        .unwrap();
        // .10 Cluster dsr+nat, .11 Cluster with one local-mode port, .12 ETP Local with a
        // ready endpoint here, .13 ETP Local without.
        let k8s = vec![
            svc("192.0.2.10", 80, Dsr),
            svc("192.0.2.10", 443, Nat),
            svc("192.0.2.11", 80, Dsr),
            svc("192.0.2.11", 443, Local),
            svc("192.0.2.12", 80, Local),
            svc("192.0.2.13", 80, Dsr),
        ];
        let desired = Desired::from_sources(&cfg, &k8s.into());
        let local: BTreeMap<IpAddr, bool> = [
            ("192.0.2.12".parse().unwrap(), true),
            ("192.0.2.13".parse().unwrap(), false),
        ]
        .into();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let owner = AnnounceConfig::default();
        assert!(routed(&owner, &cfg, &desired, &local, true).is_empty());
        let ecmp = AnnounceConfig {
            control_plane: AnnounceMode::Ecmp,
            services: AnnounceMode::Ecmp,
        };
        assert_eq!(
            routed(&ecmp, &cfg, &desired, &local, true),
            [ip("192.0.2.1"), ip("192.0.2.10"), ip("192.0.2.12")].into()
        );
        // An unhealthy control plane withdraws its VIP only; services stay.
        assert_eq!(
            routed(&ecmp, &cfg, &desired, &local, false),
            [ip("192.0.2.10"), ip("192.0.2.12")].into()
        );
        let cp_only = AnnounceConfig {
            control_plane: AnnounceMode::Ecmp,
            services: AnnounceMode::Owner,
        };
        assert_eq!(
            routed(&cp_only, &cfg, &desired, &local, true),
            [ip("192.0.2.1")].into()
        );
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// The file's VIP .1; Services: .10 Cluster, .12 Local with a ready endpoint here (other
    /// nodes: n2), .13 Local without one here (n3 has one).
    fn fixture() -> (Config, View) {
        use crate::model::LbMode::Dsr;
        let cfg = config::resolve(
            config::parse_file("interface: eth0\nvips: [192.0.2.1]\n").unwrap(),
            Default::default(),
        )
        .unwrap();
        let view = View {
            services: vec![
                svc("192.0.2.10", 80, Dsr),
                svc("192.0.2.12", 80, Dsr),
                svc("192.0.2.13", 80, Dsr),
            ]
            .into(),
            local: [
                ("192.0.2.12".parse().unwrap(), true),
                ("192.0.2.13".parse().unwrap(), false),
            ]
            .into(),
            eligible: [
                (
                    "192.0.2.12".parse().unwrap(),
                    ["n1".to_string(), "n2".to_string()].into(),
                ),
                ("192.0.2.13".parse().unwrap(), ["n3".to_string()].into()),
            ]
            .into(),
            routes: Default::default(),
        };
        (cfg, view)
    }

    fn run(
        cfg: &Config,
        view: Option<&View>,
        services: ServiceVips,
        leader: bool,
        held: &[&str],
    ) -> Plan {
        let held = ips(held);
        plan(&Inputs {
            cfg,
            view,
            services,
            leader,
            held: &held,
            fit: true,
        })
    }

    #[test]
    fn the_shared_leader_owns_all_but_local_vips_which_it_holds_only_where_eligible() {
        let (cfg, view) = fixture();
        // Holding .12 (eligible) and .13 (no longer eligible here): only .12 stays owned.
        let p = run(
            &cfg,
            Some(&view),
            ServiceVips::Shared,
            true,
            &["192.0.2.12", "192.0.2.13"],
        );
        assert_eq!(
            p.claims.owned,
            ips(&["192.0.2.1", "192.0.2.10", "192.0.2.12"])
        );
        assert_eq!(p.compete, ips(&["192.0.2.12"]));
        assert!(p.placed.is_empty());
        assert!(p.claims.routed.is_empty(), "no BGP, nothing routed");
        assert_eq!(p.desired.services.len(), 3);
        // A follower owns only the Local VIP it holds.
        let p = run(
            &cfg,
            Some(&view),
            ServiceVips::Shared,
            false,
            &["192.0.2.12"],
        );
        assert_eq!(p.claims.owned, ips(&["192.0.2.12"]));
    }

    #[test]
    fn per_vip_competes_for_every_eligible_service_vip_and_owns_what_it_holds() {
        let (cfg, view) = fixture();
        let p = run(
            &cfg,
            Some(&view),
            ServiceVips::PerVip,
            true,
            &["192.0.2.10", "192.0.2.99"],
        );
        // The file's VIP follows the shared lease; .99 is held but no longer desired.
        assert_eq!(p.claims.owned, ips(&["192.0.2.1", "192.0.2.10"]));
        assert_eq!(p.compete, ips(&["192.0.2.10", "192.0.2.12"]));
        let p = run(&cfg, Some(&view), ServiceVips::PerVip, false, &[]);
        assert!(p.claims.owned.is_empty());
    }

    #[test]
    fn rendezvous_places_every_service_vip_with_its_eligible_nodes() {
        let (cfg, view) = fixture();
        let p = run(
            &cfg,
            Some(&view),
            ServiceVips::Rendezvous,
            true,
            &["192.0.2.10", "192.0.2.13"],
        );
        assert_eq!(
            p.placed.keys().copied().collect::<BTreeSet<_>>(),
            ips(&["192.0.2.10", "192.0.2.12", "192.0.2.13"])
        );
        assert_eq!(p.placed[&"192.0.2.10".parse().unwrap()], None);
        assert_eq!(
            p.placed[&"192.0.2.13".parse().unwrap()],
            Some(["n3".to_string()].into())
        );
        // Held .13 without a ready endpoint here: released; the file's VIP by leadership.
        assert_eq!(p.claims.owned, ips(&["192.0.2.1", "192.0.2.10"]));
        assert!(p.compete.is_empty());
    }

    #[test]
    fn without_kubernetes_the_leader_owns_the_files_vips_and_a_follower_nothing() {
        let (cfg, _) = fixture();
        let p = run(&cfg, None, ServiceVips::None, true, &[]);
        assert_eq!(p.claims.owned, ips(&["192.0.2.1"]));
        assert!(run(&cfg, None, ServiceVips::None, false, &[])
            .claims
            .owned
            .is_empty());
    }
}
