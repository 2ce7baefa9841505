//! Scale: N LoadBalancer Services × 10 endpoints each, two real daemons (XDP, `election:
//! {kubeconfig, identity, services: true}`) against the in-process fake API server, for two
//! sizes of N and in `local` and `dsr` forwarding mode.
//!
//! ```text
//!  ns vb-sc-api    fake API server (objects inserted in-process, daemons over HTTP)
//!  ns vb-sc-client Capture of ARP: every gratuitous ARP, when and from which MAC
//!  ns vb-sc-node1  vip run (pins /sys/fs/bpf/vip-bench-scale/node1)
//!  ns vb-sc-node2  vip run (pins /sys/fs/bpf/vip-bench-scale/node2)
//!           all on one bridge; VIPs from 10.77.0.0/16, endpoints 10.100/10.120.x.x (off-link)
//! ```
//!
//! Per case: the cluster is populated before the daemons start (setup, timed apart); then
//! cold start (both daemons spawned → every VIP owned in the holder's pinned VIPS map, and,
//! in dsr, every service with a table in its SERVICES map; → the first gratuitous ARP for the
//! last VIP at the client), a 10 s idle window (CPU, API requests by verb per node), memory
//! (resident memory from smaps without the mapped BPF maps; BPF maps from the kernel's memlock accounting in the daemon's fdinfo), Service
//! creates (→ status written, → first GARP), endpoint changes (dsr: → the service entry
//! flipped to a new table, checked to hold the new backend) and a failover (SIGTERM to the
//! holder → the other node owns and announced every VIP; its API requests meanwhile).
//! Every wait is bounded in time, and stops early when nothing moves any more.
//!
//! Files: `cluster` (the objects and daemon config at N), `fixture` (the bed, API server and
//! daemons of one case), `observe` (statuses and GARPs as they appear), `node` (a daemon and
//! its pinned maps), `probes` (memory, BPF maps, API requests by verb, the daemon's log),
//! `case` (the phases in order) with one file per phase (`cold`, `steady`, `churn`,
//! `takeover`), and `report` (the table rows).
mod case;
mod churn;
mod cluster;
mod cold;
mod fixture;
mod node;
mod observe;
mod probes;
mod report;
mod steady;
mod takeover;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{stopped, table::Row};
use case::run_case;
use cluster::Mode;
use report::rows;

/// The daemons' pins, one folder per node (removed by the bench and by xtask).
pub const PIN_DIR: &str = "/sys/fs/bpf/vip-bench-scale";
const NODES: [&str; 2] = ["node1", "node2"];
const ENDPOINTS: usize = 10;
/// Services created one after another with N present.
const CREATES: usize = 100;
/// Endpoint changes (dsr), one after another.
const CHANGES: usize = 100;
const PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
/// Pool: 10.77.0.1–10.77.255.254, addresses that exist only on the bed.
const POOL: &str = "10.77.0.1-10.77.255.254";
const IDLE: Duration = Duration::from_secs(10);
/// Quiet: no API writes but Lease renewals for this long. Long enough to span a pass of
/// the controller at N=10,000 (a 3 s window was declared quiet between two bursts of a
/// write backlog, and the steady-state rows then measured the backlog).
const QUIET: Duration = Duration::from_secs(10);

pub fn run(
    quick: bool,
    vip_bin: Option<&Path>,
    out: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let vip_bin = crate::vip_bin(vip_bin)?;
    let sizes = if quick { [100, 1000] } else { [1000, 10_000] };
    let mut desc = Vec::new();
    // `VIP_BENCH_SCALE_MODES=dsr` (or `local`): one mode only, for profiling (the table it
    // writes into BENCHMARKS.md then lacks the other mode: not one to commit).
    let only = std::env::var("VIP_BENCH_SCALE_MODES").ok();
    for mode in [Mode::Local, Mode::Dsr] {
        if only.as_deref().is_some_and(|m| m != mode.name()) {
            continue;
        }
        let mut cases = Vec::new();
        for n in sizes {
            if stopped() {
                bail!("interrupted");
            }
            eprintln!("  scale: {} N={n}", mode.name());
            let t = Instant::now();
            let c = run_case(quick, vip_bin, n, mode)?;
            eprintln!("  case took {:.1} s", t.elapsed().as_secs_f64());
            desc.push(format!(
                "{} N={n}: setup (inserting {n} Services + {n} EndpointSlices into the store) {:.2} s, not counted; settings {}",
                mode.name(),
                c.setup.as_secs_f64(),
                c.settings
            ));
            desc.push(format!(
                "{} N={n}: holder's largest maps: {}; `vip_services_unplaced` at the end of cold start {}",
                mode.name(),
                c.map_breakdown,
                c.unplaced
            ));
            if mode == Mode::Dsr && !c.change_costs.is_empty() {
                desc.push(format!(
                    "dsr N={n}: where an endpoint change's time goes, from the holder's log over the change phase: {}",
                    c.change_costs
                ));
            }
            if mode == Mode::Dsr && c.change_skipped > 0 {
                desc.push(format!(
                    "dsr N={n}: {} services picked for an endpoint change were skipped: not placed whole in the data plane (their live table lacks one of their backends)",
                    c.change_skipped
                ));
            }
            notes.extend(c.log_notes.iter().cloned());
            cases.push(c);
        }
        rows(mode, &cases[0], &cases[1], out);
    }
    notes.push(format!(
        "scale: testbed bed (bridge; client, node1, node2, API server host), two `vip run` daemons (XDP on eth0, `election: {{kubeconfig, identity, services: true}}`, default lease timings 15/10/2 s, one shared lease) and the in-process fake API server, all on the same 2 cores; N LoadBalancer Services (one TCP port) × one EndpointSlice of {ENDPOINTS} ready endpoints (`nodeName` alternating node1/node2, addresses off the bed), pool `range-global: {POOL}` in `kube-system/kubevip`; dsr Services annotated `vip.dev/forwarding-mode: dsr`. Each N=big row's baseline is the same measurement at the smaller N in the same run. Cold start: both daemons spawned at once on a cluster whose Services have no address yet, until the holder's pinned VIPS map owns all N (dsr: every SERVICES entry has a table) and the client captured a first gratuitous ARP for each (and `vip_services_unplaced` is 0; polled every 100 ms; GARP times are capture times); bounded at {} s or 20 s without progress. Creates: one Service (dsr: its slice first) at a time, {CREATES} at most, each waited for up to 3 s (status from the server's change feed, GARP from the capture), phase bounded at 60 s or 5 misses in a row; endpoint changes likewise: one endpoint of an existing Service replaced, timed to the holder's SERVICES entry flipping to a table that holds the new backend (entry polled every 0.2 ms, the table read on each flip; only Services whose live table holds all their backends are picked). Memory and CPU after cold start + 3 s and once no node made an API write but Lease renewals for {} s (bounded at 150 s); idle CPU = utime+stime over {} s; API rates by verb from the server's request log per client (`watch` = a watch request opened), writes = create+update+patch+delete. Failover: SIGTERM to the holder, rates of the other node from then until its writes but Lease renewals stopped for {} s (at least 10 s, at most 10 + 150 s).",
        if quick { 60 } else { 180 },
        QUIET.as_secs(),
        IDLE.as_secs(),
        QUIET.as_secs()
    ));
    notes.extend(desc);
    Ok(())
}
