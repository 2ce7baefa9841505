//! VIP bindings (`ip addr add/del VIP/32 dev X`, and `VIP/128 … nodad` for IPv6) through
//! rtnetlink.
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
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

fn ip_of(msg: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
    // links (IPv6 sends only ADDRESS). Prefer LOCAL, as `ip addr` does.
    let mut addr = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(v) => return Some(*v),
            AddressAttribute::Address(v) => addr = Some(*v),
            _ => {}
        }
    }
    addr
}

/// A host prefix: /32 for IPv4, /128 for IPv6 (how a VIP is bound).
pub fn host_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Every address of the node, both families: (address, prefix length, device name).
pub async fn list(handle: &Handle) -> Result<Vec<(IpAddr, u8, String)>, AddrError> {
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
        if let Some(ip) = ip_of(&m) {
            let dev = names.get(&m.header.index).cloned().unwrap_or_default();
            out.push((ip, m.header.prefix_len, dev));
        }
    }
    Ok(out)
}

/// The addresses (both families) and prefix lengths of interface `index`. On a handle with
/// strict checking (`rtnetlink::new_connection_with_strict_check`, kernel ≥ 4.20) the kernel
/// dumps only that interface, so the cost does not grow with the VIPs bound on other
/// devices; elsewhere the dump is filtered here. One dump per family: a strict dump names
/// its family.
pub async fn on_link(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, AddrError> {
    let mut out = Vec::new();
    for family in [
        netlink_packet_route::AddressFamily::Inet,
        netlink_packet_route::AddressFamily::Inet6,
    ] {
        let mut req = handle.address().get().set_link_index_filter(index);
        req.message_mut().header.family = family;
        req.message_mut().header.index = index;
        let mut addrs = req.execute();
        while let Some(m) = addrs.try_next().await? {
            if let Some(ip) = ip_of(&m) {
                if ip.is_ipv4() == (family == netlink_packet_route::AddressFamily::Inet) {
                    out.push((ip, m.header.prefix_len));
                }
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Bind `ip/32` (IPv6: `ip/128 nodad`) on the interface `index`. An address already there
/// is adopted, not an error, so a restart after a crash converges. IPv6 goes without
/// duplicate address detection: a tentative address is not used for a second or more (on
/// the uplink in kernel mode it would not be answered, and its DAD probes would be taken
/// for another owner's by the segment), and the election, not DAD, decides who holds a VIP.
pub async fn bind(handle: &Handle, index: u32, ip: IpAddr) -> Result<Bound, AddrError> {
    let mut req = handle.address().add(index, ip, host_prefix(ip));
    if ip.is_ipv6() {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Ok(()) => Ok(Bound::Added),
        Err(e) if crate::net::netlink_errno(&e) == Some(libc::EEXIST) => Ok(Bound::AlreadyPresent),
        Err(e) => Err(e.into()),
    }
}

/// Remove the VIP's host binding from interface `index`; absent is fine. One RTM_DELADDR
/// naming the address: no dump of the interface's addresses first (rtnetlink filters a
/// dump in userspace, so with 10,000 VIPs bound each removal read all 10,000).
pub async fn unbind(handle: &Handle, index: u32, ip: IpAddr) -> Result<bool, AddrError> {
    let mut m = AddressMessage::default();
    m.header.family = match ip {
        IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
        IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
    };
    m.header.prefix_len = host_prefix(ip);
    m.header.index = index;
    if ip.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(ip));
    }
    m.attributes.push(AddressAttribute::Address(ip));
    match handle.address().del(m).execute().await {
        Ok(()) => Ok(true),
        Err(e) if crate::net::netlink_errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
