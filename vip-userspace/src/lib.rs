//! vip: floating virtual IPs for bare-metal clusters, answered from XDP.
//!
//! `main.rs` is a thin CLI; everything lives here so tests can drive it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod bgp;
pub mod cli;
pub mod config;
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
pub mod reconcile;
pub mod shutdown;
