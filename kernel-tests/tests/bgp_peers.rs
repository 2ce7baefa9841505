//! The BGP speaker against real routers (bird2, gobgpd) in network namespaces. Root needed.
//!
//! ```text
//!  ns <p>-node ─veth─ ns <p>-sw (bridge) ─veth─ ns <p>-rt (bird / gobgpd, passive)
//!  10.N.0.2, fd00:N::2                          10.N.0.1, fd00:N::1
//! ```
//! The switch in the middle lets a test cut the node off while the router's own link
//! stays up, so the router notices only through BGP or BFD (as when a node dies).
//! The speaker runs in this process, on a tokio runtime whose threads were created inside
//! the node's namespace (threads inherit the creating thread's namespace, so its sockets
//! live there; the router seeing the session come from 10.N.0.2 proves it).
use std::{
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

mod common;

use testbed::{poll, Bed, Netns, Proc};
use vip_userspace::bgp::{
    BfdConfig, BfdState, BgpConfig, Community, GrConfig, PeerConfig, RoutePolicy, Routes,
    SessionState, Speaker,
};

const ROUTER_AS: u32 = 65000;
const NODE_AS: u32 = 65001;
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VIP4_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);

fn vip6() -> Ipv6Addr {
    "fd00:ffff::10".parse().unwrap()
}

/// Router and node joined through a bridge (testbed's `Bed`, roles `rt` and `node`), each
/// with 10.N.0.x and fd00:N::x; everything deleted on drop.
struct Link {
    n: u8,
    bed: Bed,
}

impl Link {
    fn new(prefix: &str, n: u8) -> Link {
        testbed::require_root_and_bpf();
        let bed = Bed::new(
            prefix,
            &[
                ("rt", &format!("10.{n}.0.1/24")),
                ("node", &format!("10.{n}.0.2/24")),
            ],
        );
        for (role, host) in [("rt", 1), ("node", 2)] {
            bed.host(role).ns.ip(&[
                "addr",
                "add",
                &format!("fd00:{n}::{host}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
        }
        Link { n, bed }
    }

    fn node(&self) -> &Netns {
        &self.bed.host("node").ns
    }

    fn rt(&self) -> &Netns {
        &self.bed.host("rt").ns
    }

    fn rt_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n, 0, 1)
    }

    fn node_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n, 0, 2)
    }

    fn node_addr6(&self) -> Ipv6Addr {
        format!("fd00:{}::2", self.n).parse().unwrap()
    }

    fn config(&self) -> BgpConfig {
        let mut c = BgpConfig::new(
            NODE_AS,
            self.node_addr(),
            vec![PeerConfig::new(IpAddr::V4(self.rt_addr()), ROUTER_AS)],
        );
        c.next_hop_v6 = Some(self.node_addr6());
        c
    }

    fn dir(&self) -> PathBuf {
        let d = std::env::temp_dir().join(format!("{}-router", self.rt().name));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

/// A tokio runtime whose worker threads live in the node's namespace.
struct NodeRt {
    rt: tokio::runtime::Runtime,
}

impl NodeRt {
    fn new(link: &Link) -> NodeRt {
        let rt = link.node().run(|| {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "vip_userspace::bgp=debug".into()),
                )
                .with_test_writer()
                .try_init()
                .ok();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        });
        NodeRt { rt }
    }

    /// Run `f` on a worker thread (in the node's namespace), not on the calling thread.
    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        let h = self.rt.spawn(f);
        self.rt.block_on(h).unwrap()
    }

    fn start(&self, cfg: BgpConfig) -> Speaker {
        self.run(async move { Speaker::start(cfg) })
            .unwrap_or_else(|e| panic!("Speaker::start: {e}"))
    }
}

fn hosts(addrs: &[IpAddr]) -> BTreeSet<IpAddr> {
    addrs.iter().copied().collect()
}

fn wait_state(sp: &Speaker, want: SessionState, timeout: Duration) -> bool {
    poll(timeout, || (sp.status()[0].state == want).then_some(())).is_some()
}

// ---------------------------------------------------------------------------------- bird

struct Bird {
    dir: PathBuf,
    ns_name: String,
    proc: Proc,
}

#[derive(Default)]
struct BirdOpts {
    password: Option<&'static str>,
    graceful_restart: bool,
    bfd: bool,
    hold: u16,
    /// bird connects to us (our peer is `passive`).
    active: bool,
    /// The session runs over IPv6 (fd00:N::1 <-> fd00:N::2).
    v6_session: bool,
    /// iBGP: the router is in our AS (LOCAL_PREF is only sent to iBGP peers).
    ibgp: bool,
}

impl Bird {
    fn start(link: &Link, o: BirdOpts) -> Bird {
        let dir = link.dir();
        let mut bgp_extra = String::new();
        if let Some(pw) = o.password {
            bgp_extra += &format!("  password \"{pw}\";\n");
        }
        if o.graceful_restart {
            bgp_extra += "  graceful restart on;\n";
        }
        if o.bfd {
            // bird waits `error wait time` (default 60 s) after an error such as "BFD
            // session down" before it accepts the neighbour again.
            bgp_extra += "  bfd on;\n  error wait time 1, 5;\n";
        }
        if o.active {
            // Connect at once and retry every second (defaults: 5 s and 120 s).
            bgp_extra += "  connect delay time 1;\n  connect retry time 1;\n";
        } else {
            bgp_extra += "  passive on;\n";
        }
        let (local, neighbor) = if o.v6_session {
            (format!("fd00:{}::1", link.n), link.node_addr6().to_string())
        } else {
            (link.rt_addr().to_string(), link.node_addr().to_string())
        };
        let bfd_proto = if o.bfd {
            "protocol bfd {\n  interface \"*\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };\n}\n"
        } else {
            ""
        };
        let conf = format!(
            "router id {rt};\nprotocol device {{ scan time 1; }}\n{bfd_proto}\
             protocol bgp node {{\n  local {local} as {router_as};\n  neighbor {neighbor} as {NODE_AS};\n  hold time {hold};\n{bgp_extra}\
               ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n",
            rt = link.rt_addr(),
            router_as = if o.ibgp { NODE_AS } else { ROUTER_AS },
            hold = if o.hold == 0 { 9 } else { o.hold },
        );
        Bird::launch(link.rt(), dir, &conf)
    }

    /// bird with `conf` in namespace `ns`, its files in `dir`; up when this returns.
    fn launch(ns: &Netns, dir: PathBuf, conf: &str) -> Bird {
        std::fs::write(dir.join("bird.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.join("bird.log")).unwrap();
        let mut cmd = ns.command("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(dir.join("bird.conf"))
            .arg("-s")
            .arg(dir.join("bird.ctl"))
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let proc = match cmd.spawn() {
            Ok(child) => Proc { child },
            Err(e) => panic!("starting bird ({e}): install bird2 (`cargo xtask setup` does)"),
        };
        let mut b = Bird {
            dir,
            ns_name: ns.name.clone(),
            proc,
        };
        let up = poll(Duration::from_secs(5), || {
            if let Ok(Some(st)) = b.proc.child.try_wait() {
                panic!("bird exited ({st}): {}", b.log());
            }
            b.try_birdc("show status")
                .filter(|s| s.contains("Daemon is up"))
        });
        assert!(up.is_some(), "bird not up in 5 s: {}", b.log());
        b
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }

    fn try_birdc(&self, cmd: &str) -> Option<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.dir.join("bird.ctl"))
            .args(cmd.split_whitespace())
            .output()
            .unwrap_or_else(|e| panic!("birdc ({e}): install bird2"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn birdc(&self, cmd: &str) -> String {
        self.try_birdc(cmd)
            .unwrap_or_else(|| panic!("birdc {cmd} failed in {}", self.ns_name))
    }

    fn established(&self) -> bool {
        self.birdc("show protocols node").contains("Established")
    }

    /// `show route <prefix> all` for the prefix's table, if bird has a route.
    fn route(&self, prefix: &str) -> Option<String> {
        let table = if prefix.contains(':') {
            "master6"
        } else {
            "master4"
        };
        // birdc exits 1 with "Network not found" when there is no route.
        let out = self.try_birdc(&format!("show route {prefix} table {table} all"))?;
        out.contains(prefix).then_some(out)
    }

    fn wait_route(&self, prefix: &str, timeout: Duration) -> String {
        poll(timeout, || self.route(prefix)).unwrap_or_else(|| {
            panic!(
                "bird has no route {prefix} after {timeout:?}:\n{}\n{}",
                self.birdc("show protocols all node"),
                self.log()
            )
        })
    }

    fn wait_no_route(&self, prefix: &str, timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        poll(timeout, || {
            self.route(prefix).is_none().then(|| t0.elapsed())
        })
    }
}

fn wait_bird_established(bird: &Bird, sp: &Speaker, timeout: Duration) {
    let ok = poll(timeout, || {
        (sp.status()[0].state == SessionState::Established && bird.established()).then_some(())
    });
    assert!(
        ok.is_some(),
        "not Established in {timeout:?}: ours {:?}\nbird: {}\n{}",
        sp.status(),
        bird.birdc("show protocols all node"),
        bird.log()
    );
}

#[test]
fn bird_receives_v4_and_v6_host_routes_and_withdrawals() {
    let link = Link::new("bgpa", 201);
    let bird = Bird::start(&link, BirdOpts::default());
    let rt = NodeRt::new(&link);
    let sp = rt.start(link.config());
    sp.announce(hosts(&[VIP4.into(), VIP4_B.into(), vip6().into()]));
    wait_bird_established(&bird, &sp, Duration::from_secs(10));

    let r4 = bird.wait_route("192.0.2.10/32", Duration::from_secs(5));
    assert!(
        r4.contains(&format!("BGP.next_hop: {}", link.node_addr())),
        "next hop is the session's local address:\n{r4}"
    );
    assert!(r4.contains(&format!("BGP.as_path: {NODE_AS}")), "{r4}");
    assert!(r4.contains("BGP.origin: IGP"), "{r4}");
    let r6 = bird.wait_route("fd00:ffff::10/128", Duration::from_secs(5));
    assert!(
        r6.contains(&format!("BGP.next_hop: {}", link.node_addr6())),
        "IPv6 next hop:\n{r6}"
    );
    bird.wait_route("192.0.2.11/32", Duration::from_secs(5));
    assert_eq!(sp.status()[0].prefixes_announced, 3);

    // Idempotent: the same set again sends nothing and changes nothing.
    sp.announce(hosts(&[VIP4.into(), VIP4_B.into(), vip6().into()]));
    // Ownership of VIP4 lost: only it is withdrawn.
    sp.announce(hosts(&[VIP4_B.into(), vip6().into()]));
    assert!(
        bird.wait_no_route("192.0.2.10/32", Duration::from_secs(5))
            .is_some(),
        "bird still has 192.0.2.10/32 after the withdrawal"
    );
    assert!(bird.route("192.0.2.11/32").is_some());
    assert!(bird.route("fd00:ffff::10/128").is_some());
    sp.announce(hosts(&[VIP4_B.into()]));
    assert!(bird
        .wait_no_route("fd00:ffff::10/128", Duration::from_secs(5))
        .is_some());
    // ROUTE-REFRESH from the router: we send the table again; the session stays up.
    let out = bird.birdc("reload in node");
    assert!(!out.contains("rror"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(bird.established() && bird.route("192.0.2.11/32").is_some());
    let st = &sp.status()[0];
    assert_eq!(st.prefixes_announced, 1, "{st:?}");
    assert_eq!(st.flaps, 0, "{st:?}");
    assert!(st.uptime.is_some(), "{st:?}");
    drop(sp);
}

/// Communities (standard and large) and LOCAL_PREF per prefix, on top of the speaker-wide
/// ones, as an iBGP router sees them; a changed policy replaces the route in place.
#[test]
fn bird_sees_communities_and_local_pref_per_prefix() {
    let link = Link::new("bgpj", 210);
    let bird = Bird::start(
        &link,
        BirdOpts {
            ibgp: true,
            ..Default::default()
        },
    );
    let rt = NodeRt::new(&link);
    let mut cfg = link.config();
    cfg.peers[0].remote_as = NODE_AS;
    cfg.communities = vec![Community::new(65001, 7)];
    cfg.local_pref = Some(50);
    let special = RoutePolicy {
        communities: vec![Community::new(65001, 100), Community::Large(65001, 1, 2)],
        local_pref: Some(250),
    };
    let routes: Routes = [
        (IpAddr::V4(VIP4), special.clone()),
        (IpAddr::V4(VIP4_B), RoutePolicy::default()),
    ]
    .into();
    let sp = rt
        .run(async move { Speaker::start_announcing(cfg, routes) })
        .unwrap();
    wait_bird_established(&bird, &sp, Duration::from_secs(10));
    let r = bird.wait_route("192.0.2.10/32", Duration::from_secs(5));
    assert!(r.contains("BGP.local_pref: 250"), "{r}");
    assert!(r.contains("BGP.community: (65001,7) (65001,100)"), "{r}");
    assert!(r.contains("BGP.large_community: (65001, 1, 2)"), "{r}");
    let r = bird.wait_route("192.0.2.11/32", Duration::from_secs(5));
    assert!(r.contains("BGP.local_pref: 50"), "{r}");
    assert!(r.contains("BGP.community: (65001,7)"), "{r}");
    assert!(!r.contains("large_community"), "{r}");
    // The pool or annotation changes: same prefix, new attributes, no withdrawal.
    sp.announce_routes(
        [
            (IpAddr::V4(VIP4), RoutePolicy::default()),
            (IpAddr::V4(VIP4_B), special),
        ]
        .into(),
    );
    let swapped = poll(Duration::from_secs(5), || {
        let a = bird.route("192.0.2.10/32")?;
        let b = bird.route("192.0.2.11/32")?;
        (a.contains("BGP.local_pref: 50") && b.contains("BGP.local_pref: 250")).then_some(())
    });
    assert!(
        swapped.is_some(),
        "{:?}\n{:?}",
        bird.route("192.0.2.10/32"),
        bird.route("192.0.2.11/32")
    );
    rt.run(sp.shutdown());
}

#[test]
fn bird_cease_on_shutdown_removes_routes() {
    let link = Link::new("bgpb", 202);
    let bird = Bird::start(&link, BirdOpts::default());
    let rt = NodeRt::new(&link);
    let sp = rt.start(link.config());
    sp.announce(hosts(&[VIP4.into()]));
    wait_bird_established(&bird, &sp, Duration::from_secs(10));
    bird.wait_route("192.0.2.10/32", Duration::from_secs(5));

    rt.run(sp.shutdown());
    let gone = bird.wait_no_route("192.0.2.10/32", Duration::from_secs(2));
    assert!(gone.is_some(), "route still in bird after shutdown()");
    let p = poll(Duration::from_secs(5), || {
        let s = bird.birdc("show protocols all node");
        s.contains("Administrative shutdown").then_some(s)
    });
    assert!(
        p.is_some(),
        "bird does not report an administrative shutdown:\n{}",
        bird.birdc("show protocols all node")
    );
}

#[test]
fn bird_md5_right_password_connects_wrong_one_does_not() {
    let link = Link::new("bgpc", 203);
    let bird = Bird::start(
        &link,
        BirdOpts {
            password: Some("s3cret"),
            ..Default::default()
        },
    );
    let rt = NodeRt::new(&link);

    let mut cfg = link.config();
    cfg.peers[0].password = Some("wrong".into());
    let wrong = rt.start(cfg);
    wrong.announce(hosts(&[VIP4.into()]));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        assert_ne!(wrong.status()[0].state, SessionState::Established);
        assert!(!bird.established(), "bird Established with a wrong MD5 key");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(bird.route("192.0.2.10/32").is_none());
    rt.run(wrong.shutdown());

    let mut cfg = link.config();
    cfg.peers[0].password = Some("s3cret".into());
    let right = rt.start(cfg);
    right.announce(hosts(&[VIP4.into()]));
    wait_bird_established(&bird, &right, Duration::from_secs(15));
    bird.wait_route("192.0.2.10/32", Duration::from_secs(5));
    rt.run(right.shutdown());
}

#[test]
fn bird_graceful_restart_keeps_routes_shutdown_does_not() {
    let link = Link::new("bgpd", 204);
    let bird = Bird::start(
        &link,
        BirdOpts {
            graceful_restart: true,
            ..Default::default()
        },
    );
    let rt = NodeRt::new(&link);
    let mut cfg = link.config();
    cfg.graceful_restart = Some(GrConfig { restart_time_s: 30 });
    let sp = rt.start(cfg.clone());
    sp.announce(hosts(&[VIP4.into(), VIP4_B.into()]));
    wait_bird_established(&bird, &sp, Duration::from_secs(10));
    bird.wait_route("192.0.2.10/32", Duration::from_secs(5));
    bird.wait_route("192.0.2.11/32", Duration::from_secs(5));

    rt.run(sp.stop_for_restart());
    // bird sees the TCP session gone without a NOTIFICATION and, since we advertised
    // graceful restart, keeps our routes (stale) while it waits for us.
    let during = poll(Duration::from_secs(5), || {
        let s = bird.birdc("show protocols all node");
        (!s.contains("Established")).then_some(s)
    })
    .unwrap_or_else(|| panic!("bird did not notice the closed session"));
    eprintln!("bird during our restart:\n{during}");
    assert!(
        during.contains("Neighbor graceful restart active") && during.contains("Restart timer"),
        "bird is not in graceful restart for us:\n{during}"
    );
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        for p in ["192.0.2.10/32", "192.0.2.11/32"] {
            assert!(
                bird.route(p).is_some(),
                "{p} dropped {:?} after stop_for_restart:\n{}",
                t0.elapsed(),
                bird.birdc("show protocols all node")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // The restarted speaker re-announces only VIP4 and sends End-of-RIB: bird then
    // sweeps the stale routes not refreshed (VIP4_B) and keeps VIP4 without a gap.
    let sp = rt.start(cfg.clone());
    sp.announce(hosts(&[VIP4.into()]));
    let swept = poll(Duration::from_secs(10), || {
        assert!(
            bird.route("192.0.2.10/32").is_some(),
            "VIP4 dropped during the restart"
        );
        (sp.status()[0].state == SessionState::Established
            && bird.established()
            && bird.route("192.0.2.11/32").is_none())
        .then_some(())
    });
    assert!(
        swept.is_some(),
        "stale 192.0.2.11/32 not swept after our End-of-RIB: ours {:?}\n{}",
        sp.status(),
        bird.birdc("show protocols all node")
    );
    assert!(bird.route("192.0.2.10/32").is_some());

    // Contrast: a real shutdown withdraws at once.
    rt.run(sp.shutdown());
    assert!(
        bird.wait_no_route("192.0.2.10/32", Duration::from_secs(2))
            .is_some(),
        "route kept after shutdown()"
    );
}

#[test]
fn bird_bfd_removes_routes_of_a_dead_node_within_a_second() {
    let link = Link::new("bgpe", 205);
    // A hold time of 30 s: without BFD the router would keep the route that long.
    let bird = Bird::start(
        &link,
        BirdOpts {
            bfd: true,
            hold: 30,
            ..Default::default()
        },
    );
    let rt = NodeRt::new(&link);
    let mut cfg = link.config();
    cfg.hold_time_s = 30;
    cfg.peers[0].bfd = Some(BfdConfig {
        min_tx_ms: 100,
        min_rx_ms: 100,
        multiplier: 3,
    });
    let sp = rt.start(cfg);
    sp.announce(hosts(&[VIP4.into()]));
    wait_bird_established(&bird, &sp, Duration::from_secs(10));
    bird.wait_route("192.0.2.10/32", Duration::from_secs(5));
    let up = poll(Duration::from_secs(10), || {
        let s = bird.birdc("show bfd sessions");
        (s.contains("Up") && sp.status()[0].bfd == Some(BfdState::Up)).then_some(s)
    });
    assert!(
        up.is_some(),
        "BFD not Up: ours {:?}\n{}\n{}",
        sp.status(),
        bird.birdc("show bfd sessions"),
        bird.log()
    );
    eprintln!("{}", up.unwrap());

    // The node dies: its link goes; the router's link stays up (switch in between).
    let t0 = Instant::now();
    link.node().ip(&["link", "set", "eth0", "down"]);
    let gone = bird
        .wait_no_route("192.0.2.10/32", Duration::from_secs(5))
        .map(|_| t0.elapsed());
    let gone = gone.unwrap_or_else(|| {
        panic!(
            "route still in bird 5 s after the node went away:\n{}",
            bird.birdc("show protocols all node")
        )
    });
    eprintln!("BFD: route removed {gone:?} after the node's link went down (hold time 30 s)");
    assert!(
        gone < Duration::from_secs(1),
        "route removed after {gone:?}, want < 1 s"
    );
    let why = bird.birdc("show protocols all node");
    assert!(
        why.contains("BFD session down"),
        "bird dropped the session for another reason:\n{why}"
    );
    assert!(
        wait_state(&sp, SessionState::Active, Duration::from_secs(2))
            || sp.status()[0].state != SessionState::Established,
        "our side still Established: {:?}",
        sp.status()
    );

    // The node comes back: BGP and BFD come back and so does the route.
    link.node().ip(&["link", "set", "eth0", "up"]);
    wait_bird_established(&bird, &sp, Duration::from_secs(20));
    bird.wait_route("192.0.2.10/32", Duration::from_secs(5));
    assert!(sp.status()[0].flaps >= 1, "{:?}", sp.status());
    rt.run(sp.shutdown());
}

#[test]
fn bird_connects_to_passive_speaker_over_ipv6_with_md5() {
    let link = Link::new("bgpg", 207);
    let rt = NodeRt::new(&link);
    let mut cfg = link.config();
    cfg.peers[0].address = format!("fd00:{}::1", link.n).parse().unwrap();
    cfg.peers[0].passive = true;
    cfg.peers[0].password = Some("v6-key".into());
    // An IPv6 session carries IPv4 routes only with an IPv4 next hop configured.
    cfg.next_hop_v4 = Some(link.node_addr());
    // Listening first: bird's first connection then succeeds.
    let sp = rt.start(cfg);
    sp.announce(hosts(&[VIP4.into(), vip6().into()]));
    assert!(
        wait_state(&sp, SessionState::Active, Duration::from_secs(2)),
        "a passive peer waits in Active: {:?}",
        sp.status()
    );
    let opts = |password| BirdOpts {
        active: true,
        v6_session: true,
        password: Some(password),
        ..Default::default()
    };
    // The listener's key is enforced: a router with another key never gets in.
    let wrong = Bird::start(&link, opts("not-the-key"));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        assert_ne!(sp.status()[0].state, SessionState::Established);
        assert!(!wrong.established(), "Established with a wrong MD5 key");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(wrong);
    let bird = Bird::start(&link, opts("v6-key"));
    wait_bird_established(&bird, &sp, Duration::from_secs(10));
    let r6 = bird.wait_route("fd00:ffff::10/128", Duration::from_secs(5));
    assert!(
        r6.contains(&format!("BGP.next_hop: {}", link.node_addr6())),
        "IPv6 next hop defaults to the session's local address:\n{r6}"
    );
    let r4 = bird.wait_route("192.0.2.10/32", Duration::from_secs(5));
    assert!(
        r4.contains(&format!("BGP.next_hop: {}", link.node_addr())),
        "configured IPv4 next hop:\n{r4}"
    );
    rt.run(sp.shutdown());
    assert!(bird
        .wait_no_route("fd00:ffff::10/128", Duration::from_secs(2))
        .is_some());
}

// ------------------------------------------------------------------------------- gobgpd

#[test]
fn gobgpd_receives_host_route() {
    let link = Link::new("bgpf", 206);
    let dir = link.dir();
    let conf = format!(
        "[global.config]\n  as = {ROUTER_AS}\n  router-id = \"{rt}\"\n  port = 179\n\
         [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{node}\"\n    peer-as = {NODE_AS}\n\
           [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n    connect-retry = 1\n\
           [neighbors.transport.config]\n    passive-mode = true\n\
           [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n\
           [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n",
        rt = link.rt_addr(),
        node = link.node_addr(),
    );
    std::fs::write(dir.join("gobgpd.toml"), conf).unwrap();
    let log = std::fs::File::create(dir.join("gobgpd.log")).unwrap();
    let mut cmd = link.rt().command("gobgpd");
    cmd.arg("-f")
        .arg(dir.join("gobgpd.toml"))
        .args(["--api-hosts", "127.0.0.1:50051"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let _gobgpd = match cmd.spawn() {
        Ok(child) => Proc { child },
        Err(e) => panic!("starting gobgpd ({e}): install gobgpd (`cargo xtask setup` does)"),
    };
    let logs = || std::fs::read_to_string(dir.join("gobgpd.log")).unwrap_or_default();
    let gobgp = |args: &[&str]| -> Option<serde_json::Value> {
        let out = link
            .rt()
            .command("gobgp")
            .args(["-u", "127.0.0.1", "-p", "50051"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("gobgp ({e}): install gobgpd"));
        serde_json::from_slice(&out.stdout).ok()
    };

    let rt = NodeRt::new(&link);
    let sp = rt.start(link.config());
    sp.announce(hosts(&[VIP4.into(), vip6().into()]));
    let t0 = Instant::now();
    let est = poll(Duration::from_secs(30), || {
        let n = gobgp(&["neighbor", "-j"])?;
        let state = n.get(0)?.pointer("/state/session_state")?.as_u64()?;
        (state == 6 && sp.status()[0].state == SessionState::Established).then_some(())
    });
    assert!(
        est.is_some(),
        "gobgpd not Established in 30 s: ours {:?}\n{}",
        sp.status(),
        logs()
    );
    eprintln!("gobgpd Established after {:?}", t0.elapsed());
    let nh = link.node_addr().to_string();
    let rib = poll(Duration::from_secs(10), || {
        let rib = gobgp(&["global", "rib", "-a", "ipv4", "-j"])?;
        let attrs = rib.pointer("/192.0.2.10~132/0/attrs")?.as_array()?.clone();
        let nexthop = attrs.iter().find_map(|a| a.get("nexthop")?.as_str())?;
        (nexthop == nh).then_some(attrs)
    });
    assert!(
        rib.is_some(),
        "gobgpd RIB lacks 192.0.2.10/32 via {nh}: {:?}",
        gobgp(&["global", "rib", "-a", "ipv4", "-j"])
    );
    let nh6 = link.node_addr6().to_string();
    let rib6 = poll(Duration::from_secs(10), || {
        let rib = gobgp(&["global", "rib", "-a", "ipv6", "-j"])?;
        // IPv6 next hops are in the MP_REACH_NLRI attribute (type 14).
        let attrs = rib
            .pointer("/fd00:ffff::10~1128/0/attrs")?
            .as_array()?
            .clone();
        let mp = attrs.iter().find(|a| a.get("type") == Some(&14.into()))?;
        mp.to_string().contains(&format!("\"{nh6}\"")).then_some(())
    });
    assert!(
        rib6.is_some(),
        "gobgpd RIB lacks fd00:ffff::10/128 via {nh6}: {:?}",
        gobgp(&["global", "rib", "-a", "ipv6", "-j"])
    );
    sp.announce(BTreeSet::new());
    let gone = poll(Duration::from_secs(5), || {
        let rib = gobgp(&["global", "rib", "-a", "ipv4", "-j"])?;
        rib.get("192.0.2.10/32").is_none().then_some(())
    });
    assert!(gone.is_some(), "gobgpd kept the withdrawn /32");
    rt.run(sp.shutdown());
}

// ---------------------------------------------------------------------------------- FRR

#[test]
fn frr_bgpd_receives_host_route() {
    let link = Link::new("bgph", 208);
    let dir = link.dir();
    let d = dir.to_str().unwrap().to_string();
    let conf = format!(
        "frr defaults traditional\nhostname rt\nlog file {d}/bgpd.log\n\
         router bgp {ROUTER_AS}\n bgp router-id {rt}\n no bgp ebgp-requires-policy\n\
          neighbor {node} remote-as {NODE_AS}\n neighbor {node} passive\n neighbor {node} timers 3 9\n\
          address-family ipv6 unicast\n  neighbor {node} activate\n exit-address-family\n",
        rt = link.rt_addr(),
        node = link.node_addr(),
    );
    std::fs::write(dir.join("bgpd.conf"), conf).unwrap();
    std::fs::write(dir.join("vtysh.conf"), "username root nopassword\n").unwrap();
    let err = std::fs::File::create(dir.join("bgpd.stderr")).unwrap();
    let mut cmd = link.rt().command("/usr/lib/frr/bgpd");
    // -Z: no zebra (no kernel routes), -S: skip runas checks, -P 0: no vty TCP port.
    cmd.args(["-Z", "-S", "-P", "0", "-u", "root", "-g", "root", "-f"])
        .arg(dir.join("bgpd.conf"))
        .arg("-i")
        .arg(dir.join("bgpd.pid"))
        .args(["--vty_socket", &d])
        .stdout(Stdio::null())
        .stderr(Stdio::from(err));
    let mut bgpd = match cmd.spawn() {
        Ok(child) => Proc { child },
        Err(e) => panic!("starting FRR bgpd ({e}): install frr"),
    };
    let logs = || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(dir.join("bgpd.stderr")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("bgpd.log")).unwrap_or_default()
        )
    };
    let vtysh = |c: &str| -> Option<serde_json::Value> {
        let out = Command::new("vtysh")
            .args([
                "--config_dir",
                &d,
                "--vty_socket",
                &d,
                "-d",
                "bgpd",
                "-c",
                c,
            ])
            .output()
            .unwrap_or_else(|e| panic!("vtysh ({e}): install frr"));
        serde_json::from_slice(&out.stdout).ok()
    };
    let rt = NodeRt::new(&link);
    let sp = rt.start(link.config());
    sp.announce(hosts(&[VIP4.into(), vip6().into()]));
    let node = link.node_addr().to_string();
    let est = poll(Duration::from_secs(20), || {
        if let Ok(Some(st)) = bgpd.child.try_wait() {
            panic!("bgpd exited ({st}): {}", logs());
        }
        let n = vtysh("show bgp neighbors json")?;
        let state = n
            .pointer(&format!("/{node}/bgpState"))?
            .as_str()?
            .to_string();
        (state == "Established" && sp.status()[0].state == SessionState::Established).then_some(())
    });
    assert!(
        est.is_some(),
        "FRR not Established: ours {:?}\n{:?}\n{}",
        sp.status(),
        vtysh("show bgp neighbors json"),
        logs()
    );
    let route = poll(Duration::from_secs(5), || {
        let r = vtysh("show bgp ipv4 unicast 192.0.2.10/32 json")?;
        let path = r.pointer("/paths/0")?;
        let ok = path.pointer("/nexthops/0/ip")?.as_str()? == node
            && path.pointer("/valid")?.as_bool()?
            && path.pointer("/aspath/string")?.as_str()? == NODE_AS.to_string();
        ok.then_some(r)
    });
    assert!(
        route.is_some(),
        "FRR lacks 192.0.2.10/32 via {node}: {:?}",
        vtysh("show bgp ipv4 unicast json")
    );
    let nh6 = link.node_addr6().to_string();
    let route6 = poll(Duration::from_secs(5), || {
        let r = vtysh("show bgp ipv6 unicast fd00:ffff::10/128 json")?;
        let ip = r.pointer("/paths/0/nexthops/0/ip")?.as_str()?.to_string();
        (ip == nh6).then_some(())
    });
    assert!(
        route6.is_some(),
        "FRR lacks fd00:ffff::10/128 via {nh6}: {:?}",
        vtysh("show bgp ipv6 unicast json")
    );
    rt.run(sp.shutdown());
    let gone = poll(Duration::from_secs(5), || {
        let r = vtysh("show bgp ipv4 unicast json")?;
        (!r.to_string().contains("192.0.2.10/32")).then_some(())
    });
    assert!(gone.is_some(), "FRR kept the route after shutdown()");
}

/// The daemon itself (`vip run` with a `bgp:` section): announces the VIPs it owns, an IPv4
/// /32 and an IPv6 /128 (MP_REACH, `bgp.next_hop_v6`), with its own addresses as next hops,
/// reports the session in its metrics, and on SIGTERM withdraws them and closes the session.
#[test]
fn daemon_announces_owned_vips_and_withdraws_on_sigterm() {
    daemon_announces(
        "bgpi",
        209,
        "mode: xdp\npin_dir: /sys/fs/bpf/vip-test-bgpi\n",
        "",
    );
}

/// The kernel fallback with `bgp.arp: false`: announced, bound on lo, and the kernel does
/// not answer ARP for it (strict ARP on the uplink), as XDP would not.
#[test]
fn kernel_mode_without_arp_announces_but_never_answers_arp() {
    daemon_announces("bgpk", 208, "mode: kernel\n", "  arp: false\n");
}

fn daemon_announces(prefix: &str, n: u8, mode: &str, bgp_extra: &str) {
    let link = Link::new(prefix, n);
    let bird = Bird::start(&link, BirdOpts::default());
    let dir = std::env::temp_dir().join(format!("{prefix}-daemon"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("vip.yaml");
    let mut d = common::Daemon::start_with_config(&link.bed, "node", &cfg, &format!(
            "interface: eth0\n{mode}vips: [{VIP4}, '{}']\nbgp:\n  local_as: {NODE_AS}\n  router_id: {}\n  next_hop_v6: '{}'\n{bgp_extra}  peers:\n    - {{address: {}, remote_as: {ROUTER_AS}}}\n",
            vip6(),
            link.node_addr(),
            link.node_addr6(),
            link.rt_addr()
        ));
    let route = poll(Duration::from_secs(20), || {
        bird.route(&format!("{VIP4}/32"))
    })
    .unwrap_or_else(|| panic!("no route in bird:\n{}\n{}", bird.log(), d.logs()));
    assert!(
        route.contains(&format!("via {}", link.node_addr())),
        "next hop is the node: {route}"
    );
    let r6 = bird.wait_route(&format!("{}/128", vip6()), Duration::from_secs(5));
    assert!(
        r6.contains(&format!("BGP.next_hop: {}", link.node_addr6())),
        "IPv6 next hop is the node's:\n{r6}"
    );
    let metrics = poll(Duration::from_secs(5), || {
        let (_, body) =
            testbed::http_get(link.node(), common::METRICS.parse().unwrap(), "/metrics").ok()?;
        body.contains(&format!(
            "vip_bgp_session_established{{peer=\"{}\"}} 1",
            link.rt_addr()
        ))
        .then_some(body)
    });
    assert!(metrics.is_some(), "session in the metrics:\n{}", d.logs());
    if !bgp_extra.is_empty() {
        let on_lo = link
            .node()
            .command("ip")
            .args(["-4", "-o", "addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&on_lo.stdout).contains(&format!("{VIP4}/32")),
            "bound on lo:\n{}",
            d.logs()
        );
        assert_eq!(
            testbed::arping(link.bed.host("rt"), &VIP4.to_string()),
            None,
            "nothing answers ARP for a routed-only VIP"
        );
    }
    assert!(d.stop().success(), "clean exit:\n{}", d.logs());
    assert!(
        bird.wait_no_route(&format!("{VIP4}/32"), Duration::from_secs(2))
            .is_some(),
        "withdrawn on SIGTERM:\n{}",
        bird.log()
    );
    assert!(
        bird.wait_no_route(&format!("{}/128", vip6()), Duration::from_secs(2))
            .is_some(),
        "IPv6 withdrawn on SIGTERM:\n{}",
        bird.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------ end to end

/// Traffic through a router to a VIP that two nodes announce (ECMP), balanced in XDP on
/// whichever node the router picks, to direct-server-return backends:
///
/// ```text
///  ns bgpx-cl ─veth─ ns bgpx-rt ──┐ ns bgpx-sw (bridge)
///  172.31.0.2        172.31.0.1   ├─ bgpx-n1 10.99.0.11  vip daemon, XDP, BGP
///                    10.99.0.1    ├─ bgpx-n2 10.99.0.12  vip daemon, XDP, BGP
///                    bird: BGP →  ├─ bgpx-be1 10.99.0.21 VIP on lo, TCP :8080
///                    kernel FIB   └─ bgpx-be2 10.99.0.22
/// ```
/// Then a planned restart of one node (a hand-over, `--handover`, with graceful restart):
/// the router keeps its path throughout and traffic flows during the gap; and a plain stop
/// of the other: its path is withdrawn and traffic still flows through the first.
#[test]
fn ecmp_traffic_through_router_and_graceful_daemon_restart() {
    const VIP: &str = "192.0.2.100";
    let bed = Bed::new(
        "bgpx",
        &[
            ("rt", "10.99.0.1/24"),
            ("n1", "10.99.0.11/24"),
            ("n2", "10.99.0.12/24"),
            ("be1", "10.99.0.21/24"),
            ("be2", "10.99.0.22/24"),
        ],
    );
    testbed::require_root_and_bpf();
    // The client sits behind the router, on a link of its own.
    let client = Netns::new("bgpx-cl");
    let rt = &bed.host("rt").ns;
    rt.ip(&[
        "link",
        "add",
        "eth1",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    rt.ip(&["addr", "add", "172.31.0.1/24", "dev", "eth1"]);
    rt.ip(&["link", "set", "eth1", "up"]);
    rt.sysctl("net.ipv4.ip_forward", "1");
    client.ip(&["addr", "add", "172.31.0.2/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);
    client.ip(&["route", "add", "default", "via", "172.31.0.1"]);
    for (ns, dev) in [(&client, "eth0"), (rt, "eth1")] {
        // Forwarded frames must carry full checksums by the time XDP rewrites them.
        testbed::sh(
            ns.command("ethtool")
                .args(["-K", dev, "tx", "off"])
                .stdout(Stdio::null()),
        );
    }
    let mut servers = Vec::new();
    for be in ["be1", "be2"] {
        let h = bed.host(be);
        testbed::make_dsr_backend(h, VIP);
        h.ns.ip(&["route", "add", "default", "via", "10.99.0.1"]);
        servers.push(testbed::TcpServer::start(
            &h.ns,
            "0.0.0.0:8080".parse().unwrap(),
            &format!("{be}\n"),
        ));
    }

    // bird: both nodes as passive eBGP neighbours with graceful restart, the best paths
    // merged into one multipath kernel route.
    let dir = std::env::temp_dir().join("bgpx-router");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut conf = String::from(
        "router id 10.99.0.1;\nprotocol device { scan time 1; }\n\
         protocol kernel { ipv4 { export all; }; merge paths on; }\n",
    );
    for (name, addr) in [("n1", "10.99.0.11"), ("n2", "10.99.0.12")] {
        conf += &format!(
            "protocol bgp {name} {{\n  local 10.99.0.1 as {ROUTER_AS};\n  neighbor {addr} as {NODE_AS};\n\
             \x20 passive on;\n  hold time 9;\n  graceful restart on;\n\
             \x20 ipv4 {{ import all; export none; }};\n}}\n"
        );
    }
    let bird = Bird::launch(rt, dir.clone(), &conf);
    let node_cfg = |n: &str, addr: &str| {
        let path = dir.join(format!("{n}.yaml"));
        std::fs::write(
            &path,
            format!(
                "mode: xdp\npin_dir: /sys/fs/bpf/vip-test-bgpx-{n}\nvips: [{VIP}]\n\
                 services:\n  - {{vip: {VIP}, port: 8080, protocol: tcp, mode: dsr, backends: [{{addr: 10.99.0.21}}, {{addr: 10.99.0.22}}]}}\n\
                 bgp:\n  local_as: {NODE_AS}\n  router_id: {addr}\n  arp: false\n\
                 \x20 announce: {{control_plane: ecmp}}\n  graceful_restart: {{restart_time_s: 30}}\n\
                 \x20 peers:\n    - {{address: 10.99.0.1, remote_as: {ROUTER_AS}}}\n"
            ),
        )
        .unwrap();
        path
    };
    let cfg1 = node_cfg("n1", "10.99.0.11");
    let cfg2 = node_cfg("n2", "10.99.0.12");
    // n1 stops as for an upgrade (--handover: a planned restart), n2 for good.
    let start = |role: &str, cfg: &PathBuf, keep: bool| {
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        if keep {
            args.push("--handover");
        }
        common::Daemon::start_in(&bed, role, &args)
    };
    let mut d1 = start("n1", &cfg1, true);
    let mut d2 = start("n2", &cfg2, false);
    let kernel_route = || {
        let out = rt.ip(&["route", "show", VIP]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let multipath = poll(Duration::from_secs(20), || {
        let r = kernel_route();
        (r.contains("via 10.99.0.11") && r.contains("via 10.99.0.12")).then_some(r)
    });
    assert!(
        multipath.is_some(),
        "no multipath route to the VIP in the router's kernel: {}\n{}\n{}\n{}",
        kernel_route(),
        bird.birdc("show route all"),
        d1.logs(),
        d2.logs()
    );
    let vip_port: std::net::SocketAddr = format!("{VIP}:8080").parse().unwrap();
    let reach = |why: &str| {
        let got = poll(Duration::from_secs(5), || {
            testbed::tcp_request(&client, vip_port)
                .ok()
                .filter(|g| g == "be1\n" || g == "be2\n")
        });
        assert!(
            got.is_some(),
            "client could not reach a backend through the VIP ({why}): {:?}\nroute: {}\n{}",
            testbed::tcp_request(&client, vip_port),
            kernel_route(),
            std::fs::read_to_string(std::env::temp_dir().join("bgpx-n1-vip.log"))
                .unwrap_or_default()
        );
    };
    reach("both nodes announcing");
    // `vip status` in the node: the VIP served without ARP (bgp.arp: false, only the route
    // attracts it), and the session with what it announces (from the daemon).
    // The daemon refreshes what it reports every 500 ms: polled, not read once.
    let status = || {
        let out = bed
            .host("n1")
            .ns
            .command(testkit::daemon::vip_bin())
            .args(["status", "--pin-dir", "/sys/fs/bpf/vip-test-bgpx-n1"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = poll(Duration::from_secs(3), || {
        let text = status();
        (text.contains("no-arp")
            && text.contains("BGP peers:")
            && text.contains("10.99.0.1")
            && text.contains("established")
            && text.contains(&format!("    {VIP}/32")))
        .then_some(())
    });
    assert!(
        listed.is_some(),
        "vip status lists the peer and the announced prefix:\n{}",
        status()
    );

    // Planned restart of n1: no withdrawal, no Cease; bird keeps the path (stale) until the
    // new daemon's End-of-RIB, and n1's data plane keeps balancing meanwhile.
    d1.proc.signal(libc::SIGTERM);
    let exited = d1.proc.wait_timeout(Duration::from_secs(10));
    assert!(
        exited.is_some_and(|s| s.success()),
        "n1 exit:\n{}",
        d1.logs()
    );
    let in_gr = poll(Duration::from_secs(5), || {
        let s = bird.birdc("show protocols all n1");
        s.contains("Neighbor graceful restart active").then_some(())
    });
    assert!(
        in_gr.is_some(),
        "bird is not in graceful restart for n1:\n{}\n{}",
        bird.birdc("show protocols all n1"),
        d1.logs()
    );
    let via_n1 = || {
        bird.route(&format!("{VIP}/32"))
            .is_some_and(|r| r.contains("via 10.99.0.11"))
    };
    assert!(
        via_n1(),
        "n1's path dropped at once:\n{}",
        bird.birdc("show route all")
    );
    reach("n1 between daemons");
    let t_restart = Instant::now();
    let mut d1 = start("n1", &cfg1, true);
    let back = poll(Duration::from_secs(15), || {
        assert!(
            via_n1(),
            "n1's path dropped {:?} into the restart:\n{}",
            t_restart.elapsed(),
            bird.birdc("show protocols all n1")
        );
        let s = bird.birdc("show protocols all n1");
        (s.contains("Established") && !s.contains("graceful restart active")).then_some(())
    });
    assert!(
        back.is_some(),
        "n1 not back (End-of-RIB) after the restart:\n{}\n{}",
        bird.birdc("show protocols all n1"),
        d1.logs()
    );
    assert!(via_n1(), "n1's path gone after its End-of-RIB");
    eprintln!(
        "n1 restarted: path kept throughout, back from graceful restart {:?} after the new daemon started",
        t_restart.elapsed()
    );
    reach("after n1's restart");

    // A plain stop of n2 withdraws its path; traffic goes on through n1 alone.
    let t_stop = Instant::now();
    d2.proc.signal(libc::SIGTERM);
    assert!(d2.proc.wait_timeout(Duration::from_secs(10)).is_some());
    let single = poll(Duration::from_secs(5), || {
        let r = kernel_route();
        (r.contains("via 10.99.0.11") && !r.contains("10.99.0.12")).then_some(())
    });
    assert!(
        single.is_some(),
        "n2's path not withdrawn: {}",
        kernel_route()
    );
    eprintln!(
        "n2 stopped: its path left the router's FIB {:?} after SIGTERM",
        t_stop.elapsed()
    );
    reach("n2 stopped");
    d1.stop();
    drop(d2);
    for n in ["n1", "n2"] {
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/vip-test-bgpx-{n}"));
    }
}
