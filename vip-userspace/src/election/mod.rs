//! Who owns which VIP. `single`: one node, always the owner (standalone); `lease`: the
//! holder of a Kubernetes Lease (fenced); `per_vip`: one Lease per service VIP.
pub mod lease;
pub mod per_vip;
pub mod raft;
pub mod single;
