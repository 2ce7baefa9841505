//! The BFD sockets: the shared receivers on port 3784 that report each packet's TTL / hop
//! limit, and a session's sender bound to a source port of its own. Kept apart because it
//! is the only `unsafe` (setsockopt, recvmsg and its control messages) in the BFD code.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};

use tokio::net::UdpSocket;

use super::{random_u64, CONTROL_PORT};

pub(super) fn rx_socket(v6: bool) -> io::Result<UdpSocket> {
    let (domain, addr): (socket2::Domain, SocketAddr) = if v6 {
        (
            socket2::Domain::IPV6,
            (Ipv6Addr::UNSPECIFIED, CONTROL_PORT).into(),
        )
    } else {
        (
            socket2::Domain::IPV4,
            (Ipv4Addr::UNSPECIFIED, CONTROL_PORT).into(),
        )
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let one: libc::c_int = 1;
    let (level, opt) = if v6 {
        s.set_only_v6(true)?;
        (libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVTTL)
    };
    // SAFETY: setsockopt with an int option on our own socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

pub(super) fn tx_socket(local: IpAddr, peer: IpAddr) -> io::Result<UdpSocket> {
    let domain = if peer.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if peer.is_ipv6() {
        s.set_unicast_hops_v6(255)?;
    } else {
        s.set_ttl_v4(255)?;
    }
    s.set_nonblocking(true)?;
    // RFC 5881 4: the source port is in 49152..=65535 (and stays the same for the session).
    let mut last = io::Error::other("no free source port");
    let mut bound = false;
    for _ in 0..32 {
        let port = 49152 + (random_u64() % 16384) as u16;
        match s.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => {
                bound = true;
                break;
            }
            Err(e) => last = e,
        }
    }
    if !bound {
        return Err(last);
    }
    s.connect(&SocketAddr::new(peer, CONTROL_PORT).into())?;
    UdpSocket::from_std(s.into())
}

/// recvmsg with the TTL / hop limit of the packet.
pub(super) fn recv_with_ttl(
    fd: i32,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // SAFETY: all-zero is valid for these C structs; every pointer we hand to recvmsg
    // points into locals that outlive the call, with their true lengths.
    unsafe {
        let mut from: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // size_t in glibc, socklen_t in musl (the static build of the image).
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ttl = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (l, t) = ((*c).cmsg_level, (*c).cmsg_type);
            if (l == libc::IPPROTO_IP && t == libc::IP_TTL)
                || (l == libc::IPPROTO_IPV6 && t == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let sa = socket2::SockAddr::new(
            std::mem::transmute::<libc::sockaddr_storage, socket2::SockAddrStorage>(from),
            msg.msg_namelen,
        );
        let addr = sa
            .as_socket()
            .ok_or_else(|| io::Error::other("recvmsg: not an IP source address"))?;
        Ok((n as usize, addr, ttl))
    }
}
