//! vip: floating virtual IPs for bare-metal clusters, answered from XDP.
//!
//! `main.rs` is a thin CLI; everything lives here so tests can drive it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod bgp;
pub mod bus;
pub mod cli;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod dataplane;
pub mod election;
pub mod k8s;
pub mod logging;
pub mod maglev;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod net;
pub mod paths;
pub mod privileges;
pub mod reconcile;
pub mod shutdown;

/// An error and its causes on one line (`a: b: c`), for logs: `error = %Chain(&e)`.
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}
