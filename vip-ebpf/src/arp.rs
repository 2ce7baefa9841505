//! ARP for VIPs: a request for a VIP this node owns becomes a reply in place (XDP_TX, any VLAN
//! tag kept); a request for a VIP held elsewhere is dropped; everything else passes.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

use crate::{
    maps,
    owner::{self, Refusal},
    parse::{ptr_at, EtherFrame},
    stats,
};

const ARPOP_REQUEST: u16 = 1;
const ARPOP_REPLY: u16 = 2;

/// Ethernet/IPv4 ARP body (RFC 826), byte arrays only so any offset is aligned.
#[repr(C)]
#[derive(Clone, Copy)]
struct ArpEth4 {
    htype: [u8; 2],
    ptype: [u8; 2],
    hlen: u8,
    plen: u8,
    oper: [u8; 2],
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<ArpEth4>() == 28);

/// A request for an owned VIP becomes the reply. The gates that are not ARP's (ownership, the
/// dead-man, foreign claims) are `owner`'s, shared with the NDP responder.
#[inline(always)]
pub fn handle(ctx: &XdpContext, frame: &EtherFrame) -> u32 {
    let Some(arp_p) = ptr_at::<ArpEth4>(ctx, frame.l3_off) else {
        stats::bump(|s| s.arp_malformed += 1);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: ptr_at checked the 28 bytes lie inside the frame.
    let arp = unsafe { *arp_p };
    if u16::from_be_bytes(arp.htype) != 1
        || u16::from_be_bytes(arp.ptype) != 0x0800
        || arp.hlen != 6
        || arp.plen != 4
    {
        stats::bump(|s| s.arp_malformed += 1);
        return xdp_action::XDP_PASS;
    }
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    note_conflict(ifindex, &arp.spa, &arp.sha);
    // Replies and gratuitous ARP (sender == target) are other hosts speaking: the kernel sees
    // them.
    if u16::from_be_bytes(arp.oper) != ARPOP_REQUEST || arp.spa == arp.tpa {
        return xdp_action::XDP_PASS;
    }
    let iface = match owner::answerable(ctx, ifindex, maps::vip(&arp.tpa)) {
        Ok(iface) => iface,
        Err(r) => {
            count_refusal(&r, &arp.tpa);
            return r.verdict();
        }
    };
    let Some(eth) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: both pointers were bounds-checked by ptr_at above; the frame is writable.
    unsafe {
        let mut macs = *eth;
        // Ethernet: to the asker, from us.
        macs.copy_within(6..12, 0);
        macs[6..12].copy_from_slice(&iface.mac);
        *eth = macs;
        let mut reply = arp;
        reply.oper = ARPOP_REPLY.to_be_bytes();
        reply.sha = iface.mac;
        reply.spa = arp.tpa;
        reply.tha = arp.sha;
        reply.tpa = arp.spa;
        *arp_p = reply;
    }
    stats::bump(|s| s.arp_reply += 1);
    stats::bump_vip(&arp.tpa, stats::VipCounter::ArpReply);
    xdp_action::XDP_TX
}

/// Anyone else speaking *from* a VIP we own (reply, gratuitous ARP, probe) claims it: two
/// owners. Counted for the daemon (metric, log, re-announcement); the frame still passes.
/// The prefilter first: almost every sender is a plain host, and that costs no hash lookup.
#[inline(always)]
fn note_conflict(ifindex: u32, spa: &[u8; 4], sha: &[u8; 6]) {
    let v = maps::maybe_vip(spa).then(|| maps::vip(spa)).flatten();
    if owner::foreign_claim(ifindex, v, sha) {
        stats::bump(|s| s.arp_conflict += 1);
        stats::bump_vip(spa, stats::VipCounter::Conflict(*sha));
    }
}

/// Count a request not answered, in ARP's counters.
#[inline(always)]
fn count_refusal(r: &Refusal, vip: &[u8; 4]) {
    match r {
        Refusal::NotVip => {}
        Refusal::NotOwner => {
            stats::bump(|s| s.arp_drop_not_owner += 1);
            stats::bump_vip(vip, stats::VipCounter::ArpDrop);
        }
        Refusal::DeadMan => {
            stats::bump(|s| s.arp_deadman += 1);
            stats::bump_vip(vip, stats::VipCounter::ArpDrop);
        }
        Refusal::NoIface => stats::bump(|s| s.arp_no_iface += 1),
    }
}
