//! Announcements: tell the segment's switches and hosts that the VIP now lives at this MAC.
//! Sent from userspace through an AF_PACKET socket (egress does not pass XDP). IPv4: a
//! gratuitous ARP in the announcement form of RFC 5227 (request, sender = target = VIP),
//! which every stack accepts. IPv6: an unsolicited Neighbor Advertisement (RFC 4861 §7.2.6)
//! to all-nodes with the override flag, from the VIP, as Linux sends for its own addresses.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// The announcement of `ip` at `mac`: a gratuitous ARP (42 bytes) or an unsolicited NA
/// (86 bytes).
pub fn frame(mac: [u8; 6], ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => arp_frame(mac, v4).to_vec(),
        IpAddr::V6(v6) => na_frame(mac, v6).to_vec(),
    }
}

/// The all-nodes multicast address ff02::1 and its Ethernet group.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// The 86-byte frame: Ethernet to 33:33:00:00:00:01, IPv6 from `ip` to ff02::1 with hop
/// limit 255, ICMPv6 Neighbor Advertisement (override set, solicited and router clear)
/// for target `ip` with the target link-layer address option = `mac`.
pub fn na_frame(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 86] {
    let mut f = [0u8; 86];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    // IPv6 header
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes()); // payload: NA 24 + option 8
    f[20] = 58; // ICMPv6
    f[21] = 255; // hop limit: receivers drop NDP with any other
    f[22..38].copy_from_slice(&ip.octets());
    f[38..54].copy_from_slice(&ALL_NODES.octets());
    // ICMPv6 NA
    f[54] = 136;
    f[58] = 0x20; // override
    f[62..78].copy_from_slice(&ip.octets());
    f[78] = 2; // target link-layer address
    f[79] = 1; // 8 bytes
    f[80..86].copy_from_slice(&mac);
    let sum = icmpv6_checksum(&ip.octets(), &ALL_NODES.octets(), &f[54..86]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum (RFC 8200 §8.1 pseudo-header) of `msg`, whose checksum field is 0.
fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let hi = u32::from(c[0]) << 8;
            let lo = c.get(1).map_or(0, |x| u32::from(*x));
            sum += hi | lo;
        }
    };
    add(src);
    add(dst);
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The 42-byte frame: broadcast Ethernet header + ARP request announcing `ip` at `mac`.
pub fn arp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
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

/// A raw socket bound to one interface for sending announcements.
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

    /// Send a whole Ethernet frame (destination and EtherType are read from it).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shorter than an Ethernet header",
            ));
        }
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
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
        let f = frame(
            [2, 0, 0, 0, 0, 1],
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
        );
        assert_eq!(f.len(), 42);
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
    fn na_frame_is_an_unsolicited_override_advertisement() {
        let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let f = frame([2, 0, 0, 0, 0, 1], IpAddr::V6(vip));
        // Literal bytes, checksum computed by hand apart from the builder: the ICMPv6
        // pseudo-header sum of src + dst + length 32 + next header 58 + the message.
        let mut want = vec![0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        want.extend([0x60, 0, 0, 0, 0, 32, 58, 255]);
        want.extend(vip.octets());
        want.extend([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend([136, 0, 0xf7, 0x2c, 0x20, 0, 0, 0]);
        want.extend(vip.octets());
        want.extend([2, 1, 2, 0, 0, 0, 0, 1]);
        assert_eq!(f, want);
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
