//! Checksum fix-ups after a rewrite (RFC 1624; XDP has no csum_replace helpers).
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
