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
        for s in k8s {
            if !services
                .iter()
                .any(|x| x.vip == s.vip && x.port == s.port && x.proto == s.proto)
            {
                services.push(s.clone());
            }
        }
        Self { vips, services }
    }
}
