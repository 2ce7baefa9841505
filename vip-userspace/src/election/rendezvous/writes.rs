//! The claim writes: each decided [`Action`] made against the API server, in parallel, and
//! its [`Outcome`] recorded in the caches. Every write is conditional (a create fails if the
//! claim exists, a replace carries the resourceVersion read, a delete has it as its
//! precondition), so of two nodes writing one claim only one succeeds.
use std::{net::IpAddr, time::Duration};

use futures::{stream, StreamExt};
use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use kube::{
    api::{DeleteParams, PostParams, Preconditions},
    Api,
};

use super::{
    objects::{claim_name, clear_claim, new_claim, take_claim},
    state::State,
    PARALLEL,
};

/// One claim write to make, on the claim as last seen.
pub(super) enum Action {
    Create(IpAddr),
    /// Take the claim (free, or its holder lapsed), or re-write ours in a new session.
    Write(IpAddr, Lease),
    /// Release: clear the holder (VIP still exists) or delete the claim.
    Clear(IpAddr, Lease),
    Delete(IpAddr, Lease),
}

pub(super) enum Outcome {
    /// Ours now, in the session the write was made in.
    Claimed(IpAddr, Lease, u64),
    /// Released (cleared, deleted, or already gone / changed by someone else).
    Released(IpAddr, Option<Lease>),
    /// Someone else wrote first (409): the claim as read again just after (`None`: absent or
    /// unreadable), so a missed watch event cannot make us retry a stale write forever.
    Lost(IpAddr, Option<Option<Lease>>),
    Failed(IpAddr, String),
}

/// What every write needs: the API, who we are, where, and how long a call may take.
#[derive(Clone)]
struct Writer {
    api: Api<Lease>,
    me: String,
    ns: String,
    timeout: Duration,
}

impl Writer {
    /// `session`: the fence session a claim is written in (`None`: closed, so only releases
    /// go out).
    async fn act(&self, a: Action, session: Option<u64>) -> Outcome {
        let now = MicroTime(Timestamp::now());
        match a {
            Action::Create(vip) => {
                let Some(s) = session else {
                    return Outcome::Failed(vip, "fence closed".into());
                };
                let l = new_claim(vip, &self.me, &self.ns, now);
                let r =
                    tokio::time::timeout(self.timeout, self.api.create(&PostParams::default(), &l))
                        .await;
                self.claimed(vip, r, s).await
            }
            Action::Write(vip, mut l) => {
                let Some(s) = session else {
                    return Outcome::Failed(vip, "fence closed".into());
                };
                take_claim(&mut l, &self.me, now);
                let r = self.replace(vip, &l).await;
                self.claimed(vip, r, s).await
            }
            Action::Clear(vip, mut l) => {
                clear_claim(&mut l, now);
                let r = self.replace(vip, &l).await;
                self.released(vip, r.map(|r| r.map(Some)))
            }
            Action::Delete(vip, l) => {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: l.metadata.resource_version.clone(),
                        uid: l.metadata.uid.clone(),
                    }),
                    ..Default::default()
                };
                let r = tokio::time::timeout(self.timeout, self.api.delete(&claim_name(vip), &dp))
                    .await;
                self.released(vip, r.map(|r| r.map(|_| None)))
            }
        }
    }

    async fn replace(
        &self,
        vip: IpAddr,
        l: &Lease,
    ) -> Result<Result<Lease, kube::Error>, tokio::time::error::Elapsed> {
        let pp = PostParams::default();
        tokio::time::timeout(self.timeout, self.api.replace(&claim_name(vip), &pp, l)).await
    }

    async fn claimed(
        &self,
        vip: IpAddr,
        r: Result<Result<Lease, kube::Error>, tokio::time::error::Elapsed>,
        session: u64,
    ) -> Outcome {
        match r {
            Ok(Ok(l)) => Outcome::Claimed(vip, l, session),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                let name = claim_name(vip);
                let get = self.api.get_opt(&name);
                let now = match tokio::time::timeout(self.timeout, get).await {
                    Ok(Ok(l)) => Some(l),
                    _ => None,
                };
                Outcome::Lost(vip, now)
            }
            Ok(Err(e)) => Outcome::Failed(vip, crate::Chain(&e).to_string()),
            Err(e) => Outcome::Failed(vip, format!("timed out: {e}")),
        }
    }

    fn released<T>(
        &self,
        vip: IpAddr,
        r: Result<Result<Option<Lease>, kube::Error>, T>,
    ) -> Outcome {
        match r {
            Ok(Ok(l)) => Outcome::Released(vip, l),
            // Gone, or changed by someone else: nothing of ours is left to release.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => {
                Outcome::Released(vip, None)
            }
            Ok(Err(e)) => Outcome::Failed(vip, crate::Chain(&e).to_string()),
            Err(_) => Outcome::Failed(vip, format!("timed out after {:?}", self.timeout)),
        }
    }
}

impl State {
    /// Make the writes, [`PARALLEL`] at a time.
    pub(super) async fn execute(&self, actions: Vec<Action>, session: Option<u64>) -> Vec<Outcome> {
        let w = Writer {
            api: self.api.clone(),
            me: self.me().to_string(),
            ns: self.cfg.namespace.clone(),
            timeout: self.cfg.api_timeout,
        };
        stream::iter(actions)
            .map(|a| {
                let w = w.clone();
                async move { w.act(a, session).await }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await
    }

    /// Take what the writes returned into the caches and into what this node serves.
    pub(super) fn record(&mut self, outcomes: Vec<Outcome>) {
        for o in outcomes {
            match o {
                Outcome::Claimed(vip, l, s) => {
                    tracing::info!(%vip, claim = %claim_name(vip), "VIP claimed");
                    self.claims.insert(vip, l);
                    if let Ok(mut m) = self.serving.lock() {
                        m.insert(vip, s);
                    }
                }
                Outcome::Released(vip, l) => {
                    tracing::info!(%vip, "VIP claim released");
                    self.releasing.remove(&vip);
                    self.stop_serving(vip);
                    match l {
                        Some(l) => self.claims.insert(vip, l),
                        None => self.claims.remove(&vip),
                    };
                }
                Outcome::Lost(vip, now) => {
                    tracing::debug!(%vip, "another node wrote the claim first");
                    self.stop_serving(vip);
                    match now {
                        Some(Some(l)) => {
                            self.claims.insert(vip, l);
                        }
                        Some(None) => {
                            self.claims.remove(&vip);
                        }
                        None => {}
                    }
                }
                Outcome::Failed(vip, e) => {
                    tracing::warn!(%vip, error = %e, "claim write failed; retried next pass");
                }
            }
        }
    }
}
