//! A pass's services side: the services into the data plane before the VIPs, the ones that
//! failed alone reported, and the periodic upkeep of the load balancer (repair, next-hop
//! epoch). Apart from the claims because it touches only the load balancer, never an
//! address or an ARP answer.
use std::collections::BTreeMap;

use super::{services, Backend, Claims, ReconcileError, Reconciler, Unplaced};
use crate::model::{LbMode, Service};

impl Reconciler {
    /// Services first (the first packet to a newly owned VIP finds its backends), then the
    /// owned and routed VIPs.
    pub async fn converge(
        &mut self,
        services: &[Service],
        claims: &Claims,
    ) -> Result<(), ReconcileError> {
        self.apply_services(services).await?;
        self.apply(claims).await
    }

    /// Services into the data plane (XDP only; the kernel backend cannot balance, so the
    /// VIP's traffic reaches this node's own stack and that is said once in the log).
    pub async fn apply_services(&mut self, services: &[Service]) -> Result<(), ReconcileError> {
        match &mut self.backend {
            Backend::Xdp { lb, .. } => {
                let ch = lb.apply(&self.handle, services).await?;
                if !ch.is_empty() {
                    tracing::info!(
                        added = ch.added,
                        updated = ch.updated,
                        removed = ch.removed,
                        slots = ch.slots_written,
                        failed = ch.failed.len(),
                        "services applied"
                    );
                }
                self.report_unplaced(&ch.failed);
            }
            Backend::Kernel { .. } => {
                if services.iter().any(|s| s.mode != LbMode::Local) {
                    tracing::warn!("kernel data plane: services are not load-balanced; their traffic goes to this node's stack");
                }
            }
        }
        Ok(())
    }

    /// Services that failed alone: logged (each when it starts or stops failing, or its
    /// reason changes), counted, and published for the Kubernetes source to record as
    /// Events on the Services concerned.
    fn report_unplaced(&mut self, failed: &[(services::SvcKey, services::ServiceError)]) {
        let now: BTreeMap<Unplaced, String> = failed
            .iter()
            .map(|(k, e)| (Unplaced::of(k), crate::Chain(e).to_string()))
            .collect();
        let before = self.state.bus.unplaced.borrow().clone();
        if now == before {
            return;
        }
        for (u, why) in &now {
            if before.get(u) != Some(why) {
                self.state.service_failures.inc();
                tracing::error!(service = %u, error = %why, "service not applied (the others are)");
            }
        }
        for u in before.keys().filter(|u| !now.contains_key(u)) {
            tracing::info!(service = %u, "service applied after an earlier failure");
        }
        self.state.services_unplaced.set(now.len() as i64);
        self.state.bus.unplaced.send_replace(now);
    }

    /// Put back what the node lost around the services (see `LbSide::repair`).
    pub async fn repair(&mut self) {
        if let Backend::Xdp { lb, .. } = &mut self.backend {
            lb.repair(&self.handle).await;
        }
    }

    /// Start a new next-hop epoch (see `ServiceSync::tick_epoch`); failures are logged.
    pub fn tick_epoch(&mut self) {
        if let Backend::Xdp { lb, .. } = &mut self.backend {
            if let Err(e) = lb.sync.tick_epoch() {
                tracing::warn!(error = %crate::Chain(&e), "next-hop epoch not advanced");
            }
        }
    }
}
