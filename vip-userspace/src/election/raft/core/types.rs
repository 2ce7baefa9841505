//! What the election shares with its state machine: the wire messages, the state that is
//! persisted, the roles and the timings. Apart from `Core` because the transport, the
//! store and the configuration use them without the machine.
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What must survive a restart: the term and our vote in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HardState {
    pub term: u64,
    pub voted_for: Option<u64>,
}

/// The wire messages. Every request carries the sender's term; every response the
/// responder's, so a stale node learns the current term from any answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// "Would you vote for me in `term`?" (our term + 1). Changes nothing at the receiver.
    PreVote {
        term: u64,
    },
    PreVoteResp {
        term: u64,
        proposed: u64,
        granted: bool,
    },
    /// `transfer`: sent after the leader handed over with `TimeoutNow` (it is already
    /// silent), so voters skip the "heard from a leader recently" check.
    Vote {
        term: u64,
        transfer: bool,
    },
    VoteResp {
        term: u64,
        granted: bool,
    },
    /// AppendEntries with no entries; `seq` matches the acknowledgement to its send time.
    Heartbeat {
        term: u64,
        seq: u64,
    },
    HeartbeatResp {
        term: u64,
        seq: u64,
        ok: bool,
    },
    /// From a stepping-down leader: start an election now.
    TimeoutNow {
        term: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "precandidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    pub lease: Duration,
    /// How long after hearing from its leader a node refuses (pre-)votes. Longer than the
    /// lease plus the fence's lateness (that is what keeps two leaders apart), but shorter
    /// than `election_min`: the first follower to time out must find the others already
    /// willing, even if they heard the last heartbeat a little later than it did.
    pub loyalty: Duration,
}
