//! Who owns the VIPs: one interface over the elections (single, the shared Lease, per-VIP
//! Leases, rendezvous placement, Raft) and the Kubernetes source of Services.
use std::{collections::BTreeSet, net::IpAddr, path::Path, sync::Arc};

use crate::{
    config::{self, Config},
    election::{
        lease::{ElectionError, LeaseConfig},
        per_vip::VipLeases,
        raft::{RaftConfig, RaftElector},
        rendezvous::Rendezvous,
    },
    k8s::controller::View,
    metrics::State,
    model::Desired,
    reconcile::Claims,
};

use super::{
    plan::{self, ServiceVips},
    DaemonError,
};

/// Who owns the VIPs: this node always, or the holder of a Lease (fenced); service VIPs
/// elected one lease each (`per-vip`, and always for `externalTrafficPolicy: Local`), or
/// placed by rendezvous hashing under one lease per node (`rendezvous`, Local VIPs too).
pub(super) struct Ownership {
    pub(super) leader: tokio::sync::watch::Receiver<bool>,
    pub(super) stop: Option<tokio::sync::watch::Sender<bool>>,
    pub(super) task: Option<tokio::task::JoinHandle<()>>,
    /// Services (and their VIPs) from the API server, when served.
    pub(super) k8s: Option<tokio::sync::watch::Receiver<std::sync::Arc<View>>>,
    pub(super) k8s_task: Option<tokio::task::JoinHandle<()>>,
    pub(super) service_election: config::ServiceElection,
    pub(super) vip_leases: Option<VipLeases>,
    /// `service_election: rendezvous`: every service VIP (instead of `vip_leases`).
    pub(super) placement: Option<Rendezvous>,
    /// False while the uplink is gone: every lease is handed on instead of left to expire.
    pub(super) able: tokio::sync::watch::Sender<bool>,
    /// `election.mode: raft`: the elector, whose lease also bounds the data plane's dead-man.
    pub(super) raft: Option<RaftElector>,
    /// Whether this node's control plane is fit to serve (lease: the elector's readiness
    /// check; single: always): BGP ECMP announces the control-plane VIP from every such node.
    pub(super) healthy: tokio::sync::watch::Receiver<bool>,
}

impl Ownership {
    /// Single or Raft: no API server, no per-VIP leases, healthy while able.
    pub(super) fn without_kubernetes(
        leader: tokio::sync::watch::Receiver<bool>,
        raft: Option<RaftElector>,
    ) -> Ownership {
        let able = tokio::sync::watch::Sender::new(true);
        Ownership {
            leader,
            stop: None,
            task: None,
            k8s: None,
            k8s_task: None,
            service_election: config::ServiceElection::Shared,
            vip_leases: None,
            placement: None,
            healthy: able.subscribe(),
            able,
            raft,
        }
    }

    pub(super) async fn start(cfg: &Config, state: &Arc<State>) -> Result<Ownership, DaemonError> {
        match &cfg.election {
            config::Election::Single => Ok(Ownership::single(state)),
            config::Election::Raft(rc) => Ownership::raft(rc, state).await,
            config::Election::Lease {
                kubeconfig,
                lease,
                services,
                service_election,
            } => {
                Ownership::lease(
                    kubeconfig.as_deref(),
                    &cfg.vips,
                    lease,
                    *services,
                    *service_election,
                    state,
                )
                .await
            }
        }
    }

    /// `election: single`: this node owns every VIP, for good.
    fn single(state: &State) -> Ownership {
        // The sender goes at once: the loop treats a closed channel as "never
        // changes" (leader for good).
        let (_tx, rx) = tokio::sync::watch::channel(true);
        state.leader.set(1);
        Ownership::without_kubernetes(rx, None)
    }

    /// `election: raft`: the elector among the configured peers, its status on `/metrics`.
    async fn raft(rc: &RaftConfig, state: &State) -> Result<Ownership, DaemonError> {
        let elector = RaftElector::start(rc.clone()).await?;
        if let Ok(mut r) = state.raft.write() {
            *r = Some(elector.status_source());
        }
        tracing::info!(id = rc.id, members = rc.peers.len(), heartbeat = ?rc.heartbeat, lease = ?rc.lease, "raft election started");
        Ok(Ownership::without_kubernetes(
            elector.leader(),
            Some(elector),
        ))
    }

    /// `election: lease`: the client, the Lease elector, and with `services` the Kubernetes
    /// source and the service VIPs' own election.
    async fn lease(
        kubeconfig: Option<&Path>,
        vips: &BTreeSet<IpAddr>,
        lease: &LeaseConfig,
        services: bool,
        service_election: config::ServiceElection,
        state: &Arc<State>,
    ) -> Result<Ownership, DaemonError> {
        let client = kube_client(kubeconfig, vips).await?;
        let able = tokio::sync::watch::Sender::new(true);
        // Unhealthy until the elector's first check says otherwise.
        let (healthy_tx, healthy) = tokio::sync::watch::channel(false);
        let elector = crate::election::lease::LeaseElector::new(client.clone(), lease.clone())?
            .with_able(able.subscribe())
            .with_healthy(healthy_tx);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "lease election started");
        let served = if services {
            ServiceSources::start(client, lease, service_election, &rx, &able, state)?
        } else {
            ServiceSources::default()
        };
        Ok(Ownership {
            leader: rx,
            stop: Some(stop),
            task: Some(tokio::spawn(elector.run(tx, stop_rx))),
            k8s: served.k8s,
            k8s_task: served.k8s_task,
            service_election,
            vip_leases: served.vip_leases,
            placement: served.placement,
            able,
            healthy,
            raft: None,
        })
    }

    pub(super) fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// How this node elects service VIPs (none without Services from the API server).
    pub(super) fn service_vips(&self) -> ServiceVips {
        match (&self.k8s, &self.placement) {
            (None, _) => ServiceVips::None,
            (Some(_), Some(_)) => ServiceVips::Rendezvous,
            (Some(_), None) if self.service_election == config::ServiceElection::PerVip => {
                ServiceVips::PerVip
            }
            (Some(_), None) => ServiceVips::Shared,
        }
    }

    /// The desired state and this node's claims from the current sources and election
    /// (`plan::plan`); tells the per-VIP elections which VIPs to compete for.
    pub(super) fn plan(&self, cfg: &Config) -> (Desired, Claims) {
        let view = self.k8s.as_ref().map(|rx| rx.borrow().clone());
        let held = self
            .vip_leases
            .as_ref()
            .map(|l| l.held.borrow())
            .or_else(|| self.placement.as_ref().map(|p| p.held.borrow()));
        let none = BTreeSet::new();
        let p = plan::plan(&plan::Inputs {
            cfg,
            view: view.as_deref(),
            services: self.service_vips(),
            leader: self.is_leader(),
            held: held.as_deref().unwrap_or(&none),
            fit: *self.healthy.borrow() && *self.able.borrow(),
        });
        drop((view, held));
        if let Some(l) = &self.vip_leases {
            l.want(p.compete);
        }
        if let Some(r) = &self.placement {
            r.want(p.placed);
        }
        (p.desired, p.claims)
    }

    /// Where this node learns that the VIPs it holds by a per-VIP election changed.
    pub(super) fn held_watch(&self) -> Option<tokio::sync::watch::Receiver<BTreeSet<IpAddr>>> {
        self.vip_leases
            .as_ref()
            .map(|l| l.held.clone())
            .or_else(|| self.placement.as_ref().map(|p| p.held.clone()))
    }

    /// What goes with each served VIP's announcement (pool and Service annotations).
    pub(super) fn routes(&self, served: &[IpAddr]) -> crate::bgp::Routes {
        let policies = self
            .k8s
            .as_ref()
            .map(|rx| rx.borrow().routes.clone())
            .unwrap_or_default();
        served
            .iter()
            .map(|v| (*v, policies.get(v).cloned().unwrap_or_default()))
            .collect()
    }

    /// Before the first BGP table goes out: wait (bounded) for what decides it, so a
    /// restarted daemon does not announce a partial table and End-of-RIB, which would make
    /// graceful-restart peers drop the routes it has not re-learnt yet.
    pub(super) async fn settle(&self, cfg: &Config) {
        let deadline = tokio::time::Instant::now() + SETTLE_MAX;
        if let Some(rx) = &self.k8s {
            let mut rx = rx.clone();
            let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
        }
        if let config::Election::Lease { lease, .. } = &cfg.election {
            // A restarted holder renews its own lease on its first round.
            let first_round = tokio::time::Instant::now() + lease.retry_period + lease.api_timeout;
            let mut leader = self.leader.clone();
            let _ =
                tokio::time::timeout_at(first_round.min(deadline), leader.wait_for(|l| *l)).await;
        }
    }

    /// Stop electing and release the leases (after the VIPs were released).
    pub(super) async fn stop(self) {
        if let Some(t) = self.k8s_task {
            t.abort();
        }
        if let Some(l) = self.vip_leases {
            l.stop().await;
        }
        if let Some(p) = self.placement {
            p.stop().await;
        }
        if let Some(s) = self.stop {
            let _ = s.send(true);
        }
        if let Some(t) = self.task {
            let _ = t.await;
        }
        // Leader: silent already (VIPs released), now hand over at once (TimeoutNow).
        if let Some(r) = self.raft {
            r.stop().await;
        }
    }
}

/// The longest the first BGP table waits for the sources and the election (see `settle`).
pub(super) const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// The client for the Lease election: the kubeconfig named, or the in-cluster/default one;
/// a kubeconfig naming one of our own VIPs is pointed at the local API server instead.
async fn kube_client(
    kubeconfig: Option<&Path>,
    vips: &BTreeSet<IpAddr>,
) -> Result<kube::Client, DaemonError> {
    let mut kcfg = match kubeconfig {
        Some(p) => {
            let read = |e| DaemonError::Kubeconfig {
                path: p.to_path_buf(),
                source: Box::new(e),
            };
            let kc = kube::config::Kubeconfig::read_from(p).map_err(read)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(read)?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| DaemonError::KubeInfer(Box::new(e)))?,
    };
    let named = kcfg.cluster_url.to_string();
    if crate::k8s::kubeconfig::elect_locally(&mut kcfg, vips) {
        tracing::info!(kubeconfig = %named, using = %kcfg.cluster_url, "the kubeconfig names a VIP; electing against the local API server");
    }
    kube::Client::try_from(kcfg).map_err(|e| DaemonError::KubeClient(Box::new(e)))
}

/// With `services`: the Kubernetes source of Services and the election of their VIPs
/// (per-VIP leases, or rendezvous placement); all `None` without.
#[derive(Default)]
struct ServiceSources {
    k8s: Option<tokio::sync::watch::Receiver<Arc<View>>>,
    k8s_task: Option<tokio::task::JoinHandle<()>>,
    vip_leases: Option<VipLeases>,
    placement: Option<Rendezvous>,
}

impl ServiceSources {
    fn start(
        client: kube::Client,
        lease: &LeaseConfig,
        service_election: config::ServiceElection,
        leader: &tokio::sync::watch::Receiver<bool>,
        able: &tokio::sync::watch::Sender<bool>,
        state: &Arc<State>,
    ) -> Result<ServiceSources, ElectionError> {
        let (out, k8s_rx) = tokio::sync::watch::channel(Arc::new(View::default()));
        let cc = crate::k8s::controller::ControllerConfig::new(&lease.identity);
        let task = tokio::spawn(crate::k8s::source::run(
            client.clone(),
            cc,
            leader.clone(),
            out,
            state.clone(),
        ));
        let (vip_leases, placement) = if service_election == config::ServiceElection::Rendezvous {
            let r = Rendezvous::start(
                client,
                lease.clone(),
                state.bus.owned.subscribe(),
                able.subscribe(),
            )?;
            (None, Some(r))
        } else {
            let l = VipLeases::start(
                client,
                lease.clone(),
                state.bus.owned.subscribe(),
                able.subscribe(),
            );
            (Some(l), None)
        };
        tracing::info!(service_election = ?service_election, "serving Services of type LoadBalancer");
        Ok(ServiceSources {
            k8s: Some(k8s_rx),
            k8s_task: Some(task),
            vip_leases,
            placement,
        })
    }
}
