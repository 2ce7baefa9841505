//! Cold start: both daemons spawned on a cluster whose Services have no address yet, until
//! the holder's data plane has every VIP (and, dsr, every table), the client saw a first
//! gratuitous ARP for each, and every status is written. The holder is found here, so every
//! later phase knows which node to measure.
use std::time::Duration;

use anyhow::{bail, Result};

use super::{
    case::{until, Bounds, Case},
    cluster::Mode,
    fixture::Cluster,
    node::{dataplane_counts, unplaced, Profile},
    NODES,
};

/// What one poll of cold start saw: (owned, tables, announced, unplaced, statuses written).
/// Compared between polls to tell progress from a stall, and printed as is.
type Reached = (usize, usize, usize, u64, usize);

/// What cold start has found so far, across polls.
#[derive(Default)]
struct Watch {
    holder: Option<usize>,
    t_dp: Option<Duration>,
    t_an: Option<Duration>,
    last_unplaced: Option<u64>,
}

/// Cold start; the holder's index in `cl.nodes`.
pub(super) fn run(cl: &mut Cluster, b: &Bounds, mode: Mode, case: &mut Case) -> Result<usize> {
    let n = case.n;
    // Profiling (`VIP_BENCH_SCALE_PERF=<dir>`): both daemons' cold start, sampled by perf.
    let mut cold_perf = Profile::start("cold", n, mode, &cl.nodes);

    // Cold start. The holder is the node whose MAC announces.
    let mut w = Watch::default();
    let reached = until(b.cold, b.stall, Duration::from_millis(100), || {
        w.poll(cl, n, mode)
    })?;
    let t0 = cl.t0;
    case.cold_dataplane = w.t_dp;
    case.cold_announced = w.t_an;
    case.cold_reached = (reached.0, reached.1, reached.2);
    case.unplaced = reached.3;
    case.statuses_seen = reached.4;
    case.statuses_written = {
        let statuses = &cl.statuses;
        let s = statuses.seen.lock().map(|m| m.len()).unwrap_or(0);
        (s >= n).then(|| {
            statuses
                .seen
                .lock()
                .map(|m| m.values().map(|(t, _)| *t - t0).max())
                .ok()
                .flatten()
        })
    }
    .flatten();
    if let Some(p) = cold_perf.take() {
        p.stop();
    }
    let Some(h) = w.holder else {
        bail!(
            "no node holds the lease or announced a VIP after {:.0} s:\n{}\n{}",
            t0.elapsed().as_secs_f64(),
            cl.nodes[0].log_tail(),
            cl.nodes[1].log_tail()
        );
    };
    eprintln!(
        "  cold start: holder {}, reached owned/tables/announced {:?} of {n}: data plane {:?}, announced {:?}",
        NODES[h], reached, w.t_dp, w.t_an
    );
    Ok(h)
}

impl Watch {
    /// One poll: what is reached, and whether cold start is over.
    fn poll(&mut self, cl: &mut Cluster, n: usize, mode: Mode) -> Result<(Reached, bool)> {
        for nd in cl.nodes.iter_mut() {
            if !nd.alive() {
                bail!("vip on {} exited:\n{}", nd.token, nd.log_tail());
            }
        }
        cl.garps.update();
        // Reading the whole store is not free: only once the data plane is done.
        if self.t_dp.is_some() && self.t_an.is_some() {
            cl.statuses.rescan(cl.api.server());
        }
        let written = cl.statuses.count();
        if self.holder.is_none() {
            self.holder = find_holder(cl);
        }
        let Some(h) = self.holder else {
            return Ok(((0, 0, 0, 0, written), false));
        };
        let t0 = cl.t0;
        let (owned, tables) = dataplane_counts(&cl.nodes[h]);
        let (announced, last) = cl.garps.announced_by(cl.nodes[h].mac, t0);
        let tables_ok = mode == Mode::Local || tables >= n;
        // A scrape of /metrics costs the daemon work proportional to its services and
        // backends: asked only once the maps are complete, not on every poll (a scrape every
        // 100 ms slowed the holder's cold start it was measuring).
        if owned >= n && tables_ok && (self.t_dp.is_none() || self.last_unplaced.is_none()) {
            self.last_unplaced = unplaced(&cl.bed, NODES[h]);
        }
        let unplaced = self.last_unplaced;
        if self.t_dp.is_none() && owned >= n && tables_ok && unplaced == Some(0) {
            self.t_dp = Some(t0.elapsed());
        }
        if self.t_an.is_none() && announced >= n {
            self.t_an = last.map(|l| l - t0);
        }
        Ok((
            (owned, tables, announced, unplaced.unwrap_or(0), written),
            self.t_dp.is_some() && self.t_an.is_some() && written >= n,
        ))
    }
}

/// The Lease's holder, or else whoever announces first.
fn find_holder(cl: &Cluster) -> Option<usize> {
    let lease = cl
        .api
        .server()
        .objects("leases")
        .into_iter()
        .find_map(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string));
    (0..2)
        .find(|&k| lease.as_deref() == Some(NODES[k]))
        .or_else(|| (0..2).find(|&k| cl.garps.announced_by(cl.nodes[k].mac, cl.t0).0 > 0))
}
