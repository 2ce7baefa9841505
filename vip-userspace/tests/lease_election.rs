//! Lease election against the in-process API server, several node identities at once.
mod common;

use std::time::{Duration, Instant};

use fake_apiserver::{FakeApiServer, Fault};
use tokio::sync::watch;
use vip_userspace::election::lease::{LeaseConfig, LeaseElector};

fn client(server: &FakeApiServer, token: &str) -> kube::Client {
    common::kube_client(server, token)
}

fn cfg(identity: &str) -> LeaseConfig {
    let mut c = LeaseConfig::new("kube-system", "plndr-svcs-lock", identity);
    c.lease_duration = Duration::from_millis(1500);
    c.renew_deadline = Duration::from_millis(1000);
    c.retry_period = Duration::from_millis(100);
    c.api_timeout = Duration::from_millis(300);
    c
}

struct Node {
    leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(server: &FakeApiServer, name: &str) -> Node {
    start_with(server, name, cfg(name))
}

fn start_with(server: &FakeApiServer, name: &str, c: LeaseConfig) -> Node {
    let e = LeaseElector::new(client(server, name), c).unwrap();
    let (tx, rx) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(e.run(tx, stop_rx));
    Node {
        leader: rx,
        stop,
        task,
    }
}

/// Sample both nodes every 2 ms until `cond` holds or `timeout`; panics if both ever lead.
async fn watch_until(
    nodes: &[&Node],
    timeout: Duration,
    mut cond: impl FnMut(&[bool]) -> bool,
) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        let s: Vec<bool> = nodes.iter().map(|n| *n.leader.borrow()).collect();
        assert!(
            s.iter().filter(|l| **l).count() <= 1,
            "two leaders at once: {s:?}"
        );
        if cond(&s) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_fenced_on_partition_and_taken_over_after_expiry() {
    let s = FakeApiServer::start().await.unwrap();
    let a = start(&s, "node-a");
    let b = start(&s, "node-b");
    let t = watch_until(&[&a, &b], Duration::from_secs(5), |l| l.contains(&true)).await;
    assert!(t.is_some(), "someone leads");
    // Stays stable: exactly one leader for a while.
    assert!(
        watch_until(&[&a, &b], Duration::from_millis(1500), |_| false)
            .await
            .is_none()
    );
    let (leader, follower, lname) = if *a.leader.borrow() {
        (&a, &b, "node-a")
    } else {
        (&b, &a, "node-b")
    };
    assert!(!*follower.leader.borrow());

    // Cut the leader off the API server: it must go silent within the renew deadline,
    // and the follower may lead only after the lease expired on its own clock.
    s.set_fault(lname, Fault::BlackHole);
    let silent = watch_until(&[&a, &b], Duration::from_secs(3), |_| {
        !*leader.leader.borrow()
    })
    .await
    .expect("partitioned leader fenced itself");
    assert!(
        silent <= Duration::from_millis(1000 + 60),
        "fenced within renew deadline: {silent:?}"
    );
    let took = silent
        + watch_until(&[&a, &b], Duration::from_secs(5), |_| {
            *follower.leader.borrow()
        })
        .await
        .expect("follower took over");
    // The lease records 2 s (1.5 s rounded up). The follower last saw it change at most a
    // retry period before the cut, so it may take over ~1.9 s after the cut at the earliest:
    // well after the fence closed (<= 1.0 s).
    assert!(
        took >= Duration::from_millis(1300),
        "not before the lease could expire: {took:?}"
    );
    assert!(
        took > silent,
        "the old leader was silent first ({silent:?} < {took:?})"
    );
    assert!(
        took <= Duration::from_millis(1500 + 1000),
        "soon after expiry: {took:?}"
    );

    // The old leader comes back: it follows, never two leaders.
    s.set_fault(lname, Fault::None);
    assert!(
        watch_until(&[&a, &b], Duration::from_millis(1500), |_| false)
            .await
            .is_none()
    );
    assert!(*follower.leader.borrow() && !*leader.leader.borrow());
    for n in [a, b] {
        let _ = n.stop.send(true);
        let _ = n.task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_on_shutdown_hands_over_fast() {
    let s = FakeApiServer::start().await.unwrap();
    let a = start(&s, "node-a");
    assert!(watch_until(&[&a], Duration::from_secs(5), |l| l[0])
        .await
        .is_some());
    let b = start(&s, "node-b");
    assert!(
        watch_until(&[&a, &b], Duration::from_millis(500), |_| false)
            .await
            .is_none()
    );
    let t0 = Instant::now();
    let _ = a.stop.send(true);
    let _ = a.task.await;
    let lease = s.objects("leases");
    let holder = lease[0]["spec"]["holderIdentity"].as_str().unwrap_or("");
    assert_eq!(holder, "", "released: {lease:?}");
    let took = watch_until(&[&b], Duration::from_secs(5), |l| l[0])
        .await
        .expect("b leads");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "released lease taken well before a full lease duration ({took:?})"
    );
    let lease = s.objects("leases");
    assert_eq!(lease[0]["spec"]["holderIdentity"], "node-b");
    assert!(lease[0]["spec"]["leaseTransitions"].as_i64().unwrap() >= 1);
    let _ = b.stop.send(true);
    let _ = b.task.await;
}

/// With the readyz gate, a leader whose API server stops being ready steps down at once
/// (silent, lease handed on) and stays out until it is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_gate_hands_the_lease_on() {
    let s = FakeApiServer::start().await.unwrap();
    let gated = |n: &str| {
        let mut c = cfg(n);
        c.readyz_gate = true;
        c
    };
    let a = start_with(&s, "node-a", gated("node-a"));
    assert!(watch_until(&[&a], Duration::from_secs(5), |l| l[0])
        .await
        .is_some());
    let b = start_with(&s, "node-b", gated("node-b"));
    s.set_ready("node-a", false);
    let silent = watch_until(&[&a, &b], Duration::from_secs(3), |_| !*a.leader.borrow())
        .await
        .expect("unready leader steps down");
    assert!(
        silent < Duration::from_millis(500),
        "at once, not at the renew deadline: {silent:?}"
    );
    let took = watch_until(&[&a, &b], Duration::from_secs(5), |_| *b.leader.borrow())
        .await
        .expect("b takes over");
    assert!(
        took < Duration::from_millis(2000),
        "released lease taken fast: {took:?}"
    );
    // Ready again: a follows, b keeps leading.
    s.set_ready("node-a", true);
    assert!(
        watch_until(&[&a, &b], Duration::from_millis(800), |_| false)
            .await
            .is_none()
    );
    assert!(*b.leader.borrow());
    for n in [a, b] {
        let _ = n.stop.send(true);
        let _ = n.task.await;
    }
}

#[test]
fn renew_deadline_must_be_shorter_than_lease() {
    let mut c = cfg("x");
    c.renew_deadline = c.lease_duration;
    assert!(c.validate().is_err());
}
