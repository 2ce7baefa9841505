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

/// Remove the managed entry vip created for `ip` (entries the kernel learned itself stay).
pub async fn remove_managed(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
) -> Result<(), rtnetlink::Error> {
    let mut entries = handle.neighbours().get().execute();
    while let Some(m) = entries.try_next().await? {
        let ours = m.header.ifindex == index
            && m.attributes.iter().any(|a| {
                matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == ip)
            })
            && m.attributes.iter().any(|a| {
                matches!(a, NeighbourAttribute::ExtFlags(f) if f.contains(NeighbourExtFlags::Managed))
            });
        if ours {
            return handle.neighbours().del(m).execute().await;
        }
    }
    Ok(())
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
