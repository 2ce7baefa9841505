//! Backends' neighbour entries. The XDP program asks the kernel's FIB for a backend's MAC
//! (bpf_fib_lookup) and cannot trigger resolution itself, so each backend gets a *managed*
//! neighbour entry (kernel 5.16+): the kernel resolves it at once and keeps it valid. Both
//! families: NTF_EXT_MANAGED works for NDP entries as for ARP ones.
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourState,
};
use rtnetlink::Handle;

pub async fn ensure_managed(
    handle: &Handle,
    index: u32,
    ip: IpAddr,
) -> Result<(), rtnetlink::Error> {
    let mut req = handle
        .neighbours()
        .add(index, ip)
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
    ip: IpAddr,
) -> Result<(), rtnetlink::Error> {
    let mut m = netlink_packet_route::neighbour::NeighbourMessage::default();
    m.header.ifindex = index;
    let (family, dest) = match ip {
        IpAddr::V4(a) => (
            netlink_packet_route::AddressFamily::Inet,
            NeighbourAddress::Inet(a),
        ),
        IpAddr::V6(a) => (
            netlink_packet_route::AddressFamily::Inet6,
            NeighbourAddress::Inet6(a),
        ),
    };
    m.header.family = family;
    m.attributes.push(NeighbourAttribute::Destination(dest));
    match handle.neighbours().del(m).execute().await {
        Err(e) if crate::net::netlink_errno(&e) == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// Addresses (both families) with a neighbour entry (any state) on `index`.
pub async fn present(
    handle: &Handle,
    index: u32,
) -> Result<std::collections::BTreeSet<IpAddr>, rtnetlink::Error> {
    let mut out = std::collections::BTreeSet::new();
    let mut entries = handle.neighbours().get().execute();
    while let Some(m) = entries.try_next().await? {
        if m.header.ifindex != index {
            continue;
        }
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => {
                    out.insert(IpAddr::V4(*d));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => {
                    out.insert(IpAddr::V6(*d));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}
