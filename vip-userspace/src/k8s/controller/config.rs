//! Which Services this controller serves and as which node: fixed at start, read by every
//! step, so it sits apart from the state the steps change.
use k8s_openapi::api::core::v1::Service;

use super::{CLASS, KUBE_VIP_CLASS};

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node: String,
    /// Serve Services with `spec.loadBalancerClass` = our class.
    pub kube_vip_compat: bool,
    /// Also serve Services without a class.
    pub serve_unclassed: bool,
    pub pool_namespace: String,
    pub pool_name: String,
}

impl ControllerConfig {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            kube_vip_compat: true,
            serve_unclassed: true,
            pool_namespace: "kube-system".into(),
            pool_name: "kubevip".into(),
        }
    }

    pub fn serves(&self, svc: &Service) -> bool {
        let Some(spec) = &svc.spec else {
            return false;
        };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return false;
        }
        match spec.load_balancer_class.as_deref() {
            None => self.serve_unclassed,
            Some(CLASS) => true,
            Some(KUBE_VIP_CLASS) => self.kube_vip_compat,
            Some(_) => false,
        }
    }
}
