//! Gratuitous ARP: tells the segment's switches and hosts that the VIP now lives at this MAC.
//! Sent from userspace through an AF_PACKET socket (egress does not pass XDP), in the
//! announcement form of RFC 5227 (request, sender = target = VIP), which every stack accepts.
use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const ETH_P_ARP: u16 = 0x0806;

/// The 42-byte frame: broadcast Ethernet header + ARP request announcing `ip` at `mac`.
pub fn frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target hardware address stays zero, target protocol address = the VIP
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// A raw socket bound to one interface for sending ARP frames.
#[derive(Debug)]
pub struct GarpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl GarpSocket {
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                // protocol 0: send only, so the socket never queues received frames
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, ifindex })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ARP.to_be();
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: frame and sll outlive the call; the lengths passed match them.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Offsets from acquisition at which the burst's frames leave: 0 first, then gaps that double
/// so the last one lands at `window`.
pub fn schedule(count: u32, window: std::time::Duration) -> Vec<std::time::Duration> {
    if count <= 1 {
        return vec![std::time::Duration::ZERO];
    }
    let steps = count - 1;
    // with gaps g, 2g, 4g ... the sum is g * (2^steps - 1) = window
    let unit = window / ((1u32 << steps.min(20)) - 1).max(1);
    let mut out = vec![std::time::Duration::ZERO];
    let mut t = std::time::Duration::ZERO;
    for i in 0..steps {
        t += unit * (1u32 << i.min(20));
        out.push(t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn frame_is_an_rfc5227_announcement() {
        let f = frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[28..32], &[192, 0, 2, 100]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[192, 0, 2, 100]);
    }

    #[test]
    fn schedule_starts_now_and_ends_at_window() {
        let s = schedule(5, Duration::from_millis(1500));
        assert_eq!(s.len(), 5);
        assert_eq!(s[0], Duration::ZERO);
        assert_eq!(s[4], Duration::from_millis(1500));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(schedule(1, Duration::from_secs(2)), vec![Duration::ZERO]);
    }
}
