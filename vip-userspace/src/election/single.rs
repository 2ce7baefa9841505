//! Single-node election: this node owns every desired VIP.
use std::{collections::BTreeSet, net::IpAddr};

use crate::model::Desired;

pub fn owned(desired: &Desired) -> BTreeSet<IpAddr> {
    desired.vips.clone()
}
