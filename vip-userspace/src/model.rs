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
        Self {
            vips: cfg.vips.clone(),
            services: cfg.services.clone(),
        }
    }
}
