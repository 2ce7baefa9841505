//! Prometheus metrics and health endpoints (`/metrics`, `/healthz`, `/readyz`, `/bgp`).
//!
//! The parts, each with one reason to change:
//!
//! ```text
//!  daemon tasks ──write──▶ state::State ──read at scrape──▶ scrape::Scrape ──▶ encode (text)
//!                              │                                                  ▲
//!                              └── registry: counters the tasks bump, ────────────┘
//!                                  plus a collector for the Scrape
//!  http: GET /metrics renders the registry; /healthz, /readyz, /bgp read State directly
//! ```
//!
//! The data plane's counters are not listed in this module: they are `crate::counters`'
//! tables, which `encode` turns into families.
mod encode;
mod http;
mod registry;
mod scrape;
mod state;

pub use http::{bind, serve, serve_with, Limits, MetricsError};
pub use registry::registry;
pub use state::{Attachment, K8sStats, State};

#[cfg(test)]
mod dashboard_tests;
#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod reference_tests;
