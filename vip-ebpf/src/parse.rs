//! Bounds-checked access to the frame. Every read goes through `ptr_at`, which compares
//! against `data_end` right before the access: the verifier needs the check next to the use.
use aya_ebpf::programs::XdpContext;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IP6_HLEN: usize = 40;

pub struct EtherFrame {
    /// Inner ethertype (after one VLAN tag, if any), host order.
    pub ethertype: u16,
    /// Offset of the L3 header: 14, or 18 behind one tag.
    pub l3_off: usize,
}

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
fn be16(ctx: &XdpContext, off: usize) -> Option<u16> {
    let p: *const [u8; 2] = ptr_at(ctx, off)?;
    // SAFETY: ptr_at checked the two bytes lie inside the frame.
    Some(u16::from_be_bytes(unsafe { *p }))
}

/// Ethernet plus at most one 802.1Q/802.1ad tag. A second tag (QinQ inner) is left to the
/// stack: its ethertype is a VLAN type, which no stage matches, so it passes.
#[inline(always)]
pub fn ether(ctx: &XdpContext) -> Option<EtherFrame> {
    let ethertype = be16(ctx, 12)?;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let inner = be16(ctx, ETH_HLEN + 2)?;
        return Some(EtherFrame {
            ethertype: inner,
            l3_off: ETH_HLEN + VLAN_HLEN,
        });
    }
    Some(EtherFrame {
        ethertype,
        l3_off: ETH_HLEN,
    })
}

/// What the load balancer needs from an IPv4 header (fixed 20-byte part).
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    /// Header length in bytes (20 without options).
    pub ihl_bytes: usize,
    /// More-fragments flag set or a non-zero fragment offset.
    pub fragment: bool,
    pub tot_len: u16,
}

#[inline(always)]
pub fn ipv4(ctx: &XdpContext, off: usize) -> Option<Ipv4> {
    let hdr: *const [u8; 20] = ptr_at(ctx, off)?;
    // SAFETY: ptr_at checked the fixed header is inside the frame.
    let h = unsafe { *hdr };
    if h[0] >> 4 != 4 || h[0] & 0x0f < 5 {
        return None;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    Some(Ipv4 {
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
        proto: h[9],
        ihl_bytes: ((h[0] & 0x0f) as usize) * 4,
        fragment: frag & 0x3fff != 0,
        tot_len: u16::from_be_bytes([h[2], h[3]]),
    })
}

/// What the load balancer needs from an IPv6 header (the fixed 40 bytes).
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The next header right after the fixed header (TCP, UDP, ICMPv6 or an extension).
    pub next: u8,
    /// Fixed header plus payload: the length the FIB checks against the route's MTU.
    pub tot_len: u16,
}

#[inline(always)]
pub fn ipv6(ctx: &XdpContext, off: usize) -> Option<Ipv6> {
    let hdr: *const [u8; IP6_HLEN] = ptr_at(ctx, off)?;
    // SAFETY: ptr_at checked the fixed header is inside the frame.
    let h = unsafe { *hdr };
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    Some(Ipv6 {
        src,
        dst,
        next: h[6],
        tot_len: u16::from_be_bytes([h[4], h[5]]).saturating_add(IP6_HLEN as u16),
    })
}
