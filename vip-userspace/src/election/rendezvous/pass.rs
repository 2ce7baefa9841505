//! One placement pass: take a [`View`], let the claim rule decide, stop serving what must
//! stop *before* any API call, confirm lapses with fresh reads, then make the writes. The
//! order matters for the fence: `held` shrinks first, and a takeover is only written after a
//! GET of the owner's node lease agrees that it lapsed.
use std::{net::IpAddr, time::Instant};

use k8s_openapi::api::coordination::v1::Lease;

use super::{
    nodes::Lapse,
    objects::node_lease_name,
    rule::{due, release_action, Stale, Step, View},
    state::{publish, served, State},
    writes::Action,
    Wanted, RETIRE_WAIT,
};

impl State {
    /// One placement pass: decide, write (in parallel), record what came back.
    pub(super) async fn pass(&mut self, wanted: &Wanted, applied: &[IpAddr], able: bool) {
        let session = self.fence.session();
        if session.is_some() && self.first_live.is_none() {
            self.first_live = Some(Instant::now());
        }
        if !self.synced {
            return;
        }
        self.wanted_ever |= !wanted.is_empty();
        let view = self.view(session, able);
        let d = view.decide(wanted, &self.claims, &self.releasing);
        self.stop_serving_first(&d.steps, &d.not_ours);
        let mut actions = self.claim_actions(d.steps).await;
        actions.extend(self.stale_actions(&view, wanted).await);
        actions.extend(self.due_actions(wanted, applied));
        if actions.is_empty() {
            return;
        }
        let outcomes = self.execute(actions, session).await;
        self.record(outcomes);
    }

    fn view(&self, session: Option<u64>, able: bool) -> View {
        View {
            me: self.me().to_string(),
            session,
            able,
            settled: self
                .first_live
                .is_some_and(|t| t.elapsed() >= self.cfg.retry_period * 2),
            wanted_ever: self.wanted_ever,
            lease_duration: self.cfg.lease_duration,
            live: self.live_nodes(),
            // Only this task changes it (the watchdog reads), so the copy stays true for
            // every VIP the pass has not touched yet.
            serving: self.serving.lock().map(|m| m.clone()).unwrap_or_default(),
        }
    }

    /// VIPs that are not ours any more, or that we release, leave `held` at once.
    fn stop_serving_first(&self, steps: &[(IpAddr, Step)], not_ours: &[IpAddr]) {
        let releasing = steps.iter().any(|(_, s)| *s == Step::Release);
        if not_ours.is_empty() && !releasing {
            return;
        }
        for v in not_ours {
            self.stop_serving(*v);
        }
        for (vip, step) in steps {
            if *step == Step::Release {
                self.stop_serving(*vip);
            }
        }
        publish(&self.held, served(&self.serving, &self.fence));
    }

    /// The writes for the wanted VIPs' steps (a takeover only once the lapse is confirmed).
    async fn claim_actions(&mut self, steps: Vec<(IpAddr, Step)>) -> Vec<Action> {
        let mut actions = Vec::new();
        for (vip, step) in steps {
            match step {
                Step::Release => {
                    tracing::info!(%vip, "no longer eligible here; releasing the VIP");
                    self.release(vip);
                }
                Step::Create => actions.push(Action::Create(vip)),
                Step::Rewrite => {
                    if let Some(c) = self.claims.get(&vip) {
                        actions.push(Action::Write(vip, c.clone()));
                    }
                }
                Step::Takeover(o) => {
                    if self.lapsed(&o).await {
                        if let Some(c) = self.claims.get(&vip) {
                            tracing::info!(%vip, previous = %o, "owner's node lease lapsed; claiming the VIP");
                            actions.push(Action::Write(vip, c.clone()));
                        }
                    }
                }
            }
        }
        actions
    }

    /// Claims of VIPs that no longer exist: released if we serve them, else deleted by the
    /// node the rendezvous choice names once nobody can be serving them.
    async fn stale_actions(&mut self, view: &View, wanted: &Wanted) -> Vec<Action> {
        let claims = &self.claims;
        self.unwanted
            .retain(|v, _| claims.contains_key(v) && !wanted.contains_key(v));
        let stale: Vec<(IpAddr, Lease)> = self
            .claims
            .iter()
            .filter(|(v, _)| !wanted.contains_key(v))
            .map(|(v, c)| (*v, c.clone()))
            .collect();
        let mut actions = Vec::new();
        for (vip, c) in stale {
            if self.releasing.contains_key(&vip) {
                continue;
            }
            let gone = match view.stale(vip, &c, &mut self.unwanted) {
                Stale::Release => {
                    tracing::info!(%vip, "VIP gone; releasing its claim");
                    self.release(vip);
                    publish(&self.held, served(&self.serving, &self.fence));
                    false
                }
                Stale::Keep => false,
                Stale::Delete => true,
                Stale::DeleteIfLapsed(o) => self.lapsed(&o).await,
            };
            if gone {
                actions.push(Action::Delete(vip, c));
            }
        }
        actions
    }

    /// Hand on the claims of released VIPs the data plane has dropped (or that waited
    /// [`RETIRE_WAIT`]); a release whose claim is no longer ours is simply over.
    fn due_actions(&mut self, wanted: &Wanted, applied: &[IpAddr]) -> Vec<Action> {
        let mut actions = Vec::new();
        for vip in due(&self.releasing, applied) {
            if applied.contains(&vip) {
                tracing::warn!(%vip, "VIP still applied after {RETIRE_WAIT:?}; clearing its claim anyway");
            }
            let claim = self.claims.get(&vip);
            match release_action(self.me(), vip, claim, wanted.contains_key(&vip)) {
                Some(a) => actions.push(a),
                None => {
                    self.releasing.remove(&vip);
                }
            }
        }
        actions
    }

    /// Has `n`'s node lease lapsed by the fence rule: unchanged for its duration on our clock,
    /// confirmed by reading it again (the watch may be stale; a changed lease means live).
    async fn lapsed(&mut self, n: &str) -> bool {
        if n == self.me() {
            return false;
        }
        match self.nodes.lapse(n) {
            Lapse::Known(lapsed) => lapsed,
            Lapse::Read => {
                let name = node_lease_name(n);
                let get = self.api.get_opt(&name);
                let read = match tokio::time::timeout(self.cfg.api_timeout, get).await {
                    Ok(Ok(l)) => Some(l),
                    Ok(Err(e)) => {
                        tracing::debug!(node = n, error = %crate::Chain(&e), "node lease not read");
                        None
                    }
                    Err(_) => None,
                };
                self.nodes.confirm(n, read.as_ref().map(Option::as_ref))
            }
        }
    }
}
