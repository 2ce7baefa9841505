//! Authenticated Raft (issue 17): three real `vip` daemons (XDP) on a namespace bed, and an
//! attacker host `evil` on the same bridge that forges, replays and spoofs election
//! datagrams. What must hold: no node steps down, no election happens, nobody wins, and
//! the owner keeps answering ARP for the VIP; key rotation loses no leadership; a missing
//! or short key is a configuration error.
//!
//! ```text
//!  ns client 192.0.2.10 ─┐
//!  ns node1  192.0.2.11 ─┤
//!  ns node2  192.0.2.12 ─┤ ns ra?-sw (bridge)     nodes: vip, election.mode raft, port 17960
//!  ns node3  192.0.2.13 ─┤
//!  ns evil   192.0.2.66 ─┘                       raw frames with spoofed source addresses
//! ```
//!
//! Heartbeats every 50 ms (election timeout 300–450 ms, lease 150 ms): every assertion is
//! about something that must *not* happen, and the margin keeps a loaded machine from
//! making it happen for other reasons. Root required; run with `--test-threads=1`.
mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{
    answered_probe, metric,
    raft::{node_ip, Cluster, Timing, NODES},
    replies, Daemon, METRICS, VIP,
};
use testbed::{http_get, parse_mac, poll, require_root_and_bpf, Bed, Capture, Host};
use testkit::packet::Packet;
use vip_userspace::{
    election::raft::{auth::Session, Msg, RaftAuth, RaftKey, Reject},
    net::garp::GarpSocket,
};

const PORT: u16 = 17960;
const ELECTION_MS: (u64, u64) = (300, 450);
const LEASE_MS: u64 = 150;
const TIMING: Timing = Timing {
    port: PORT,
    heartbeat_ms: 50,
    election_ms: ELECTION_MS,
    lease_ms: LEASE_MS,
};

/// The flood test asserts that the leader's fence never lapses (no leadership transition) for
/// its three seconds; with the other tests' four clusters (twelve daemons) and their builds
/// on the same two cores, a VM stall longer than the 150 ms lease made it lapse about one run
/// in four, on main as on any branch (measured). It runs alone: the others take this lock
/// shared, the flood exclusively. What it proves is about forged datagrams, not about how
/// long this machine can be descheduled (that is `raft_load`'s and the failover bench's).
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    ALONE.read().unwrap_or_else(|e| e.into_inner())
}

fn peers() -> BTreeMap<u64, SocketAddr> {
    (0..3)
        .map(|i| (i as u64 + 1, SocketAddr::from((node_ip(i), PORT))))
        .collect()
}

/// Three nodes with key file `key` (`""`: `insecure: true`), a second key file `k2` for
/// rotation, and the attacker `evil` at 192.0.2.66.
fn cluster(prefix: &str, key: &str) -> Cluster {
    Cluster::new(prefix, TIMING, &[key, "k2"], &[("evil", "192.0.2.66/24")])
}

fn key_of(cl: &Cluster, name: &str) -> RaftKey {
    RaftKey::from_file(&cl.dir.join(name)).unwrap()
}

fn rejected(m: &str, r: Reject) -> u64 {
    metric(
        m,
        &format!("vip_raft_rejected_total{{reason=\"{}\"}}", r.as_str()),
    )
}

/// Ethernet + IPv4 + UDP (checksum 0: none) around `payload`, from `src` to `dst`, both on
/// the election port.
fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> Vec<u8> {
    Packet::eth(dst_mac, src_mac)
        .ipv4(src, dst)
        .udp(PORT, PORT)
        .no_l4_checksum()
        .payload(payload)
        .build()
}

/// (source, destination, payload) of the election datagrams in `cap` (either direction).
fn election_datagrams(cap: &Capture) -> Vec<(Ipv4Addr, Ipv4Addr, Vec<u8>)> {
    cap.frames()
        .into_iter()
        .filter_map(|(_, f)| {
            if f.len() < 42 || f[12..14] != [8, 0] || f[23] != 17 {
                return None;
            }
            let l4 = 14 + (f[14] & 0xf) as usize * 4;
            let dport = u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]);
            let len = u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]) as usize;
            (dport == PORT && f.len() >= l4 + len && len >= 8).then(|| {
                let a = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
                (a(26), a(30), f[l4 + 8..l4 + len].to_vec())
            })
        })
        .collect()
}

/// Sends what `gen(round)` returns from `host`'s eth0 every `period` until dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(
        host: &Host,
        period: Duration,
        mut gen: impl FnMut(u64) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = host.ns.spawn(move || {
            let c = std::ffi::CString::new("eth0").unwrap();
            // SAFETY: valid C string.
            let sock = GarpSocket::open(unsafe { libc::if_nametoindex(c.as_ptr()) }).unwrap();
            let mut round = 0;
            while !stop2.load(Ordering::Relaxed) {
                for f in gen(round) {
                    if sock.send(&f).is_ok() {
                        sent2.fetch_add(1, Ordering::Relaxed);
                    }
                }
                round += 1;
                std::thread::sleep(period);
            }
        });
        Flood {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The longest silence between ARP replies after `from`, and whether only `mac` answered.
fn replies_since(cap: &Capture, from: Instant) -> (Duration, Vec<[u8; 6]>) {
    let r: Vec<_> = replies(cap).into_iter().filter(|r| r.0 > from).collect();
    let gap = r
        .windows(2)
        .map(|w| w[1].0.saturating_duration_since(w[0].0))
        .max()
        .unwrap_or(Duration::MAX);
    let mut macs: Vec<[u8; 6]> = r.iter().map(|r| r.1).collect();
    macs.dedup();
    (gap, macs)
}

/// Test (a): a host with the wrong key floods the followers with Heartbeats "from" the
/// leader a term 1000 higher every 10 ms (the attack that left the VIP without an owner
/// before authentication), plus transfer Votes, granted VoteResps and HeartbeatResps "from"
/// every member, each from the address of the member it names; and, for the other
/// reasons, unkeyed datagrams, the old JSON format, and datagrams from its own address.
#[test]
fn forged_datagrams_depose_nobody_and_win_nothing() {
    let _alone = ALONE.write().unwrap_or_else(|e| e.into_inner());
    let cl = cluster("raf", "k1");
    let client = cl.bed.host("client");
    let (cap, _probe) = answered_probe(client, Duration::from_millis(5));
    let (leader, term0) = cl.settled(Duration::from_secs(10));
    let transitions0: Vec<u64> = (0..3)
        .map(|i| metric(&cl.metrics(i).unwrap(), "vip_leader_transitions_total"))
        .collect();
    let evil = cl.bed.host("evil");
    let evil_mac = parse_mac(&evil.mac);
    let evil_ip: Ipv4Addr = evil.addr.parse().unwrap();
    let macs: Vec<[u8; 6]> = (0..3).map(|i| cl.mac(i)).collect();
    let wrong = RaftAuth::keyed(RaftKey::from_bytes(&[0x66; 32]));
    // The key id is on the wire in clear: a forger copies it, so the tag must decide.
    let real_id = key_of(&cl, "k1").id();
    // One forging session per member it pretends to be (epoch far above any real one).
    let mut forgers: Vec<Session> = (0..3)
        .map(|i| Session::new(i as u64 + 1, u64::MAX / 2, wrong.clone(), &peers()))
        .collect();
    let mut unkeyed = Session::new(leader as u64 + 1, 1, RaftAuth::Insecure, &peers());
    let started = Instant::now();
    let flood = Flood::start(evil, Duration::from_millis(10), move |r| {
        let term = term0 + 1000 + r;
        let mut out = Vec::new();
        let mut push = |from: usize, to: usize, bytes: Option<Vec<u8>>, spoof: bool| {
            if let Some(b) = bytes {
                let src = if spoof { node_ip(from) } else { evil_ip };
                out.push(udp_frame(macs[to], evil_mac, src, node_ip(to), &b));
            }
        };
        for to in 0..3 {
            for from in (0..3).filter(|f| *f != to) {
                let s = &mut forgers[from];
                let t = to as u64 + 1;
                let msgs = [
                    Msg::Heartbeat { term, seq: r },
                    Msg::Vote {
                        term,
                        transfer: true,
                    },
                    Msg::VoteResp {
                        term,
                        granted: true,
                    },
                    Msg::HeartbeatResp {
                        term: term0,
                        seq: r,
                        ok: true,
                    },
                    Msg::TimeoutNow { term: term0 },
                ];
                for m in &msgs {
                    let b = s.seal(t, Some(m)).map(|mut b| {
                        b[5..9].copy_from_slice(&real_id);
                        b
                    });
                    push(from, to, b, true);
                }
                // And one under its own key's id.
                let b = s.seal(t, Some(&Msg::Heartbeat { term, seq: r }));
                push(from, to, b, true);
            }
            if to != leader {
                let b = unkeyed.seal(to as u64 + 1, Some(&Msg::Heartbeat { term, seq: r }));
                push(leader, to, b, true);
                let json = format!(
                    "{{\"from\":{},\"to\":{},\"msg\":{{\"Heartbeat\":{{\"term\":{term},\"seq\":{r}}}}}}}",
                    leader + 1,
                    to + 1
                );
                push(leader, to, Some(json.into_bytes()), true);
                let b = forgers[leader].seal(to as u64 + 1, Some(&Msg::Heartbeat { term, seq: r }));
                push(leader, to, b, false);
            }
        }
        out
    });
    // Three seconds of it, as in the issue.
    let _ = poll(Duration::from_secs(3), || {
        (started.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    let sent = flood.sent();
    drop(flood);
    let (gap, owners) = replies_since(&cap, started);
    eprintln!(
        "forgery: {sent} datagrams in {:?}; longest ARP silence {gap:?}",
        started.elapsed()
    );
    assert!(sent > 1000, "the flood ran ({sent} datagrams)");
    assert_eq!(owners, vec![cl.mac(leader)], "only the leader answered");
    assert!(gap < Duration::from_millis(500), "ARP silent for {gap:?}");
    for (i, transitions0) in transitions0.iter().enumerate() {
        let m = cl.metrics(i).unwrap();
        assert_eq!(
            metric(&m, "vip_raft_term"),
            term0,
            "node{} term moved",
            i + 1
        );
        assert_eq!(metric(&m, "vip_raft_leader_id"), leader as u64 + 1);
        assert_eq!(
            metric(&m, "vip_leader_transitions_total"),
            *transitions0,
            "node{} changed leadership",
            i + 1
        );
        assert_eq!(
            metric(&m, "vip_raft_fenced_leader"),
            (i == leader) as u64,
            "node{}",
            i + 1
        );
        assert_eq!(metric(&m, "vip_raft_authenticated"), 1);
        // Counted by reason: the wrong key, and for the followers the other kinds.
        let bad_mac = rejected(&m, Reject::BadMac);
        assert!(bad_mac >= 200, "node{}: bad_mac {bad_mac}\n{m}", i + 1);
        if i != leader {
            for r in [Reject::UnknownKey, Reject::Malformed, Reject::WrongSource] {
                assert!(rejected(&m, r) >= 50, "node{}: {r:?}\n{m}", i + 1);
            }
        }
        // Logged once per reason (the flood is shorter than the 10 s period).
        let logs = cl.daemons[i].as_ref().unwrap().logs();
        let lines = logs.matches("datagram rejected").count();
        assert!(
            lines <= Reject::ALL.len(),
            "node{}: {lines} log lines for {bad_mac}+ rejections:\n{logs}",
            i + 1
        );
    }
    // And the cluster still works: still settled on the same leader.
    assert_eq!(cl.settled(Duration::from_secs(2)), (leader, term0));
}

/// The control for test (a): the same Heartbeats without a key, against `insecure: true`,
/// depose the leader: it loses the VIP. (The receiver's epoch, which such a forger must echo, is on the wire
/// in clear; the test reads it from the state file.)
#[test]
fn without_a_key_the_same_forgery_deposes_the_leader() {
    let _shared = shared();
    let cl = cluster("rai", "");
    let (leader, term0) = cl.settled(Duration::from_secs(10));
    let m = cl.metrics(leader).unwrap();
    assert_eq!(metric(&m, "vip_raft_authenticated"), 0);
    let epoch = |i: usize| -> u64 {
        let text = std::fs::read_to_string(cl.dir.join(NODES[i]).join("raft-state.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["epoch"]
            .as_u64()
            .unwrap()
    };
    let targets: Vec<(usize, u64)> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| (i, epoch(i)))
        .collect();
    let first_target = targets[0].0;
    let evil_mac = parse_mac(&cl.bed.host("evil").mac);
    let macs: Vec<[u8; 6]> = (0..3).map(|i| cl.mac(i)).collect();
    let mut forger = Session::new(
        leader as u64 + 1,
        u64::MAX / 2,
        RaftAuth::Insecure,
        &peers(),
    );
    let flood = Flood::start(cl.bed.host("evil"), Duration::from_millis(10), move |r| {
        targets
            .iter()
            .filter_map(|(to, their_epoch)| {
                let term = term0 + 1000 + r;
                let mut b = forger.seal(*to as u64 + 1, Some(&Msg::Heartbeat { term, seq: r }))?;
                b[41..49].copy_from_slice(&their_epoch.to_be_bytes());
                Some(udp_frame(
                    macs[*to],
                    evil_mac,
                    node_ip(leader),
                    node_ip(*to),
                    &b,
                ))
            })
            .collect()
    });
    // The followers take the forged term; the leader loses its quorum and the VIP.
    let deposed = poll(Duration::from_secs(3), || {
        cl.metrics(leader)
            .filter(|m| metric(m, "vip_raft_fenced_leader") == 0)
            .map(|_| ())
    });
    drop(flood);
    assert!(deposed.is_some(), "the unauthenticated leader kept the VIP");
    let m = cl.metrics(first_target).unwrap();
    assert!(metric(&m, "vip_raft_term") >= term0 + 1000, "{m}");
}

/// Test (b): captured real datagrams re-sent from `evil` with their original source
/// addresses: at once (the receivers' windows), after a follower restarts (its epoch), and
/// to keep a cut-off leader's followers loyal (they elect a successor anyway).
#[test]
fn replayed_datagrams_change_nothing_before_or_after_restarts() {
    let _shared = shared();
    let mut cl = cluster("rar", "k1");
    let client = cl.bed.host("client");
    let (cap, _probe) = answered_probe(client, Duration::from_millis(5));
    let (leader, term0) = cl.settled(Duration::from_secs(10));
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // Capture at both followers for a second: heartbeats in, acknowledgements out.
    let caps: Vec<Capture> = followers
        .iter()
        .map(|f| Capture::start(cl.bed.host(NODES[*f]), 0x0800))
        .collect();
    let t = Instant::now();
    let _ = poll(Duration::from_secs(2), || {
        (t.elapsed() >= Duration::from_secs(1)).then_some(())
    });
    let mut captured: Vec<(Ipv4Addr, Ipv4Addr, Vec<u8>)> =
        caps.iter().flat_map(election_datagrams).collect();
    drop(caps);
    captured.sort();
    captured.dedup();
    assert!(
        captured.len() >= 40,
        "{} datagrams captured",
        captured.len()
    );
    let evil_mac = parse_mac(&cl.bed.host("evil").mac);
    let mac_of: BTreeMap<Ipv4Addr, [u8; 6]> = (0..3).map(|i| (node_ip(i), cl.mac(i))).collect();
    let frames = |to: Option<Ipv4Addr>| -> Vec<Vec<u8>> {
        captured
            .iter()
            .filter(|(_, d, _)| to.is_none_or(|t| t == *d))
            .map(|(s, d, p)| udp_frame(mac_of[d], evil_mac, *s, *d, p))
            .collect()
    };
    let before: Vec<String> = (0..3).map(|i| cl.metrics(i).unwrap()).collect();

    // 1. Everything, five times over, to the nodes it was meant for: windows reject it.
    let all = frames(None);
    let n_all = all.len() as u64;
    replay(&cl, all, 5);
    let (l, term) = cl.settled(Duration::from_secs(2));
    assert_eq!(
        (l, term),
        (leader, term0),
        "replay moved the leader or term"
    );
    let replays: u64 = (0..3)
        .map(|i| {
            rejected(&cl.metrics(i).unwrap(), Reject::Replay) - rejected(&before[i], Reject::Replay)
        })
        .sum();
    assert!(
        replays >= 5 * n_all * 9 / 10,
        "{replays} of {} replays counted",
        5 * n_all
    );

    // 2. A follower restarts (windows gone, new epoch): what was captured before is stale.
    let f = followers[0];
    cl.restart(f, "k1", None);
    assert_eq!(cl.settled(Duration::from_secs(5)).0, leader);
    let stale0 = rejected(&cl.metrics(f).unwrap(), Reject::Stale);
    let to_f = frames(Some(node_ip(f)));
    let n_f = to_f.len() as u64;
    // Every copy is refused: stale (made before this start), or a replay once the live
    // sender's newer datagrams have reached the restarted node first (its window is above
    // the captured counters). Which of the two depends on that race; none is accepted.
    let replay0 = rejected(&cl.metrics(f).unwrap(), Reject::Replay);
    replay(&cl, to_f, 3);
    // Sent is not yet handled: on a busy machine the node may still be reading its socket.
    let refused = || {
        let m = cl.metrics(f).unwrap();
        let stale = rejected(&m, Reject::Stale) - stale0;
        let replays = rejected(&m, Reject::Replay) - replay0;
        (stale, replays, m)
    };
    let _ = poll(Duration::from_secs(5), || {
        let (stale, replays, _) = refused();
        (stale + replays >= 3 * n_f).then_some(())
    });
    let (stale, replays, m) = refused();
    assert!(
        stale + replays >= 3 * n_f,
        "{stale} stale + {replays} replays of {} copies refused\n{m}",
        3 * n_f
    );
    let (l, term) = cl.settled(Duration::from_secs(2));
    assert_eq!(
        (l, term),
        (leader, term0),
        "replay to a restarted node moved something"
    );

    // 3. The leader is cut off; its captured heartbeats keep arriving at both followers.
    let from_leader: Vec<Vec<u8>> = captured
        .iter()
        .filter(|(s, _, _)| *s == node_ip(leader))
        .map(|(s, d, p)| udp_frame(mac_of[d], evil_mac, *s, *d, p))
        .collect();
    let flood = Flood::start(cl.bed.host("evil"), Duration::from_millis(5), move |_| {
        from_leader.clone()
    });
    let cut = Instant::now();
    cl.bed.cut(NODES[leader]);
    let took = poll(Duration::from_secs(5), || {
        replies(&cap)
            .iter()
            .find(|r| r.0 > cut && r.1 != cl.mac(leader))
            .map(|r| r.0)
    })
    .unwrap_or_else(|| panic!("the followers elect a successor:\n{}", cl.logs()));
    drop(flood);
    eprintln!(
        "replay: {} captured; a successor answers {:?} after the cut despite the replayed heartbeats",
        captured.len(),
        took.saturating_duration_since(cut)
    );
    assert!(
        took.saturating_duration_since(cut)
            < Duration::from_millis(ELECTION_MS.1 + LEASE_MS + 1000),
        "takeover slowed by the replay"
    );
    cl.bed.heal(NODES[leader]);
}

/// Send `frames` from `evil`, `rounds` times over, and wait until they are out.
fn replay(cl: &Cluster, frames: Vec<Vec<u8>>, rounds: u64) {
    let n = frames.len() as u64 * rounds;
    let f = Flood::start(cl.bed.host("evil"), Duration::from_millis(5), move |r| {
        if r < rounds {
            frames.clone()
        } else {
            Vec::new()
        }
    });
    poll(Duration::from_secs(10), || (f.sent() >= n).then_some(())).expect("replay sent");
}

/// Test (c): rotate from k1 to k2, one node at a time — first with k2 primary and k1
/// previous on every node, then k2 alone — while the client asks for the VIP every 5 ms.
#[test]
fn key_rotation_loses_no_leadership() {
    let _shared = shared();
    let mut cl = cluster("rak", "k1");
    let client = cl.bed.host("client");
    let (cap, _probe) = answered_probe(client, Duration::from_millis(5));
    let (mut leader, _) = cl.settled(Duration::from_secs(10));
    let started = Instant::now();
    let mut leader_restarts = 0;
    for (key, previous) in [("k2", Some("k1")), ("k2", None)] {
        for i in 0..3 {
            let (l0, t0) = cl.settled(Duration::from_secs(5));
            cl.restart(i, key, previous);
            let (l1, t1) = cl.settled(Duration::from_secs(5));
            if i == l0 {
                leader_restarts += 1;
            } else {
                // A follower's restart moves nothing.
                assert_eq!(
                    (l1, t1),
                    (l0, t0),
                    "node{} restart with {key}/{previous:?}",
                    i + 1
                );
            }
            leader = l1;
        }
    }
    let (gap, owners) = replies_since(&cap, started);
    let switches = owners.len() - 1;
    eprintln!(
        "rotation: longest ARP silence {gap:?}, {switches} owner changes for {leader_restarts} leader restarts"
    );
    assert!(gap < Duration::from_millis(1000), "VIP silent for {gap:?}");
    assert!(
        switches <= leader_restarts,
        "owners alternated: {switches} changes"
    );
    // Everyone now speaks k2 only: nothing is rejected any more.
    let before: Vec<String> = (0..3).map(|i| cl.metrics(i).unwrap()).collect();
    let t = Instant::now();
    let _ = poll(Duration::from_secs(2), || {
        (t.elapsed() >= Duration::from_secs(1)).then_some(())
    });
    for (i, before) in before.iter().enumerate() {
        let m = cl.metrics(i).unwrap();
        for r in Reject::ALL {
            assert_eq!(
                rejected(&m, r),
                rejected(before, r),
                "node{} {r:?}\n{m}",
                i + 1
            );
        }
    }
    assert_eq!(cl.settled(Duration::from_secs(2)).0, leader);
    assert_ne!(key_of(&cl, "k1"), key_of(&cl, "k2"));
}

/// Test (d): a missing, short or absent key stops the daemon with exit 2 naming the field;
/// `insecure: true` runs, warns and says so in the metrics.
#[test]
fn key_config_errors_exit_2_and_insecure_warns() {
    let _shared = shared();
    require_root_and_bpf();
    let dir = std::env::temp_dir().join("rac-raft-auth");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("short"), "MTIzNDU2Nzg5MDEyMzQ1Ng==\n").unwrap();
    std::fs::write(dir.join("good"), RaftKey::generate().unwrap()).unwrap();
    let base = format!(
        "interface: eth0\nvips: [{VIP}]\nelection:\n  mode: raft\n  raft:\n    id: 1\n    peers: {{1: \"192.0.2.11:{PORT}\"}}\n    state_dir: {}\n",
        dir.join("state").display()
    );
    let p = |n: &str| dir.join(n).display().to_string();
    for (extra, field) in [
        (String::new(), "election.raft.key_file"),
        (
            format!("    key_file: {}\n", p("missing")),
            "election.raft.key_file",
        ),
        (
            format!("    key_file: {}\n", p("short")),
            "election.raft.key_file",
        ),
        (
            format!(
                "    key_file: {}\n    previous_key_file: {}\n",
                p("good"),
                p("short")
            ),
            "election.raft.previous_key_file",
        ),
        (
            format!("    key_file: {}\n    insecure: true\n", p("good")),
            "election.raft.insecure",
        ),
    ] {
        let cfg = dir.join("vip.yaml");
        std::fs::write(&cfg, format!("{base}{extra}")).unwrap();
        // Configuration is resolved before anything touches the network.
        let out = std::process::Command::new(testkit::daemon::vip_bin())
            .args(["run", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(&format!("`{field}`")), "{extra}: {err}");
    }
    assert!(!dir.join("state").exists(), "nothing started");

    let bed = Bed::new("rac", &[("node1", "192.0.2.11/24")]);
    let cfg = dir.join("insecure.yaml");
    let mut d = Daemon::start_with_config(
        &bed,
        "node1",
        &cfg,
        &format!("{base}    insecure: true\nmode: xdp\npin_dir: /sys/fs/bpf/vip-test-rac-node1\n"),
    );
    let m = poll(Duration::from_secs(5), || {
        http_get(&bed.host("node1").ns, METRICS.parse().unwrap(), "/metrics")
            .ok()
            .filter(|(c, b)| *c == 200 && b.contains("vip_raft_authenticated"))
            .map(|(_, b)| b)
    })
    .expect("raft metrics");
    assert_eq!(metric(&m, "vip_raft_authenticated"), 0);
    let logs = d.logs();
    assert!(logs.contains("NOT authenticated"), "{logs}");
    assert!(d.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}
