//! Raft election (`election::raft`) on real sockets, three nodes in three network namespaces
//! hanging off a bridge, so cutting a node's switch port really partitions it.
//!
//! Root required; run with `--test-threads=1`. Every node runs on its own thread (inside its
//! namespace) with its own tokio runtime; a sampler thread reads all three `leader()`
//! receivers every millisecond and records every change and every instant at which more
//! than one node said "leader".
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use testbed::{poll, Bed, Netns};
use tokio::sync::watch;
use vip_userspace::election::raft::{
    RaftAuth, RaftConfig, RaftElector, RaftError, RaftKey, RaftRole, RaftStatus,
};

const PORT: u16 = 17946;
const HEARTBEAT: Duration = Duration::from_millis(20);
const ELECTION: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(200));
const LEASE: Duration = Duration::from_millis(80);
const WATCHDOG: Duration = Duration::from_millis(10);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Three namespaces `<prefix>-n1..3` with 10.9.0.1..3/24 on `eth0`, a bridge in `<prefix>-sw`.
/// Three nodes n1..n3 (10.9.0.1-3) on one switch.
fn bed(prefix: &str) -> Bed {
    Bed::new(
        prefix,
        &[
            ("n1", "10.9.0.1/24"),
            ("n2", "10.9.0.2/24"),
            ("n3", "10.9.0.3/24"),
        ],
    )
}

fn role(i: usize) -> String {
    format!("n{}", i + 1)
}

fn node_ns(bed: &Bed, i: usize) -> &Netns {
    &bed.host(&role(i)).ns
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 9, 0, i as u8 + 1], PORT))
}

fn state_root(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vip-raft-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(i: usize, root: &std::path::Path) -> RaftConfig {
    RaftConfig {
        id: i as u64 + 1,
        listen: addr(i),
        peers: (0..3).map(|j| (j as u64 + 1, addr(j))).collect(),
        state_dir: root.join(format!("n{}", i + 1)),
        heartbeat: HEARTBEAT,
        election_timeout: ELECTION,
        lease: LEASE,
        auth: RaftAuth::keyed(RaftKey::from_bytes(b"raft_election test key, 32 bytes")),
        priority: Default::default(),
    }
}

/// What a node's harness reports at every change of its fenced leadership: when, the new
/// value, and the status read right then.
type Event = (Instant, usize, bool, RaftStatus);

enum Cmd {
    Status(mpsc::Sender<RaftStatus>),
    /// graceful: `stop()`; otherwise the elector is dropped (a crash, as far as peers see).
    Stop {
        graceful: bool,
        done: mpsc::Sender<Instant>,
    },
    /// Block the node's I/O loop (its own thread) for a while, as a hung election.
    Freeze(Duration, mpsc::Sender<Instant>),
}

struct Node {
    cmd: tokio::sync::mpsc::UnboundedSender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(
        ns: &Netns,
        idx: usize,
        cfg: RaftConfig,
        events: mpsc::Sender<Event>,
    ) -> (Node, watch::Receiver<bool>) {
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = ns.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let e = RaftElector::start(cfg).await.expect("start");
                let (ctx, mut crx) = tokio::sync::mpsc::unbounded_channel();
                let mut lrx = e.leader();
                ready_tx.send((e.leader(), ctx)).expect("ready");
                loop {
                    tokio::select! {
                        c = crx.recv() => match c {
                            Some(Cmd::Status(r)) => { let _ = r.send(e.status()); }
                            Some(Cmd::Freeze(d, started)) => {
                                let _ = started.send(Instant::now());
                                e.stall_io(d);
                            }
                            Some(Cmd::Stop { graceful, done }) => {
                                let t = Instant::now();
                                if graceful { e.stop().await } else { drop(e) }
                                let _ = done.send(t);
                                return;
                            }
                            None => return,
                        },
                        r = lrx.changed() => {
                            if r.is_err() { return; }
                            let v = *lrx.borrow_and_update();
                            let _ = events.send((Instant::now(), idx, v, e.status()));
                        }
                    }
                }
            })
        });
        let (leader, cmd) = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("node did not start");
        (
            Node {
                cmd,
                thread: Some(thread),
            },
            leader,
        )
    }

    fn status(&self) -> RaftStatus {
        let (tx, rx) = mpsc::channel();
        self.cmd.send(Cmd::Status(tx)).expect("node gone");
        rx.recv_timeout(Duration::from_secs(2)).expect("status")
    }

    /// Freeze the node's I/O loop for `d`; returns when the freeze was asked for.
    fn freeze(&self, d: Duration) -> Instant {
        let (tx, rx) = mpsc::channel();
        self.cmd.send(Cmd::Freeze(d, tx)).expect("node gone");
        rx.recv_timeout(Duration::from_secs(2)).expect("freeze")
    }

    /// Stop; returns when the stop began.
    fn stop(mut self, graceful: bool) -> Instant {
        let (tx, rx) = mpsc::channel();
        self.cmd
            .send(Cmd::Stop { graceful, done: tx })
            .expect("node gone");
        let t = rx.recv_timeout(Duration::from_secs(5)).expect("stop");
        if let Some(th) = self.thread.take() {
            th.join().expect("node thread panicked");
        }
        t
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(th) = self.thread.take() {
            let (tx, _rx) = mpsc::channel();
            let _ = self.cmd.send(Cmd::Stop {
                graceful: false,
                done: tx,
            });
            let _ = th.join();
        }
    }
}

#[derive(Default)]
struct Samples {
    rx: Vec<Option<watch::Receiver<bool>>>,
    current: Vec<bool>,
    /// (when, node, new value)
    changes: Vec<(Instant, usize, bool)>,
    /// Instants at which two or more nodes said "leader", and which.
    overlaps: Vec<(Instant, Vec<usize>)>,
    count: u64,
}

/// Reads every node's `leader()` every millisecond.
struct Sampler {
    state: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn new(n: usize) -> Sampler {
        let state = Arc::new(Mutex::new(Samples {
            rx: vec![None; n],
            current: vec![false; n],
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                {
                    let mut g = s.lock().expect("sampler lock");
                    let now = Instant::now();
                    let vals: Vec<bool> =
                        g.rx.iter()
                            .map(|r| r.as_ref().is_some_and(|r| *r.borrow()))
                            .collect();
                    for (i, v) in vals.iter().enumerate() {
                        if g.current[i] != *v {
                            g.changes.push((now, i, *v));
                        }
                    }
                    let leaders: Vec<usize> = (0..vals.len()).filter(|i| vals[*i]).collect();
                    if leaders.len() > 1 {
                        g.overlaps.push((now, leaders));
                    }
                    g.current = vals;
                    g.count += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Sampler {
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, i: usize, rx: watch::Receiver<bool>) {
        self.state.lock().expect("lock").rx[i] = Some(rx);
    }

    fn leaders(&self) -> Vec<usize> {
        let g = self.state.lock().expect("lock");
        (0..g.current.len()).filter(|i| g.current[*i]).collect()
    }

    /// Wait until exactly one node leads; (node, when the sampler first saw it lead).
    fn wait_one_leader(&self, timeout: Duration, not: Option<usize>) -> (usize, Instant) {
        let l = poll(timeout, || match self.leaders().as_slice() {
            [l] if Some(*l) != not => Some(*l),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no single leader within {timeout:?}: {:?}", self.leaders()));
        (
            l,
            self.last_change(l, true).expect("leader change recorded"),
        )
    }

    fn last_change(&self, node: usize, to: bool) -> Option<Instant> {
        let g = self.state.lock().expect("lock");
        g.changes
            .iter()
            .rev()
            .find(|(_, i, v)| *i == node && *v == to)
            .map(|(t, _, _)| *t)
    }

    fn overlaps(&self) -> Vec<(Instant, Vec<usize>)> {
        self.state.lock().expect("lock").overlaps.clone()
    }

    fn count(&self) -> u64 {
        self.state.lock().expect("lock").count
    }

    /// Changes of `node` since `t`.
    fn changes_since(&self, node: usize, t: Instant) -> usize {
        let g = self.state.lock().expect("lock");
        g.changes
            .iter()
            .filter(|(at, i, _)| *i == node && *at >= t)
            .count()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every node that ever published "leader", per term: never two in one term.
fn assert_one_leader_per_term(
    events: &mpsc::Receiver<Event>,
    seen: &mut BTreeMap<u64, BTreeSet<u64>>,
) {
    while let Ok((_, _, leader, st)) = events.try_recv() {
        if leader {
            seen.entry(st.term).or_default().insert(st.id);
        }
    }
    for (term, ids) in seen.iter() {
        assert!(ids.len() <= 1, "term {term} had leaders {ids:?}");
    }
}

/// The end of a test: never two leaders (at no sampled instant, in no term); the nodes
/// stopped and their state removed.
fn finish(
    sampler: &Sampler,
    events: &mpsc::Receiver<Event>,
    per_term: &mut BTreeMap<u64, BTreeSet<u64>>,
    nodes: Vec<Option<Node>>,
    root: &std::path::Path,
) {
    let overlaps = sampler.overlaps();
    println!(
        "sampler: {} samples, {} with two leaders",
        sampler.count(),
        overlaps.len()
    );
    assert!(
        overlaps.is_empty(),
        "two leaders at once: {:?}",
        &overlaps[..overlaps.len().min(5)]
    );
    assert_one_leader_per_term(events, per_term);
    for n in nodes.into_iter().flatten() {
        n.stop(true);
    }
    let _ = std::fs::remove_dir_all(root);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn start_three(
    bed: &Bed,
    root: &std::path::Path,
    sampler: &Sampler,
    ev: &mpsc::Sender<Event>,
) -> (Vec<Option<Node>>, Instant) {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let (n, rx) = Node::start(node_ns(bed, i), i, config(i, root), ev.clone());
        sampler.set(i, rx);
        nodes.push(Some(n));
    }
    (nodes, Instant::now())
}

/// Tests 1–3: elect one fenced leader; partition it (silent within lease + 10 ms, another
/// takes over, never two at once); heal (it rejoins as follower, the leader stays).
#[test]
fn elect_partition_heal() {
    testbed::require_root_and_bpf();
    init_tracing();
    let bed = bed("rft");
    let root = state_root("partition");
    let sampler = Sampler::new(3);
    let (ev_tx, ev_rx) = mpsc::channel();
    let mut per_term = BTreeMap::new();
    let (nodes, all_up) = start_three(&bed, &root, &sampler, &ev_tx);

    // 1. One fenced leader within a bound. Each node first waits out its start-up lease
    // (election_min..max), then pre-vote, vote and one acknowledged heartbeat: a few round
    // trips. Bound: two maximum election timeouts (a first round lost to the others'
    // start-up leases) plus 100 ms for threads and scheduling on a 2-core VM.
    let (leader, t_lead) = sampler.wait_one_leader(Duration::from_secs(3), None);
    let elect = t_lead.saturating_duration_since(all_up);
    println!(
        "election: node {} leader {:.1} ms after all three started",
        leader + 1,
        ms(elect)
    );
    assert!(
        elect <= ELECTION.1 * 2 + Duration::from_millis(100),
        "election took {elect:?}"
    );
    // Stable: still the one leader 300 ms later, no flapping.
    let stable_from = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sampler.leaders(), vec![leader]);
    assert_eq!(
        sampler.changes_since(leader, stable_from),
        0,
        "leadership flapped"
    );
    let st = nodes[leader].as_ref().expect("node").status();
    assert_eq!(
        (st.role, st.leader),
        (RaftRole::Leader, Some(leader as u64 + 1))
    );
    assert_eq!(st.reachable.len(), 2, "{st:?}");
    assert!(
        st.millis_since_quorum_ack
            .is_some_and(|m| m < LEASE.as_millis() as u64),
        "{st:?}"
    );
    for i in (0..3).filter(|i| *i != leader) {
        let s = nodes[i].as_ref().expect("node").status();
        assert_eq!(
            (s.role, s.leader, s.term),
            (RaftRole::Follower, Some(leader as u64 + 1), st.term)
        );
    }

    // 2. Partition the leader.
    let t_cut = Instant::now();
    bed.cut(&role(leader));
    let t_cut_done = Instant::now();
    poll(Duration::from_secs(2), || {
        (!sampler.leaders().contains(&leader)).then_some(())
    })
    .expect("partitioned leader kept saying leader");
    let t_silent = sampler.last_change(leader, false).expect("change");
    let silent = t_silent.saturating_duration_since(t_cut);
    // The stated bound is from the send time of its last quorum-acknowledged heartbeat,
    // which the node's own status gives at the moment it went silent.
    let (t_event, ack_ms) = poll(Duration::from_secs(1), || {
        ev_rx_find(&ev_rx, &mut per_term, leader, false)
    })
    .expect("silence event");
    // The node read its status when its harness saw the change; the change itself was no
    // later than either observer saw it.
    let since_ack = ack_ms as f64 - ms(t_event.saturating_duration_since(t_event.min(t_silent)));
    println!(
        "partition: node {} silent {:.1} ms after the cut (ip command took {:.1} ms); {:.1} ms after its last quorum ack (bound lease+10 = {} ms)",
        leader + 1,
        ms(silent),
        ms(t_cut_done - t_cut),
        since_ack,
        (LEASE + WATCHDOG).as_millis()
    );
    // Sampler resolution 1 ms, status in whole ms: 3 ms slack on the bound itself.
    assert!(
        since_ack <= ms(LEASE + WATCHDOG) + 3.0,
        "silent {since_ack} ms after last quorum ack"
    );
    // From the cut: it happened by the time `ip` returned (which took 73 ms once on a loaded
    // VM), and the last acknowledged heartbeat was sent before it. 10 ms sampler slack.
    let after_cut_done = t_silent.saturating_duration_since(t_cut_done);
    assert!(
        after_cut_done <= LEASE + WATCHDOG + Duration::from_millis(10),
        "silent {after_cut_done:?} after the cut was done"
    );

    let (new_leader, t_new) = sampler.wait_one_leader(Duration::from_secs(3), Some(leader));
    let takeover = t_new.saturating_duration_since(t_cut);
    let gap = t_new.saturating_duration_since(t_silent);
    println!(
        "takeover: node {} leader {:.1} ms after the cut; no leader for {:.1} ms",
        new_leader + 1,
        ms(takeover),
        ms(gap)
    );
    // Followers last heard the old leader just before the cut; they refuse votes for
    // election_min after that and campaign after election_min..max: a bound of
    // election_max plus pre-vote/vote/heartbeat round trips and one retry's slack.
    assert!(
        takeover <= ELECTION.1 + Duration::from_millis(150),
        "takeover took {takeover:?}"
    );
    assert!(
        t_new > t_silent,
        "new leader before the old one went silent"
    );

    // 3. Heal: the old leader rejoins as a follower of the new leader, without deposing it
    // (it never raised its term while cut off: pre-vote).
    std::thread::sleep(Duration::from_millis(300));
    let healed = Instant::now();
    bed.heal(&role(leader));
    let new_term = nodes[new_leader].as_ref().expect("node").status().term;
    let old = nodes[leader].as_ref().expect("node");
    poll(Duration::from_secs(3), || {
        let s = old.status();
        (s.role == RaftRole::Follower && s.leader == Some(new_leader as u64 + 1)).then_some(s)
    })
    .unwrap_or_else(|| panic!("old leader did not rejoin as follower: {:?}", old.status()));
    let rejoin = healed.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sampler.leaders(), vec![new_leader]);
    assert_eq!(
        sampler.changes_since(new_leader, healed),
        0,
        "heal disturbed the leader"
    );
    assert_eq!(
        nodes[new_leader].as_ref().expect("node").status().term,
        new_term,
        "heal raised the term"
    );
    println!(
        "heal: node {} follower of node {} within {:.1} ms, leader undisturbed",
        leader + 1,
        new_leader + 1,
        ms(rejoin)
    );

    finish(&sampler, &ev_rx, &mut per_term, nodes, &root);
}

/// The first change of `node` to `value` in the channel: when its harness saw it and the
/// ms since its last quorum ack then (other events go to the per-term leader record).
fn ev_rx_find(
    rx: &mpsc::Receiver<Event>,
    per_term: &mut BTreeMap<u64, BTreeSet<u64>>,
    node: usize,
    value: bool,
) -> Option<(Instant, u64)> {
    while let Ok((t, i, v, st)) = rx.try_recv() {
        if v {
            per_term.entry(st.term).or_default().insert(st.id);
        }
        if i == node && v == value {
            return st.millis_since_quorum_ack.map(|m| (t, m));
        }
    }
    None
}

fn persisted_term(root: &std::path::Path, i: usize) -> (u64, Option<u64>) {
    let text = std::fs::read(root.join(format!("n{}", i + 1)).join("raft-state.json"))
        .expect("state file");
    let v: serde_json::Value = serde_json::from_slice(&text).expect("json");
    (v["term"].as_u64().expect("term"), v["voted_for"].as_u64())
}

/// Test 4: restart from the same state_dir, gracefully (leader hand-over) and as a crash:
/// the term never goes back, one leader per term throughout.
#[test]
fn restart_keeps_term_and_vote() {
    testbed::require_root_and_bpf();
    init_tracing();
    let bed = bed("rfr");
    let root = state_root("restart");
    let sampler = Sampler::new(3);
    let (ev_tx, ev_rx) = mpsc::channel();
    let mut per_term = BTreeMap::new();
    let (mut nodes, _) = start_three(&bed, &root, &sampler, &ev_tx);
    let (leader, _) = sampler.wait_one_leader(Duration::from_secs(3), None);

    // Graceful stop of the leader: silent first, then TimeoutNow: a follower takes over in
    // round trips instead of an election timeout.
    let t_stop = nodes[leader].take().expect("node").stop(true);
    let silent = poll(Duration::from_secs(1), || {
        sampler.last_change(leader, false)
    })
    .expect("went silent");
    assert!(silent >= t_stop);
    let (next, t_next) = sampler.wait_one_leader(Duration::from_secs(3), Some(leader));
    let handover = t_next.saturating_duration_since(t_stop);
    println!(
        "graceful stop: node {} leader {:.1} ms after node {} began stopping",
        next + 1,
        ms(handover),
        leader + 1
    );
    assert!(
        handover < ELECTION.0,
        "hand-over took {handover:?}: TimeoutNow not effective"
    );

    // Restart it from the same directory.
    let (term_p, vote_p) = persisted_term(&root, leader);
    assert!(vote_p.is_some(), "a leader voted (for itself) in its term");
    let (n, rx) = Node::start(
        node_ns(&bed, leader),
        leader,
        config(leader, &root),
        ev_tx.clone(),
    );
    sampler.set(leader, rx);
    let st = n.status();
    assert!(
        st.term >= term_p,
        "restarted with term {} < persisted {term_p}",
        st.term
    );
    assert_eq!(st.role, RaftRole::Follower);
    nodes[leader] = Some(n);
    let n = nodes[leader].as_ref().expect("node");
    poll(Duration::from_secs(3), || {
        (n.status().leader == Some(next as u64 + 1)).then_some(())
    })
    .unwrap_or_else(|| panic!("restarted node did not follow: {:?}", n.status()));
    assert_eq!(sampler.leaders(), vec![next]);

    // Crash a follower (no stop: the elector is just dropped) and restart it.
    let f = (0..3).find(|i| *i != next).expect("a follower");
    nodes[f].take().expect("node").stop(false);
    let (term_f, vote_f) = persisted_term(&root, f);
    let (n, rx) = Node::start(node_ns(&bed, f), f, config(f, &root), ev_tx.clone());
    sampler.set(f, rx);
    assert!(n.status().term >= term_f);
    poll(Duration::from_secs(3), || {
        (n.status().leader == Some(next as u64 + 1)).then_some(())
    })
    .unwrap_or_else(|| panic!("restarted follower did not follow: {:?}", n.status()));
    // Same leader, same term: the vote it cast in that term is still on disk.
    assert_eq!(
        persisted_term(&root, f),
        (term_f, vote_f),
        "term and vote kept across the crash: {:?}",
        n.status()
    );
    nodes[f] = Some(n);

    // Crash the leader: the others elect after the lease, the crashed one rejoins.
    let t_crash = nodes[next].take().expect("node").stop(false);
    let (third, t_third) = sampler.wait_one_leader(Duration::from_secs(3), Some(next));
    println!(
        "leader crash: node {} leader {:.1} ms later",
        third + 1,
        ms(t_third.saturating_duration_since(t_crash))
    );
    let (term_c, _) = persisted_term(&root, next);
    let (n, rx) = Node::start(
        node_ns(&bed, next),
        next,
        config(next, &root),
        ev_tx.clone(),
    );
    sampler.set(next, rx);
    assert!(n.status().term >= term_c);
    poll(Duration::from_secs(3), || {
        (n.status().leader == Some(third as u64 + 1)).then_some(())
    })
    .unwrap_or_else(|| panic!("restarted leader did not follow: {:?}", n.status()));
    nodes[next] = Some(n);

    // Terms only went up, on disk too.
    for (i, n) in nodes.iter().enumerate() {
        let s = n.as_ref().expect("node").status();
        let (on_disk, _) = persisted_term(&root, i);
        assert!(
            on_disk >= term_p && s.term >= on_disk,
            "node {}: disk {on_disk}, memory {}",
            i + 1,
            s.term
        );
        assert!(
            s.term >= term_p,
            "node {} at term {} below {term_p}",
            i + 1,
            s.term
        );
    }
    finish(&sampler, &ev_rx, &mut per_term, nodes, &root);
    println!("leaders per term: {per_term:?}");
}

/// A leader whose runtime hangs (I/O loop stuck) still goes silent on time: the fence
/// watchdog is its own thread. Another node takes over; after the hang the old leader
/// follows.
#[test]
fn hung_leader_goes_silent() {
    testbed::require_root_and_bpf();
    init_tracing();
    let bed = bed("rfh");
    let root = state_root("hung");
    let sampler = Sampler::new(3);
    let (ev_tx, ev_rx) = mpsc::channel();
    let mut per_term = BTreeMap::new();
    let (nodes, _) = start_three(&bed, &root, &sampler, &ev_tx);
    let (leader, _) = sampler.wait_one_leader(Duration::from_secs(3), None);
    std::thread::sleep(Duration::from_millis(100));
    let t_freeze = nodes[leader]
        .as_ref()
        .expect("node")
        .freeze(Duration::from_millis(600));
    poll(Duration::from_secs(1), || {
        (!sampler.leaders().contains(&leader)).then_some(())
    })
    .expect("hung leader kept saying leader");
    let t_silent = sampler.last_change(leader, false).expect("change");
    let silent = t_silent.saturating_duration_since(t_freeze);
    let (next, t_next) = sampler.wait_one_leader(Duration::from_secs(3), Some(leader));
    println!(
        "hung leader: node {} silent {:.1} ms after its runtime froze; node {} leader {:.1} ms after the freeze",
        leader + 1,
        ms(silent),
        next + 1,
        ms(t_next.saturating_duration_since(t_freeze))
    );
    // Its last acknowledged heartbeat was sent before the freeze.
    assert!(
        silent <= LEASE + WATCHDOG + Duration::from_millis(5),
        "silent {silent:?} after the freeze"
    );
    let old = nodes[leader].as_ref().expect("node");
    poll(Duration::from_secs(3), || {
        (old.status().leader == Some(next as u64 + 1)).then_some(())
    })
    .unwrap_or_else(|| panic!("thawed leader did not follow: {:?}", old.status()));
    // Sampled, not read once: on a loaded machine the leader's fence may lapse for a moment
    // (a late acknowledgement) without anyone else leading.
    poll(Duration::from_secs(2), || {
        (sampler.leaders() == vec![next]).then_some(())
    })
    .unwrap_or_else(|| panic!("one leader after the thaw: {:?}", sampler.leaders()));
    finish(&sampler, &ev_rx, &mut per_term, nodes, &root);
}

/// Test 5: invalid configurations are refused by `start`, naming the field.
#[test]
fn config_errors_name_the_field() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let root = state_root("config");
    let good = config(0, &root);
    good.validate().expect("test config is valid");
    let cases: Vec<(RaftConfig, &str)> = vec![
        (
            RaftConfig {
                lease: ELECTION.0,
                ..good.clone()
            },
            "election.raft.lease_ms",
        ),
        (
            RaftConfig {
                lease: Duration::from_millis(95),
                ..good.clone()
            },
            "election.raft.lease_ms",
        ),
        (
            RaftConfig {
                lease: HEARTBEAT,
                ..good.clone()
            },
            "election.raft.lease_ms",
        ),
        (
            RaftConfig {
                heartbeat: Duration::ZERO,
                ..good.clone()
            },
            "election.raft.heartbeat_ms",
        ),
        (
            RaftConfig {
                election_timeout: (ELECTION.1, ELECTION.0),
                ..good.clone()
            },
            "election.raft.election_timeout_max_ms",
        ),
        (
            RaftConfig {
                id: 7,
                ..good.clone()
            },
            "election.raft.id",
        ),
        (
            RaftConfig {
                listen: addr(1),
                ..good.clone()
            },
            "election.raft.listen",
        ),
        (
            RaftConfig {
                peers: BTreeMap::new(),
                ..good.clone()
            },
            "election.raft.peers",
        ),
        (
            RaftConfig {
                peers: (1..=3).map(|i| (i, addr(0))).collect(),
                ..good.clone()
            },
            "election.raft.peers",
        ),
    ];
    for (cfg, want) in cases {
        match rt.block_on(RaftElector::start(cfg.clone())) {
            Err(RaftError::Config { field, reason }) => {
                assert_eq!(field, want, "{reason}");
                let msg = RaftError::Config { field, reason }.to_string();
                assert!(msg.starts_with(want), "{msg}");
            }
            Err(e) => panic!("{cfg:?}: expected a config error naming {want}, got {e}"),
            Ok(_) => panic!("{cfg:?}: accepted, expected an error naming {want}"),
        }
    }
    assert!(
        !root.exists(),
        "an invalid config must not touch the state directory"
    );
}
