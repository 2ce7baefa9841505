//! Header rewrites for `nat` (destination address and port, checksums), IPv4 and IPv6.
use aya_ebpf::programs::XdpContext;
use vip_common::PROTO_TCP;

use crate::{csum, parse::ptr_at};

/// DNAT the IPv4 packet at `l3` (20-byte header, L4 at `l3 + 20`) to `addr:port`.
/// Returns None (frame untouched) if the L4 checksum field is not inside the frame.
#[inline(always)]
pub fn dnat(ctx: &XdpContext, l3: usize, proto: u8, addr: [u8; 4], port: [u8; 2]) -> Option<()> {
    let l4 = l3 + 20;
    let csum_off = if proto == PROTO_TCP { l4 + 16 } else { l4 + 6 };
    // Check every field before writing any, so a short frame is never half rewritten.
    let l4csum: *mut [u8; 2] = ptr_at(ctx, csum_off)?;
    let ip: *mut [u8; 20] = ptr_at(ctx, l3)?;
    let dport: *mut [u8; 2] = ptr_at(ctx, l4 + 2)?;
    // SAFETY: all three pointers were bounds-checked just above.
    unsafe {
        let mut h = *ip;
        let old_addr = [h[16], h[17], h[18], h[19]];
        let ipc = csum::csum_replace4(u16::from_be_bytes([h[10], h[11]]), old_addr, addr);
        h[10..12].copy_from_slice(&ipc.to_be_bytes());
        h[16..20].copy_from_slice(&addr);
        *ip = h;
        let old_port = *dport;
        *dport = port;
        let old = u16::from_be_bytes(*l4csum);
        let mut c = csum::csum_replace4(old, old_addr, addr);
        c = csum::csum_replace2(c, u16::from_be_bytes(old_port), u16::from_be_bytes(port));
        if proto != PROTO_TCP {
            c = csum::udp_fix(old, c);
        }
        *l4csum = c.to_be_bytes();
    }
    Some(())
}

/// DNAT the IPv6 packet at `l3` (no extension headers, L4 at `l3 + 40`) to `addr:port`.
/// IPv6 has no header checksum: only the TCP/UDP one changes, for the pseudo-header's
/// destination address and the port (RFC 1624, `~HC + Σ~m + Σm'`, summed a word at a time
/// as the address is overwritten: holding both addresses at once spills registers to the
/// stack). A UDP checksum of 0 is invalid in IPv6 (RFC 8200 8.1): such a packet is left
/// untouched (None) for the stack to drop, and a computed 0 is sent as 0xffff. None (frame
/// untouched) as well if a field is not inside the frame.
#[inline(always)]
pub fn dnat6(ctx: &XdpContext, l3: usize, proto: u8, addr: &[u8; 16], port: [u8; 2]) -> Option<()> {
    let l4 = l3 + 40;
    let csum_off = if proto == PROTO_TCP { l4 + 16 } else { l4 + 6 };
    let l4csum: *mut [u8; 2] = ptr_at(ctx, csum_off)?;
    let dst: *mut [u8; 16] = ptr_at(ctx, l3 + 24)?;
    let dport: *mut [u8; 2] = ptr_at(ctx, l4 + 2)?;
    // SAFETY: all three pointers were bounds-checked just above.
    unsafe {
        let old = u16::from_be_bytes(*l4csum);
        if proto != PROTO_TCP && old == 0 {
            return None;
        }
        let mut sum = !old as u32;
        let d = &mut *dst;
        let mut i = 0;
        while i < 16 {
            sum += (!u16::from_be_bytes([d[i], d[i + 1]])) as u32;
            sum += u16::from_be_bytes([addr[i], addr[i + 1]]) as u32;
            d[i] = addr[i];
            d[i + 1] = addr[i + 1];
            i += 2;
        }
        sum += (!u16::from_be_bytes(*dport)) as u32;
        sum += u16::from_be_bytes(port) as u32;
        *dport = port;
        let mut c = !csum::fold(sum);
        if proto != PROTO_TCP && c == 0 {
            c = 0xffff;
        }
        *l4csum = c.to_be_bytes();
    }
    Some(())
}
