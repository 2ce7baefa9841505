//! Support for the per-packet benchmark entries (see `vip_bench` in main.rs).
use aya_ebpf::{btf_maps::Array, macros::btf_map, programs::XdpContext};

use crate::parse::ptr_at;

/// Bytes of the frame restored before each run: every header the program reads or writes
/// (Ethernet, IPv4, TCP) lies in the first 64, the minimum Ethernet frame.
pub const BENCH_LEN: usize = 64;

#[btf_map]
pub static BENCH_FRAME: Array<[u8; BENCH_LEN], 1> = Array::new();

#[inline(always)]
pub fn restore(ctx: &XdpContext) {
    let Some(src) = BENCH_FRAME.get_ptr(0) else {
        return;
    };
    let Some(dst) = ptr_at::<[u8; BENCH_LEN]>(ctx, 0) else {
        return;
    };
    // SAFETY: both regions are BENCH_LEN bytes and bounds-checked (map value, frame).
    unsafe { *dst = *src };
}
