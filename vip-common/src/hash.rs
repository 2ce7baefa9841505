//! The hashes and checksum arithmetic both the XDP program and the daemon's reference model
//! compute, so they cannot drift apart.

/// (word index, bit mask) of `addr` in the VIP prefilter.
#[inline(always)]
pub fn vip_filter_slot(addr_be: [u8; 4]) -> (u32, u64) {
    let bit = mix32(u32::from_be_bytes(addr_be)) & 0xffff;
    (bit >> 6, 1u64 << (bit & 63))
}

/// (word index, bit mask) of an IPv6 address in the same prefilter: its four 32-bit words
/// folded through `mix32` one after another, so every bit of the address moves the slot
/// (an XOR of the words would map whole families of addresses onto one bit).
#[inline(always)]
pub fn vip6_filter_slot(addr_be: [u8; 16]) -> (u32, u64) {
    let bit = mix32(
        mix32(mix32(mix32(word(&addr_be, 0)) ^ word(&addr_be, 4)) ^ word(&addr_be, 8))
            ^ word(&addr_be, 12),
    ) & 0xffff;
    (bit >> 6, 1u64 << (bit & 63))
}

/// The big-endian 32-bit word of `a` at byte `i`.
#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
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

/// The IPv6 flow hash, `flow_hash`'s twin, with the same contract: every node of the
/// cluster (and the reference model) must compute exactly this, or a flow lands on another
/// backend after a change of VIP owner or ECMP path. Source address (its four big-endian
/// 32-bit words, first to last), source port, destination port, protocol and the cluster
/// seed, each mixed in with `mix32` in that order; not the destination address.
#[inline(always)]
pub fn flow6_hash(
    src_be: [u8; 16],
    sport_be: [u8; 2],
    dport_be: [u8; 2],
    proto: u8,
    seed: u32,
) -> u32 {
    let mut h = mix32(seed ^ word(&src_be, 0));
    h = mix32(h ^ word(&src_be, 4));
    h = mix32(h ^ word(&src_be, 8));
    h = mix32(h ^ word(&src_be, 12));
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
