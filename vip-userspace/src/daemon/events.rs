//! What the daemon's loop waits on, as one typed [`Event`]: signals, the elections, the
//! Kubernetes source, BGP and the timers. The loop in `mod.rs` matches on it.
use std::{future::Future, net::IpAddr, pin::Pin, time::Duration};

use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::watch,
    time::{interval, Interval, MissedTickBehavior},
};

use crate::shutdown;

use super::ownership::Ownership;

/// One thing that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// SIGTERM, SIGINT or SIGUSR2: leave the loop.
    Stop(shutdown::Stop),
    /// SIGHUP: re-read the file.
    Reload,
    /// The shared election (Lease or Raft) moved.
    Leadership,
    /// The Kubernetes view changed.
    Sources,
    /// The per-VIP or rendezvous election changed what this node holds.
    Held,
    /// The control plane's health changed (BGP ECMP announces follow it).
    Health,
    /// What the data plane serves changed (BGP announces follow it).
    Served,
    /// Time to renew the dead-man deadline.
    CheckIn,
    /// Time to look at the uplink, the conflict counters and the next-hop epoch.
    LinkCheck,
}

/// Everything the loop waits on, made once in `run`.
pub(super) struct Events {
    leader: Option<watch::Receiver<bool>>,
    /// A second handle on the Kubernetes source, to wait on while `Ownership` reads the value.
    sources: Option<watch::Receiver<std::sync::Arc<crate::k8s::controller::View>>>,
    held: Option<watch::Receiver<std::collections::BTreeSet<IpAddr>>>,
    /// Only with BGP.
    healthy: Option<watch::Receiver<bool>>,
    /// Only with a BGP speaker.
    served: Option<watch::Receiver<Vec<IpAddr>>>,
    check_in: Interval,
    link_check: Interval,
    hup: Option<Signal>,
}

impl Events {
    pub(super) fn new(
        ownership: &Ownership,
        served: Option<watch::Receiver<Vec<IpAddr>>>,
        bgp: bool,
        check_in_every: Duration,
        link_check_every: Duration,
    ) -> Events {
        let ticker = |every| {
            let mut t = interval(every);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        };
        Events {
            leader: Some(ownership.leader.clone()),
            sources: ownership.k8s.clone(),
            held: ownership.held_watch(),
            healthy: bgp.then(|| ownership.healthy.clone()),
            served: served.map(|mut s| {
                s.mark_unchanged();
                s
            }),
            check_in: ticker(check_in_every),
            link_check: ticker(link_check_every),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next event; a channel whose sender is gone is no longer waited on.
    pub(super) async fn next(
        &mut self,
        shutdown: &mut Pin<&mut impl Future<Output = shutdown::Stop>>,
    ) -> Event {
        loop {
            let hangup = async {
                match self.hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                sig = shutdown.as_mut() => return Event::Stop(sig),
                _ = hangup => return Event::Reload,
                c = changed(&mut self.leader) => if c { return Event::Leadership },
                c = changed(&mut self.sources) => if c { return Event::Sources },
                c = changed(&mut self.held) => if c { return Event::Held },
                c = changed(&mut self.healthy) => if c { return Event::Health },
                c = changed(&mut self.served) => if c {
                    if let Some(s) = self.served.as_mut() {
                        s.mark_unchanged();
                    }
                    return Event::Served;
                },
                _ = self.check_in.tick() => return Event::CheckIn,
                _ = self.link_check.tick() => return Event::LinkCheck,
            }
        }
    }
}

/// A watch channel whose sender is gone never changes again: it becomes `None` (pending
/// forever) instead of failing at once on every turn of the loop, which would spin it.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> bool {
    let changed = match rx.as_mut() {
        Some(r) => r.changed().await.is_ok(),
        None => std::future::pending().await,
    };
    if !changed {
        *rx = None;
    }
    changed
}
