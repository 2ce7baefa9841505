//! `election.mode: raft` on a busy node: three real daemons at 20 ms heartbeats while every
//! core runs a busy loop at normal priority. The election's threads run at real-time
//! priority (the default `realtime_priority`; the tests run as root, so CAP_SYS_NICE is
//! there), so no heartbeat may be late enough for an election: the term stays, no other
//! node ever answers for the VIP and no two nodes are ever fenced leaders at once. The
//! client asks for the VIP by ARP every 5 ms throughout.
//!
//! `VIP_RAFT_LOAD_SECS` sets how long the load runs (default 120); `VIP_RAFT_LOAD_PRIORITY=off`
//! runs the daemons with `realtime_priority: 0, nice: 0`, to see what the priority buys
//! (expect failures then: that run is not part of the suite's promise).
//!
//! On an oversubscribed VM this can fail without any fault of the daemon: a stall of the
//! whole vCPU longer than the 35 ms lease (the daemon logs "timers fired late" with how late)
//! deposes a leader whatever its priority.
//!
//! Root required; run with `--test-threads=1`.
mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{
    answered_probe, gauge, metric,
    raft::{Cluster, Timing},
    replies,
};

/// The failover bench's timing at 20 ms: election 2.5–3.5 heartbeats, lease 1.75.
const TIMING: Timing = Timing {
    port: 17952,
    heartbeat_ms: 20,
    election_ms: (50, 70),
    lease_ms: 35,
};

/// Two MACs answering within this of each other count as two owners (the bench's bucket).
const TWO_OWNERS: Duration = Duration::from_millis(5);

fn load_secs() -> u64 {
    std::env::var("VIP_RAFT_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
}

/// One busy loop per core, at normal priority, until `stop`.
fn busy_loops(stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                x
            })
        })
        .collect()
}

/// Per node: (term, leader transitions, fenced leader).
fn views(cl: &Cluster) -> Vec<(u64, u64, u64)> {
    (0..3)
        .map(|i| {
            let m = cl
                .metrics(i)
                .unwrap_or_else(|| panic!("node{} metrics:\n{}", i + 1, cl.logs()));
            (
                metric(&m, "vip_raft_term"),
                metric(&m, "vip_leader_transitions_total"),
                metric(&m, "vip_raft_fenced_leader"),
            )
        })
        .collect()
}

#[test]
fn raft_no_election_and_one_owner_with_every_core_busy() {
    let off = std::env::var("VIP_RAFT_LOAD_PRIORITY").is_ok_and(|v| v == "off");
    let extra = if off {
        "    realtime_priority: 0\n    nice: 0\n"
    } else {
        ""
    };
    let cl = Cluster::with_raft("vrl", TIMING, &["raft-key"], &[], extra);
    let (leader, term) = cl.settled(Duration::from_secs(10));
    let m = cl.metrics(leader).expect("metrics");
    let (policy, want) = if off {
        ("normal", 0)
    } else {
        ("fifo", crate_default_rt())
    };
    assert_eq!(
        gauge(&m, &format!("vip_election_sched{{policy=\"{policy}\"}}")),
        Some(want),
        "the election thread's scheduling as exported:\n{m}"
    );
    let client = cl.bed.host("client");
    let (cap, _probe) = answered_probe(client, Duration::from_millis(5));
    // Settle: transitions counted from a steady leader on.
    std::thread::sleep(Duration::from_secs(1));
    let before = views(&cl);
    let from = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let loops = busy_loops(&stop);
    let secs = load_secs();
    let until = from + Duration::from_secs(secs);
    // Ownership sampled all along (metrics, every ~100 ms as the load allows), besides the
    // ARP capture: more than one fenced leader at any sample is two owners.
    let mut samples = 0u64;
    let mut two_fenced = 0u64;
    while Instant::now() < until {
        let fenced = cl.fenced_leaders();
        samples += 1;
        if fenced.len() > 1 {
            two_fenced += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.join();
    }
    let to = Instant::now();
    let after = views(&cl);
    let all = replies(&cap);
    let window: Vec<_> = all.iter().filter(|r| r.0 >= from && r.0 <= to).collect();
    let owner_mac = cl.mac(leader);
    let others: Vec<_> = window.iter().filter(|r| r.1 != owner_mac).collect();
    let two_owners = window
        .windows(2)
        .filter(|w| w[0].1 != w[1].1 && w[1].0.saturating_duration_since(w[0].0) <= TWO_OWNERS)
        .count();
    let silence = common::longest_silence(&cap, from, to);
    println!(
        "{secs} s, every core busy, priority {}: terms {:?} -> {:?}, leader transitions {:?} -> {:?}, {} ARP replies ({} from another node, {} two-owner pairs), longest ARP silence {:?}, {samples} ownership samples ({two_fenced} with two fenced leaders)",
        if off { "off" } else { "default" },
        before.iter().map(|v| v.0).collect::<Vec<_>>(),
        after.iter().map(|v| v.0).collect::<Vec<_>>(),
        before.iter().map(|v| v.1).collect::<Vec<_>>(),
        after.iter().map(|v| v.1).collect::<Vec<_>>(),
        window.len(),
        others.len(),
        two_owners,
        silence,
    );
    assert_eq!(two_fenced, 0, "two fenced leaders at once:\n{}", cl.logs());
    assert_eq!(two_owners, 0, "two nodes answered ARP for the VIP");
    assert!(
        after.iter().all(|v| v.0 == term),
        "an election under load: terms {before:?} -> {after:?}\n{}",
        cl.logs()
    );
    // Fence lapses (leader transitions without a term change) are printed above, not
    // asserted: on a VM the vCPU itself can be descheduled by the host for tens of
    // milliseconds, which no priority inside the guest prevents (the daemon logs such
    // stalls as "timers fired late"). The failover-load bench counts them.
    assert!(others.is_empty(), "another node answered: {others:?}");
    assert_eq!(after[leader].2, 1, "the leader still leads");
}

/// The default `election.raft.realtime_priority`.
fn crate_default_rt() -> i64 {
    vip_userspace::election::raft::sched::DEFAULT_REALTIME_PRIORITY as i64
}
