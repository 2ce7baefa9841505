//! How the failover section reports: percentiles, one line per case summarising its
//! samples, the table rows (ours beside keepalived's at the same interval) and the note on
//! how the figures were taken. `ms` and `percentile` are shared with the scale bench.
use std::time::Duration;

use super::{case::Sample, daemons::keepalived_version, Fault, Timing, BUCKET, CONNS, PROBE_EVERY};
use crate::table::Row;

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub(crate) fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m >= 1000.0 {
        format!("{:.2} s", m / 1000.0)
    } else {
        format!("{m:.0} ms")
    }
}

pub(super) struct Summary {
    pub(super) p50: Duration,
    pub(super) p99: Duration,
    pub(super) max: Duration,
    pub(super) two_owners: Duration,
    pub(super) two_owners_persisting: usize,
    pub(super) lost: usize,
    pub(super) n: usize,
}

pub(super) fn summarize(samples: &[Sample]) -> Summary {
    let mut t: Vec<Duration> = samples.iter().map(|s| s.takeover).collect();
    t.sort();
    Summary {
        p50: percentile(&t, 0.50),
        p99: percentile(&t, 0.99),
        max: t.last().copied().unwrap_or_default(),
        two_owners: samples
            .iter()
            .map(|s| s.two_owners)
            .max()
            .unwrap_or_default(),
        two_owners_persisting: samples.iter().filter(|s| s.two_owners_at_end).count(),
        lost: samples.iter().map(|s| s.lost).sum(),
        n: samples.len(),
    }
}

pub(super) fn describe(s: &Summary) -> String {
    let two = if s.two_owners.is_zero() {
        "never".to_string()
    } else if s.two_owners_persisting > 0 {
        format!(
            "{} (still two at the end in {}/{})",
            ms(s.two_owners),
            s.two_owners_persisting,
            s.n
        )
    } else {
        ms(s.two_owners)
    };
    format!(
        "p50 {} / p99 {} / max {}; two owners: {two}; conns lost {}/{}",
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        s.lost,
        s.n * CONNS
    )
}

/// Per interval: the timing, then our samples and keepalived's, per fault.
pub(super) type Table = Vec<(Timing, Vec<(Fault, Vec<Sample>)>, Vec<(Fault, Vec<Sample>)>)>;

/// One row per interval and fault: ours beside keepalived's, ratio of the p99s.
pub(super) fn push_rows(table: &Table, rows: &mut Vec<Row>) {
    for (t, ours, theirs) in table {
        for ((fault, o), (_, k)) in ours.iter().zip(theirs) {
            let (o, k) = (summarize(o), summarize(k));
            let mut row = Row::new(format!(
                "failover, {}: heartbeat {} (election {}–{}, lease {}) vs keepalived advert_int {}",
                fault.name(),
                ms(t.heartbeat),
                ms(t.election.0),
                ms(t.election.1),
                ms(t.lease),
                t.heartbeat.as_secs_f64()
            ))
            .result(describe(&o))
            .baseline(describe(&k))
            .ratio(o.p99.as_secs_f64() / k.p99.as_secs_f64().max(1e-6));
            if t.heartbeat == Duration::from_millis(20) {
                row = row.goal_at_most(o.p99.as_secs_f64(), 0.100, "p99 100 ms");
            }
            rows.push(row);
        }
    }
}

/// How the failover figures were taken (printed under the table).
pub(super) fn note(iters: usize) -> String {
    format!(
        "failover: testbed bed (bridge; client, 3 nodes, 2 backends on veths), all on the same 2 cores; {iters} faults per case, \
         the owner's daemon SIGKILLed (keepalived: its process group, parent and VRRP child) or its switch port set down; \
         the client asks for the VIP by ARP every {} ms and records which MAC answers. Takeover = fault to the first reply from \
         another node (for a cut, the fault instant is the old owner's last reply if later than the command's start). Two owners = \
         the longest run of {} ms buckets in which two MACs answered, from the fault until the repair has settled. Conns lost: of \
         {CONNS} long-lived TCP connections through the VIP per fault, those whose echo failed {} after the takeover (vip: a dsr \
         service to two backends, so flows can survive; keepalived has no load balancer here, its connections end on the owner). \
         Repair after each fault: the daemon restarted (a crashed keepalived's VIP removed from its uplink by hand first, as an \
         operator would have to) or the port brought up. vip: `election.mode: raft`, election timeout 2.5–3.5 heartbeats, lease \
         1.75 heartbeats; keepalived {}: VRRPv3, all BACKUP, priority 100, nopreempt, the VIP on the uplink (master down = 3 adverts + \
         skew 0.61 advert).",
        PROBE_EVERY.as_millis(),
        BUCKET.as_millis(),
        "max(2 heartbeats, 300 ms)",
        keepalived_version(),
    )
}
