//! The hashes and checksum arithmetic both the XDP program and the daemon's reference model
//! compute, so they cannot drift apart.

/// (word index, bit mask) of `addr` in the VIP prefilter.
#[inline(always)]
pub fn vip_filter_slot(addr_be: [u8; 4]) -> (u32, u64) {
    let bit = mix32(u32::from_be_bytes(addr_be)) & 0xffff;
    (bit >> 6, 1u64 << (bit & 63))
}

/// murmur3's finalizer: cheap, no loops (the verifier takes it as is), good avalanche.
#[inline(always)]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^ (x >> 16)
}

/// The flow hash both the XDP program and the reference model use: source address, source
/// port, destination port, protocol and the cluster seed. Not the destination address, so
/// every node (and every VIP owner after a failover) maps a flow to the same slot.
#[inline(always)]
pub fn flow_hash(
    src_be: [u8; 4],
    sport_be: [u8; 2],
    dport_be: [u8; 2],
    proto: u8,
    seed: u32,
) -> u32 {
    let mut h = mix32(seed ^ u32::from_be_bytes(src_be));
    h = mix32(
        h ^ ((u16::from_be_bytes(sport_be) as u32) << 16 | u16::from_be_bytes(dport_be) as u32),
    );
    mix32(h ^ proto as u32)
}

/// RFC 1624 incremental update of a ones'-complement checksum (`csum`, as stored in the
/// header) when a 16-bit word changes from `old` to `new`.
#[inline(always)]
pub fn csum_replace2(csum: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m')
    let mut sum = (!csum as u32) + (!old as u32 & 0xffff) + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Same for a 32-bit field (an IPv4 address), as two 16-bit words.
#[inline(always)]
pub fn csum_replace4(csum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let c = csum_replace2(
        csum,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    csum_replace2(
        c,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}
