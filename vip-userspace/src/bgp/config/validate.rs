//! `BgpConfig::validate`: every check of the `bgp:` section, each error naming the field
//! as the operator wrote it (`bgp.peers[1].remote_as`). Checks run in the order the
//! fields are documented and the first problem is returned.
use std::{collections::BTreeSet, net::IpAddr};

use super::{BfdConfig, BgpConfig, BgpConfigError, PeerConfig};

impl BgpConfig {
    /// Every problem is reported against `bgp.<field>` (or `bgp.peers[i].<field>`).
    pub fn validate(&self) -> Result<(), BgpConfigError> {
        self.check_speaker()?;
        if self.peers.is_empty() {
            return Err(BgpConfigError::new(
                "bgp.peers",
                "at least one peer is needed",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            check_peer(i, p, &mut seen)?;
        }
        Ok(())
    }

    /// The speaker-wide fields.
    fn check_speaker(&self) -> Result<(), BgpConfigError> {
        if self.local_as == 0 {
            return Err(BgpConfigError::new("bgp.local_as", "must not be 0"));
        }
        if self.router_id.is_unspecified() {
            return Err(BgpConfigError::new(
                "bgp.router_id",
                "must not be 0.0.0.0 (use one of the node's IPv4 addresses)",
            ));
        }
        check_hold(self.hold_time_s, "bgp.hold_time_s")?;
        if let Some(nh) = self.next_hop_v4 {
            if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                return Err(BgpConfigError::new(
                    "bgp.next_hop_v4",
                    format!("{nh} is not a unicast address"),
                ));
            }
        }
        if let Some(nh) = self.next_hop_v6 {
            if nh.is_unspecified() || nh.is_multicast() {
                return Err(BgpConfigError::new(
                    "bgp.next_hop_v6",
                    format!("{nh} is not a unicast address"),
                ));
            }
        }
        if let Some(gr) = self.graceful_restart {
            // The capability carries the restart time in 12 bits.
            if gr.restart_time_s == 0 || gr.restart_time_s > 4095 {
                return Err(BgpConfigError::new(
                    "bgp.graceful_restart.restart_time_s",
                    format!("{} is not in 1..=4095", gr.restart_time_s),
                ));
            }
        }
        Ok(())
    }
}

/// `bgp.peers[i]`; `seen` collects the addresses so far, to refuse a peer listed twice.
fn check_peer(i: usize, p: &PeerConfig, seen: &mut BTreeSet<IpAddr>) -> Result<(), BgpConfigError> {
    let f = |name: &str| format!("bgp.peers[{i}].{name}");
    let a = p.address;
    if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
        return Err(BgpConfigError::new(
            f("address"),
            format!("{a} is not a peer's unicast address"),
        ));
    }
    if !seen.insert(a) {
        return Err(BgpConfigError::new(
            f("address"),
            format!("{a} is listed twice"),
        ));
    }
    if p.remote_as == 0 {
        return Err(BgpConfigError::new(f("remote_as"), "must not be 0"));
    }
    if p.port == 0 {
        return Err(BgpConfigError::new(f("port"), "must not be 0"));
    }
    if let Some(pw) = &p.password {
        if pw.is_empty() || pw.len() > 80 {
            return Err(BgpConfigError::new(
                f("password"),
                "a TCP MD5 key is 1 to 80 bytes",
            ));
        }
    }
    if p.multihop_ttl == Some(0) {
        return Err(BgpConfigError::new(f("multihop_ttl"), "must be 1..=255"));
    }
    if let Some(h) = p.hold_time_s {
        check_hold(h, &f("hold_time_s"))?;
    }
    match p.bfd {
        Some(b) => check_bfd(&b, f),
        None => Ok(()),
    }
}

/// `bgp.peers[i].bfd`, `f` naming a field of that peer.
fn check_bfd(b: &BfdConfig, f: impl Fn(&str) -> String) -> Result<(), BgpConfigError> {
    if b.min_tx_ms == 0 || b.min_tx_ms > 60_000 {
        return Err(BgpConfigError::new(f("bfd.min_tx_ms"), "must be 1..=60000"));
    }
    if b.min_rx_ms == 0 || b.min_rx_ms > 60_000 {
        return Err(BgpConfigError::new(f("bfd.min_rx_ms"), "must be 1..=60000"));
    }
    if b.multiplier == 0 {
        return Err(BgpConfigError::new(f("bfd.multiplier"), "must be 1..=255"));
    }
    Ok(())
}

fn check_hold(h: u16, field: &str) -> Result<(), BgpConfigError> {
    // RFC 4271 4.2: zero (no keepalives) or at least three seconds.
    if h == 1 || h == 2 {
        return Err(BgpConfigError::new(
            field,
            format!("{h} is not allowed: 0 or at least 3 seconds"),
        ));
    }
    Ok(())
}
