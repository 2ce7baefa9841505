//! The Kubernetes front-end: Lease election lives in `election::lease`; here, the
//! kubeconfig the election uses, IP address management for Services of type LoadBalancer,
//! the controller that computes the view, the watch source that feeds it and the writer
//! that sends its results.
pub mod controller;
pub mod ipam;
pub mod kubeconfig;
pub mod objects;
pub mod source;
pub mod translate;
pub mod writer;
