//! The gates both neighbour responders (ARP for IPv4 VIPs, NDP for IPv6 ones) pass before
//! answering for a VIP — owned on this link, the dead-man not fired, the link described —
//! and the check that tells a foreign claim on an owned VIP. One copy, so the two families
//! can never disagree about who may answer.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use aya_log_ebpf::warn;
use vip_common::{IfaceValue, VipValue, VIP_F_OWNED};

use crate::maps;

/// Why a VIP is not answered; the responder counts it in its own family's counters.
pub enum Refusal {
    /// Not a VIP at all: the kernel's business.
    NotVip,
    /// Held elsewhere, or owned on another link.
    NotOwner,
    /// The daemon's dead-man deadline passed: someone else may own it by now.
    DeadMan,
    /// Owned, but the daemon never described this link: answering would need a MAC we
    /// do not have.
    NoIface,
}

impl Refusal {
    /// Pass what is not ours to decide; drop what must not be answered by anyone here (the
    /// kernel could answer for an address bound on a local device).
    #[inline(always)]
    pub fn verdict(&self) -> u32 {
        match self {
            Refusal::NotVip | Refusal::NoIface => xdp_action::XDP_PASS,
            Refusal::NotOwner | Refusal::DeadMan => xdp_action::XDP_DROP,
        }
    }
}

/// Whether this node may answer for the VIP whose entry is `v` on `ifindex` now: `Ok` with
/// the link to answer from.
#[inline(always)]
pub fn answerable(
    ctx: &XdpContext,
    ifindex: u32,
    v: Option<VipValue>,
) -> Result<IfaceValue, Refusal> {
    let Some(v) = v else {
        return Err(Refusal::NotVip);
    };
    let owned = v.flags & VIP_F_OWNED != 0 && (v.ifindex == 0 || v.ifindex == ifindex);
    if !owned {
        return Err(Refusal::NotOwner);
    }
    // The dead-man: a daemon that stopped refreshing the deadline may be hung or cut off,
    // and someone else may own the VIP by now. Silent, like a non-owner.
    if deadman_fired() {
        return Err(Refusal::DeadMan);
    }
    let Some(iface) = maps::iface(ifindex) else {
        warn!(
            ctx,
            "vip owned but ifindex {} has no entry in IFACES", ifindex
        );
        return Err(Refusal::NoIface);
    };
    Ok(iface)
}

/// Whether `mac` speaking for the VIP whose entry is `v` (ARP from it, an NA for it) is a
/// foreign claim: we own it and `mac` is not this link's. The link's entry is read only for
/// owned VIPs.
#[inline(always)]
pub fn foreign_claim(ifindex: u32, v: Option<VipValue>, mac: &[u8; 6]) -> bool {
    v.is_some_and(|v| v.flags & VIP_F_OWNED != 0)
        && !maps::iface(ifindex).is_some_and(|i| i.mac == *mac)
}

/// The dead-man's kernel side: past the deadline the daemon last wrote, nothing is answered.
/// The clock is read only when a deadline is set (reading it is not free in a VM).
#[inline(always)]
fn deadman_fired() -> bool {
    let deadline = maps::deadline();
    if deadline == 0 {
        return false;
    }
    // SAFETY: a helper without preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    now > deadline
}
