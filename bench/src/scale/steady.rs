//! Steady state after cold start: once the nodes stopped writing to the API (but Lease
//! renewals), an idle window of CPU and API requests per node, resident memory, one
//! /metrics scrape and the holder's BPF map memory. Results are stored by role
//! ([holder, standby]), not by node.
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{
    case::{Bounds, Case},
    fixture::Cluster,
    probes::{map_breakdown, map_memlock, quiet, requests_since, rss_bytes, Verbs},
    IDLE, NODES, QUIET,
};

pub(super) fn run(cl: &Cluster, b: &Bounds, h: usize, case: &mut Case) -> Result<()> {
    let s = 1 - h;
    let server = cl.server();
    let nodes = &cl.nodes;
    // Idle: the GARP bursts (2 s) go by, then wait for the nodes' API writes other than
    // Lease renewals to stop (the holder may still be writing Events and annotations).
    std::thread::sleep(Duration::from_secs(3));
    let tokens: Vec<&str> = nodes.iter().map(|nd| nd.token).collect();
    case.quiet = quiet(server, &tokens, QUIET, b.settle).map(|since| since - cl.t0);
    let req0: Vec<usize> = nodes
        .iter()
        .map(|nd| server.requests_by(nd.token).len())
        .collect();
    let cpu0: Vec<Duration> = nodes.iter().map(|nd| testbed::cpu_time(nd.pid())).collect();
    let w0 = Instant::now();
    std::thread::sleep(IDLE);
    let secs = w0.elapsed().as_secs_f64();
    for k in 0..2 {
        let used = testbed::cpu_time(nodes[k].pid()) - cpu0[k];
        case.cpu_pct[k] = used.as_secs_f64() / secs * 100.0;
        case.steady[k] = Verbs::of(&requests_since(server, nodes[k].token, req0[k]), secs);
        case.rss[k] = rss_bytes(nodes[k].pid());
    }
    // Roles in the case: [holder, standby].
    case.cpu_pct = [case.cpu_pct[h], case.cpu_pct[s]];
    case.steady = [case.steady[h].clone(), case.steady[s].clone()];
    case.rss = [case.rss[h], case.rss[s]];
    case.scrape = scrape(cl, h)?;
    let ids;
    (case.maps, case.maps_percpu, ids) = map_memlock(nodes[h].pid());
    case.map_breakdown = map_breakdown(&ids);
    Ok(())
}

/// One scrape, as Prometheus would make every 15-30 s: what it costs the holder (CPU time,
/// wall time, body bytes, series), or None if it failed.
fn scrape(cl: &Cluster, h: usize) -> Result<Option<(Duration, Duration, usize, usize)>> {
    let pid = cl.nodes[h].pid();
    let c0 = testbed::cpu_time(pid);
    let w0 = Instant::now();
    if let Ok((200, body)) = testbed::http_get(
        &cl.bed.host(NODES[h]).ns,
        "127.0.0.1:9472".parse()?,
        "/metrics",
    ) {
        return Ok(Some((
            testbed::cpu_time(pid) - c0,
            w0.elapsed(),
            body.len(),
            body.lines().filter(|l| !l.starts_with('#')).count(),
        )));
    }
    Ok(None)
}
