//! Failover at scale: SIGTERM to the holder; the other node must own and announce every VIP
//! the holder had. Then its API requests until its writes (but Lease renewals) stop: what a
//! failover costs the API server in all. Last phase of a case, since the holder is gone.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{
    case::{until, Bounds, Case},
    fixture::Cluster,
    node::dataplane_counts,
    probes::{quiet, requests_since, Verbs},
    IDLE, QUIET,
};

pub(super) fn run(cl: &mut Cluster, b: &Bounds, h: usize, case: &mut Case) -> Result<()> {
    let s = 1 - h;
    // Failover: the holder stops (SIGTERM); the other node must own and announce every VIP
    // the holder had.
    let (had, _) = dataplane_counts(&cl.nodes[h]);
    let r0 = cl.server().requests_by(cl.nodes[s].token).len();
    let f0 = Instant::now();
    cl.nodes[h].stop();
    let mut t_take = None;
    let (nodes, garps) = (&mut cl.nodes, &mut cl.garps);
    let took = until(b.phase, b.stall, Duration::from_millis(200), || {
        if !nodes[s].alive() {
            bail!("vip on {} exited:\n{}", nodes[s].token, nodes[s].log_tail());
        }
        garps.update();
        let (owned, _) = dataplane_counts(&nodes[s]);
        let (announced, last) = garps.announced_by(nodes[s].mac, f0);
        if t_take.is_none() && owned >= had && announced >= had {
            t_take = last.map(|l| l.max(f0) - f0);
        }
        Ok(((owned, announced), t_take.is_some()))
    })?;
    case.takeover = t_take;
    case.takeover_reached = took;
    case.takeover_vips = had;
    // Until the new holder's writes stop (what a failover costs the API in all), and at
    // least the idle window's length, so a quick takeover is not a rate over a blip.
    std::thread::sleep(IDLE.saturating_sub(f0.elapsed()));
    let server = cl.server();
    let token = cl.nodes[s].token;
    case.failover_quiet = quiet(server, &[token], QUIET, b.settle).is_some();
    let secs = f0.elapsed().as_secs_f64();
    case.failover = Verbs::of(&requests_since(server, token, r0), secs);
    Ok(())
}
