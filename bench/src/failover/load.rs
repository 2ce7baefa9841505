//! The `failover-load` section: the failover bed's three Raft nodes left alone while both
//! cores are saturated, at 20 ms and 100 ms heartbeats, counting elections, fence lapses
//! and time without (or with two) owners from the prober; its table rows and note.
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use testbed::{http_get, Bed};

use super::{
    case::Case,
    daemons::priority_off,
    fresh_bed,
    prober::{two_owner_window, Prober, Reply},
    report::ms,
    stress::{Load, LoadGuard, StallMeter, Stalls},
    timing, System, Timing, BUCKET, METRICS, NODES, PROBE_EVERY,
};
use crate::{stopped, table::Row};

/// (term, leader transitions) of each node, from its metrics.
pub(super) fn raft_views(bed: &Bed) -> Result<Vec<(u64, u64)>> {
    let addr: SocketAddr = METRICS.parse()?;
    NODES
        .iter()
        .map(|n| {
            let (code, body) = http_get(&bed.host(n).ns, addr, "/metrics")
                .with_context(|| format!("metrics of {n}"))?;
            ensure!(code == 200, "metrics of {n}: HTTP {code}");
            let get = |name: &str| -> Result<u64> {
                body.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map(|v| v as u64)
                    .with_context(|| format!("{name} missing in the metrics of {n}"))
            };
            Ok((get("vip_raft_term")?, get("vip_leader_transitions_total")?))
        })
        .collect()
}

/// What one load case saw.
pub(super) struct LoadResult {
    pub(super) stalls: Stalls,
    pub(super) steal_secs: f64,
    pub(super) secs: f64,
    pub(super) elections: u64,
    pub(super) transitions: u64,
    pub(super) lapses: u64,
    pub(super) no_owner: Duration,
    pub(super) no_owner_longest: Duration,
    pub(super) two_owners: Duration,
    pub(super) replies: usize,
    pub(super) frames: u64,
}

/// Gaps between ARP answers longer than this count as time without an owner (the prober
/// asks every `PROBE_EVERY`; a few missing answers are the prober's own jitter).
pub(super) const NO_OWNER_GAP: Duration = Duration::from_millis(5);

pub(super) fn load_case(
    bed: &Bed,
    prober: &Prober,
    t: Timing,
    vip_bin: &Path,
    load: Load,
    secs: u64,
) -> Result<LoadResult> {
    let case = Case::start_all(bed, prober, System::Vip, t, vip_bin)?;
    case.stable_owner()?;
    // Settled: counters from here on.
    std::thread::sleep(Duration::from_secs(1));
    let before = raft_views(bed)?;
    let t0 = Instant::now();
    prober.forget_before(t0);
    let meter = StallMeter::start();
    let guard = LoadGuard::start(load)?;
    wait_out(load, t, secs, t0)?;
    let frames = guard.stop()?;
    let (stalls, steal_secs) = meter.stop();
    let t1 = Instant::now();
    let after = raft_views(bed)?;
    let replies: Vec<Reply> = prober.since(t0).into_iter().filter(|r| r.0 <= t1).collect();
    let (no_owner, longest) = no_owner(&replies, t0, t1);
    let term = |v: &[(u64, u64)]| v.iter().map(|x| x.0).max().unwrap_or(0);
    let elections = term(&after).saturating_sub(term(&before));
    let transitions: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.1.saturating_sub(b.1))
        .sum();
    drop(case);
    Ok(LoadResult {
        stalls,
        steal_secs,
        secs: (t1 - t0).as_secs_f64(),
        elections,
        transitions,
        // An election that moves the VIP is two transitions (old owner off, new one on); the
        // rest are lapses of a leader's fence, two each (off and on again).
        lapses: transitions.saturating_sub(2 * elections) / 2,
        no_owner,
        no_owner_longest: longest,
        two_owners: two_owner_window(&replies),
        replies: replies.len(),
        frames,
    })
}

/// Sleep out the case's `secs` from `t0`, with a progress line every minute.
fn wait_out(load: Load, t: Timing, secs: u64, t0: Instant) -> Result<()> {
    let end = t0 + Duration::from_secs(secs);
    let mut last_report = t0;
    while Instant::now() < end {
        if stopped() {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(200));
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!(
                "   {} {} ms: {:.0} s of {secs}",
                load.name(),
                t.heartbeat.as_millis(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Time without an owner from `t0` to `t1`: the sum of gaps between answers longer than
/// `NO_OWNER_GAP`, and the longest.
fn no_owner(replies: &[Reply], t0: Instant, t1: Instant) -> (Duration, Duration) {
    let (mut no_owner, mut longest) = (Duration::ZERO, Duration::ZERO);
    let mut last = t0;
    for r in replies.iter().map(|r| r.0).chain(std::iter::once(t1)) {
        let gap = r.saturating_duration_since(last);
        if gap > NO_OWNER_GAP {
            no_owner += gap;
            longest = longest.max(gap);
        }
        last = r;
    }
    (no_owner, longest)
}

/// `VIP_BENCH_LOAD_SECS`, default 1800 (the recorded form: 30 minutes per case): seconds per
/// case, or `A,B` for A at 20 ms heartbeats and B at 100 ms.
pub(super) fn load_secs() -> Result<(u64, u64)> {
    let Ok(v) = std::env::var("VIP_BENCH_LOAD_SECS") else {
        return Ok((1800, 1800));
    };
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .with_context(|| format!("VIP_BENCH_LOAD_SECS={v}: want seconds, or A,B"))
    };
    match v.split_once(',') {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => {
            let a = parse(&v)?;
            Ok((a, a))
        }
    }
}

/// The load case: the failover bed's three Raft nodes, both cores saturated at normal
/// priority (busy loops, or softirq from the veth generator), at 20 ms and 100 ms
/// heartbeats; nothing is faulted. Goal: no election and no fence lapse.
pub fn run_load(
    vip_bin: Option<&Path>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let vip_bin = crate::vip_bin(vip_bin)?;
    let (secs20, secs100) = load_secs()?;
    let bed = fresh_bed()?;
    let prober = Prober::start(bed.host("client"))?;
    for (h, secs) in [
        (Duration::from_millis(20), secs20),
        (Duration::from_millis(100), secs100),
    ] {
        let t = timing(h);
        for load in [Load::Busy, Load::Softirq] {
            let r = load_case(&bed, &prober, t, vip_bin, load, secs)?;
            progress(load, h, &r);
            rows.push(load_row(load, t, &r));
        }
    }
    drop(prober);
    notes.push(load_note(secs20, secs100));
    Ok(())
}

/// What one load case saw, on stderr.
fn progress(load: Load, h: Duration, r: &LoadResult) {
    eprintln!(
        "   {} {} ms: stalls at FIFO 10: {} over 10 ms, {} over 35 ms, longest {}; steal {:.1} s",
        load.name(),
        h.as_millis(),
        r.stalls.over_10ms,
        r.stalls.over_35ms,
        ms(r.stalls.max),
        r.steal_secs
    );
    eprintln!(
        "   {} {} ms: {} elections, {} lapses ({} transitions), no owner {} (longest {}), two owners {}, {} replies, {} frames",
        load.name(),
        h.as_millis(),
        r.elections,
        r.lapses,
        r.transitions,
        ms(r.no_owner),
        ms(r.no_owner_longest),
        ms(r.two_owners),
        r.replies,
        r.frames
    );
}

/// One load case's row; the goal (no election, no lapse) at 20 ms heartbeats.
fn load_row(load: Load, t: Timing, r: &LoadResult) -> Row {
    let h = t.heartbeat;
    let mut row = Row::new(format!(
        "raft under load, {}{}: heartbeat {} (election {}–{}, lease {}), {:.0} s",
        load.name(),
        if priority_off() {
            ", election at normal priority"
        } else {
            ""
        },
        ms(t.heartbeat),
        ms(t.election.0),
        ms(t.election.1),
        ms(t.lease),
        r.secs
    ))
    .result(format!(
        "{} elections, {} fence lapses ({} leader transitions); no owner {} in all (longest {}); two owners {}; machine stalls (a FIFO 10 thread woke late) {} over 10 ms, {} over 35 ms, longest {}; steal {:.1} s{}",
        r.elections,
        r.lapses,
        r.transitions,
        ms(r.no_owner),
        ms(r.no_owner_longest),
        ms(r.two_owners),
        r.stalls.over_10ms,
        r.stalls.over_35ms,
        ms(r.stalls.max),
        r.steal_secs,
        if r.frames > 0 {
            format!("; {:.2} Mpps generated", r.frames as f64 / r.secs / 1e6)
        } else {
            String::new()
        }
    ));
    if h == Duration::from_millis(20) {
        row = row.goal_at_most(
            (r.elections + r.lapses) as f64,
            0.0,
            "0 elections, 0 lapses",
        );
    }
    row
}

/// How the load figures were taken (printed under the table).
fn load_note(secs20: u64, secs100: u64) -> String {
    format!(
        "raft under load: the failover bed, three `vip` daemons in `election.mode: raft` ({}), nothing faulted, for {secs20} s per case at 20 ms and {secs100} s at 100 ms while both cores are saturated at normal \
         priority: a busy loop pinned to each core, or the pps bench's veth generator on each core with the kernel forwarding \
         its frames (softirq). Elections = term changes; leader transitions = `vip_leader_transitions_total` summed over the \
         nodes; fence lapses = (transitions − 2 × elections) / 2. The client asks for the VIP by ARP every {} ms from a \
         SCHED_FIFO 1 thread (above the load, below the election): no owner = the sum of gaps over {} ms between answers, \
         two owners = the longest run of {} ms buckets in which two MACs answered. Machine stalls: a SCHED_FIFO 10 thread \
         (the election's priority) pinned to each core sleeps 1 ms at a time; a wake more than 10 (35) ms late is counted \
         (35 ms is the lease at 20 ms heartbeats): nothing else runs at that priority, so such a wake is the machine not \
         running its highest-priority thread (vCPU descheduled by the host, or kernel work without a preemption point on a \
         `PREEMPT_NONE` kernel); steal = the `cpu` line's steal time in /proc/stat over the case.",
        if priority_off() {
            "`realtime_priority: 0, nice: 0` (VIP_BENCH_RAFT_PRIORITY=off): the election's threads at normal priority"
        } else {
            "default `realtime_priority`, so the election's threads run SCHED_FIFO"
        },
        PROBE_EVERY.as_millis(),
        NO_OWNER_GAP.as_millis(),
        BUCKET.as_millis(),
)
}
