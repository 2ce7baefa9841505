//! The Kubernetes front-end: Lease election lives in `election::lease`; here, IP address
//! management for Services of type LoadBalancer (the controller that drives it comes next).
pub mod controller;
pub mod ipam;
pub mod source;
pub mod writer;
