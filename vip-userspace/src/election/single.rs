//! Single-node election: this node owns every desired VIP.
use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::model::Desired;

pub fn owned(desired: &Desired) -> BTreeSet<Ipv4Addr> {
    desired.vips.clone()
}
