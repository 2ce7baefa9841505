//! Leader election on a coordination.k8s.io Lease, as client-go does it, with a fence.
//!
//! One round (`round`): GET the Lease; create it if missing; if another identity holds it
//! and it has not expired *by our own clock since we last saw it change*, follow; otherwise
//! write ourselves in with a PUT carrying the resourceVersion we read (a 409 means someone
//! else won the race). Every API call has its own timeout, so an API server that stops
//! answering cannot stall the loop.
//!
//! The fence: a leader counts as leader only until `renew_deadline` after its last
//! successful renewal (`is_leader`). `renew_deadline < lease_duration`, so a leader cut off
//! from the API server stops answering for its VIPs before any follower can see the lease
//! expire and take over: there is no instant at which both act as owner.
//!
//! `elector.rs` runs the rounds against the API server; `fence.rs` is the fence and the
//! watchdog that publishes it, apart because other electors (rendezvous) hold a [`Fence`]
//! without the rest.
mod elector;
mod fence;

use std::time::Duration;

pub use elector::{LeaseElector, Patience};
pub use fence::Fence;

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("API call timed out after {0:?}")]
    Timeout(Duration),
    #[error("API")]
    Api(#[from] kube::Error),
    /// A timing that cannot fence: `field` is the setting to change (its file name).
    #[error("{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long followers wait, from when they last saw the lease change, before taking it.
    pub lease_duration: Duration,
    /// How long a leader keeps acting without a successful renewal (the fence).
    pub renew_deadline: Duration,
    /// Time between rounds.
    pub retry_period: Duration,
    /// Bound on every single API call.
    pub api_timeout: Duration,
    /// Hold (and compete for) the lease only while the API server's `/readyz` answers 200:
    /// for the control-plane VIP, elected against the node's own API server, so a node whose
    /// API server is unhealthy hands the VIP on instead of attracting traffic to it.
    pub readyz_gate: bool,
}

impl LeaseConfig {
    /// kube-vip's defaults (`vip_leaseduration` 15, `vip_renewdeadline` 10,
    /// `vip_retryperiod` 2 seconds).
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            api_timeout: Duration::from_secs(2),
            readyz_gate: false,
        }
    }

    pub fn validate(&self) -> Result<(), ElectionError> {
        if self.renew_deadline >= self.lease_duration {
            return Err(ElectionError::Config {
                field: "renew_deadline_ms",
                message: format!(
                    "the renew deadline ({:?}) must be shorter than the lease duration ({:?}): that gap is the fence",
                    self.renew_deadline, self.lease_duration
                ),
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ElectionError::Config {
                field: "retry_period_ms",
                message: format!(
                    "the retry period ({:?}) must be shorter than the renew deadline ({:?})",
                    self.retry_period, self.renew_deadline
                ),
            });
        }
        if self.api_timeout >= self.renew_deadline {
            return Err(ElectionError::Config {
                field: "renew_deadline_ms",
                message: format!(
                    "the API timeout ({:?}) must be shorter than the renew deadline ({:?})",
                    self.api_timeout, self.renew_deadline
                ),
            });
        }
        Ok(())
    }
}
