//! The Prometheus text of a [`Scrape`]: one step per group of families, in the order they
//! are served. The data plane's counters are not named here: [`table`] turns each table of
//! `counters` into its families, so a counter added there is exported without a line here.
//! The other families are few and each has its own shape (labels, when it is present), so
//! they are written out where they are encoded.
use std::net::IpAddr;

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};

use super::{
    scrape::{MapsScrape, Scrape},
    Attachment, K8sStats,
};
use crate::counters::{Counter, PER_BACKEND, PER_SERVICE, PER_VIP, PER_VIP6, TOTALS};
use crate::dataplane::inspect::{BackendView, ServiceView};
use crate::dataplane::maps::VipRow;
use crate::election::raft::{RaftRole, RaftStatus};

type Enc<'a, 'b> = &'a mut DescriptorEncoder<'b>;

impl Scrape {
    /// The attachment, Kubernetes, Raft, BGP and data plane families are served only where
    /// they apply (XDP mode, `kubernetes:`, `election.mode: raft`, a peer, maps to read);
    /// the others always, with or without rows.
    pub(super) fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let enc = &mut enc;
        dataplane(enc, &self.mode, &self.interface, &self.owned)?;
        if let Some(a) = &self.attachment {
            attachment(enc, a)?;
        }
        owners(enc, &self.owned)?;
        if self.k8s.enabled {
            k8s(enc, &self.k8s)?;
        }
        if let Some(r) = &self.raft {
            raft(enc, r)?;
        }
        if !self.bgp.is_empty() {
            bgp(enc, &self.bgp)?;
        }
        if let Some(maps) = &self.maps {
            data_plane_maps(enc, maps)?;
        }
        Ok(())
    }
}

/// A gauge without labels.
fn gauge(enc: Enc, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter family with one label: a row per label value.
fn counters(
    enc: Enc,
    name: &str,
    help: &str,
    label: &str,
    rows: &[(String, u64)],
) -> std::fmt::Result {
    let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (key, v) in rows {
        let labels = [(label, key.as_str())];
        ConstCounter::new(*v).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge family with one label: a row per label value.
fn gauges(
    enc: Enc,
    name: &str,
    help: &str,
    label: &str,
    rows: &[(String, i64)],
) -> std::fmt::Result {
    let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (key, v) in rows {
        let labels = [(label, key.as_str())];
        ConstGauge::new(*v).encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Which data plane runs on which interface, and how many VIPs this node owns.
fn dataplane(enc: Enc, mode: &str, iface: &str, owned: &[IpAddr]) -> std::fmt::Result {
    let g = ConstGauge::new(1i64);
    let mut fam = enc.encode_descriptor(
        "vip_dataplane_info",
        "Data plane in use: xdp-native, xdp-generic or kernel",
        None,
        g.metric_type(),
    )?;
    g.encode(fam.encode_family(&[("mode", mode), ("interface", iface)])?)?;
    gauge(
        enc,
        "vip_vips_owned",
        "VIPs this node currently owns and answers for",
        owned.len() as i64,
    )
}

fn attachment(enc: Enc, a: &Attachment) -> std::fmt::Result {
    gauges(
        enc,
        "vip_dataplane_attachment",
        "How this daemon got its XDP attachment: fresh, or adopted from the previous daemon's pinned link with the program unchanged or replaced",
        "program",
        &[(a.program.to_string(), 1)],
    )?;
    gauge(
        enc,
        "vip_xdp_link_id",
        "Kernel id of the XDP bpf_link (stays the same across restarts)",
        a.link_id.into(),
    )?;
    gauge(
        enc,
        "vip_xdp_program_id",
        "Kernel id of the XDP program running in the link",
        a.prog_id.into(),
    )
}

/// Ownership per VIP: "which node owns the VIP?" from any node's metrics.
fn owners(enc: Enc, owned: &[IpAddr]) -> std::fmt::Result {
    let rows: Vec<(String, i64)> = owned.iter().map(|v| (v.to_string(), 1)).collect();
    gauges(
        enc,
        "vip_vip_owner",
        "1 for each VIP this node owns",
        "vip",
        &rows,
    )
}

/// What the Service controller last saw, and each IPAM pool's size and use.
fn k8s(enc: Enc, k: &K8sStats) -> std::fmt::Result {
    for (name, help, v) in [
        (
            "vip_k8s_services",
            "LoadBalancer Services served",
            k.services,
        ),
        (
            "vip_k8s_addresses_allocated",
            "Addresses held by Services",
            k.allocated,
        ),
        (
            "vip_k8s_allocation_failures",
            "Services without an address (see their Events)",
            k.failing,
        ),
    ] {
        gauge(enc, name, help, v as i64)?;
    }
    let pool = |f: fn(&(String, u128, usize)) -> i64| -> Vec<(String, i64)> {
        k.pools.iter().map(|p| (p.0.clone(), f(p))).collect()
    };
    gauges(
        enc,
        "vip_k8s_pool_addresses",
        "Addresses in each IPAM pool",
        "pool",
        &pool(|p| i64::try_from(p.1).unwrap_or(i64::MAX)),
    )?;
    gauges(
        enc,
        "vip_k8s_pool_used",
        "Addresses of each IPAM pool held by Services",
        "pool",
        &pool(|p| p.2 as i64),
    )
}

/// Term, role, leader and the age of the quorum acknowledgement that keeps the fence open.
fn raft(enc: Enc, r: &RaftStatus) -> std::fmt::Result {
    gauge(enc, "vip_raft_term", "Current Raft term", r.term as i64)?;
    gauge(
        enc,
        "vip_raft_leader_id",
        "Id of the leader this node knows of (-1: none)",
        r.leader.map_or(-1, |l| l as i64),
    )?;
    gauge(
        enc,
        "vip_raft_fenced_leader",
        "1 while this node leads with a fresh quorum acknowledgement (owns the VIPs)",
        r.fenced_leader as i64,
    )?;
    gauge(
        enc,
        "vip_raft_ms_since_quorum_ack",
        "Since the send time of the newest heartbeat a majority acknowledged (-1: not leading)",
        r.millis_since_quorum_ack
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX)),
    )?;
    gauges(
        enc,
        "vip_election_sched",
        "Scheduling of the election's I/O thread, one row labelled by policy (fifo, nice, normal): the SCHED_FIFO priority, the nice value, or 0",
        "policy",
        &[(r.sched.policy().to_string(), r.sched.value())],
    )?;
    gauge(
        enc,
        "vip_raft_authenticated",
        "1 when election datagrams are authenticated with a key, 0 with insecure: true",
        r.authenticated as i64,
    )?;
    let rejected: Vec<(String, u64)> = r
        .rejected
        .iter()
        .map(|(reason, n)| (reason.as_str().to_string(), *n))
        .collect();
    counters(
        enc,
        "vip_raft_rejected",
        "Election datagrams dropped, by reason (malformed, wrong_source, misdirected, unknown_key, bad_mac, replay, stale)",
        "reason",
        &rejected,
    )?;
    // Every role has a row (0 or 1), so a query for one role never finds nothing.
    let roles: Vec<(String, i64)> = [
        RaftRole::Follower,
        RaftRole::PreCandidate,
        RaftRole::Candidate,
        RaftRole::Leader,
    ]
    .iter()
    .map(|x| (x.as_str().to_string(), (*x == r.role) as i64))
    .collect();
    gauges(
        enc,
        "vip_raft_role",
        "1 for this node's Raft role",
        "role",
        &roles,
    )
}

/// Each BGP session: up or not, what it announces, how often it dropped.
fn bgp(enc: Enc, peers: &[crate::bgp::PeerStatus]) -> std::fmt::Result {
    let peer = |f: fn(&crate::bgp::PeerStatus) -> i64| -> Vec<(String, i64)> {
        peers
            .iter()
            .map(|p| (p.address.to_string(), f(p)))
            .collect()
    };
    gauges(
        enc,
        "vip_bgp_session_established",
        "1 while the session is Established",
        "peer",
        &peer(|p| (p.state == crate::bgp::SessionState::Established) as i64),
    )?;
    gauges(
        enc,
        "vip_bgp_prefixes_announced",
        "Host routes announced on the session",
        "peer",
        &peer(|p| p.prefixes_announced as i64),
    )?;
    let flaps: Vec<(String, u64)> = peers
        .iter()
        .map(|p| (p.address.to_string(), p.flaps))
        .collect();
    counters(
        enc,
        "vip_bgp_session_flaps",
        "Times the session left Established",
        "peer",
        &flaps,
    )
}

/// The maps' memory and every counter the data plane keeps (the `counters` tables).
fn data_plane_maps(enc: Enc, maps: &MapsScrape) -> std::fmt::Result {
    let mem: Vec<(String, i64)> = maps
        .map_bytes
        .iter()
        .map(|(m, b)| (m.to_string(), *b as i64))
        .collect();
    gauges(
        enc,
        "vip_bpf_map_bytes",
        "Memory the kernel charges for each BPF map (memlock), by map",
        "map",
        &mem,
    )?;
    if let Some(s) = &maps.totals {
        table(enc, TOTALS, &[(Vec::new(), s)])?;
    }
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (ip, row) in &maps.per_vip {
        let labels = vec![("vip", ip.to_string())];
        match row {
            VipRow::V4(s) => v4.push((labels, s)),
            VipRow::V6(s) => v6.push((labels, s)),
        }
    }
    table(enc, PER_VIP, &v4)?;
    table(enc, PER_VIP6, &v6)?;
    if let Some(svcs) = &maps.services {
        services(enc, svcs, maps.backends.as_deref())?;
    }
    Ok(())
}

/// Per-service and per-backend counters from the pinned maps.
fn services(
    enc: Enc,
    services: &[ServiceView],
    backends: Option<&[BackendView]>,
) -> std::fmt::Result {
    let rows: Vec<_> = services
        .iter()
        .map(|s| {
            (
                vec![("service", s.name()), ("mode", s.mode.to_string())],
                &s.stats,
            )
        })
        .collect();
    table(enc, PER_SERVICE, &rows)?;
    let Some(backends) = backends else {
        return Ok(());
    };
    let rows: Vec<_> = backends
        .iter()
        .map(|b| {
            (
                vec![(
                    "backend",
                    std::net::SocketAddr::new(b.addr, b.port).to_string(),
                )],
                &b.stats,
            )
        })
        .collect();
    table(enc, PER_BACKEND, &rows)
}

/// One family per metric of `table` (in the table's order), a sample per object in `rows`
/// (its labels, then the row's own label when several fields share the family).
fn table<S>(
    enc: Enc,
    table: &[Counter<S>],
    rows: &[(Vec<(&str, String)>, &S)],
) -> std::fmt::Result {
    for (i, c) in table.iter().enumerate() {
        if table[..i].iter().any(|o| o.metric == c.metric) {
            continue;
        }
        let mut samples: Vec<(Vec<(&str, &str)>, u64)> = Vec::new();
        for (labels, s) in rows {
            for f in table[i..].iter().filter(|o| o.metric == c.metric) {
                let mut l: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                l.extend(f.label);
                samples.push((l, (f.get)(s)));
            }
        }
        let mut fam = enc.encode_descriptor(c.metric, c.help, None, MetricType::Counter)?;
        match &samples[..] {
            // A plain counter (the totals): no `{}` after its name.
            [(l, v)] if l.is_empty() => ConstCounter::new(*v).encode(fam)?,
            _ => {
                for (l, v) in &samples {
                    ConstCounter::new(*v).encode(fam.encode_family(l)?)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::counters::{PER_BACKEND, PER_SERVICE, PER_VIP, PER_VIP6, TOTALS};
    use crate::dataplane::maps::VipRow;
    use crate::metrics::dashboard_tests;

    /// Every row of the counter tables is served, with its help, labels and the value of
    /// its own field (each field holds a different number).
    #[test]
    fn every_counter_of_the_table_is_exported() {
        use crate::counters::{numbered, Counter};
        let mut scrape = dashboard_tests::every_family();
        let maps = scrape.maps.as_mut().unwrap();
        maps.totals = Some(numbered(TOTALS));
        maps.per_vip[0].1 = VipRow::V4(numbered(PER_VIP));
        maps.per_vip[1].1 = VipRow::V6(numbered(PER_VIP6));
        let svcs = maps.services.as_mut().unwrap();
        svcs[0].stats = numbered(PER_SERVICE);
        maps.backends.as_mut().unwrap()[0].stats = numbered(PER_BACKEND);
        let text = dashboard_tests::render(scrape);
        fn expect<S>(text: &str, table: &[Counter<S>], labels: &[(&str, &str)]) {
            for (i, c) in table.iter().enumerate() {
                let help = format!("# HELP {} {}\n", c.metric, c.help);
                assert!(text.contains(&help), "{}: no `{help}` in\n{text}", c.field);
                let l: Vec<String> = labels
                    .iter()
                    .copied()
                    .chain(c.label)
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                let l = if l.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", l.join(","))
                };
                let sample = format!("\n{}_total{l} {}\n", c.metric, i + 1);
                assert!(
                    text.contains(&sample),
                    "{}: no `{sample}` in\n{text}",
                    c.field
                );
            }
        }
        expect(&text, TOTALS, &[]);
        expect(&text, PER_VIP, &[("vip", "192.0.2.100")]);
        expect(&text, PER_VIP6, &[("vip", "2001:db8::100")]);
        expect(
            &text,
            PER_SERVICE,
            &[("service", "192.0.2.100:80/tcp"), ("mode", "dsr")],
        );
        expect(&text, PER_BACKEND, &[("backend", "10.0.0.11:8080")]);
        // The one that used to be shown by `vip status` only.
        assert!(
            text.contains("\nvip_lb_icmp_errors_forwarded_total 22\n"),
            "{text}"
        );
    }
}
