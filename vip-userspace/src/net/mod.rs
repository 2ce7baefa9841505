//! Talking to the kernel's network configuration: links, addresses, gratuitous ARP.
pub mod addr;
pub mod devconf;
pub mod garp;
pub mod link;
pub mod neigh;

use std::{net::IpAddr, num::NonZeroI32};

/// An address's octets in network order: 4 for IPv4, 16 for IPv6, without allocating.
#[derive(Clone, Copy, Debug)]
pub struct Octets {
    buf: [u8; 16],
    len: usize,
}

impl AsRef<[u8]> for Octets {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

pub fn octets(ip: IpAddr) -> Octets {
    let mut buf = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            Octets { buf, len: 4 }
        }
        IpAddr::V6(v6) => Octets {
            buf: v6.octets(),
            len: 16,
        },
    }
}

/// The errno of a netlink error reply, if that is what `e` is.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(NonZeroI32::get).map(|c| -c),
        _ => None,
    }
}
