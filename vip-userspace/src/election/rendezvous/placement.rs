//! Rendezvous (highest random weight) hashing: which node a VIP prefers among the eligible
//! live nodes. Pure and version-stable, because every node computes the same placement on its
//! own and must agree without talking.
use std::net::IpAddr;

/// The VIP's weight on `node`: FNV-1a over the VIP's octets (4 or 16) and the node name, then the
/// splitmix64 finaliser (hand-written: it must never change between versions or nodes,
/// which std's hashers do not promise).
pub fn weight(vip: IpAddr, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in crate::net::octets(vip)
        .as_ref()
        .iter()
        .chain([0xffu8].iter())
        .chain(node.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The rendezvous choice for `vip` among `nodes` (ties, practically impossible, go to the
/// greater name).
pub fn choose<'a>(vip: IpAddr, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes.into_iter().max_by_key(|n| (weight(vip, n), *n))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn weights_are_stable_across_versions() {
        // Fixed values: every node, every release, must agree on the placement.
        assert_eq!(
            weight(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), "node-a"),
            weight(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), "node-a")
        );
        assert_ne!(
            weight(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), "node-a"),
            weight(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), "node-b")
        );
        assert_eq!(
            weight(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), "node-a"),
            WEIGHT_192_0_2_10_NODE_A
        );
    }

    /// Computed independently (Python, same FNV-1a + splitmix64 steps).
    const WEIGHT_192_0_2_10_NODE_A: u64 = 11_859_286_088_946_882_205;

    #[test]
    fn rendezvous_spreads_and_moves_only_what_it_must() {
        let nodes = ["n1", "n2", "n3"];
        let vips: Vec<IpAddr> = (0..3000u32)
            .map(|i| IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let mut count = BTreeMap::new();
        for v in &vips {
            *count.entry(choose(*v, nodes).unwrap()).or_insert(0) += 1;
        }
        for n in nodes {
            let c = count[n];
            assert!((850..=1150).contains(&c), "{n}: {c} of 3000");
        }
        // Removing n3 moves only n3's VIPs.
        for v in &vips {
            let before = choose(*v, nodes).unwrap();
            let after = choose(*v, ["n1", "n2"]).unwrap();
            if before != "n3" {
                assert_eq!(before, after);
            }
        }
        assert_eq!(choose(vips[0], std::iter::empty::<&str>()), None);
    }
}
