//! [`LeaseElector`]: the client-go rounds on one Lease (read, create, follow, or take it
//! with the resourceVersion read), release on shutdown, and the loop that runs them.
use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api};

use super::{
    fence::{publish, Fence},
    ElectionError, LeaseConfig,
};

/// What we last saw of the lease, and when (on our clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew: Option<Timestamp>,
    rv: Option<String>,
    duration_s: Option<i32>,
}

pub struct LeaseElector {
    api: Api<Lease>,
    client: kube::Client,
    cfg: LeaseConfig,
    observed: Option<(Observed, Instant)>,
    fence: std::sync::Arc<Fence>,
    /// How long to leave a free lease to others before taking it (see `with_patience`).
    patience: Option<Patience>,
    free_since: Option<Instant>,
    /// Labels written on the lease (so watchers can select it).
    labels: std::collections::BTreeMap<String, String>,
    /// While false this node can't serve (its uplink is gone): hold nothing, compete for nothing.
    able: Option<tokio::sync::watch::Receiver<bool>>,
    /// Whether this node may lead (uplink up, API server ready when gated), published each
    /// round: BGP's ECMP mode announces the control-plane VIP from every such node.
    healthy: Option<tokio::sync::watch::Sender<bool>>,
}

/// Asked with `true` each round the lease is seen free: how long this node lets it lie for
/// others first (the caller may count it as claimed); with `false` once it is held by anyone
/// (the claim ends; the answer is ignored).
pub type Patience = std::sync::Arc<dyn Fn(bool) -> Duration + Send + Sync>;

fn observe(l: &Lease) -> Observed {
    let spec = l.spec.clone().unwrap_or_default();
    Observed {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renew: spec.renew_time.map(|t| t.0),
        rv: l.metadata.resource_version.clone(),
        duration_s: spec.lease_duration_seconds,
    }
}

impl LeaseElector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Result<Self, ElectionError> {
        cfg.validate()?;
        let fence = std::sync::Arc::new(Fence::new(cfg.renew_deadline));
        Ok(Self {
            api: Api::namespaced(client.clone(), &cfg.namespace),
            client,
            cfg,
            observed: None,
            fence,
            patience: None,
            free_since: None,
            labels: Default::default(),
            able: None,
            healthy: None,
        })
    }

    /// Per-VIP leases: a node already holding many VIPs waits longer before taking a free
    /// one, so VIPs spread over the nodes instead of all going to the fastest.
    pub fn with_patience(mut self, p: Patience) -> Self {
        self.patience = Some(p);
        self
    }

    /// Write `labels` on the lease (when creating it, and on every write if missing).
    pub fn with_labels(mut self, labels: std::collections::BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// The fence, for callers that act on leadership themselves.
    pub fn fence(&self) -> std::sync::Arc<Fence> {
        self.fence.clone()
    }

    /// Step down and stay out while `able` is false (a node without its uplink hands the
    /// lease on at once instead of letting it expire).
    pub fn with_able(mut self, able: tokio::sync::watch::Receiver<bool>) -> Self {
        self.able = Some(able);
        self
    }

    /// Publish, each round, whether this node is fit to lead (see `healthy`).
    pub fn with_healthy(mut self, healthy: tokio::sync::watch::Sender<bool>) -> Self {
        self.healthy = Some(healthy);
        self
    }

    /// Whether to leave a free (absent, released or expired) lease to others this round.
    fn waiting(&mut self) -> bool {
        let Some(p) = &self.patience else {
            return false;
        };
        let since = *self.free_since.get_or_insert_with(Instant::now);
        since.elapsed() < p(true)
    }

    fn not_free(&mut self) {
        self.free_since = None;
        if let Some(p) = &self.patience {
            p(false);
        }
    }

    /// Leader, fenced: a successful renewal no longer ago than the renew deadline.
    pub fn is_leader(&self) -> bool {
        self.fence.is_leader()
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ElectionError> {
        match tokio::time::timeout(self.cfg.api_timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ElectionError::Timeout(self.cfg.api_timeout)),
        }
    }

    fn spec(&self, old: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours = old
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| h == self.cfg.identity);
        let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            // Whole seconds on the wire, rounded up: followers then wait at least the
            // configured duration, and the fence (renew deadline) stays inside it.
            lease_duration_seconds: Some(
                self.cfg.lease_duration.as_secs_f64().ceil().max(1.0) as i32
            ),
            acquire_time: if ours {
                old.and_then(|s| s.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..Default::default()
        }
    }

    /// Whether the API server answers `/readyz` with 200 within the API timeout.
    pub async fn apiserver_ready(&self) -> bool {
        let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
            return false;
        };
        matches!(
            tokio::time::timeout(self.cfg.api_timeout, self.client.request_text(req)).await,
            Ok(Ok(_))
        )
    }

    /// One client-go round. Returns whether we hold the lease after it (unfenced view; use
    /// `is_leader` for acting).
    pub async fn round(&mut self) -> Result<bool, ElectionError> {
        let now = Timestamp::now();
        let got = self.call(self.api.get_opt(&self.cfg.name)).await?;
        let Some(lease) = got else {
            if self.waiting() {
                return Ok(false);
            }
            return self.create(now).await;
        };
        let seen = observe(&lease);
        let changed = self.observed.as_ref().is_none_or(|(o, _)| *o != seen);
        if changed {
            self.observed = Some((seen.clone(), Instant::now()));
        }
        let holder_is_us = seen.holder.as_deref() == Some(self.cfg.identity.as_str());
        if !holder_is_us {
            if self.held_by_other(&seen) {
                self.fence.set(None);
                self.not_free();
                return Ok(false);
            }
            if self.waiting() {
                return Ok(false);
            }
        }
        self.take(&lease, now).await
    }

    /// Whether another identity holds the lease and it has not expired by our clock since
    /// we last saw it change.
    fn held_by_other(&self, seen: &Observed) -> bool {
        if let (Some(_), Some((_, at))) = (&seen.holder, &self.observed) {
            let dur = Duration::from_secs(seen.duration_s.unwrap_or(15).max(1) as u64);
            if at.elapsed() < dur {
                return true;
            }
        }
        false
    }

    /// The lease does not exist: create it with ourselves as holder (a 409 means another
    /// node created it first).
    async fn create(&mut self, now: Timestamp) -> Result<bool, ElectionError> {
        let new = Lease {
            metadata: ObjectMeta {
                name: Some(self.cfg.name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
                ..Default::default()
            },
            spec: Some(self.spec(None, now)),
        };
        let sent = Instant::now();
        match self
            .call(self.api.create(&PostParams::default(), &new))
            .await
        {
            Ok(l) => Ok(self.won(&l, sent)),
            Err(ElectionError::Api(kube::Error::Api(s))) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Renew the lease we hold, or take a free one: a PUT with the resourceVersion read.
    async fn take(&mut self, lease: &Lease, now: Timestamp) -> Result<bool, ElectionError> {
        let mut update = lease.clone();
        update.spec = Some(self.spec(lease.spec.as_ref(), now));
        if !self.labels.is_empty() {
            let l = update.metadata.labels.get_or_insert_with(Default::default);
            for (k, v) in &self.labels {
                l.insert(k.clone(), v.clone());
            }
        }
        // The fence counts from before the write: the renewal can only have been committed
        // after this instant, so followers (who time it from when they saw it) never see it
        // earlier than the fence assumes.
        let sent = Instant::now();
        match self
            .call(
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &update),
            )
            .await
        {
            Ok(l) => Ok(self.won(&l, sent)),
            // Someone else wrote first: they lead, we follow.
            Err(ElectionError::Api(kube::Error::Api(s))) if s.code == 409 => {
                self.fence.set(None);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn won(&mut self, l: &Lease, sent: Instant) -> bool {
        self.not_free();
        self.observed = Some((observe(l), Instant::now()));
        self.fence.set(Some(sent));
        true
    }

    /// Give the lease up (shutdown): followers may take it after one second instead of a
    /// whole lease duration. We stop acting as leader first.
    pub async fn release(&mut self) -> Result<(), ElectionError> {
        let held = self.fence.set(None);
        if !held {
            return Ok(());
        }
        let Some(mut lease) = self.call(self.api.get_opt(&self.cfg.name)).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.cfg.identity.as_str());
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        self.call(
            self.api
                .replace(&self.cfg.name, &PostParams::default(), &lease),
        )
        .await?;
        Ok(())
    }

    /// Run rounds every retry period until `stop` fires, then release. A watchdog publishes
    /// the fenced leadership on `tx` within 10 ms of every change, independently of API calls
    /// in flight (a hung call must not keep a fenced-off leader answering).
    pub async fn run(
        mut self,
        tx: tokio::sync::watch::Sender<bool>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let fence = self.fence.clone();
        let tx = std::sync::Arc::new(tx);
        let publisher = {
            let tx = tx.clone();
            tokio::spawn(async move { fence.watch(&tx).await })
        };
        let mut was_ready = true;
        loop {
            let able = self.able.as_ref().is_none_or(|a| *a.borrow());
            let ready = able && (!self.cfg.readyz_gate || self.apiserver_ready().await);
            if let Some(h) = &self.healthy {
                h.send_if_modified(|v| std::mem::replace(v, ready) != ready);
            }
            if ready != was_ready {
                tracing::warn!(lease = %self.cfg.name, ready, able, "able to lead changed (uplink, or API server readiness)");
                was_ready = ready;
            }
            if !ready {
                // Step down (silent at once, lease handed on) and stay out of the race.
                if let Err(e) = self.release().await {
                    tracing::warn!(lease = %self.cfg.name, error = %crate::Chain(&e), "lease not released");
                }
            } else {
                tokio::select! {
                    r = self.round() => {
                        if let Err(e) = r {
                            tracing::warn!(lease = %self.cfg.name, error = %crate::Chain(&e), "lease round failed");
                        }
                        // A won lease is acted on now, not at the publisher's next tick:
                        // that tick would be most of the 10 ms takeover budget.
                        publish(&tx, self.fence.is_leader());
                    }
                    _ = stop.changed() => break,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
                _ = stop.changed() => break,
            }
        }
        publisher.abort();
        tx.send_replace(false);
        if let Err(e) = self.release().await {
            tracing::warn!(lease = %self.cfg.name, error = %crate::Chain(&e), "lease not released");
        }
    }
}
