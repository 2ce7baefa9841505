//! Raft among static peers, used only to elect the VIP owner (standalone clusters and
//! control-plane bootstrap before the API server exists).
//!
//! # Why not openraft
//! DESIGN.md names openraft (0.9.25). For this job we implement Raft's *election* subset
//! ourselves (`core.rs`, ~450 lines plus tests, sans-I/O and unit-tested), because openraft 0.9 fights
//! the two things this module exists for:
//! - timing: its timer ticks every `heartbeat_interval * 3 / 2` (30 ms at 20 ms heartbeats),
//!   and a follower grants no vote until its leader lease (the maximum election timeout) and
//!   the next tick have passed, so takeover quantizes to several ticks past the timeout;
//! - the fence: it does not step down without quorum (REFERENCES.md) and exposes the quorum
//!   acknowledgement only as `millis_since_quorum_ack` in a metrics snapshot pushed when the
//!   core decides to, not as an instant a watchdog can read while the core is busy or stuck;
//! - persistence: membership lives in its log, so "log in memory, vote on disk" does not
//!   survive a restart (`initialize` refuses once a vote exists and the log is gone): we
//!   would have to make a log durable that carries nothing we need;
//! - no PreVote in 0.9 (a rejoining partitioned node would depose a healthy leader).
//!
//! What we keep from Raft: terms, one vote per term persisted before it is sent
//! (`store.rs`), PreVote, heartbeats with acknowledgements, check-quorum, leader stickiness
//! (no vote within the minimum election timeout of hearing from a leader), TimeoutNow on
//! shutdown. There is no log: any member may win.
//!
//! # Where things are
//! Each file has one reason to change; the design notes sit with the code they explain.
//! - `core.rs`: the state machine, no sockets or clocks of its own;
//! - `config.rs`: the configuration, its defaults and what `validate` demands of timings;
//! - `start.rs`: builds the threads and channels (the wiring diagram is there);
//! - `io_loop.rs`: the election thread's loop, the order of a turn and a node's own stalls;
//! - `transport.rs`: UDP datagrams in and out, rejected ones counted and logged;
//! - `auth.rs`: the frame, keys and replay protection; `store.rs`: term, vote and epoch on disk;
//! - `fence.rs`: the published leadership and its watchdog;
//! - `check_in.rs`: the data plane's dead-man, written from the election thread;
//! - `elector.rs`: the handle the daemon holds; `status.rs`: what `vip status` and metrics read;
//! - `sched.rs`: the threads' scheduling priority.
pub mod auth;
mod check_in;
mod config;
mod core;
mod elector;
mod fence;
mod io_loop;
pub mod sched;
mod start;
mod status;
mod store;
#[cfg(test)]
mod test_support;
mod transport;

use std::{net::SocketAddr, path::PathBuf};

pub use self::{
    auth::{RaftAuth, RaftKey, Reject},
    config::{
        RaftConfig, DEFAULT_ELECTION_TIMEOUT, DEFAULT_HEARTBEAT, DEFAULT_LEASE, WATCHDOG_PERIOD,
    },
    core::{HardState, Msg, Role as RaftRole},
    elector::RaftElector,
    status::{RaftStatus, StatusSource},
};

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("{field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("raft state {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("raft state {path} is unusable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("raft: bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
