//! The desired state every front-end (the YAML file now, Kubernetes later) produces and the
//! reconciler applies.
use std::{collections::BTreeSet, net::Ipv4Addr};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub vips: BTreeSet<Ipv4Addr>,
    pub services: Vec<crate::config::Service>,
}

impl Desired {
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self::from_sources(cfg, &[])
    }

    /// The file's VIPs and services plus those coming from Kubernetes Services.
    pub fn from_sources(cfg: &crate::config::Config, k8s: &[crate::config::Service]) -> Self {
        let mut vips = cfg.vips.clone();
        vips.extend(k8s.iter().map(|s| s.vip));
        let mut services = cfg.services.clone();
        // The file's entry wins over a Service's on the same (VIP, port, protocol), and the
        // first Service's over a later one's: a set of those taken, not a scan per Service.
        let mut taken: std::collections::HashSet<(std::net::Ipv4Addr, u16, crate::config::Proto)> =
            services.iter().map(|x| (x.vip, x.port, x.proto)).collect();
        services.reserve(k8s.len());
        for s in k8s {
            if taken.insert((s.vip, s.port, s.proto)) {
                services.push(s.clone());
            }
        }
        Self { vips, services }
    }
}
