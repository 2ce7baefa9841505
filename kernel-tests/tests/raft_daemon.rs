//! `election.mode: raft` in the daemon: three real `vip` daemons (XDP) on a namespace bed
//! elect the VIP's owner among themselves. The client's ARP prober (every 2 ms) and capture
//! show who answers; each node's metrics show its Raft view.
//!
//! Root required; run with `--test-threads=1`.
mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{
    gauge, metric,
    raft::{Cluster, Timing, NODES},
    replies, Prober,
};
use testbed::{poll, Capture};

const HEARTBEAT_MS: u64 = 20;
const ELECTION_MS: (u64, u64) = (100, 200);
const LEASE_MS: u64 = 80;
const TIMING: Timing = Timing {
    port: 17950,
    heartbeat_ms: HEARTBEAT_MS,
    election_ms: ELECTION_MS,
    lease_ms: LEASE_MS,
};
const KEY: &str = "raft-key";

/// The persisted term in `<state_dir>/raft-state.json`.
fn persisted_term(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("raft-state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["term"].as_u64().unwrap()
}

/// The data plane's dead-man deadline (CLOCK_MONOTONIC ns) from the node's pinned DEADMAN.
fn deadline_ns(pins: &Path) -> u64 {
    vip_userspace::dataplane::maps::DeadMan::open(pins)
        .unwrap()
        .get()
        .unwrap()
}

/// Every reply after `from` came from `mac`.
fn only_from(all: &[(Instant, [u8; 6])], from: Instant, mac: [u8; 6]) -> bool {
    all.iter().filter(|r| r.0 > from).all(|r| r.1 == mac)
}

#[test]
fn raft_daemons_one_owner_partitioned_leader_silent_restart_keeps_term() {
    let mut cl = Cluster::new("vrd", TIMING, &[KEY], &[]);
    let client = cl.bed.host("client");
    let cap = Capture::start(client, 0x0806);
    let _probe = Prober::start_every(client, Duration::from_millis(2));

    // Exactly one node answers, and it is the one whose metrics say leader.
    let first = poll(Duration::from_secs(10), || {
        replies(&cap).first().map(|r| r.1)
    })
    .unwrap_or_else(|| panic!("one node answers for the VIP:\n{}", cl.logs()));
    let leader = cl.node_of(first);
    std::thread::sleep(Duration::from_millis(300));
    assert!(replies(&cap).iter().all(|r| r.1 == first), "one owner only");
    assert_eq!(cl.fenced_leaders(), vec![leader]);
    let m = cl.metrics(leader).unwrap();
    assert_eq!(metric(&m, "vip_raft_leader_id"), leader as u64 + 1);
    assert!(m.contains("vip_raft_role{role=\"leader\"} 1"), "{m}");
    assert!(metric(&m, "vip_raft_ms_since_quorum_ack") <= LEASE_MS);
    let term0 = metric(&m, "vip_raft_term");
    for i in (0..3).filter(|i| *i != leader) {
        let m = cl.metrics(i).unwrap();
        assert!(m.contains("vip_raft_role{role=\"follower\"} 1"), "{m}");
        assert_eq!(metric(&m, "vip_raft_leader_id"), leader as u64 + 1);
        assert_eq!(metric(&m, "vip_vips_owned"), 0);
    }
    // While leading, the data plane's deadline never runs past the lease.
    let pushed = deadline_ns(&cl.pins(leader));
    let now = vip_userspace::dataplane::maps::monotonic_ns();
    assert!(
        pushed > now && pushed <= now + LEASE_MS * 1_000_000,
        "deadline {} ms ahead, lease {LEASE_MS} ms",
        (pushed as i64 - now as i64) / 1_000_000
    );

    // Cut the leader's link: its fence closes within lease + 10 ms of its last quorum
    // acknowledgement (sent before the cut), its XDP deadline with it; another node answers.
    let before_cut = Instant::now();
    cl.bed.cut(NODES[leader]);
    let cut = Instant::now();
    let cut_ns = vip_userspace::dataplane::maps::monotonic_ns();
    let fenced = poll(Duration::from_secs(2), || {
        cl.metrics(leader)
            .filter(|m| metric(m, "vip_raft_fenced_leader") == 0)
            .map(|_| Instant::now())
    })
    .expect("cut-off leader steps down");
    let silent_after = fenced.saturating_duration_since(cut);
    let last_deadline = deadline_ns(&cl.pins(leader));
    let m = cl.metrics(leader).unwrap();
    assert_eq!(metric(&m, "vip_vips_owned"), 0, "VIP released");
    let took = poll(Duration::from_secs(3), || {
        replies(&cap)
            .iter()
            .find(|r| r.0 > before_cut && r.1 != first)
            .map(|r| (r.0, r.1))
    })
    .unwrap_or_else(|| panic!("another node takes over:\n{}", cl.logs()));
    let new = cl.node_of(took.1);
    let took_after = took.0.saturating_duration_since(before_cut);
    eprintln!(
        "partition: old leader fenced (metrics) {silent_after:?} after the cut, XDP deadline {} ms after it; new owner's first ARP reply {took_after:?} after the cut",
        (last_deadline as i64 - cut_ns as i64) / 1_000_000
    );
    // The XDP deadline: the last acknowledged heartbeat left before the cut ended.
    assert!(
        last_deadline <= cut_ns + (LEASE_MS + 10) * 1_000_000,
        "XDP deadline {} ms after the cut (lease {LEASE_MS} ms)",
        (last_deadline as i64 - cut_ns as i64) / 1_000_000
    );
    // Userspace follows within the bound (+ one scrape on a loaded VM).
    assert!(
        silent_after <= Duration::from_millis(LEASE_MS + 10 + 100),
        "fenced {silent_after:?} after the cut"
    );
    assert!(
        took_after <= Duration::from_millis(ELECTION_MS.1 + LEASE_MS + 500),
        "takeover {took_after:?}"
    );

    // Heal: the old leader rejoins as a follower (PreVote), the new owner keeps the VIP.
    let healed = Instant::now();
    cl.bed.heal(NODES[leader]);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        only_from(&replies(&cap), healed, cl.mac(new)),
        "after heal only the new owner answers"
    );
    assert_eq!(cl.fenced_leaders(), vec![new]);
    let m = cl.metrics(leader).unwrap();
    assert_eq!(metric(&m, "vip_raft_leader_id"), new as u64 + 1);
    assert!(metric(&m, "vip_raft_term") > term0);

    // Restart a follower: it comes back with its persisted term, no election is forced.
    let follower = (0..3).find(|i| *i != new).unwrap();
    let term_before = persisted_term(&cl.state_dir(follower));
    cl.stop(follower);
    assert!(persisted_term(&cl.state_dir(follower)) >= term_before);
    let restarted = Instant::now();
    let d = cl.start(follower, KEY, None);
    cl.daemons[follower] = Some(d);
    let joined = poll(Duration::from_secs(5), || {
        cl.metrics(follower)
            .filter(|m| gauge(m, "vip_raft_leader_id") == Some(new as i64 + 1))
            .map(|m| metric(&m, "vip_raft_term"))
    })
    .unwrap_or_else(|| {
        panic!(
            "restarted follower follows the leader (node{}):\n{}\n{}",
            new + 1,
            cl.metrics(follower).unwrap_or_default(),
            cl.logs()
        )
    });
    assert!(
        joined >= term_before,
        "term {joined} < persisted {term_before}"
    );
    assert!(persisted_term(&cl.state_dir(follower)) >= term_before);
    assert!(only_from(&replies(&cap), restarted, cl.mac(new)));
    assert_eq!(cl.fenced_leaders(), vec![new]);

    // SIGTERM of the leader: silent first, then TimeoutNow hands over within a few round trips.
    let term_leader = persisted_term(&cl.state_dir(new));
    let stopped = Instant::now();
    cl.stop(new);
    let handed = poll(Duration::from_secs(3), || {
        replies(&cap)
            .iter()
            .find(|r| r.0 > stopped && r.1 != cl.mac(new))
            .map(|r| r.0)
    })
    .unwrap_or_else(|| panic!("hand-over on SIGTERM:\n{}", cl.logs()));
    let last_old = replies(&cap)
        .iter()
        .filter(|r| r.1 == cl.mac(new))
        .map(|r| r.0)
        .max()
        .unwrap();
    assert!(handed > last_old, "never two owners on hand-over");
    eprintln!(
        "SIGTERM of the leader: new owner {:?} after the signal",
        handed.saturating_duration_since(stopped)
    );
    // Back with its persisted term, as a follower: the new leader keeps the VIP.
    let d = cl.start(new, KEY, None);
    cl.daemons[new] = Some(d);
    let back = poll(Duration::from_secs(3), || {
        cl.metrics(new)
            .filter(|m| gauge(m, "vip_raft_leader_id").is_some_and(|l| l > 0))
            .filter(|m| m.contains("vip_raft_role{role=\"follower\"} 1"))
            .map(|m| metric(&m, "vip_raft_term"))
    });
    assert!(back.is_some_and(|t| t > term_leader));
    assert_eq!(cl.fenced_leaders().len(), 1);
}

#[test]
fn raft_leader_frozen_goes_silent_in_xdp_by_its_lease() {
    let cl = Cluster::new("vrf", TIMING, &[KEY], &[]);
    let client = cl.bed.host("client");
    let cap = Capture::start(client, 0x0806);
    let _probe = Prober::start_every(client, Duration::from_millis(2));
    let first = poll(Duration::from_secs(10), || {
        replies(&cap).first().map(|r| r.1)
    })
    .unwrap_or_else(|| panic!("one node answers:\n{}", cl.logs()));
    let leader = cl.node_of(first);
    std::thread::sleep(Duration::from_millis(200));
    // SIGSTOP: userspace (and its fence watchdog) frozen, XDP still attached with the VIP.
    // Only the dead-man deadline, which followed the lease, can silence it.
    let d = cl.daemons[leader].as_ref().unwrap();
    d.proc.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let took = poll(Duration::from_secs(3), || {
        replies(&cap)
            .iter()
            .find(|r| r.0 > stopped && r.1 != first)
            .map(|r| r.0)
    });
    d.proc.signal(libc::SIGCONT);
    let took = took.unwrap_or_else(|| panic!("another node takes over:\n{}", cl.logs()));
    let all = replies(&cap);
    let last_old = all
        .iter()
        .filter(|r| r.1 == first)
        .map(|r| r.0)
        .max()
        .unwrap();
    let silent_after = last_old.saturating_duration_since(stopped);
    eprintln!(
        "frozen leader: last ARP answer {silent_after:?} after SIGSTOP, new owner {:?}",
        took.saturating_duration_since(stopped)
    );
    assert!(
        silent_after <= Duration::from_millis(LEASE_MS + 10),
        "XDP silent by the lease: {silent_after:?}"
    );
    assert!(took > last_old, "never two owners");
    // Thawed, the old leader learns the new term and stays silent.
    let thawed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert!(only_from(&replies(&cap), thawed, all.last().unwrap().1));
    assert_eq!(cl.fenced_leaders().len(), 1);
}

/// A dual-stack control-plane VIP (kube-vip's `address: v4,v6`): the Raft leader answers
/// ARP for one and NDP for the other, nobody else does; when it stops, the new leader
/// answers both.
#[test]
fn raft_leader_holds_a_dual_stack_control_plane_vip_and_hands_it_on() {
    const VIP6: &str = "2001:db8::100";
    let t = Timing {
        port: 17960,
        ..TIMING
    };
    let vips = format!("{}, '{VIP6}'", common::VIP);
    let mut cl = Cluster::with_vips("vr6", t, &[KEY], &[], "", &vips);
    let leader = poll(Duration::from_secs(10), || {
        let l = cl.fenced_leaders();
        (l.len() == 1).then(|| l[0])
    })
    .unwrap_or_else(|| panic!("one leader:\n{}", cl.logs()));
    let ask =
        |cl: &Cluster| testbed::ndisc6(cl.bed.host("client"), VIP6, Duration::from_millis(300));
    let answered = poll(Duration::from_secs(5), || ask(&cl))
        .unwrap_or_else(|| panic!("NDP for {VIP6} answered:\n{}", cl.logs()));
    assert_eq!(answered, cl.mac(leader), "the leader answers NDP");
    assert_eq!(
        testbed::arping(cl.bed.host("client"), common::VIP).as_deref(),
        Some(cl.bed.host(NODES[leader]).mac.as_str()),
        "and ARP"
    );
    let m = cl.metrics(leader).unwrap();
    assert_eq!(metric(&m, "vip_vips_owned"), 2, "{m}");
    cl.stop(leader);
    let next = poll(Duration::from_secs(10), || {
        let l = cl.fenced_leaders();
        (l.len() == 1 && l[0] != leader).then(|| l[0])
    })
    .unwrap_or_else(|| panic!("a new leader:\n{}", cl.logs()));
    let moved = poll(Duration::from_secs(5), || {
        ask(&cl).filter(|m| *m == cl.mac(next))
    });
    assert!(
        moved.is_some(),
        "the new leader answers NDP:\n{}",
        cl.logs()
    );
}
