//! The ABI shared by the XDP program and the daemon: map keys and values, map names and
//! pin names. Every type is `#[repr(C)]`, has no implicit padding and carries a size assert so
//! both sides (and `bpftool map dump`) agree on the layout.
//!
//! Split by reader: `names` (what things are called), `limits` (how big), `l2` (ARP, NDP and the
//! dead-man), `lb` and `lb6` (load balancing, IPv4 and IPv6), `stats` (counters), `hash` (shared arithmetic); every
//! item is re-exported here, so users write `vip_common::FlowKey`.
#![no_std]

mod hash;
mod l2;
mod lb;
mod lb6;
mod limits;
mod names;
mod stats;

pub use hash::*;
pub use l2::*;
pub use lb::*;
pub use lb6::*;
pub use limits::*;
pub use names::*;
pub use stats::*;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), Copy, made only of integers and byte arrays, with no
    // implicit padding (asserted above), so any bit pattern is valid.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for Vip6Key {}
    unsafe impl aya::Pod for Vip6Stats {}
    unsafe impl aya::Pod for VipValue {}
    unsafe impl aya::Pod for IfaceValue {}
    unsafe impl aya::Pod for Stats {}
    unsafe impl aya::Pod for VipStats {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for BackendValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for CtSet {}
    unsafe impl aya::Pod for RevValue {}
    unsafe impl aya::Pod for LbStats {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for Service6Key {}
    unsafe impl aya::Pod for Backend6Value {}
    unsafe impl aya::Pod for Flow6Key {}
    unsafe impl aya::Pod for Ct6Entry {}
    unsafe impl aya::Pod for Ct6Set {}
    unsafe impl aya::Pod for Rev6Value {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full ones'-complement sum over 16-bit words, for checking the incremental form.
    fn full(words: &[u16]) -> u16 {
        let mut s: u32 = words.iter().map(|&w| w as u32).sum();
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn incremental_checksum_matches_recomputation() {
        let mut words = [
            0x4500u16, 0x0054, 0x1c46, 0x4000, 0x4006, 0, 0xc000, 0x0264, 0xc000, 0x0215,
        ];
        let before = full(&words);
        let old = [0xc0, 0x00, 0x02, 0x15];
        let new = [0xc6, 0x33, 0x64, 0x16];
        words[8] = 0xc633;
        words[9] = 0x6416;
        assert_eq!(csum_replace4(before, old, new), full(&words));
        let mut w2 = words;
        let c = full(&w2);
        w2[3] = 0xffff;
        assert_eq!(csum_replace2(c, 0x4000, 0xffff), full(&w2));
    }

    #[test]
    fn conntrack_sets_keep_the_total_and_a_floor() {
        // The default keeps the table of earlier versions on 2 CPUs (2^17 sets each).
        assert_eq!(ct_sets_per_cpu(CT_FLOWS_DEFAULT, 2), CT_SETS);
        assert_eq!(ct_sets_per_cpu(CT_FLOWS_DEFAULT, 1), 2 * CT_SETS);
        // 64 CPUs: each CPU holds its 1/64 share; the total stays the same.
        let s = ct_sets_per_cpu(CT_FLOWS_DEFAULT, 64);
        assert_eq!(s, 1 << 12);
        assert_eq!(s * CT_WAYS * 64, CT_FLOWS_DEFAULT);
        // Not a power of two: rounded down, never above the total.
        let s = ct_sets_per_cpu(CT_FLOWS_DEFAULT, 3);
        assert_eq!(s, 1 << 16);
        assert!(s * CT_WAYS * 3 <= CT_FLOWS_DEFAULT);
        // The floor and the ceiling.
        assert_eq!(ct_sets_per_cpu(1000, 64), CT_MIN_SETS);
        assert_eq!(ct_sets_per_cpu(u32::MAX, 1), CT_MAX_SETS);
        assert_eq!(ct_sets_per_cpu(CT_FLOWS_DEFAULT, 0), 2 * CT_SETS);
        for n in 1..=256 {
            assert!(ct_sets_per_cpu(12_345_678, n).is_power_of_two());
        }
    }

    #[test]
    fn set_index_stays_under_the_mask() {
        let mut f = FlowKey {
            src_be: [10, 0, 0, 1],
            dst_be: [192, 0, 2, 1],
            sport_be: [0, 0],
            dport_be: [0, 80],
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let mut seen = [false; 16];
        for p in 0..4096u16 {
            f.sport_be = p.to_be_bytes();
            let i = ct_set_index(&f, 15);
            assert!(i < 16);
            seen[i as usize] = true;
            // A smaller table is the larger one's index, masked.
            assert_eq!(ct_set_index(&f, CT_SETS - 1) & 15, i);
        }
        assert!(seen.iter().all(|s| *s), "every set used");
    }

    #[test]
    fn stripes_are_per_cpu_up_to_the_cap() {
        assert_eq!(stat_stripes(0), 1);
        assert_eq!(stat_stripes(1), 1);
        assert_eq!(stat_stripes(2), 2);
        assert_eq!(stat_stripes(3), 4);
        assert_eq!(stat_stripes(8), 8);
        assert_eq!(stat_stripes(64), STAT_STRIPES_MAX);
    }

    #[test]
    fn flow_hash_ignores_destination_and_uses_seed() {
        let a = flow_hash([192, 0, 2, 10], [0x30, 0x39], [0, 80], 6, 1);
        assert_eq!(a, flow_hash([192, 0, 2, 10], [0x30, 0x39], [0, 80], 6, 1));
        assert_ne!(a, flow_hash([192, 0, 2, 10], [0x30, 0x39], [0, 80], 6, 2));
        assert_ne!(a, flow_hash([192, 0, 2, 10], [0x30, 0x3a], [0, 80], 6, 1));
    }

    #[test]
    fn flow6_hash_ignores_destination_and_uses_every_source_word() {
        let src = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let a = flow6_hash(src, [0x30, 0x39], [0, 80], 6, 1);
        assert_eq!(a, flow6_hash(src, [0x30, 0x39], [0, 80], 6, 1));
        assert_ne!(a, flow6_hash(src, [0x30, 0x39], [0, 80], 6, 2));
        assert_ne!(a, flow6_hash(src, [0x30, 0x3a], [0, 80], 6, 1));
        assert_ne!(a, flow6_hash(src, [0x30, 0x39], [0, 80], 17, 1));
        for i in 0..16 {
            let mut s = src;
            s[i] ^= 0x80;
            assert_ne!(a, flow6_hash(s, [0x30, 0x39], [0, 80], 6, 1), "byte {i}");
        }
        // Pinned: the hash is part of the cluster contract (every node, every version).
        assert_eq!(a, 0xb31d_f196);
    }

    #[test]
    fn ipv6_slots_and_sets_stay_in_range() {
        let mut f = Flow6Key {
            src_be: [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
            dst_be: [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            dport_be: [0, 80],
            proto: PROTO_TCP,
            ..Flow6Key::default()
        };
        let mut seen = [false; 16];
        for p in 0..4096u16 {
            f.sport_be = p.to_be_bytes();
            let i = ct6_set_index(&f, 15);
            seen[i as usize] = true;
            assert_eq!(ct6_set_index(&f, CT6_SETS - 1) & 15, i);
            let mut a = f.src_be;
            a[14..].copy_from_slice(&p.to_be_bytes());
            let (w, m) = vip6_filter_slot(a);
            assert!(w < VIP_FILTER_WORDS && m.count_ones() == 1);
        }
        assert!(seen.iter().all(|s| *s), "every set used");
        let g = f;
        assert!(f.same(&g));
        for i in 0..16 {
            let mut h = g;
            h.dst_be[i] ^= 1;
            assert!(!f.same(&h), "dst byte {i}");
        }
    }
}
