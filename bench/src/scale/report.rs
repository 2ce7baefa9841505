//! The table rows of one mode: each figure at the big N beside the same figure at the small
//! N of the same run, with the ratio and, where there is one, the goal. Grouped by what the
//! rows read (cold start, changes, memory, idle cost, failover) so each group's wording sits
//! with its own figures.
use std::time::Duration;

use super::{
    case::Case,
    cluster::{Mode, Settings},
    CHANGES, CREATES, IDLE, QUIET,
};
use crate::{
    failover::{ms, percentile},
    table::Row,
};

pub(super) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// p50 / p99 of the samples that completed, and how many did.
fn p50_p99(samples: &[Option<Duration>]) -> (Option<(Duration, Duration)>, usize) {
    let mut ok: Vec<Duration> = samples.iter().flatten().copied().collect();
    ok.sort();
    let n = ok.len();
    if ok.is_empty() {
        return (None, 0);
    }
    (Some((percentile(&ok, 0.50), percentile(&ok, 0.99))), n)
}

/// A goal not reached at all: no ratio to miss it by.
fn missed(mut row: Row, goal: &str, why: &str) -> Row {
    row.goal = format!("≤ {goal}");
    row.met = format!("**missed**: {why}");
    row
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "not reached".into(), ms)
}

fn ratio_of(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    Some(a?.as_secs_f64() / b?.as_secs_f64().max(1e-9))
}

fn with_ratio(row: Row, r: Option<f64>) -> Row {
    match r {
        Some(r) if r.is_finite() => row.ratio(r),
        _ => row,
    }
}

fn latency_row(
    label: String,
    big: &Case,
    small: &Case,
    pick: impl Fn(&Case) -> &[Option<Duration>],
    goal: Option<f64>,
) -> Row {
    let show = |c: &Case| {
        let samples = pick(c);
        match p50_p99(samples) {
            (Some((p50, p99)), k) => format!(
                "p50 {} / p99 {} ({k}/{} done)",
                ms(p50),
                ms(p99),
                samples.len()
            ),
            (None, _) if samples.is_empty() => "not run".into(),
            (None, _) => format!("none of {} done", samples.len()),
        }
    };
    let p99 = |c: &Case| p50_p99(pick(c)).0.map(|x| x.1);
    let mut row =
        Row::new(label)
            .result(show(big))
            .baseline(format!("N={}: {}", small.n, show(small)));
    row = with_ratio(row, ratio_of(p99(big), p99(small)));
    if let Some(g) = goal {
        let shown = format!("p99 {}", ms(Duration::from_secs_f64(g)));
        // A run where some did not complete at all misses whatever the completed ones say.
        let samples = pick(big);
        let missing = samples.iter().filter(|s| s.is_none()).count();
        row = match p99(big) {
            Some(d) if missing == 0 => row.goal_at_most(d.as_secs_f64(), g, &shown),
            _ => missed(
                row,
                &shown,
                &format!("{missing} of {} never done", samples.len()),
            ),
        };
    }
    row
}

/// One mode's two cases, and the label every row of it starts with.
struct Pair<'a> {
    mode: Mode,
    small: &'a Case,
    big: &'a Case,
}

impl Pair<'_> {
    fn label(&self, s: &str) -> String {
        format!("scale {}, N={}: {s}", self.mode.name(), self.big.n)
    }

    /// "N=<small>: <what>", the baseline column.
    fn base(&self, what: impl std::fmt::Display) -> String {
        format!("N={}: {what}", self.small.n)
    }
}

pub(super) fn rows(mode: Mode, small: &Case, big: &Case, out: &mut Vec<Row>) {
    let p = Pair { mode, small, big };
    cold_rows(&p, out);
    churn_rows(&p, out);
    memory_rows(&p, out);
    idle_rows(&p, out);
    api_rows(&p, out);
    failover_rows(&p, out);
}

fn cold_rows(p: &Pair, out: &mut Vec<Row>) {
    let (mode, small, big) = (p.mode, p.small, p.big);
    let reached = |c: &Case| {
        let (o, t, a) = c.cold_reached;
        if mode == Mode::Dsr {
            format!(
                "{o} owned, {t} with tables, {} unplaced, {a} announced of {}",
                c.unplaced, c.n
            )
        } else {
            format!(
                "{o} owned, {} unplaced, {a} announced of {}",
                c.unplaced, c.n
            )
        }
    };
    let cold = |c: &Case, d: Option<Duration>| match d {
        Some(d) => ms(d),
        None => format!("not reached ({})", reached(c)),
    };
    out.push(with_ratio(
        Row::new(p.label("cold start → every VIP in the data plane (holder's maps)"))
            .result(cold(big, big.cold_dataplane))
            .baseline(p.base(cold(small, small.cold_dataplane))),
        ratio_of(big.cold_dataplane, small.cold_dataplane),
    ));
    let row = with_ratio(
        Row::new(p.label("cold start → every VIP announced (last first GARP)"))
            .result(cold(big, big.cold_announced))
            .baseline(p.base(cold(small, small.cold_announced))),
        ratio_of(big.cold_announced, small.cold_announced),
    );
    out.push(match (big.cold_announced, big.cold_dataplane) {
        (Some(a), Some(_)) => row.goal_at_most(a.as_secs_f64(), 5.0, "5 s"),
        (Some(a), None) => missed(
            row,
            "5 s",
            &format!(
                "announced in {} but not all in the data plane ({})",
                ms(a),
                reached(big)
            ),
        ),
        (None, _) => missed(row, "5 s", "not every VIP announced"),
    });
    out.push(with_ratio(
        Row::new(p.label("cold start → every status written"))
            .result(opt_ms(big.statuses_written))
            .baseline(p.base(opt_ms(small.statuses_written))),
        ratio_of(big.statuses_written, small.statuses_written),
    ));
    let q = |c: &Case| {
        c.quiet.map_or_else(
            || "writes still going after the 150 s bound".to_string(),
            ms,
        )
    };
    out.push(with_ratio(
        Row::new(p.label(&format!(
            "cold start → first {} s without API writes but Lease renewals (the rows below wait for it; writes may resume)",
            QUIET.as_secs()
        )))
        .result(q(big))
        .baseline(p.base(q(small))),
        ratio_of(big.quiet, small.quiet),
    ));
}

fn churn_rows(p: &Pair, out: &mut Vec<Row>) {
    let (small, big) = (p.small, p.big);
    out.push(latency_row(
        p.label(&format!(
            "Service create → status written, {CREATES} creates"
        )),
        big,
        small,
        |c| &c.create_status,
        None,
    ));
    out.push(latency_row(
        p.label(&format!("Service create → first GARP, {CREATES} creates")),
        big,
        small,
        |c| &c.create_garp,
        Some(0.150),
    ));
    if p.mode == Mode::Dsr {
        out.push(latency_row(
            p.label(&format!(
                "one endpoint change → new ring live, {CHANGES} changes"
            )),
            big,
            small,
            |c| &c.change_live,
            Some(0.020),
        ));
    }
}

fn memory_rows(p: &Pair, out: &mut Vec<Row>) {
    let (mode, small, big) = (p.mode, p.small, p.big);
    for (k, role) in ["holder", "standby"].iter().enumerate() {
        out.push(
            Row::new(p.label(&format!("daemon RSS (BPF map mappings left out), {role}")))
                .result(mib(big.rss[k]))
                .baseline(p.base(mib(small.rss[k])))
                .ratio(big.rss[k] as f64 / small.rss[k].max(1) as f64)
                .goal_at_most(big.rss[k] as f64, 128.0 * 1048576.0, "128 MiB"),
        );
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    // The daemon's own sizing for the case's settings on 64 possible CPUs (its formula
    // matches the kernel's charge: a kernel test checks it against fdinfo).
    let at64 = |c: &Case| -> u64 {
        use vip_userspace::dataplane::{load::Sizes, memory::map_memory};
        let s = Settings::new(c.n, mode);
        let sizes = Sizes {
            max_services: s.max_services,
            ring_slots: s.ring_slots.unwrap_or(vip_common::RING_SLOTS),
            max_vips: s.max_vips,
            max_backends: s.max_backends.unwrap_or(vip_common::MAX_BACKENDS),
            ..Sizes::default()
        };
        map_memory(&sizes, 64).iter().map(|(_, b)| b).sum()
    };
    out.push(
        Row::new(p.label(&format!("BPF maps, holder (kernel memlock, {ncpu} CPUs)")))
            .result(mib(big.maps))
            .baseline(p.base(mib(small.maps)))
            .ratio(big.maps as f64 / small.maps.max(1) as f64)
            .goal_at_most(big.maps as f64, 256.0 * 1048576.0, "256 MiB"),
    );
    out.push(
        Row::new(
            p.label("BPF maps, computed for a 64-CPU node (vip's map_memory, these settings)"),
        )
        .result(mib(at64(big)))
        .baseline(p.base(mib(at64(small))))
        .ratio(at64(big) as f64 / at64(small).max(1) as f64)
        .goal_at_most(at64(big) as f64, 256.0 * 1048576.0, "256 MiB"),
    );
}

fn idle_rows(p: &Pair, out: &mut Vec<Row>) {
    let (small, big) = (p.small, p.big);
    for (k, role) in ["holder", "standby"].iter().enumerate() {
        out.push(
            Row::new(p.label(&format!("idle CPU, {role} ({} s window)", IDLE.as_secs())))
                .result(format!("{:.2} % of a core", big.cpu_pct[k]))
                .baseline(format!("N={}: {:.2} %", small.n, small.cpu_pct[k]))
                .ratio(big.cpu_pct[k] / small.cpu_pct[k].max(1e-6))
                .goal_at_most(big.cpu_pct[k], 0.3, "0.3 %"),
        );
    }
    let scrape = |c: &Case| match c.scrape {
        Some((cpu, wall, bytes, series)) => format!(
            "{:.1} ms CPU ({:.1} ms wall), {:.0} KiB, {series} series",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3,
            bytes as f64 / 1024.0
        ),
        None => "failed".into(),
    };
    let mut row = Row::new(p.label("one /metrics scrape, holder"))
        .result(scrape(big))
        .baseline(p.base(scrape(small)));
    if let (Some(b), Some(s)) = (big.scrape, small.scrape) {
        row = row.ratio(b.0.as_secs_f64() / s.0.as_secs_f64().max(1e-6));
    }
    out.push(row);
}

fn api_rows(p: &Pair, out: &mut Vec<Row>) {
    let (small, big) = (p.small, p.big);
    for (k, role) in ["holder", "standby"].iter().enumerate() {
        let (b, s) = (&big.steady[k], &small.steady[k]);
        let r = b.writes_per_s() / s.writes_per_s().max(1e-9);
        let mut row = Row::new(p.label(&format!("API writes/s at steady state, {role}")))
            .result(format!("{:.2}/s ({}/s)", b.writes_per_s(), b.describe()))
            .baseline(format!(
                "N={}: {:.2}/s ({}/s)",
                small.n,
                s.writes_per_s(),
                s.describe()
            ));
        if s.writes_per_s() > 0.0 {
            row = row.ratio(r);
        }
        // "Independent of N": within 20 % of the smaller cluster's figure (a 10 s window
        // counts whole requests).
        let v = if s.writes_per_s() > 0.0 {
            r
        } else if b.writes_per_s() > 0.0 {
            f64::INFINITY
        } else {
            1.0
        };
        let goal = format!("1.2× N={} (independent of N)", small.n);
        out.push(if v.is_finite() {
            row.goal_at_most(v, 1.2, &goal)
        } else {
            missed(row, &goal, &format!("none at N={}", small.n))
        });
    }
}

fn failover_rows(p: &Pair, out: &mut Vec<Row>) {
    let (small, big) = (p.small, p.big);
    let take = |c: &Case| match c.takeover {
        Some(d) => format!("{} ({} VIPs)", ms(d), c.takeover_vips),
        None => format!(
            "not reached ({} owned, {} announced)",
            c.takeover_reached.0, c.takeover_reached.1
        ),
    };
    out.push(with_ratio(
        Row::new(p.label("failover (holder SIGTERM) → other node owns and announced every VIP"))
            .result(take(big))
            .baseline(p.base(take(small))),
        ratio_of(big.takeover, small.takeover),
    ));
    let (b, s) = (&big.failover, &small.failover);
    let mut row = Row::new(p.label(&format!(
        "API requests/s during failover, new holder (over {:.0} s{})",
        b.secs,
        if big.failover_quiet {
            format!(", until {} s without its writes", QUIET.as_secs())
        } else {
            ", its writes still going".to_string()
        }
    )))
    .result(format!(
        "writes {:.2}/s ({}/s)",
        b.writes_per_s(),
        b.describe()
    ))
    .baseline(format!(
        "N={}: writes {:.2}/s ({}/s)",
        small.n,
        s.writes_per_s(),
        s.describe()
    ));
    if s.writes_per_s() > 0.0 {
        row = row.ratio(b.writes_per_s() / s.writes_per_s());
    }
    out.push(row);
}
