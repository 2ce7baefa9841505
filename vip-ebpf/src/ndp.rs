//! NDP for IPv6 VIPs (RFC 4861): a Neighbor Solicitation for a VIP this node owns becomes a
//! Neighbor Advertisement in place (XDP_TX, any VLAN tag kept); one for a VIP held elsewhere
//! is dropped; an advertisement from another MAC for an owned VIP is a conflict. Only
//! ICMPv6 directly after the fixed IPv6 header is read: extension headers, like everything
//! that fails the checks of RFC 4861 7.1.1/7.1.2 (hop limit 255, code 0, length, options,
//! checksum), pass to the kernel untouched and are never answered.
//!
//! ```text
//!  in:  eth(asker → us/33:33:ff..) [vlan] ip6(asker|:: → VIP|ff02::1:ffXX:XXXX, hl 255)
//!       icmp6 135 (24 B) + options (SLLA / nonce / …, 8-byte units)
//!  out: eth(us → asker|33:33:00:00:00:01) [vlan] ip6(VIP → asker|ff02::1, hl 255)
//!       icmp6 136 flags S(not for DAD)+O, target VIP, TLLA = our MAC (32 B)
//! ```
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};

use crate::{
    csum, maps,
    owner::{self, Refusal},
    parse::{ptr_at, EtherFrame},
    stats,
};

const IPPROTO_ICMPV6: u8 = 58;
pub const ND_NS: u8 = 135;
pub const ND_NA: u8 = 136;
const OPT_SLLA: u8 = 1;
const OPT_TLLA: u8 = 2;
/// NS and NA without options; options follow in 8-byte units.
const ND_MIN: usize = 24;
/// Option units read (and summed for the checksum): an NS carries one or two (source
/// link-layer address, the DAD nonce of RFC 7527). A longer message is not answered.
const MAX_OPT_UNITS: usize = 8;
/// The advertisement written: the fixed part and one target link-layer option.
const NA_LEN: usize = ND_MIN + 8;
const IP6_HLEN: usize = 40;
/// First byte of the NA flags: Solicited, Override.
const NA_F_SOLICITED: u8 = 0x40;
const NA_F_OVERRIDE: u8 = 0x20;
const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// A solicitation or advertisement that passed every check.
struct Nd {
    /// ICMPv6 type: `ND_NS` or `ND_NA`.
    typ: u8,
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    /// The Ethernet source (the asker, or the advertiser).
    mac: [u8; 6],
}

/// A call of its own, for BPF's stack limit (see `ipv6` in main.rs).
#[inline(never)]
pub fn handle(ctx: &XdpContext, frame: &EtherFrame) -> u32 {
    let l3 = frame.l3_off;
    let Some(hdr) = ptr_at::<[u8; IP6_HLEN]>(ctx, l3) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: ptr_at checked the fixed header lies inside the frame.
    let ip = unsafe { *hdr };
    if ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 {
        return xdp_action::XDP_PASS;
    }
    let Some(typ) = ptr_at::<u8>(ctx, l3 + IP6_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds-checked just above.
    let typ = unsafe { *typ };
    if typ != ND_NS && typ != ND_NA {
        return xdp_action::XDP_PASS;
    }
    let Some(nd) = parse(ctx, l3, &ip, typ) else {
        stats::bump(|s| s.ndp_malformed += 1);
        return xdp_action::XDP_PASS;
    };
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if nd.typ == ND_NA {
        note_conflict(ifindex, &nd.target, &nd.mac);
        return xdp_action::XDP_PASS;
    }
    if nd.src != [0; 16] {
        note_conflict(ifindex, &nd.src, &nd.mac);
    }
    solicited(ctx, l3, ifindex, &nd)
}

/// The checks of RFC 4861 7.1.1 (NS) and 7.1.2 (NA) on the message at `l3 + 40`, whose fixed
/// IPv6 header is `ip`; None: malformed.
#[inline(always)]
fn parse(ctx: &XdpContext, l3: usize, ip: &[u8; IP6_HLEN], typ: u8) -> Option<Nd> {
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if ip[7] != 255 || plen < ND_MIN || !(plen - ND_MIN).is_multiple_of(8) {
        return None;
    }
    let units = (plen - ND_MIN) / 8;
    if units > MAX_OPT_UNITS {
        return None;
    }
    // The message lies inside the frame exactly when its fixed part and every option unit
    // do: those are checked one by one where they are read, not as one length up front, as
    // the compiler would then drop the per-read checks the verifier needs.
    let l4 = l3 + IP6_HLEN;
    let body = ptr_at::<[u8; ND_MIN]>(ctx, l4)?;
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    // SAFETY: both bounds-checked just above.
    let (b, eth) = unsafe { (*body, *eth) };
    let mut nd = Nd {
        typ,
        src: [0; 16],
        dst: [0; 16],
        target: [0; 16],
        mac: [0; 6],
    };
    nd.src.copy_from_slice(&ip[8..24]);
    nd.dst.copy_from_slice(&ip[24..40]);
    nd.target.copy_from_slice(&b[8..24]);
    nd.mac.copy_from_slice(&eth[6..12]);
    // No source is multicast (RFC 4291 2.7), nor a target (7.1.1/7.1.2).
    if b[1] != 0 || nd.src[0] == 0xff || nd.target[0] == 0xff {
        return None;
    }
    // The pseudo-header (RFC 8200 8.1): addresses, upper-layer length, next header.
    let mut addrs = [0u8; 32];
    addrs.copy_from_slice(&ip[8..40]);
    let mut sum = csum::add_words(0, &addrs);
    sum += plen as u32 + IPPROTO_ICMPV6 as u32;
    sum = csum::add_words(sum, &b);
    let slla = options(ctx, l4 + ND_MIN, units, &mut sum)?;
    if csum::fold(sum) != 0xffff || !addressed_well(&nd, b[4], slla) {
        return None;
    }
    Some(nd)
}

/// Walk the options in their 8-byte units, adding each unit to `sum`: every option's length
/// non-zero and inside the message (it must end exactly at the end). Some(whether a source
/// link-layer option is present), None: malformed.
#[inline(always)]
fn options(ctx: &XdpContext, off: usize, units: usize, sum: &mut u32) -> Option<bool> {
    let mut next = 0;
    let mut slla = false;
    for k in 0..MAX_OPT_UNITS {
        if k >= units {
            break;
        }
        let p = ptr_at::<[u8; 8]>(ctx, off + k * 8)?;
        // SAFETY: bounds-checked just above.
        let u = unsafe { *p };
        if k == next {
            if u[1] == 0 {
                return None;
            }
            next = k + u[1] as usize;
            slla |= u[0] == OPT_SLLA;
        }
        *sum = csum::add_words(*sum, &u);
    }
    (next == units).then_some(slla)
}

/// The addressing rules: an NS goes to its target (NUD) or the target's solicited-node
/// group; from :: (DAD) only to the group and without a source link-layer option. An NA to a
/// multicast group is never Solicited. `flags` is the first byte after the checksum.
#[inline(always)]
fn addressed_well(nd: &Nd, flags: u8, slla: bool) -> bool {
    if nd.typ == ND_NA {
        return nd.dst[0] != 0xff || flags & NA_F_SOLICITED == 0;
    }
    let t = &nd.target;
    let group = [
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ];
    if nd.src == [0; 16] {
        return nd.dst == group && !slla;
    }
    nd.dst == group || nd.dst == *t
}

/// An NS that passed the checks: answered when the target is ours to answer for.
#[inline(always)]
fn solicited(ctx: &XdpContext, l3: usize, ifindex: u32, nd: &Nd) -> u32 {
    let iface = match owner::answerable(ctx, ifindex, maps::vip6(&nd.target)) {
        Ok(iface) => iface,
        Err(r) => {
            count_refusal(&r, &nd.target);
            return r.verdict();
        }
    };
    if !resize(ctx, l3 + IP6_HLEN + NA_LEN) {
        // No room to grow (never on a real driver's buffer): the kernel decides.
        return xdp_action::XDP_PASS;
    }
    let dad = nd.src == [0; 16];
    if write_na(ctx, l3, &iface.mac, nd, dad).is_none() {
        // Unreachable (the frame was just sized to fit), but the frame is no longer the one
        // that came in, so it must not reach the stack.
        return xdp_action::XDP_DROP;
    }
    stats::bump(|s| s.ndp_reply += 1);
    if dad {
        stats::bump(|s| s.ndp_dad_defended += 1);
    }
    stats::bump_vip6(&nd.target, stats::Vip6Counter::Reply);
    xdp_action::XDP_TX
}

/// Make the frame `len` bytes long (the NA is 32 bytes of ICMPv6; the NS was 24 and up, and
/// the frame may carry an Ethernet trailer). After this every packet pointer is stale.
#[inline(always)]
fn resize(ctx: &XdpContext, len: usize) -> bool {
    let delta = len as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: the helper checks `delta` against the buffer; the frame is only read again
    // through fresh `ptr_at` checks.
    delta == 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0
}

/// Write the advertisement over the (resized) frame: MACs, IPv6 header, NA, checksum.
#[inline(always)]
fn write_na(ctx: &XdpContext, l3: usize, mac: &[u8; 6], nd: &Nd, dad: bool) -> Option<()> {
    // Taken afresh after the resize; the verifier needs the checks next to the writes.
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    let pkt = ptr_at::<[u8; IP6_HLEN + NA_LEN]>(ctx, l3)?;
    let (eth_dst, dst) = if dad {
        (ALL_NODES_MAC, ALL_NODES)
    } else {
        (nd.mac, nd.src)
    };
    let mut na = [0u8; IP6_HLEN + NA_LEN];
    na[0] = 0x60;
    na[4..6].copy_from_slice(&(NA_LEN as u16).to_be_bytes());
    na[6] = IPPROTO_ICMPV6;
    na[7] = 255;
    na[8..24].copy_from_slice(&nd.target);
    na[24..40].copy_from_slice(&dst);
    na[40] = ND_NA;
    na[44] = if dad {
        NA_F_OVERRIDE
    } else {
        NA_F_SOLICITED | NA_F_OVERRIDE
    };
    na[48..64].copy_from_slice(&nd.target);
    na[64] = OPT_TLLA;
    na[65] = 1;
    na[66..72].copy_from_slice(mac);
    // Over the pseudo-header (addresses, length, next header) and the message, checksum 0.
    let sum = csum::add_words(NA_LEN as u32 + IPPROTO_ICMPV6 as u32, &na);
    // The IPv6 header's first 8 bytes are in `na` but not in the pseudo-header: take them out.
    let sum = sum - csum::add_words(0, &[na[0], na[1], na[2], na[3], na[4], na[5], na[6], na[7]]);
    na[42..44].copy_from_slice(&(!csum::fold(sum)).to_be_bytes());
    let mut macs = [0u8; 12];
    macs[0..6].copy_from_slice(&eth_dst);
    macs[6..12].copy_from_slice(mac);
    // SAFETY: both pointers were bounds-checked above, after the resize.
    unsafe {
        *eth = macs;
        *pkt = na;
    }
    Some(())
}

/// Another MAC speaking for an owned VIP (advertising it, or soliciting from it): two
/// owners. Counted for the daemon; the frame still passes.
#[inline(always)]
fn note_conflict(ifindex: u32, vip: &[u8; 16], mac: &[u8; 6]) {
    if owner::foreign_claim(ifindex, maps::vip6(vip), mac) {
        stats::bump(|s| s.ndp_conflict += 1);
        stats::bump_vip6(vip, stats::Vip6Counter::Conflict(*mac));
    }
}

/// Count a solicitation not answered, in NDP's counters.
#[inline(always)]
fn count_refusal(r: &Refusal, vip: &[u8; 16]) {
    match r {
        Refusal::NotVip => {}
        Refusal::NotOwner => {
            stats::bump(|s| s.ndp_drop_not_owner += 1);
            stats::bump_vip6(vip, stats::Vip6Counter::Drop);
        }
        Refusal::DeadMan => {
            stats::bump(|s| s.ndp_deadman += 1);
            stats::bump_vip6(vip, stats::Vip6Counter::Drop);
        }
        Refusal::NoIface => stats::bump(|s| s.ndp_no_iface += 1),
    }
}
