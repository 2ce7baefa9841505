//! Who owns which VIP. `single`: one node, always the owner (standalone). Lease and Raft
//! backends come with the Kubernetes and HA work.
pub mod lease;
pub mod single;
