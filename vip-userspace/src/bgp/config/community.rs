//! BGP communities (standard and large) as written in the configuration and in
//! annotations, and the per-prefix [`RoutePolicy`] they form. Separate from the config
//! shape because Service annotations and pool keys parse them too.
use std::fmt;

use serde::{de, Deserialize, Deserializer};

/// A BGP community: standard (RFC 1997, `"65000:100"` or its 32-bit value) or large
/// (RFC 8092, `"65000:1:2"`, three 32-bit parts, for 4-byte AS numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    Standard(u32),
    Large(u32, u32, u32),
}

impl Community {
    pub fn new(asn: u16, value: u16) -> Self {
        Self::Standard((u32::from(asn) << 16) | u32::from(value))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(v) => write!(f, "{}:{}", v >> 16, v & 0xffff),
            Community::Large(a, b, c) => write!(f, "{a}:{b}:{c}"),
        }
    }
}

impl std::str::FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let parts: Vec<&str> = t.split(':').map(str::trim).collect();
        match parts.as_slice() {
            [a, v] => {
                let p = |x: &str| {
                    x.parse::<u16>()
                        .map_err(|_| format!("`{s}` is not `ASN:VALUE` with both parts 0..=65535"))
                };
                Ok(Community::new(p(a)?, p(v)?))
            }
            [a, b, c] => {
                let p = |x: &str| {
                    x.parse::<u32>().map_err(|_| {
                        format!("`{s}` is not a large community `ASN:DATA1:DATA2` (32-bit parts)")
                    })
                };
                Ok(Community::Large(p(a)?, p(b)?, p(c)?))
            }
            [v] => v.parse::<u32>().map(Community::Standard).map_err(|_| {
                format!("`{s}` is not `ASN:VALUE`, `ASN:DATA1:DATA2` or a 32-bit number")
            }),
            _ => Err(format!(
                "`{s}` is not `ASN:VALUE`, `ASN:DATA1:DATA2` or a 32-bit number"
            )),
        }
    }
}

/// A comma-separated list of communities (annotations, pool keys).
pub fn parse_communities(s: &str) -> Result<Vec<Community>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::parse)
        .collect()
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Community;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a community `ASN:VALUE`, `ASN:DATA1:DATA2` or a 32-bit number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Community, E> {
                u32::try_from(v)
                    .map(Community::Standard)
                    .map_err(|_| E::custom(format!("{v} does not fit in 32 bits")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Community, E> {
                u32::try_from(v)
                    .map(Community::Standard)
                    .map_err(|_| E::custom(format!("{v} does not fit in 32 bits")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Community, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// What goes with one announced prefix besides the session's own attributes: added to
/// `bgp.communities`, and a LOCAL_PREF that replaces `bgp.local_pref`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoutePolicy {
    pub communities: Vec<Community>,
    pub local_pref: Option<u32>,
}

impl RoutePolicy {
    /// `self` refined by `more`: communities added (sorted, no duplicates), `more`'s
    /// LOCAL_PREF winning when it has one.
    pub fn merged(&self, more: &RoutePolicy) -> RoutePolicy {
        let mut communities: Vec<Community> = self
            .communities
            .iter()
            .chain(&more.communities)
            .copied()
            .collect();
        communities.sort();
        communities.dedup();
        RoutePolicy {
            communities,
            local_pref: more.local_pref.or(self.local_pref),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities_standard_and_large() {
        assert_eq!(
            parse_communities("65000:100, 4200000001:7:8,42").unwrap(),
            vec![
                Community::new(65000, 100),
                Community::Large(4_200_000_001, 7, 8),
                Community::Standard(42)
            ]
        );
        assert!(parse_communities("65536:1").is_err());
        assert!(parse_communities("1:2:3:4").is_err());
        assert_eq!(Community::Large(1, 2, 3).to_string(), "1:2:3");
        let base = RoutePolicy {
            communities: vec![Community::new(1, 1)],
            local_pref: Some(100),
        };
        let m = base.merged(&RoutePolicy {
            communities: vec![Community::new(1, 1), Community::new(0, 5)],
            local_pref: None,
        });
        assert_eq!(
            m.communities,
            vec![Community::new(0, 5), Community::new(1, 1)]
        );
        assert_eq!(m.local_pref, Some(100));
    }
}
