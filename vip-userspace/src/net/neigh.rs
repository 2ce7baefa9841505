//! Backends' neighbour entries. The XDP program asks the kernel's FIB for a backend's MAC
//! (bpf_fib_lookup) and cannot trigger resolution itself, so each backend gets a *managed*
//! neighbour entry (kernel 5.16+): the kernel resolves it at once and keeps it valid.
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourState,
};
use rtnetlink::Handle;

pub async fn ensure_managed(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
) -> Result<(), rtnetlink::Error> {
    let mut req = handle
        .neighbours()
        .add(index, IpAddr::V4(ip))
        .state(NeighbourState::None)
        .replace();
    req.message_mut()
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    req.execute().await
}

/// Remove the entry vip created for `ip` on `index` (callers pass only entries they made
/// managed). One RTM_DELNEIGH naming it: no dump of the neighbour table per removal. Absent
/// is fine.
pub async fn remove_managed(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
) -> Result<(), rtnetlink::Error> {
    let mut m = netlink_packet_route::neighbour::NeighbourMessage::default();
    m.header.family = netlink_packet_route::AddressFamily::Inet;
    m.header.ifindex = index;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    match handle.neighbours().del(m).execute().await {
        Err(e) if crate::net::netlink_errno(&e) == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// IPv4 addresses with a neighbour entry (any state) on `index`.
pub async fn present(
    handle: &Handle,
    index: u32,
) -> Result<std::collections::BTreeSet<Ipv4Addr>, rtnetlink::Error> {
    let mut out = std::collections::BTreeSet::new();
    let mut entries = handle.neighbours().get().execute();
    while let Some(m) = entries.try_next().await? {
        if m.header.ifindex != index {
            continue;
        }
        for a in &m.attributes {
            if let NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) = a {
                out.insert(*d);
            }
        }
    }
    Ok(out)
}
