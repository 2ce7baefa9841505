//! tc egress: replies of `nat` flows leave with the VIP:port the client talked to (IPv4 by
//! `REVNAT`, IPv6 by `REVNAT6`; untagged frames, no IPv4 options or IPv6 extension headers).
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use vip_common::{Flow6Key, FlowKey, PROTO_TCP, PROTO_UDP};

use crate::maps::{REVNAT, REVNAT6};

const ETH_HLEN: usize = 14;
const BPF_F_PSEUDO_HDR: u64 = 16;
const BPF_F_MARK_MANGLED_0: u64 = 32;

#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    let _ = try_egress(ctx);
    TC_ACT_OK
}

/// Any failure leaves the packet as it is: a reply we cannot rewrite is still better sent
/// (the client resets it) than silently lost.
#[inline(always)]
fn try_egress(ctx: &TcContext) -> Option<()> {
    let et: [u8; 2] = ctx.load(12).ok()?;
    if et == [0x86, 0xdd] {
        return try_egress6(ctx);
    }
    if et != [0x08, 0x00] {
        return None;
    }
    let ip: [u8; 20] = ctx.load(ETH_HLEN).ok()?;
    let proto = ip[9];
    if ip[0] != 0x45 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let l4 = ETH_HLEN + 20;
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    let key = FlowKey {
        src_be: [ip[12], ip[13], ip[14], ip[15]],
        dst_be: [ip[16], ip[17], ip[18], ip[19]],
        sport_be: [ports[0], ports[1]],
        dport_be: [ports[2], ports[3]],
        proto,
        _pad: [0; 3],
    };
    // SAFETY: copied out at once.
    let rev = unsafe { *REVNAT.get_ptr(key)? };
    let (csum_off, mangled) = if proto == PROTO_TCP {
        (l4 + 16, 0)
    } else {
        (l4 + 6, BPF_F_MARK_MANGLED_0)
    };
    let old_addr = u32::from_ne_bytes(key.src_be);
    let new_addr = u32::from_ne_bytes(rev.vip_be);
    let old_port = u16::from_ne_bytes(key.sport_be) as u64;
    let new_port = u16::from_ne_bytes(rev.vport_be) as u64;
    ctx.l4_csum_replace(
        csum_off,
        old_addr as u64,
        new_addr as u64,
        BPF_F_PSEUDO_HDR | mangled | 4,
    )
    .ok()?;
    ctx.l4_csum_replace(csum_off, old_port, new_port, mangled | 2)
        .ok()?;
    ctx.l3_csum_replace(ETH_HLEN + 10, old_addr as u64, new_addr as u64, 4)
        .ok()?;
    ctx.store(ETH_HLEN + 12, &rev.vip_be, 0).ok()?;
    ctx.store(l4, &rev.vport_be, 0).ok()?;
    Some(())
}

/// The IPv6 reply: source address and port back to [VIP]:port. No header checksum; the
/// TCP/UDP one follows the pseudo-header's source (four 32-bit words) and the port. UDP's
/// `BPF_F_MARK_MANGLED_0` sends a computed 0 as 0xffff, as IPv6 requires.
#[inline(always)]
fn try_egress6(ctx: &TcContext) -> Option<()> {
    let ip: [u8; 40] = ctx.load(ETH_HLEN).ok()?;
    let proto = ip[6];
    if ip[0] >> 4 != 6 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let l4 = ETH_HLEN + 40;
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    let mut key = Flow6Key {
        sport_be: [ports[0], ports[1]],
        dport_be: [ports[2], ports[3]],
        proto,
        ..Flow6Key::default()
    };
    key.src_be.copy_from_slice(&ip[8..24]);
    key.dst_be.copy_from_slice(&ip[24..40]);
    // SAFETY: copied out at once.
    let rev = unsafe { *REVNAT6.get_ptr(key)? };
    let (csum_off, mangled) = if proto == PROTO_TCP {
        (l4 + 16, 0)
    } else {
        (l4 + 6, BPF_F_MARK_MANGLED_0)
    };
    let word = |a: &[u8; 16], i: usize| {
        u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]) as u64
    };
    for i in 0..4 {
        ctx.l4_csum_replace(
            csum_off,
            word(&key.src_be, i),
            word(&rev.vip_be, i),
            BPF_F_PSEUDO_HDR | mangled | 4,
        )
        .ok()?;
    }
    let old_port = u16::from_ne_bytes(key.sport_be) as u64;
    let new_port = u16::from_ne_bytes(rev.vport_be) as u64;
    ctx.l4_csum_replace(csum_off, old_port, new_port, mangled | 2)
        .ok()?;
    ctx.store(ETH_HLEN + 8, &rev.vip_be, 0).ok()?;
    ctx.store(l4, &rev.vport_be, 0).ok()?;
    Some(())
}
