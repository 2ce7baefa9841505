//! One case (one N, one mode) from start to end: what it measured ([`Case`]), the time
//! bounds of its waits, and [`run_case`], which runs the phases in order on one cluster.
//! Each phase lives in its own file; this one only says which runs when.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    churn, cluster::Mode, cluster::Settings, cold, fixture::Cluster, probes::Verbs, steady,
    takeover,
};
use crate::stopped;

/// What one case measured.
#[derive(Default)]
pub(super) struct Case {
    pub(super) n: usize,
    pub(super) setup: Duration,
    pub(super) settings: String,
    /// Spawn → every VIP owned in the holder's map (and, dsr, every table in place).
    pub(super) cold_dataplane: Option<Duration>,
    /// Spawn → first GARP of the last VIP.
    pub(super) cold_announced: Option<Duration>,
    /// (owned, tables, announced) when cold start ended.
    pub(super) cold_reached: (usize, usize, usize),
    pub(super) statuses_written: Option<Duration>,
    pub(super) create_status: Vec<Option<Duration>>,
    pub(super) create_garp: Vec<Option<Duration>>,
    pub(super) change_live: Vec<Option<Duration>>,
    pub(super) rss: [u64; 2],
    pub(super) maps: u64,
    pub(super) maps_percpu: u64,
    pub(super) map_breakdown: String,
    pub(super) unplaced: u64,
    pub(super) statuses_seen: usize,
    pub(super) change_skipped: usize,
    /// The holder's own account of the endpoint-change phase (its "took long" log lines).
    pub(super) change_costs: String,
    pub(super) cpu_pct: [f64; 2],
    /// One /metrics scrape of the holder: its CPU time, wall time, body bytes and lines.
    pub(super) scrape: Option<(Duration, Duration, usize, usize)>,
    pub(super) steady: [Verbs; 2],
    pub(super) failover: Verbs,
    pub(super) takeover: Option<Duration>,
    pub(super) takeover_vips: usize,
    pub(super) failover_quiet: bool,
    /// Spawn → the start of the first `QUIET` without API writes but Lease renewals (a pass
    /// that computes longer than that before it writes again looks the same).
    pub(super) quiet: Option<Duration>,
    pub(super) takeover_reached: (usize, usize),
    pub(super) log_notes: Vec<String>,
}

pub(super) struct Bounds {
    pub(super) settle: Duration,
    pub(super) cold: Duration,
    pub(super) stall: Duration,
    pub(super) phase: Duration,
}

/// Poll every `every` until `done` says so, nothing moved for `b.stall`, or `cap` passed.
/// `progress` returns a value that changes while things move, and whether it is done.
pub(super) fn until<T: PartialEq + Clone>(
    cap: Duration,
    stall: Duration,
    every: Duration,
    mut progress: impl FnMut() -> Result<(T, bool)>,
) -> Result<T> {
    let start = Instant::now();
    let mut moved = Instant::now();
    let mut last: Option<T> = None;
    loop {
        let (v, done) = progress()?;
        if done || start.elapsed() > cap || moved.elapsed() > stall || stopped() {
            return Ok(v);
        }
        if last.as_ref() != Some(&v) {
            moved = Instant::now();
            last = Some(v);
        }
        std::thread::sleep(every);
    }
}

impl Bounds {
    fn new(quick: bool) -> Bounds {
        Bounds {
            cold: Duration::from_secs(if quick { 60 } else { 180 }),
            stall: Duration::from_secs(if quick { 10 } else { 20 }),
            phase: Duration::from_secs(if quick { 20 } else { 60 }),
            settle: Duration::from_secs(if quick { 30 } else { 150 }),
        }
    }
}

pub(super) fn run_case(quick: bool, vip_bin: &Path, n: usize, mode: Mode) -> Result<Case> {
    let b = Bounds::new(quick);
    let settings = Settings::new(n, mode);
    let mut case = Case {
        n,
        settings: settings.describe(),
        ..Case::default()
    };
    let mut cl = Cluster::start(vip_bin, n, mode, &settings, &mut case)?;
    let h = cold::run(&mut cl, &b, mode, &mut case)?;
    steady::run(&cl, &b, h, &mut case)?;
    churn::creates(&mut cl, &b, h, mode, &mut case)?;
    if mode == Mode::Dsr {
        churn::changes(&cl, &b, h, mode, &mut case)?;
    }
    takeover::run(&mut cl, &b, h, &mut case)?;
    case.log_notes = cl.log_notes(mode, n);
    cl.finish();
    Ok(case)
}
