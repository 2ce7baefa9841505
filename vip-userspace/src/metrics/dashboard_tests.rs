//! The Grafana dashboard in `manifests/` queries only series the daemon exports. "Exports"
//! is what this exporter renders, not a list kept beside it: the registry the daemon builds,
//! with a scrape in which every family has a row (the per-VIP, per-service, BGP and Raft
//! families only appear when there is something to report).
use std::{collections::BTreeSet, net::Ipv4Addr};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{
    registry::registered,
    scrape::{MapsScrape, Scrape},
    Attachment, K8sStats, State,
};
use crate::dataplane::inspect::{BackendView, ServiceView};
use crate::dataplane::maps::VipRow;

const DASHBOARD: &str = include_str!("../../../manifests/grafana-dashboard.json");

/// A busy node: XDP with an adopted link, Kubernetes with a pool, Raft leader, one BGP peer,
/// one service with one backend.
pub(super) fn every_family() -> Scrape {
    let vip: std::net::IpAddr = Ipv4Addr::new(192, 0, 2, 100).into();
    let backend = BackendView {
        id: 0,
        addr: Ipv4Addr::new(10, 0, 0, 11).into(),
        port: 8080,
        active: true,
        slots: 0,
        stats: Default::default(),
    };
    Scrape {
        mode: "xdp-native".into(),
        interface: "eth0".into(),
        owned: vec![vip],
        attachment: Some(Attachment {
            program: "unchanged",
            link_id: 7,
            prog_id: 9,
        }),
        k8s: K8sStats {
            enabled: true,
            services: 1,
            allocated: 1,
            failing: 0,
            pools: vec![("global".into(), 16, 1)],
        },
        raft: Some(crate::election::raft::RaftStatus {
            id: 1,
            term: 3,
            leader: Some(1),
            role: crate::election::raft::RaftRole::Leader,
            fenced_leader: true,
            millis_since_quorum_ack: Some(20),
            reachable: vec![2, 3],
            authenticated: true,
            rejected: crate::election::raft::Reject::ALL
                .iter()
                .map(|r| (*r, 1))
                .collect(),
            sched: crate::election::raft::sched::Obtained::Fifo(10),
        }),
        bgp: vec![crate::bgp::PeerStatus {
            address: "10.0.0.1".parse().unwrap(),
            remote_as: 65000,
            state: crate::bgp::SessionState::Established,
            uptime: None,
            flaps: 0,
            prefixes_announced: 1,
            prefixes: vec![vip],
            last_error: None,
            bfd: None,
        }],
        maps: Some(MapsScrape {
            totals: Some(Default::default()),
            per_vip: vec![
                (vip, VipRow::V4(Default::default())),
                (
                    "2001:db8::100".parse().unwrap(),
                    VipRow::V6(Default::default()),
                ),
            ],
            services: Some(vec![ServiceView {
                vip,
                port: 80,
                proto: "tcp",
                mode: "dsr",
                id: 0,
                table: 0,
                stats: Default::default(),
                backends: vec![backend.clone()],
            }]),
            backends: Some(vec![backend]),
            map_bytes: vec![("RINGS", 1)],
        }),
    }
}

#[derive(Debug)]
struct Fixed(Scrape);

impl Collector for Fixed {
    fn encode(&self, enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(enc)
    }
}

/// The text the daemon serves for `scrape`: its registry with `scrape` as the collector.
pub(super) fn render(scrape: Scrape) -> String {
    let mut r = registered(&State::default());
    r.register_collector(Box::new(Fixed(scrape)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
    text
}

/// The name of every sample line of a scrape (counters carry `_total` there).
pub(super) fn exported() -> BTreeSet<String> {
    let text = render(every_family());
    let samples: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    // Every family has a row, or the dashboard could query one that is never seen.
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = l.split(' ').nth(2).unwrap();
        let of_family = |s: &String| {
            s.strip_prefix(family)
                .is_some_and(|rest| ["", "_total", "_bucket", "_sum", "_count"].contains(&rest))
        };
        assert!(
            samples.iter().any(of_family),
            "family {family} rendered without a row: seed it in every_family()\n{text}"
        );
    }
    samples
}

/// Words of PromQL that are not metric names (the subset this dashboard might use).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// Metric names in a PromQL expression: identifiers that are not functions or aggregations
/// (followed by `(`, `by` or `without`), keywords, or label names (inside `{…}` and the `(…)` after `by`,
/// `without`, `on`, `ignoring`, `group_left`, `group_right`); strings, ranges and numbers
/// are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    let c: Vec<char> = expr.chars().collect();
    let skip_to = |mut i: usize, close: char| {
        while i < c.len() && c[i] != close {
            i += 1;
        }
        i + 1
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '"' | '\'' | '`' => i = skip_to(i + 1, c[i]),
            '{' => i = skip_to(i + 1, '}'),
            '[' => i = skip_to(i + 1, ']'),
            ch if ch.is_ascii_digit() || ch == '.' => {
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                    i += 1;
                }
            }
            ch if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' => {
                let start = i;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                let mut j = i;
                while j < c.len() && c[j].is_whitespace() {
                    j += 1;
                }
                let next: String = c[j..]
                    .iter()
                    .take_while(|ch| ch.is_ascii_alphabetic())
                    .collect();
                // `sum by (…) (…)`: an aggregation with its grouping first
                let call = (j < c.len() && c[j] == '(') || next == "by" || next == "without";
                let lower = word.to_ascii_lowercase();
                if KEYWORDS.contains(&lower.as_str()) {
                    if call && lower != "and" && lower != "or" && lower != "unless" {
                        // a label list
                        i = skip_to(j + 1, ')');
                    }
                } else if !call {
                    out.push(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// (panel title, expression) for every query, rows' nested panels included.
fn queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            out.push((title, t["expr"].as_str().unwrap_or("").to_string()));
        }
    }
    out
}

/// What the dashboard queries that no scrape contains, as "panel: name".
fn unknown(dashboard: &serde_json::Value, exported: &BTreeSet<String>) -> Vec<String> {
    let mut bad = Vec::new();
    for (title, expr) in queries(dashboard) {
        let names = metric_names(&expr);
        if names.is_empty() {
            bad.push(format!("{title}: no metric in `{expr}`"));
        }
        for n in names.into_iter().filter(|n| !exported.contains(n)) {
            bad.push(format!("{title}: {n}"));
        }
    }
    bad
}

#[test]
fn promql_names() {
    assert_eq!(
        metric_names(
            r#"sum by (vip, node) (rate(vip_vip_arp_replies_total{job="x", vip=~"1.*"}[$__rate_interval])) > 0"#
        ),
        ["vip_vip_arp_replies_total"]
    );
    assert_eq!(
        metric_names("count by (vip) (vip_vip_owner) > 1 and on (vip) up offset 5m"),
        ["vip_vip_owner", "up"]
    );
    assert_eq!(
        metric_names("max(vip_raft_role) without (role) == bool 1.5e3"),
        ["vip_raft_role"]
    );
}

#[test]
fn a_bogus_metric_is_reported() {
    let d = serde_json::json!({"panels": [{"type": "row", "panels": [
        {"title": "p", "targets": [{"expr": "sum(rate(vip_garp_sent_total[5m])) / vip_bogus"}]}
    ]}]});
    assert_eq!(unknown(&d, &exported()), ["p: vip_bogus"]);
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let d: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "datasource"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    let exported = exported();
    let bad = unknown(&d, &exported);
    assert!(bad.is_empty(), "not exported by the daemon: {bad:#?}");
    // Panels use the variable, so the dashboard imports into any Grafana.
    let qs = queries(&d);
    assert!(qs.len() > 20, "{} queries", qs.len());
    for p in d["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    // What an operator looks at (issue 11): each of these is on the dashboard.
    let queried: BTreeSet<String> = qs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for m in [
        "vip_vip_owner",
        "vip_leader_transitions_total",
        "vip_arp_replies_total",
        "vip_arp_drops_not_owner_total",
        "vip_arp_deadman_drops_total",
        "vip_vip_arp_conflicts_total",
        "vip_service_packets_total",
        "vip_service_bytes_total",
        "vip_service_new_flows_total",
        "vip_backend_packets_total",
        "vip_backend_bytes_total",
        "vip_backend_new_flows_total",
        "vip_bgp_session_established",
        "vip_raft_role",
        "vip_raft_rejected_total",
        "vip_raft_authenticated",
    ] {
        assert!(queried.contains(m), "the dashboard does not show {m}");
    }
}
