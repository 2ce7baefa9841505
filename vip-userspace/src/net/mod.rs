//! Talking to the kernel's network configuration: links, addresses, gratuitous ARP.
pub mod addr;
pub mod devconf;
pub mod garp;
pub mod link;
pub mod neigh;

use std::num::NonZeroI32;

/// The errno of a netlink error reply, if that is what `e` is.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(NonZeroI32::get).map(|c| -c),
        _ => None,
    }
}
