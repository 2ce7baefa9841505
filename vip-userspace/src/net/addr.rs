//! IPv4 address bindings (`ip addr add/del VIP/32 dev X`) through rtnetlink.
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::Handle;

#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("netlink")]
    Netlink(#[from] rtnetlink::Error),
    #[error("interface `{0}` not found")]
    NoInterface(String),
}

/// Whether `bind` added the address or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Added,
    AlreadyPresent,
}

fn v4_of(msg: &AddressMessage) -> Option<Ipv4Addr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
    // links. Prefer LOCAL, as `ip addr` does.
    let mut addr = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(v)) => return Some(*v),
            AddressAttribute::Address(IpAddr::V4(v)) => addr = Some(*v),
            _ => {}
        }
    }
    addr
}

/// Every IPv4 address of the node: (address, prefix length, device name).
pub async fn list_v4(handle: &Handle) -> Result<Vec<(Ipv4Addr, u8, String)>, AddrError> {
    let mut names = std::collections::HashMap::new();
    let mut links = handle.link().get().execute();
    while let Some(l) = links.try_next().await? {
        let name = l.attributes.iter().find_map(|a| match a {
            netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        names.insert(l.header.index, name.unwrap_or_default());
    }
    let mut out = Vec::new();
    let mut addrs = handle.address().get().execute();
    while let Some(m) = addrs.try_next().await? {
        if let Some(v4) = v4_of(&m) {
            let dev = names.get(&m.header.index).cloned().unwrap_or_default();
            out.push((v4, m.header.prefix_len, dev));
        }
    }
    Ok(out)
}

/// The IPv4 addresses and prefix lengths of interface `index`. On a handle with strict
/// checking (`rtnetlink::new_connection_with_strict_check`, kernel ≥ 4.20) the kernel dumps
/// only that interface, so the cost does not grow with the VIPs bound on other devices;
/// elsewhere the dump is filtered here.
pub async fn on_link(handle: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, AddrError> {
    let mut req = handle.address().get().set_link_index_filter(index);
    req.message_mut().header.family = netlink_packet_route::AddressFamily::Inet;
    req.message_mut().header.index = index;
    let mut out = Vec::new();
    let mut addrs = req.execute();
    while let Some(m) = addrs.try_next().await? {
        if let Some(v4) = v4_of(&m) {
            out.push((v4, m.header.prefix_len));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Bind `ip/32` on the interface `index`. An address already there is adopted, not an error,
/// so a restart after a crash converges.
pub async fn bind(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<Bound, AddrError> {
    match handle
        .address()
        .add(index, IpAddr::V4(ip), 32)
        .execute()
        .await
    {
        Ok(()) => Ok(Bound::Added),
        Err(e) if crate::net::netlink_errno(&e) == Some(libc::EEXIST) => Ok(Bound::AlreadyPresent),
        Err(e) => Err(e.into()),
    }
}

/// Remove `ip/32` from interface `index`; absent is fine. One RTM_DELADDR naming the
/// address: no dump of the interface's addresses first (rtnetlink filters a dump in
/// userspace, so with 10,000 VIPs bound each removal read all 10,000).
pub async fn unbind(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<bool, AddrError> {
    let mut m = AddressMessage::default();
    m.header.family = netlink_packet_route::AddressFamily::Inet;
    m.header.prefix_len = 32;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
    m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
    match handle.address().del(m).execute().await {
        Ok(()) => Ok(true),
        Err(e) if crate::net::netlink_errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
