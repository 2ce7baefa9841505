//! docs/inspecting.md lists every metric the daemon serves, and only those: the first column
//! of its metrics table against the names a scrape with every family contains (the one the
//! dashboard test renders), so a counter added to `counters` is documented or this fails.
//!
//! The column's names are written as the scrape spells them (`_total` on counters), with two
//! shorthands: a trailing `{a,b}` lists labels (`vip_xdp_verdicts_total{verdict}`), and a
//! `{a,b}` inside a name expands (`vip_service_{packets,bytes}_total{service,mode}`).
use std::collections::BTreeSet;

use super::dashboard_tests::exported;

const REFERENCE: &str = include_str!("../../../docs/inspecting.md");

/// `vip_a_{x,y}_total{l}` → `vip_a_x_total`, `vip_a_y_total`.
fn expand(name: &str) -> Vec<String> {
    let Some(open) = name.find('{') else {
        return vec![name.to_string()];
    };
    let close = open + name[open..].find('}').expect("unclosed brace");
    let rest = &name[close + 1..];
    if rest.is_empty() {
        // Labels.
        return vec![name[..open].to_string()];
    }
    name[open + 1..close]
        .split(',')
        .flat_map(|alt| expand(&format!("{}{}{rest}", &name[..open], alt.trim())))
        .collect()
}

/// The names in the first column of the table headed `| metric | meaning |`.
fn documented(doc: &str) -> BTreeSet<String> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with("| metric |"));
    assert!(lines.next().is_some(), "no `| metric | meaning |` table");
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|l| {
            let first = l.split('|').nth(1).unwrap_or("");
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .flat_map(expand)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn shorthands_expand() {
    assert_eq!(
        expand("vip_service_{packets,new_flows}_total{service,mode}"),
        ["vip_service_packets_total", "vip_service_new_flows_total"]
    );
    assert_eq!(
        expand("vip_xdp_verdicts_total{verdict}"),
        ["vip_xdp_verdicts_total"]
    );
    assert_eq!(expand("vip_vips_owned"), ["vip_vips_owned"]);
}

#[test]
fn reference_lists_every_exported_metric() {
    let documented = documented(REFERENCE);
    let exported = exported();
    let missing: Vec<_> = exported.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "served but not in docs/inspecting.md's metrics table: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(
        stale.is_empty(),
        "in docs/inspecting.md's metrics table but not served: {stale:?}"
    );
}
