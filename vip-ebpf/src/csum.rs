//! Checksum fix-ups after a rewrite (RFC 1624; XDP has no csum_replace helpers), and the plain
//! ones'-complement sum for the short messages the NDP responder checks and writes whole.
pub use vip_common::{csum_replace2, csum_replace4};

/// UDP: a zero checksum means "none" and stays zero; a computed zero is sent as 0xffff.
#[inline(always)]
pub fn udp_fix(old: u16, new: u16) -> u16 {
    if old == 0 {
        0
    } else if new == 0 {
        0xffff
    } else {
        new
    }
}

/// `acc` plus the 16-bit big-endian words of `b` (`N` even), not folded: a caller adds at most
/// a few hundred words, far from overflowing the u32.
#[inline(always)]
pub fn add_words<const N: usize>(mut acc: u32, b: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        acc += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    acc
}

/// Fold the carries of a ones'-complement sum into 16 bits (not complemented).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}
