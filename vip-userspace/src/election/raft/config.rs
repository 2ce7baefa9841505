//! What an election is configured with, its LAN defaults, and the checks that keep the
//! timings safe together. Kept apart from the threads because it changes with the
//! configuration file, not with how the election runs; `validate` is where the fence's
//! bound (`fence.rs`) becomes a rule an operator sees.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use super::{core::Timing, sched::Priority, RaftAuth, RaftError};

/// How often (at most) the watchdog re-evaluates the fence.
pub const WATCHDOG_PERIOD: Duration = Duration::from_millis(10);

/// Defaults for a LAN: failover within about a second (keepalived's default advert_int 1
/// takes ~3.5 s), four lost heartbeats before the fence closes, 10 datagrams/s per peer.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);
pub const DEFAULT_ELECTION_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_millis(1000));
pub const DEFAULT_LEASE: Duration = Duration::from_millis(400);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's id; must be a key of `peers`.
    pub id: u64,
    /// Where to receive (may be 0.0.0.0:port; peers send to `peers[id]`).
    pub listen: SocketAddr,
    /// All members, this node included.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Holds `raft-state.json` (term and vote).
    pub state_dir: PathBuf,
    pub heartbeat: Duration,
    /// (min, max): a follower campaigns after a random time in this range without a leader.
    pub election_timeout: (Duration, Duration),
    /// How long after its last quorum acknowledgement a leader still acts as leader.
    pub lease: Duration,
    /// The shared key(s), or `insecure`.
    pub auth: RaftAuth,
    /// Scheduling priority of the election's threads.
    pub priority: Priority,
}

fn config_err(field: &'static str, reason: String) -> Result<(), RaftError> {
    Err(RaftError::Config { field, reason })
}

impl RaftConfig {
    /// A config with the default timing.
    pub fn new(
        id: u64,
        listen: SocketAddr,
        peers: BTreeMap<u64, SocketAddr>,
        state_dir: PathBuf,
        auth: RaftAuth,
    ) -> RaftConfig {
        RaftConfig {
            id,
            listen,
            peers,
            state_dir,
            heartbeat: DEFAULT_HEARTBEAT,
            election_timeout: DEFAULT_ELECTION_TIMEOUT,
            lease: DEFAULT_LEASE,
            auth,
            priority: Priority::default(),
        }
    }

    /// Errors name the configuration field (`election.raft.*`).
    pub fn validate(&self) -> Result<(), RaftError> {
        self.validate_members()?;
        self.validate_priority()?;
        self.validate_timing()
    }

    fn validate_members(&self) -> Result<(), RaftError> {
        if self.peers.is_empty() {
            return config_err("election.raft.peers", "no members".into());
        }
        if !self.peers.contains_key(&self.id) {
            return config_err(
                "election.raft.id",
                format!(
                    "{} is not among election.raft.peers (all members, this node included)",
                    self.id
                ),
            );
        }
        // Peers send to `peers[id]`: a listener elsewhere would never hear them.
        if let Some(me) = self.peers.get(&self.id) {
            let same = if self.listen.ip().is_unspecified() {
                self.listen.port() == me.port()
            } else {
                self.listen == *me
            };
            if !same {
                return config_err(
                    "election.raft.listen",
                    format!(
                        "{} does not match this node's entry in election.raft.peers ({me})",
                        self.listen
                    ),
                );
            }
        }
        let addrs: BTreeSet<SocketAddr> = self.peers.values().copied().collect();
        if addrs.len() != self.peers.len() {
            return config_err("election.raft.peers", "two members share an address".into());
        }
        Ok(())
    }

    fn validate_priority(&self) -> Result<(), RaftError> {
        if self.priority.realtime > 99 {
            return config_err(
                "election.raft.realtime_priority",
                format!(
                    "{} is not a SCHED_FIFO priority (1..99, 0: off)",
                    self.priority.realtime
                ),
            );
        }
        if !(-20..=19).contains(&self.priority.nice) {
            return config_err(
                "election.raft.nice",
                format!("{} is not a nice value (-20..19)", self.priority.nice),
            );
        }
        Ok(())
    }

    fn validate_timing(&self) -> Result<(), RaftError> {
        if self.heartbeat < Duration::from_millis(1) {
            return config_err("election.raft.heartbeat_ms", "must be at least 1 ms".into());
        }
        let (min, max) = self.election_timeout;
        if max < min {
            return config_err(
                "election.raft.election_timeout_max_ms",
                format!("{max:?} is shorter than election_timeout_min_ms ({min:?})"),
            );
        }
        if self.lease <= self.heartbeat {
            return config_err(
                "election.raft.lease_ms",
                format!(
                    "{:?} must be longer than heartbeat_ms ({:?}), or the leader loses its lease between heartbeats",
                    self.lease, self.heartbeat
                ),
            );
        }
        if self.lease + WATCHDOG_PERIOD >= min {
            return config_err(
                "election.raft.lease_ms",
                format!(
                    "{:?} plus the {WATCHDOG_PERIOD:?} watchdog period must be shorter than election_timeout_min_ms ({min:?}): \
                     a cut-off leader must be silent before a follower can win an election",
                    self.lease
                ),
            );
        }
        Ok(())
    }

    pub(super) fn timing(&self) -> Timing {
        Timing {
            heartbeat: self.heartbeat,
            election_min: self.election_timeout.0,
            election_max: self.election_timeout.1,
            lease: self.lease,
            loyalty: (self.lease + WATCHDOG_PERIOD)
                .max(self.election_timeout.0.saturating_sub(self.heartbeat / 2))
                .min(self.election_timeout.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::raft::test_support::{cfg, tempdir};

    fn field(c: &RaftConfig) -> &'static str {
        match c.validate() {
            Err(RaftError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }
    #[test]
    fn validation_names_the_field() {
        let d = tempdir("validate");
        assert!(cfg(&d).validate().is_ok());
        let defaults = RaftConfig::new(
            1,
            cfg(&d).listen,
            cfg(&d).peers,
            d.clone(),
            RaftAuth::Insecure,
        );
        assert!(defaults.validate().is_ok(), "defaults must validate");
        assert_eq!(
            field(&RaftConfig {
                lease: Duration::from_millis(95),
                ..cfg(&d)
            }),
            "election.raft.lease_ms"
        );
        assert_eq!(
            field(&RaftConfig {
                lease: Duration::from_millis(20),
                ..cfg(&d)
            }),
            "election.raft.lease_ms"
        );
        assert_eq!(field(&RaftConfig { id: 9, ..cfg(&d) }), "election.raft.id");
        assert_eq!(
            field(&RaftConfig {
                listen: "127.0.0.1:17009".parse().unwrap(),
                ..cfg(&d)
            }),
            "election.raft.listen"
        );
        assert!(RaftConfig {
            listen: "0.0.0.0:17001".parse().unwrap(),
            ..cfg(&d)
        }
        .validate()
        .is_ok());
        assert_eq!(
            field(&RaftConfig {
                election_timeout: (Duration::from_millis(300), Duration::from_millis(200)),
                ..cfg(&d)
            }),
            "election.raft.election_timeout_max_ms"
        );
        assert_eq!(
            field(&RaftConfig {
                heartbeat: Duration::ZERO,
                ..cfg(&d)
            }),
            "election.raft.heartbeat_ms"
        );
        assert_eq!(
            field(&RaftConfig {
                peers: BTreeMap::new(),
                ..cfg(&d)
            }),
            "election.raft.peers"
        );
    }
}
