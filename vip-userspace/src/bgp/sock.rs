//! TCP sockets for BGP sessions: TCP MD5 signatures (RFC 2385) and the TTL of our packets.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use socket2::SockRef;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// `struct tcp_md5sig` from <linux/tcp.h>; libc has the option number but not the struct.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; 80],
}

const _: () = assert!(std::mem::size_of::<TcpMd5Sig>() == 216);

/// Install (or, with `None`, remove) the MD5 key for segments to and from `peer` on `sock`.
/// On a listener, connections from `peer` are then accepted only if signed with `key`.
pub fn set_md5<S: AsRawFd>(sock: &S, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
    let key = key.unwrap_or_default();
    if key.len() > 80 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key longer than 80 bytes",
        ));
    }
    // SAFETY: all-zero is a valid bit pattern for this plain C struct.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let sa: socket2::SockAddr = SocketAddr::new(peer, 0).into();
    // SAFETY: SockAddr holds a valid sockaddr of `len()` bytes, at most sockaddr_storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            (&mut sig.addr as *mut libc::sockaddr_storage).cast::<u8>(),
            sa.len() as usize,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: sig lives across the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unicast TTL (IPv4) or hop limit (IPv6) of the packets we send.
pub fn set_ttl<S: AsFd>(sock: &S, v6: bool, ttl: u8) -> io::Result<()> {
    let s = SockRef::from(sock);
    if v6 {
        s.set_unicast_hops_v6(u32::from(ttl))
    } else {
        s.set_ttl_v4(u32::from(ttl))
    }
}

/// Connect to `peer` with the key and TTL set before the SYN leaves (both must cover the
/// handshake: an unsigned SYN is dropped by an MD5 peer, and a direct eBGP neighbour
/// may check the TTL of every segment).
pub async fn connect(
    peer: SocketAddr,
    md5: Option<&[u8]>,
    ttl: u8,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let sock = if peer.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(key) = md5 {
        set_md5(&sock, peer.ip(), Some(key))?;
    }
    set_ttl(&sock, peer.is_ipv6(), ttl)?;
    let stream = tokio::time::timeout(timeout, sock.connect(peer))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A listener on `port` for one address family. Peers' keys are added with [`set_md5`].
pub fn listen(v6: bool, port: u16) -> io::Result<TcpListener> {
    let sock = if v6 {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    sock.set_reuseaddr(true)?;
    if v6 {
        // IPv4 peers have their own listener (their MD5 keys are IPv4 keys).
        SockRef::from(&sock).set_only_v6(true)?;
    }
    let addr: SocketAddr = if v6 {
        (std::net::Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, port).into()
    };
    sock.bind(addr)?;
    sock.listen(16)
}
