//! Every counter the data plane keeps, written once: the field of the kernel's stats struct
//! (`vip_common::Stats`, `VipStats`, `Vip6Stats`, `LbStats`), the Prometheus family it is exported as, its
//! help text and the word `vip status` prints before it. The exporter (`metrics`), `vip
//! status` (`dataplane::inspect`) and the bench's counter checks read these tables; none of
//! them names a counter by hand, so a counter cannot be shown in one and missing from another.
//!
//! The kernel side keeps its named fields (the XDP program increments them, `bpftool map
//! dump` prints them); the tests below fail when a field of those structs has no row here.
//!
//! Metric names are what dashboards query (`manifests/grafana-dashboard.json`): a row's
//! `metric` never changes once exported.
use vip_common::{LbStats, Stats, Vip6Stats, VipStats};

/// One counter of a stats struct `S`.
#[derive(Clone, Copy)]
pub struct Counter<S: 'static> {
    /// The struct field, as `bpftool map dump` names it.
    pub field: &'static str,
    /// Prometheus family; counters are exposed with `_total` appended.
    pub metric: &'static str,
    /// (label, value) when several fields share one family (`vip_xdp_verdicts{verdict}`).
    pub label: Option<(&'static str, &'static str)>,
    pub help: &'static str,
    /// `vip status`: the line the counter is printed on (totals: `xdp`, `arp`, `lb`) and the
    /// word before its value.
    pub line: &'static str,
    pub status: &'static str,
    pub get: fn(&S) -> u64,
    pub get_mut: fn(&mut S) -> &mut u64,
}

impl<S> Counter<S> {
    /// The sample's name in a scrape (`vip_lb_new_flows_total`); labelled rows add their
    /// label after it.
    pub fn sample(&self) -> String {
        format!("{}_total", self.metric)
    }
}

/// The row of `table` for struct field `field`, for readers that pick one counter (the
/// bench checks a scrape with it). Panics on a field the table has not: a caller's typo.
pub fn by_field<S>(table: &'static [Counter<S>], field: &str) -> &'static Counter<S> {
    table
        .iter()
        .find(|c| c.field == field)
        .unwrap_or_else(|| panic!("no counter `{field}` in the table"))
}

impl<S> std::fmt::Debug for Counter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.field)
    }
}

macro_rules! row {
    ($field:ident, $metric:literal $({ $k:literal = $v:literal })?, $line:literal, $status:literal, $help:literal) => {
        Counter {
            field: stringify!($field),
            metric: $metric,
            label: row!(@label $($k, $v)?),
            help: $help,
            line: $line,
            status: $status,
            get: |s| s.$field,
            get_mut: |s| &mut s.$field,
        }
    };
    (@label) => { None };
    (@label $k:literal, $v:literal) => { Some(($k, $v)) };
}

/// `STATS`, the per-CPU totals (summed over CPUs).
pub const TOTALS: &[Counter<Stats>] = &[
    row!(
        rx,
        "vip_xdp_rx_packets",
        "xdp",
        "rx",
        "Frames seen by the XDP program"
    ),
    row!(pass, "vip_xdp_verdicts" { "verdict" = "pass" }, "xdp", "pass", "XDP verdicts by action"),
    row!(drop, "vip_xdp_verdicts" { "verdict" = "drop" }, "xdp", "drop", "XDP verdicts by action"),
    row!(tx, "vip_xdp_verdicts" { "verdict" = "tx" }, "xdp", "tx", "XDP verdicts by action"),
    row!(
        truncated,
        "vip_xdp_truncated",
        "xdp",
        "truncated",
        "Frames too short for an Ethernet/VLAN header, passed"
    ),
    row!(
        ipv4_to_vip,
        "vip_ipv4_to_vip_packets",
        "xdp",
        "ipv4-to-vip",
        "IPv4 packets to a VIP that no service took, passed to the stack"
    ),
    row!(
        arp_reply,
        "vip_arp_replies",
        "arp",
        "replies",
        "ARP requests for owned VIPs answered by XDP"
    ),
    row!(
        arp_drop_not_owner,
        "vip_arp_drops_not_owner",
        "arp",
        "drops",
        "ARP requests for VIPs held elsewhere, dropped"
    ),
    row!(
        arp_deadman,
        "vip_arp_deadman_drops",
        "arp",
        "dead-man",
        "ARP for owned VIPs not answered: the daemon missed its dead-man check-in"
    ),
    row!(
        arp_conflict,
        "vip_arp_conflicts",
        "arp",
        "conflicts",
        "ARP from another MAC claiming a VIP this node owns"
    ),
    row!(
        arp_no_iface,
        "vip_arp_no_iface",
        "arp",
        "no-iface",
        "ARP for an owned VIP on an interface without config, passed"
    ),
    row!(
        arp_malformed,
        "vip_arp_malformed",
        "arp",
        "malformed",
        "Truncated or non Ethernet/IPv4 ARP frames, passed"
    ),
    row!(
        lb_forward,
        "vip_lb_forwarded_packets",
        "lb",
        "fwd",
        "Service packets forwarded to a backend"
    ),
    row!(
        lb_local,
        "vip_lb_local_packets",
        "lb",
        "local",
        "Packets of local services handed to this node's stack"
    ),
    row!(
        ct_hit,
        "vip_lb_conntrack_hits",
        "lb",
        "ct hit",
        "Service packets of known flows"
    ),
    row!(
        ct_new,
        "vip_lb_new_flows",
        "lb",
        "new",
        "Flows placed by Maglev"
    ),
    row!(
        lb_no_backend,
        "vip_lb_no_backend_drops",
        "lb",
        "no-backend",
        "Service packets dropped: no backend"
    ),
    row!(
        lb_fragment,
        "vip_lb_fragments_passed",
        "lb",
        "fragments",
        "IPv4 fragments to a VIP, passed to the stack"
    ),
    row!(
        lb_ip_options,
        "vip_lb_ip_options_passed",
        "lb",
        "ip-options",
        "Service packets with IP options or a VLAN tag, passed"
    ),
    row!(
        fib_no_neigh,
        "vip_lb_fib_no_neigh",
        "lb",
        "no-neigh",
        "Backend next hop unresolved (nat: passed, dsr: dropped)"
    ),
    row!(
        fib_fail,
        "vip_lb_fib_failures",
        "lb",
        "fib-fail",
        "No route to a backend: dropped"
    ),
    row!(
        icmp_to_backend,
        "vip_lb_icmp_errors_forwarded",
        "lb",
        "icmp",
        "ICMP errors about a dsr service's flow, sent to the backend that sent the packet"
    ),
    row!(
        ndp_reply,
        "vip_ndp_replies",
        "ndp",
        "replies",
        "Neighbor Solicitations for owned IPv6 VIPs answered by XDP"
    ),
    row!(
        ndp_dad_defended,
        "vip_ndp_dad_defended",
        "ndp",
        "dad-defended",
        "DAD probes for owned IPv6 VIPs answered to all-nodes"
    ),
    row!(
        ndp_drop_not_owner,
        "vip_ndp_drops_not_owner",
        "ndp",
        "drops",
        "Neighbor Solicitations for IPv6 VIPs held elsewhere, dropped"
    ),
    row!(
        ndp_deadman,
        "vip_ndp_deadman_drops",
        "ndp",
        "dead-man",
        "NS for owned IPv6 VIPs not answered: the daemon missed its dead-man check-in"
    ),
    row!(
        ndp_conflict,
        "vip_ndp_conflicts",
        "ndp",
        "conflicts",
        "NDP from another MAC claiming an IPv6 VIP this node owns"
    ),
    row!(
        ndp_no_iface,
        "vip_ndp_no_iface",
        "ndp",
        "no-iface",
        "NS for an owned IPv6 VIP on an interface without config, passed"
    ),
    row!(
        ndp_malformed,
        "vip_ndp_malformed",
        "ndp",
        "malformed",
        "NS/NA frames failing RFC 4861 checks or truncated, passed"
    ),
    row!(
        ipv6_to_vip,
        "vip_ipv6_to_vip_packets",
        "xdp",
        "ipv6-to-vip",
        "IPv6 packets to a VIP that no service took, passed to the stack"
    ),
    row!(
        lb6_ext_header,
        "vip_lb6_ext_headers_passed",
        "lb",
        "ipv6-ext-headers",
        "IPv6 packets to a VIP with extension headers (fragments included), passed"
    ),
    row!(
        icmp6_to_backend,
        "vip_lb_icmp6_errors_forwarded",
        "lb",
        "icmp6",
        "ICMPv6 Packet Too Big about a dsr service's flow, sent to the backend that sent the packet"
    ),
];

/// `VIP_STATS`, per VIP (label `vip`). `conflict_mac` is not a counter: the daemon reads it
/// for the conflict log and Event.
pub const PER_VIP: &[Counter<VipStats>] = &[
    row!(
        arp_reply,
        "vip_vip_arp_replies",
        "vip",
        "arp replies",
        "ARP replies sent per VIP"
    ),
    row!(
        arp_drop,
        "vip_vip_arp_drops",
        "vip",
        "arp drops",
        "ARP requests dropped per VIP (not owner)"
    ),
    row!(
        ipv4_pkts,
        "vip_vip_ipv4_packets",
        "vip",
        "ipv4",
        "IPv4 packets seen per VIP"
    ),
    row!(
        arp_conflict,
        "vip_vip_arp_conflicts",
        "vip",
        "arp conflicts",
        "ARP from another MAC claiming this owned VIP"
    ),
];

/// `VIP6_STATS`, per IPv6 VIP (label `vip`). `conflict_mac` is not a counter, as in
/// [`PER_VIP`].
pub const PER_VIP6: &[Counter<Vip6Stats>] = &[
    row!(
        ndp_reply,
        "vip_vip_ndp_replies",
        "vip",
        "ndp replies",
        "Neighbor Advertisements sent per IPv6 VIP"
    ),
    row!(
        ndp_drop,
        "vip_vip_ndp_drops",
        "vip",
        "ndp drops",
        "Neighbor Solicitations dropped per IPv6 VIP (not owner, dead-man)"
    ),
    row!(
        ndp_conflict,
        "vip_vip_ndp_conflicts",
        "vip",
        "ndp conflicts",
        "NDP from another MAC claiming this owned IPv6 VIP"
    ),
];

/// `SVC_STATS`, per service (labels `service`, `mode`).
pub const PER_SERVICE: &[Counter<LbStats>] = &[
    row!(
        packets,
        "vip_service_packets",
        "service",
        "packets",
        "Packets per service"
    ),
    row!(
        bytes,
        "vip_service_bytes",
        "service",
        "bytes",
        "Bytes per service"
    ),
    row!(
        new_flows,
        "vip_service_new_flows",
        "service",
        "new flows",
        "Flows placed per service"
    ),
    row!(
        drops,
        "vip_service_drops",
        "service",
        "drops",
        "Packets dropped per service (no backend)"
    ),
];

/// `BACKEND_STATS`, per backend (label `backend`). The same struct as per service, but the
/// program counts `drops` only against a service (the one drop it charges is "no backend"),
/// so a backend's is always 0 and not exported.
pub const PER_BACKEND: &[Counter<LbStats>] = &[
    row!(
        packets,
        "vip_backend_packets",
        "backend",
        "packets",
        "Packets sent per backend"
    ),
    row!(
        bytes,
        "vip_backend_bytes",
        "backend",
        "bytes",
        "Bytes sent per backend"
    ),
    row!(
        new_flows,
        "vip_backend_new_flows",
        "backend",
        "new flows",
        "Flows placed per backend"
    ),
];

/// Fields of `LbStats` deliberately left out of [`PER_BACKEND`].
pub const PER_BACKEND_UNCOUNTED: &[&str] = &["drops"];

/// `b - a` over every counter of the table (for deltas around a run; wraps like the
/// kernel's u64s).
pub fn delta<S: Copy>(table: &[Counter<S>], a: &S, b: &S) -> S {
    let mut d = *b;
    for c in table {
        let v = (c.get)(b).wrapping_sub((c.get)(a));
        *(c.get_mut)(&mut d) = v;
    }
    d
}

/// `field value` for every counter that is not 0, for failure messages.
pub fn nonzero<S>(table: &[Counter<S>], s: &S) -> String {
    let parts: Vec<String> = table
        .iter()
        .filter(|c| (c.get)(s) != 0)
        .map(|c| format!("{} {}", c.field, (c.get)(s)))
        .collect();
    if parts.is_empty() {
        "all 0".into()
    } else {
        parts.join(", ")
    }
}

/// `S` with counter `i` of `table` set to `i + 1`: a value per row that no other row shares.
pub fn numbered<S: Default>(table: &[Counter<S>]) -> S {
    let mut s = S::default();
    for (i, c) in table.iter().enumerate() {
        *(c.get_mut)(&mut s) = i as u64 + 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every row reads its own field: set through each row in turn, each still reads back
    /// its own number (two rows on one field would see the later one's).
    fn rows_are_distinct<S: Default>(table: &[Counter<S>]) {
        let s = numbered(table);
        for (i, c) in table.iter().enumerate() {
            assert_eq!((c.get)(&s), i as u64 + 1, "{} shares its field", c.field);
        }
        let fields: BTreeSet<_> = table.iter().map(|c| c.field).collect();
        assert_eq!(fields.len(), table.len(), "a field has two rows");
    }

    // The structs are made of u64 counters (sizes asserted in vip-common), so distinct rows
    // and one row per 8 bytes means every field has a row: a field added to the kernel ABI
    // without one fails here.

    #[test]
    fn every_total_has_a_row() {
        rows_are_distinct(TOTALS);
        assert_eq!(
            TOTALS.len() * 8,
            std::mem::size_of::<Stats>(),
            "a field of vip_common::Stats has no row in counters::TOTALS"
        );
    }

    #[test]
    fn every_per_vip_counter_has_a_row() {
        rows_are_distinct(PER_VIP);
        // conflict_mac and its padding are the last 8 bytes, not counters.
        assert_eq!(
            PER_VIP.len() * 8 + 8,
            std::mem::size_of::<VipStats>(),
            "a field of vip_common::VipStats has no row in counters::PER_VIP"
        );
    }

    #[test]
    fn every_per_vip6_counter_has_a_row() {
        rows_are_distinct(PER_VIP6);
        assert_eq!(
            PER_VIP6.len() * 8 + 8,
            std::mem::size_of::<Vip6Stats>(),
            "a field of vip_common::Vip6Stats has no row in counters::PER_VIP6"
        );
    }

    #[test]
    fn every_service_and_backend_counter_has_a_row() {
        rows_are_distinct(PER_SERVICE);
        rows_are_distinct(PER_BACKEND);
        assert_eq!(
            PER_SERVICE.len() * 8,
            std::mem::size_of::<LbStats>(),
            "a field of vip_common::LbStats has no row in counters::PER_SERVICE"
        );
        let backend: BTreeSet<_> = PER_BACKEND
            .iter()
            .map(|c| c.field)
            .chain(PER_BACKEND_UNCOUNTED.iter().copied())
            .collect();
        let service: BTreeSet<_> = PER_SERVICE.iter().map(|c| c.field).collect();
        assert_eq!(
            backend, service,
            "PER_BACKEND: a field neither exported nor excused"
        );
    }

    /// The hand-written sums in vip-common add every field (the table cannot write them:
    /// the crate is the eBPF side's too).
    #[test]
    fn sums_over_cpus_add_every_field() {
        let n: Stats = numbered(TOTALS);
        let mut t = n;
        t.add(&n);
        for c in TOTALS {
            assert_eq!((c.get)(&t), 2 * (c.get)(&n), "Stats::add skips {}", c.field);
        }
        let n: VipStats = numbered(PER_VIP);
        let mut t = n;
        t.add(&n);
        for c in PER_VIP {
            assert_eq!(
                (c.get)(&t),
                2 * (c.get)(&n),
                "VipStats::add skips {}",
                c.field
            );
        }
        let n: Vip6Stats = numbered(PER_VIP6);
        let mut t = n;
        t.add(&n);
        for c in PER_VIP6 {
            assert_eq!(
                (c.get)(&t),
                2 * (c.get)(&n),
                "Vip6Stats::add skips {}",
                c.field
            );
        }
        let n: LbStats = numbered(PER_SERVICE);
        let mut t = n;
        t.add(&n);
        for c in PER_SERVICE {
            assert_eq!(
                (c.get)(&t),
                2 * (c.get)(&n),
                "LbStats::add skips {}",
                c.field
            );
        }
    }

    #[test]
    fn names_follow_the_exporter_style() {
        let all = TOTALS
            .iter()
            .map(|c| (c.metric, c.label, c.help))
            .chain(PER_VIP.iter().map(|c| (c.metric, c.label, c.help)))
            .chain(PER_VIP6.iter().map(|c| (c.metric, c.label, c.help)))
            .chain(PER_SERVICE.iter().map(|c| (c.metric, c.label, c.help)))
            .chain(PER_BACKEND.iter().map(|c| (c.metric, c.label, c.help)));
        let mut seen = BTreeSet::new();
        for (metric, label, help) in all {
            assert!(metric.starts_with("vip_"), "{metric}");
            assert!(
                !metric.ends_with("_total"),
                "{metric}: the exporter adds _total"
            );
            assert!(
                metric
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{metric}"
            );
            assert!(!help.is_empty(), "{metric}: no help");
            assert!(seen.insert((metric, label)), "{metric} {label:?} twice");
        }
    }

    #[test]
    fn a_shared_family_has_one_help_and_one_label() {
        for c in TOTALS {
            for o in TOTALS.iter().filter(|o| o.metric == c.metric) {
                assert_eq!(c.help, o.help, "{}", c.metric);
                assert_eq!(c.label.map(|l| l.0), o.label.map(|l| l.0), "{}", c.metric);
            }
        }
    }

    #[test]
    fn delta_subtracts_every_counter() {
        let a: Stats = numbered(TOTALS);
        let mut b = a;
        b.icmp_to_backend += 5;
        b.rx += 1;
        let d = delta(TOTALS, &a, &b);
        assert_eq!(
            d,
            Stats {
                rx: 1,
                icmp_to_backend: 5,
                ..Stats::default()
            }
        );
        assert_eq!(nonzero(TOTALS, &d), "rx 1, icmp_to_backend 5");
        assert_eq!(nonzero(TOTALS, &Stats::default()), "all 0");
    }

    #[test]
    fn a_row_is_found_by_its_field() {
        assert_eq!(
            by_field(TOTALS, "ct_new").sample(),
            "vip_lb_new_flows_total"
        );
    }
}
