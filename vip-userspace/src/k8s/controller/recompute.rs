//! One Service recomputed: its allocation (leader), the status and holder writes it needs,
//! its BGP route policies and its model, kept as its result. Each step is a method taking
//! the Service it works on as a `Subject`, in the order the result depends on them: the
//! addresses first, since the holder, the routes and the model all follow from them.
use std::net::IpAddr;

use super::{view::Computed, Controller, Key, PassReport, Svc};
use crate::k8s::{
    translate::{compute_model, ready_nodes},
    writer::Write,
};

/// Writes issued for a Service, with the resourceVersion they were decided on: not
/// repeated while the cache still shows that version.
#[derive(Debug, Default)]
pub(super) struct Sent {
    status: Option<(Vec<IpAddr>, Option<String>)>,
    holder: Option<Option<String>>,
}

/// The Service a recompute works on, as the cache showed it when the recompute began.
struct Subject<'a> {
    key: &'a Key,
    svc: &'a Svc,
    rv: &'a Option<String>,
    /// `namespace/name`, for reports and logs.
    name: &'a str,
}

impl Controller {
    /// One Service: allocation (leader), status and holder writes, its model.
    pub(super) fn recompute(&mut self, k: &Key, report: &mut PassReport) {
        let Some(c) = self.svcs.get(k) else {
            return;
        };
        let (s, rv) = (c.svc.clone(), c.rv.clone());
        let name = format!("{}/{}", k.0, k.1);
        let t = Subject {
            key: k,
            svc: &s,
            rv: &rv,
            name: &name,
        };
        let mut ips = s.status.clone();
        if self.leader {
            self.allocate(&t, &mut ips, report);
        }
        if !ips.is_empty() && !self.leader {
            // Track the leader's allocations, so that leading later never hands out an
            // address a Service already has.
            self.ipam.restore(&s.request, &ips);
            self.known.insert(k.clone());
        }
        let vips: Vec<IpAddr> = ips
            .iter()
            .copied()
            .filter(|ip| crate::config::vip_allowed(*ip).is_ok())
            .collect();
        self.announce_holder(&t, &vips, report);
        let own_policy = self.own_policy(&t);
        let routes = self.routes(&vips, &own_policy);
        let result = self.computed(&t, vips, routes, !ips.is_empty());
        self.set_result(k, Some(result));
    }

    /// As leader: the Service's addresses from the IPAM into `ips`, a status write when they
    /// differ from what its status says, an Event when allocation fails anew.
    fn allocate(&mut self, t: &Subject, ips: &mut Vec<IpAddr>, report: &mut PassReport) {
        let k = t.key;
        match self.ipam.allocate(&t.svc.request) {
            Ok(got) => {
                self.known.insert(k.clone());
                self.failing.remove(k);
                let mut want = got.clone();
                want.sort();
                let mut have = ips.clone();
                have.sort();
                if want != have {
                    self.send_status(t, want, &got, report);
                    *ips = got;
                }
            }
            Err(e) => {
                let msg = crate::Chain(&e).to_string();
                if self.failing.get(k) != Some(&msg) {
                    self.event(k, t.svc, "Warning", "AllocationFailed", &msg);
                    self.failing.insert(k.clone(), msg.clone());
                }
                report.failed.push(format!("{}: {msg}", t.name));
            }
        }
    }

    /// The status write for a new allocation (`want`: `got` sorted), unless one was already
    /// issued for it at this resourceVersion.
    fn send_status(
        &mut self,
        t: &Subject,
        want: Vec<IpAddr>,
        got: &[IpAddr],
        report: &mut PassReport,
    ) {
        let k = t.key;
        let sent = self.sent.entry(k.clone()).or_default();
        let mark = Some((want, t.rv.clone()));
        if sent.status == mark {
            return;
        }
        sent.status = mark;
        let list: Vec<String> = got.iter().map(IpAddr::to_string).collect();
        let then = self.event_spec(
            &k.0,
            t.svc.object(k),
            "Normal",
            "IPAllocated",
            &format!("Assigned IP {}", list.join(", ")),
        );
        self.write(
            k,
            Write::Status {
                ips: got.to_vec(),
                then: Some(then),
            },
        );
        report.allocated.push(t.name.to_string());
    }

    /// The holder annotation (and an OwnerChanged Event) when this node holds one of the
    /// Service's VIPs and the annotation names another or none.
    fn announce_holder(&mut self, t: &Subject, vips: &[IpAddr], report: &mut PassReport) {
        let k = t.key;
        let holds = vips.iter().any(|v| self.held.contains(v));
        let before = t.svc.holder.as_deref();
        if !holds || before == Some(self.cfg.node.as_str()) {
            return;
        }
        // The VIP is advertised from here now: say so where operators look.
        let sent = self.sent.entry(k.clone()).or_default();
        if sent.holder.as_ref() == Some(t.rv) {
            return;
        }
        sent.holder = Some(t.rv.clone());
        let then = before.map(|b| {
            self.event_spec(
                &k.0,
                t.svc.object(k),
                "Normal",
                "OwnerChanged",
                &format!("VIP now held by {} (was {b})", self.cfg.node),
            )
        });
        if then.is_some() {
            report.owner_changed.push(t.name.to_string());
        }
        let node = self.cfg.node.clone();
        self.write(k, Write::Holder { node, then });
    }

    /// The Service's own BGP policy from its annotations; malformed ones are ignored, with a
    /// warning (and, as leader, an Event) once per new message.
    fn own_policy(&mut self, t: &Subject) -> crate::bgp::RoutePolicy {
        let k = t.key;
        match &t.svc.bgp {
            Ok(p) => {
                self.bad_annotations.remove(k);
                p.clone()
            }
            Err(msg) => {
                if self.bad_annotations.get(k) != Some(msg) {
                    tracing::warn!(service = %t.name, error = %msg, "BGP annotation ignored");
                    if self.leader {
                        self.event(k, t.svc, "Warning", "BadAnnotation", msg);
                    }
                    self.bad_annotations.insert(k.clone(), msg.clone());
                }
                crate::bgp::RoutePolicy::default()
            }
        }
    }

    /// Per VIP, its pool's policy refined by the Service's own (VIPs with none are left out).
    fn routes(
        &self,
        vips: &[IpAddr],
        own_policy: &crate::bgp::RoutePolicy,
    ) -> Vec<(IpAddr, crate::bgp::RoutePolicy)> {
        let mut routes = Vec::new();
        for v in vips {
            let p = self.ipam.pools().bgp_policy(*v).merged(own_policy);
            if p != crate::bgp::RoutePolicy::default() {
                routes.push((*v, p));
            }
        }
        routes
    }

    /// The Service's contribution to the view, from its EndpointSlices.
    fn computed(
        &self,
        t: &Subject,
        vips: Vec<IpAddr>,
        routes: Vec<(IpAddr, crate::bgp::RoutePolicy)>,
        with_address: bool,
    ) -> Computed {
        let k = t.key;
        let mine = self
            .by_service
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|n| self.slices.get(&(k.0.clone(), n.clone())));
        let ready = ready_nodes(t.svc, mine.clone());
        let (services, eligible) = compute_model(t.svc, mine, &vips, &self.cfg.node);
        Computed {
            services,
            eligible,
            ready,
            with_address,
            vips,
            routes,
        }
    }
}
