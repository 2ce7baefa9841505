//! Traffic generator and sink for `cargo xtask bench` (never attached by the daemon).
//!
//! `xdp_gen` is run by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: every frame it
//! returns XDP_TX for is really transmitted out of the device named in the run's context, so
//! it is a packet generator without pktgen. It writes the whole header from `GEN_HDR` on
//! every run (live-frame pages are recycled with whatever the receivers wrote into them) and
//! varies the UDP source port over `GEN_CFG.flows` flows.
//!
//! `xdp_fib` and `xdp_noop` are only timed through BPF_PROG_TEST_RUN, to break the load
//! balancer's per-packet cost down: the FIB helper it calls for every forwarded packet, and
//! an empty program.
//!
//! `xdp_sink` is attached to the receiving veth: it counts every frame and the UDP frames
//! addressed to `SINK_MATCH` (address, port), then drops them, so the receiver's cost is the
//! same whatever sent the packets.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    btf_maps::{Array, PerCpuArray},
    helpers::generated::bpf_fib_lookup as fib_lookup,
    macros::{btf_map, xdp},
    programs::XdpContext,
};

/// Ethernet + IPv4 (no options) + UDP.
const HDR_LEN: usize = 42;
/// Offset of the UDP source port.
const SPORT_OFF: usize = 34;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenCfg {
    /// Number of flows (distinct source ports); 0 or 1 is one flow.
    pub flows: u32,
    /// First source port.
    pub base_port: u32,
}

/// The header every generated frame gets (IPv4 checksum precomputed, UDP checksum 0, so
/// changing the source port needs no checksum update).
#[btf_map]
static GEN_HDR: Array<[u8; HDR_LEN], 1> = Array::new();

#[btf_map]
static GEN_CFG: Array<GenCfg, 1> = Array::new();

/// Per-CPU packet sequence: picks the flow of the next frame.
#[btf_map]
static GEN_SEQ: PerCpuArray<u32, 1> = PerCpuArray::new();

/// Destination the sink counts as "delivered": IPv4 address (0.0.0.0: any) and UDP port,
/// network order.
#[btf_map]
static SINK_MATCH: Array<[u8; 8], 1> = Array::new();

/// Per-CPU: [0] every frame seen, [1] UDP frames to SINK_MATCH.
#[btf_map]
static SINK_COUNT: PerCpuArray<u64, 2> = PerCpuArray::new();

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
    try_gen(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn try_gen(ctx: &XdpContext) -> Option<u32> {
    let hdr = GEN_HDR.get_ptr(0)?;
    let cfg = GEN_CFG.get_ptr(0)?;
    let seq = GEN_SEQ.get_ptr_mut(0)?;
    let dst: *mut [u8; HDR_LEN] = ptr_at(ctx, 0)?;
    // SAFETY: map values exist (array index 0) and the frame holds HDR_LEN bytes (checked).
    unsafe {
        *dst = *hdr;
        let flows = (*cfg).flows;
        if flows > 1 {
            let s = *seq;
            *seq = s.wrapping_add(1);
            let port = ((*cfg).base_port + s % flows) as u16;
            let p: *mut [u8; 2] = ptr_at(ctx, SPORT_OFF)?;
            *p = port.to_be_bytes();
        }
    }
    Some(xdp_action::XDP_TX)
}

#[xdp]
pub fn xdp_sink(ctx: XdpContext) -> u32 {
    count(0);
    if matches(&ctx).unwrap_or(false) {
        count(1);
    }
    xdp_action::XDP_DROP
}

#[inline(always)]
fn count(i: u32) {
    if let Some(c) = SINK_COUNT.get_ptr_mut(i) {
        // SAFETY: per-CPU slot of this CPU; no one else writes it.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn matches(ctx: &XdpContext) -> Option<bool> {
    let want = SINK_MATCH.get_ptr(0)?;
    let h: *const [u8; HDR_LEN] = ptr_at(ctx, 0)?;
    // SAFETY: the map value exists and the frame holds HDR_LEN bytes (checked).
    let (h, want) = unsafe { (*h, *want) };
    // IPv4, no options, UDP, destination port, and address unless it is 0.0.0.0.
    let any_addr = want[0..4] == [0, 0, 0, 0];
    Some(
        h[12] == 0x08
            && h[13] == 0x00
            && h[14] == 0x45
            && h[23] == 17
            && (any_addr || h[30..34] == want[0..4])
            && h[36..38] == want[4..6],
    )
}

#[xdp]
pub fn xdp_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// One bpf_fib_lookup for the frame's IPv4 (src, dst), as the load balancer makes it:
/// XDP_TX when the next hop is resolved, else XDP_DROP.
#[xdp]
pub fn xdp_fib(ctx: XdpContext) -> u32 {
    try_fib(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn try_fib(ctx: &XdpContext) -> Option<u32> {
    let h: *const [u8; 34] = ptr_at(ctx, 0)?;
    // SAFETY: the frame holds 34 bytes (checked).
    let h = unsafe { *h };
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid start.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = 2;
    p.l4_protocol = h[23];
    // SAFETY: ctx.ctx is the program's valid xdp_md.
    p.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    p.__bindgen_anon_1.tot_len = u16::from_be_bytes([h[16], h[17]]);
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([h[26], h[27], h[28], h[29]]);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([h[30], h[31], h[32], h[33]]);
    // SAFETY: ctx is this program's context; p is a valid, writable lookup struct.
    let rc = unsafe {
        fib_lookup(
            ctx.ctx as *mut _,
            &mut p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    Some(if rc == 0 {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_DROP
    })
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
