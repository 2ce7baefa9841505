//! The channels between the daemon's tasks. Every one is a `tokio::sync::watch` (the latest
//! value wins: a slow reader skips to the newest state instead of queueing history).
//!
//! ```text
//!  elections ──leader, held, healthy──► daemon loop ──plan──► reconciler ──► data plane
//!      ▲                                   ▲    │                │
//!      │ able (uplink there)               │    │ wanted         │ owned, served,
//!      └───────────────────────────────────┘    ▼ (per-VIP)      │ conflicts, unplaced
//!  k8s source ──view──► daemon loop       per-VIP / rendezvous   ▼
//!      ▲                                   elections        Bus (this module)
//!      └──────── owned, conflicts, unplaced ◄──────────────────┤
//!  BGP speaker ◄── served ──────────────────────────────────────┤
//!  /metrics, vip status ◄── owned ──────────────────────────────┘
//! ```
//!
//! What the reconciler publishes lives here, in [`Bus`] (one per daemon, in
//! `metrics::State` so the metrics server reads it too). The election's own channels
//! (`leader`, `held`, `healthy`, `able`, `wanted`) and the Kubernetes view are made where
//! their task starts (`daemon::ownership`) and waited on by the loop (`daemon::events`).
use std::{collections::BTreeMap, net::IpAddr};

use tokio::sync::watch;

use crate::reconcile::Unplaced;

/// What the reconciler applied, for everyone who acts on it.
#[derive(Default)]
pub struct Bus {
    /// VIPs applied in the data plane (after every converge); the per-VIP lease manager
    /// waits on it before handing a lease on, and the controller writes holder annotations.
    pub owned: watch::Sender<Vec<IpAddr>>,
    /// Owned VIPs plus those served because BGP routes them here: what the speaker
    /// announces.
    pub served: watch::Sender<Vec<IpAddr>>,
    /// Foreign claims on owned VIPs, each batch the reconciler re-announced for (so at the
    /// conflict back-off's pace); the Kubernetes source turns them into Events.
    pub conflicts: watch::Sender<Vec<(IpAddr, [u8; 6])>>,
    /// Services the data plane could not take (each failed alone), with why: the
    /// Kubernetes source records Events for them.
    pub unplaced: watch::Sender<BTreeMap<Unplaced, String>>,
}
