//! Who owns which VIP. `single`: one node, always the owner (standalone); `lease`: the
//! holder of a Kubernetes Lease (fenced); `per_vip`: one Lease per service VIP;
//! `rendezvous`: one Lease per node, service VIPs placed by rendezvous hashing.
pub mod lease;
pub mod per_vip;
pub mod raft;
pub mod rendezvous;
pub mod single;
