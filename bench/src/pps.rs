//! Packets per second through a node on a veth bed: vip's XDP load balancer vs nftables DNAT
//! (kube-proxy's nftables structure: a service map, numgen over endpoint chains, conntrack)
//! vs plain kernel forwarding, 60-byte UDP frames (64 on the wire), one flow and 10,000.
//!
//! ```text
//!  ns vb-gen  g0 ──veth── l0  ns vb-lb  l1 ──veth── s0  ns vb-sink
//!  xdp_gen via test_run       vip_xdp / xdp-pass       xdp_sink: count, drop
//!  (live frames, XDP_TX)      (+ nft DNAT rules)
//! ```
//!
//! The generator is BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: `xdp_gen` returns
//! XDP_TX, so every frame is really sent out of g0. The sink counts UDP frames to a backend
//! port (so a frame that was not load-balanced does not count) and drops them; the same sink
//! serves every case. The kernel processes what the generator sends in softirq on the
//! generator's CPU when each batch is flushed, so a figure is what one core does generating,
//! forwarding and sinking; the generator and sink costs are the same in every case.
//!
//! IPv6 (`Case::*6`, the same bed with IPv6 added): 62-byte UDP frames (66 on the wire), vip's
//! IPv6 load balancer (its service written by `testkit::lb6`) vs nftables DNAT in an `ip6`
//! table. `xdp_gen` rewrites only the first 42 bytes of each frame (an IPv4 header's worth)
//! and live-frame pages come back with what the node wrote into them, so the addresses are
//! chosen to differ only in their first 4 bytes (VIP fd00:a64::100, backends
//! fd00:b01::100..fd00:b04::100) and the service port is the backend port: a recycled frame is
//! again one to the VIP. Flows differ in the source address (where `xdp_gen` writes its
//! "port").
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Stdio,
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use testbed::{link_mac, parse_mac, sh, Netns};
use testkit::{
    lb6::{self, Svc6},
    packet::Packet,
};
use vip_common::{MODE_NAT, PROTO_UDP};
use vip_userspace::model::{Backend, LbMode, Proto, Service};

use crate::{pin_cpu, stopped, table::Row, testrun::load_vip, PREFIX};

const GEN_IP: [u8; 4] = [10, 10, 0, 2];
const VIP: [u8; 4] = [10, 10, 0, 100];
const VIP_PORT: u16 = 9000;
const BACKEND_PORT: u16 = 9001;
const BACKENDS: [[u8; 4]; 4] = [
    [10, 20, 0, 2],
    [10, 20, 0, 3],
    [10, 20, 0, 4],
    [10, 20, 0, 5],
];
const GEN6: [u8; 16] = [0xfd, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// Port 9001, as the backends: see the module comment.
const VIP6: [u8; 16] = [0xfd, 0, 0x0a, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const BACKENDS6: [[u8; 16]; 4] = [
    [0xfd, 0, 0x0b, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    [0xfd, 0, 0x0b, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    [0xfd, 0, 0x0b, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    [0xfd, 0, 0x0b, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
];
const BASE_SPORT: u16 = 10000;
const FRAME_LEN: usize = 60;
const BATCH: u32 = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Xdp,
    Nft,
    Kernel,
    /// No node: the sink on l0 itself. What the generator, one veth hop and the sink cost.
    Ceiling,
    Xdp6,
    Nft6,
    Ceiling6,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Xdp => "vip XDP LB (nat)",
            Case::Nft => "nftables DNAT",
            Case::Kernel => "kernel forwarding",
            Case::Ceiling => "generator + sink only",
            Case::Xdp6 => "IPv6 vip XDP LB (nat)",
            Case::Nft6 => "IPv6 nftables DNAT",
            Case::Ceiling6 => "IPv6 generator + sink only",
        }
    }

    fn ipv6(self) -> bool {
        matches!(self, Case::Xdp6 | Case::Nft6 | Case::Ceiling6)
    }

    /// The sink's counter that is "delivered": UDP to the backend port for IPv4 (the sink's
    /// matcher reads IPv4 only), every frame for IPv6 (only balanced frames are routed to
    /// the backends' link; the VIP has no route in the node).
    fn delivered_counter(self) -> u32 {
        if self.ipv6() {
            0
        } else {
            1
        }
    }
}

fn ebpf_file(name: &str) -> Result<std::path::PathBuf> {
    let p = testbed::ebpf_dir().join(name);
    ensure!(
        p.exists(),
        "{} missing: run `cargo xtask build-ebpf --release`",
        p.display()
    );
    Ok(p)
}

/// An eBPF object loaded (and attached) by a thread inside a namespace, which keeps it until
/// the holder is dropped and drops it there, so whatever way it was attached, it is detached
/// in the namespace it was attached in.
struct Held {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hold<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> Result<(Ebpf, T)> + Send + 'static,
) -> Result<(Held, T)> {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = ns.spawn(move || match f() {
        Ok((ebpf, t)) => {
            let _ = tx.send(Ok(t));
            let _ = stop_rx.recv();
            drop(ebpf);
        }
        Err(e) => {
            let _ = tx.send(Err(e));
        }
    });
    let held = Held {
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    let t = rx.recv().map_err(|_| anyhow!("loader thread died"))??;
    Ok((held, t))
}

type Counter = PerCpuArray<MapData, u64>;

fn sum(c: &Counter, i: u32) -> Result<u64> {
    Ok(c.get(&i, 0)?.iter().sum())
}

/// The bed: three namespaces and two veth pairs, addresses, routes, neighbours, the sink.
struct Bed {
    // Dropped first: the sink program is detached in its namespace before it goes.
    _sink: Held,
    sink_count: Counter,
    gen: Netns,
    lb: Netns,
    _sink_ns: Netns,
    l0_mac: [u8; 6],
    g0_mac: [u8; 6],
}

fn ethtool_tx_off(ns: &Netns, dev: &str) {
    sh(ns
        .command("ethtool")
        .args(["-K", dev, "tx", "off"])
        .stdout(Stdio::null()));
}

impl Bed {
    fn new() -> Result<Bed> {
        let gen = Netns::new(&format!("{PREFIX}gen"));
        let lb = Netns::new(&format!("{PREFIX}lb"));
        let sink = Netns::new(&format!("{PREFIX}sink"));
        sh(std::process::Command::new("ip").args([
            "link", "add", "g0", "netns", &gen.name, "type", "veth", "peer", "name", "l0", "netns",
            &lb.name,
        ]));
        sh(std::process::Command::new("ip").args([
            "link", "add", "l1", "netns", &lb.name, "type", "veth", "peer", "name", "s0", "netns",
            &sink.name,
        ]));
        gen.ip(&["addr", "add", "10.10.0.2/24", "dev", "g0"]);
        lb.ip(&["addr", "add", "10.10.0.1/24", "dev", "l0"]);
        lb.ip(&["addr", "add", "10.20.0.1/24", "dev", "l1"]);
        for b in BACKENDS {
            sink.ip(&[
                "addr",
                "add",
                &format!("{}/24", Ipv4Addr::from(b)),
                "dev",
                "s0",
            ]);
        }
        for (ns, dev) in [(&gen, "g0"), (&lb, "l0"), (&lb, "l1"), (&sink, "s0")] {
            ns.ip(&["link", "set", dev, "up"]);
            ethtool_tx_off(ns, dev);
        }
        for k in ["all", "default", "l0", "l1"] {
            lb.sysctl(&format!("net.ipv4.conf.{k}.forwarding"), "1");
            lb.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0");
        }
        let s0_mac = link_mac(&sink, "s0");
        for b in BACKENDS {
            lb.ip(&[
                "neigh",
                "add",
                &Ipv4Addr::from(b).to_string(),
                "lladdr",
                &s0_mac,
                "dev",
                "l1",
                "nud",
                "permanent",
            ]);
        }
        let l0_mac = parse_mac(&link_mac(&lb, "l0"));
        let g0_mac = parse_mac(&link_mac(&gen, "g0"));
        let (held, sink_count) = attach_sink(&sink, "s0", BACKEND_PORT)?;
        Ok(Bed {
            gen,
            lb,
            _sink_ns: sink,
            l0_mac,
            g0_mac,
            sink_count,
            _sink: held,
        })
    }

    /// IPv6 on the node: forwarding, the generator's prefix on l0, the backends (a /24 of
    /// their own, see the module comment) on-link on l1 with permanent neighbours.
    fn add_ipv6(&self) {
        for k in ["all", "default", "l0", "l1"] {
            self.lb
                .sysctl(&format!("net.ipv6.conf.{k}.forwarding"), "1");
        }
        self.lb
            .ip(&["-6", "addr", "add", "fd00:a00::1/64", "dev", "l0", "nodad"]);
        self.lb
            .ip(&["-6", "route", "add", "fd00:b00::/24", "dev", "l1"]);
        let s0_mac = link_mac(&self._sink_ns, "s0");
        for b in BACKENDS6 {
            self.lb.ip(&[
                "-6",
                "neigh",
                "add",
                &Ipv6Addr::from(b).to_string(),
                "lladdr",
                &s0_mac,
                "dev",
                "l1",
                "nud",
                "permanent",
            ]);
        }
    }
}

/// `xdp_sink` on `dev` counting UDP to `port` (any address); its counter map.
fn attach_sink(ns: &Netns, dev: &'static str, port: u16) -> Result<(Held, Counter)> {
    let obj = ebpf_file("xdp-gen")?;
    hold(ns, move || {
        let mut ebpf = Ebpf::load_file(&obj).context("loading xdp-gen")?;
        let mut m: Array<_, [u8; 8]> =
            Array::try_from(ebpf.map_mut("SINK_MATCH").context("SINK_MATCH")?)?;
        let mut want = [0u8; 8];
        want[4..6].copy_from_slice(&port.to_be_bytes());
        m.set(0, want, 0)?;
        let p: &mut Xdp = ebpf
            .program_mut("xdp_sink")
            .context("xdp_sink")?
            .try_into()?;
        p.load().context("verifier rejects xdp_sink")?;
        p.attach(dev, XdpMode::Driver)
            .with_context(|| format!("attaching xdp_sink to {dev} (native)"))?;
        let c: Counter = PerCpuArray::try_from(ebpf.take_map("SINK_COUNT").context("SINK_COUNT")?)?;
        Ok((ebpf, c))
    })
}

fn attach_pass(lb: &Netns) -> Result<()> {
    let pass = ebpf_file("xdp-pass")?;
    lb.ip(&[
        "link",
        "set",
        "dev",
        "l0",
        "xdpdrv",
        "obj",
        pass.to_str().unwrap_or_default(),
        "sec",
        "xdp",
    ]);
    Ok(())
}

fn nft_rules() -> String {
    let mut s = String::from("table ip vipbench {\n");
    s.push_str(&format!(
        "  map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n    elements = {{ {} . udp . {VIP_PORT} : goto svc-bench }}\n  }}\n",
        Ipv4Addr::from(VIP)
    ));
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }\n");
    let eps: Vec<String> = (0..BACKENDS.len())
        .map(|i| format!("{i} : goto ep-{i}"))
        .collect();
    s.push_str(&format!(
        "  chain svc-bench {{\n    numgen random mod {} vmap {{ {} }}\n  }}\n",
        BACKENDS.len(),
        eps.join(", ")
    ));
    for (i, b) in BACKENDS.iter().enumerate() {
        s.push_str(&format!(
            "  chain ep-{i} {{\n    meta l4proto udp dnat to {}:{BACKEND_PORT}\n  }}\n",
            Ipv4Addr::from(*b)
        ));
    }
    s.push_str("}\n");
    s
}

/// `nft_rules` for IPv6: the same layout in an `ip6` table.
fn nft_rules6() -> String {
    let mut s = String::from("table ip6 vipbench6 {\n");
    s.push_str(&format!(
        "  map service-ips {{\n    type ipv6_addr . inet_proto . inet_service : verdict\n    elements = {{ {} . udp . {BACKEND_PORT} : goto svc-bench }}\n  }}\n",
        Ipv6Addr::from(VIP6)
    ));
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    ip6 daddr . meta l4proto . th dport vmap @service-ips\n  }\n");
    let eps: Vec<String> = (0..BACKENDS6.len())
        .map(|i| format!("{i} : goto ep-{i}"))
        .collect();
    s.push_str(&format!(
        "  chain svc-bench {{\n    numgen random mod {} vmap {{ {} }}\n  }}\n",
        BACKENDS6.len(),
        eps.join(", ")
    ));
    for (i, b) in BACKENDS6.iter().enumerate() {
        s.push_str(&format!(
            "  chain ep-{i} {{\n    meta l4proto udp dnat to [{}]:{BACKEND_PORT}\n  }}\n",
            Ipv6Addr::from(*b)
        ));
    }
    s.push_str("}\n");
    s
}

/// The IPv6 service of the XDP case, at the top of a `RINGS` of `ring_slots`.
fn services6(ring_slots: u32) -> Vec<Svc6> {
    vec![Svc6 {
        vip: VIP6,
        port: BACKEND_PORT,
        proto: PROTO_UDP,
        mode: MODE_NAT,
        id: 10,
        ring_off: ring_slots - 2 * lb6::RING6,
        ring_size: lb6::RING6,
        backends: BACKENDS6
            .iter()
            .enumerate()
            .map(|(i, b)| (100 + i as u32, *b, BACKEND_PORT, 5))
            .collect(),
    }]
}

fn attach_vip(lb: &Netns, l0_mac: [u8; 6], ipv6: bool) -> Result<Held> {
    let (held, ()) = hold(lb, move || {
        let ifindex = crate::ifindex("l0")?;
        let mut ebpf = if ipv6 {
            load_vip(
                &[vip_common::XDP_PROG],
                ifindex,
                l0_mac,
                &[Ipv6Addr::from(VIP6).into()],
                &[],
                services6,
            )?
        } else {
            load_vip4(ifindex, l0_mac)?
        };
        let p: &mut Xdp = ebpf
            .program_mut(vip_common::XDP_PROG)
            .context("vip_xdp")?
            .try_into()?;
        p.attach("l0", XdpMode::Driver)
            .context("attaching vip_xdp to l0 (native)")?;
        Ok((ebpf, ()))
    })?;
    Ok(held)
}

fn load_vip4(ifindex: u32, l0_mac: [u8; 6]) -> Result<Ebpf> {
    load_vip(
        &[vip_common::XDP_PROG],
        ifindex,
        l0_mac,
        &[IpAddr::from(VIP)],
        &[Service {
            vip: Ipv4Addr::from(VIP).into(),
            port: VIP_PORT,
            proto: Proto::Udp,
            mode: LbMode::Nat,
            backends: BACKENDS
                .iter()
                .map(|b| Backend {
                    addr: Ipv4Addr::from(*b).into(),
                    port: BACKEND_PORT,
                    weight: 1,
                })
                .collect(),
        }],
        |_| Vec::new(),
    )
}

/// 62-byte IPv6 UDP frame g0 -> l0 to [VIP6]:9001, no payload. Its checksum is right for the
/// first flow only (vip does not DNAT IPv6 UDP without one: RFC 8200 requires it).
fn frame6(bed: &Bed) -> Vec<u8> {
    Packet::eth(bed.l0_mac, bed.g0_mac)
        .ipv6(GEN6, VIP6, 0)
        .udp(BASE_SPORT, BACKEND_PORT)
        .build()
}

/// 60-byte UDP frame g0 -> l0, to `dst`:`dport`, checksum 0.
fn frame(bed: &Bed, dst: [u8; 4], dport: u16) -> [u8; FRAME_LEN] {
    Packet::eth(bed.l0_mac, bed.g0_mac)
        .ipv4(GEN_IP, dst)
        .ip_id(1)
        .dont_fragment()
        .udp(BASE_SPORT, dport)
        .no_l4_checksum()
        .payload(&[0; FRAME_LEN - 42])
        .build()
        .try_into()
        .expect("FRAME_LEN bytes")
}

struct Sent {
    sent: u64,
    secs: f64,
}

/// Run the generator for a warm-up of 200,000 frames (not counted) and then for about
/// `secs`, from a thread in the generator's namespace; `between` is called between the two
/// (to read the sink).
fn generate(
    bed: &Bed,
    frame: Vec<u8>,
    flows: u32,
    secs: Duration,
    between: impl FnOnce() -> Result<u64>,
) -> Result<(u64, Sent)> {
    let obj = ebpf_file("xdp-gen")?;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let h = bed.gen.spawn(move || -> Result<Sent> {
        pin_cpu(1);
        let setup = || -> Result<Ebpf> {
            let mut ebpf = Ebpf::load_file(&obj).context("loading xdp-gen")?;
            let mut hdr: Array<_, [u8; 42]> =
                Array::try_from(ebpf.map_mut("GEN_HDR").context("GEN_HDR")?)?;
            let mut h = [0u8; 42];
            h.copy_from_slice(&frame[..42]);
            hdr.set(0, h, 0)?;
            let mut cfg: Array<_, [u32; 2]> =
                Array::try_from(ebpf.map_mut("GEN_CFG").context("GEN_CFG")?)?;
            cfg.set(0, [flows, BASE_SPORT as u32], 0)?;
            let p: &mut Xdp = ebpf.program_mut("xdp_gen").context("xdp_gen")?.try_into()?;
            p.load().context("verifier rejects xdp_gen")?;
            Ok(ebpf)
        };
        let ebpf = match setup() {
            Ok(e) => {
                let _ = ready_tx.send(Ok(()));
                e
            }
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow!("{e:#}")));
                return Err(e);
            }
        };
        let p: &Xdp = ebpf.program("xdp_gen").context("xdp_gen")?.try_into()?;
        let ifindex = crate::ifindex("g0")?;
        let ctx = crate::testrun::xdp_md(ifindex, frame.len() as u32);
        // One call per phase: each call sets up its own page pool (milliseconds), so calls
        // are made long and their setup is amortized; the count is the call's repeat.
        let run = |repeat: u32| -> Result<f64> {
            if stopped() {
                bail!("interrupted");
            }
            let t = Instant::now();
            let r = p
                .test_run(TestRunOptions {
                    data_in: Some(&frame),
                    ctx_in: Some(&ctx),
                    repeat,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..Default::default()
                })
                .context("BPF_PROG_TEST_RUN with live frames")?;
            ensure!(
                r.return_value == 0,
                "live-frames run returned {}",
                r.return_value
            );
            Ok(t.elapsed().as_secs_f64())
        };
        let warm = 200_000u32;
        let w = run(warm)?;
        // Size the measured call to last about `secs` at the warm-up's rate.
        let rate = warm as f64 / w.max(1e-6);
        let repeat = (rate * secs.as_secs_f64()).clamp(200_000.0, 50_000_000.0) as u32;
        // Let the last batch drain, then the main thread reads the sink and says go.
        std::thread::sleep(Duration::from_millis(30));
        let _ = ready_tx.send(Ok(()));
        go_rx.recv().map_err(|_| anyhow!("aborted"))?;
        let secs = run(repeat)?;
        let sent = repeat as u64;
        Ok(Sent { sent, secs })
    });
    let result = (|| {
        // Loaded; then warmed up and drained: read the sink just before go.
        for _ in 0..2 {
            ready_rx
                .recv()
                .map_err(|_| anyhow!("generator thread died"))??;
        }
        let before = between()?;
        go_tx
            .send(())
            .map_err(|_| anyhow!("generator thread died"))?;
        Ok::<u64, anyhow::Error>(before)
    })();
    drop(go_tx);
    let sent = h.join().map_err(|_| anyhow!("generator thread panicked"))?;
    let before = result?;
    Ok((before, sent?))
}

/// Softirq load for other sections (the failover bench's load case): the generator on every
/// CPU sending 60-byte frames that the kernel forwards from `vb-lb` to the sink, until
/// dropped. Each generator call is short (`FLOOD_CALL` frames), so a stop is seen quickly.
pub(crate) struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<JoinHandle<Result<u64>>>,
    // Dropped after the threads: the namespaces and the sink outlive the generators.
    _bed: Bed,
}

const FLOOD_CALL: u32 = 100_000;

impl Flood {
    pub(crate) fn start() -> Result<Flood> {
        use std::sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        };
        let bed = Bed::new()?;
        attach_pass(&bed.lb)?;
        let f = frame(&bed, BACKENDS[0], BACKEND_PORT);
        let stop = Arc::new(AtomicBool::new(false));
        let obj = ebpf_file("xdp-gen")?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cpus)
            .map(|cpu| {
                let (stop, obj) = (stop.clone(), obj.clone());
                bed.gen.spawn(move || -> Result<u64> {
                    pin_cpu(cpu);
                    let mut ebpf = Ebpf::load_file(&obj).context("loading xdp-gen")?;
                    let mut hdr: Array<_, [u8; 42]> =
                        Array::try_from(ebpf.map_mut("GEN_HDR").context("GEN_HDR")?)?;
                    let mut h = [0u8; 42];
                    h.copy_from_slice(&f[..42]);
                    hdr.set(0, h, 0)?;
                    let mut cfg: Array<_, [u32; 2]> =
                        Array::try_from(ebpf.map_mut("GEN_CFG").context("GEN_CFG")?)?;
                    cfg.set(0, [1000, BASE_SPORT as u32], 0)?;
                    let p: &mut Xdp = ebpf.program_mut("xdp_gen").context("xdp_gen")?.try_into()?;
                    p.load().context("verifier rejects xdp_gen")?;
                    let p: &Xdp = ebpf.program("xdp_gen").context("xdp_gen")?.try_into()?;
                    let ctx = crate::testrun::xdp_md(crate::ifindex("g0")?, FRAME_LEN as u32);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) && !stopped() {
                        p.test_run(TestRunOptions {
                            data_in: Some(&f),
                            ctx_in: Some(&ctx),
                            repeat: FLOOD_CALL,
                            attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                            ..Default::default()
                        })
                        .context("BPF_PROG_TEST_RUN with live frames")?;
                        n += FLOOD_CALL as u64;
                    }
                    Ok(n)
                })
            })
            .collect();
        Ok(Flood {
            stop,
            threads,
            _bed: bed,
        })
    }

    /// Stop; an error if a generator failed.
    pub(crate) fn stop(mut self) -> Result<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        for t in self.threads.drain(..) {
            total += t
                .join()
                .map_err(|_| anyhow!("generator thread panicked"))??;
        }
        Ok(total)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Measured {
    pps: f64,
    sent_pps: f64,
}

fn measure(case: Case, flows: u32, secs: Duration) -> Result<Measured> {
    let bed = Bed::new()?;
    if case.ipv6() {
        bed.add_ipv6();
    }
    let mut l0_sink = None;
    let _vip = match case {
        Case::Ceiling | Case::Ceiling6 => {
            l0_sink = Some(attach_sink(&bed.lb, "l0", VIP_PORT)?);
            None
        }
        Case::Xdp => Some(attach_vip(&bed.lb, bed.l0_mac, false)?),
        Case::Xdp6 => Some(attach_vip(&bed.lb, bed.l0_mac, true)?),
        Case::Nft | Case::Nft6 => {
            attach_pass(&bed.lb)?;
            let path = std::env::temp_dir().join("vip-bench.nft");
            let rules = if case == Case::Nft {
                nft_rules()
            } else {
                nft_rules6()
            };
            std::fs::write(&path, rules)?;
            sh(bed.lb.command("nft").arg("-f").arg(&path));
            let _ = std::fs::remove_file(&path);
            if case == Case::Nft6 {
                // The IPv6 frames' checksums are right for one flow only (and not after a
                // page comes back DNATed): conntrack must not check them, as it does not
                // check IPv4's checksum-0 frames.
                bed.lb.sysctl("net.netfilter.nf_conntrack_checksum", "0");
            }
            None
        }
        Case::Kernel => {
            attach_pass(&bed.lb)?;
            None
        }
    };
    let dst = match case {
        Case::Xdp | Case::Nft | Case::Ceiling => frame(&bed, VIP, VIP_PORT).to_vec(),
        Case::Kernel => frame(&bed, BACKENDS[0], BACKEND_PORT).to_vec(),
        Case::Xdp6 | Case::Nft6 | Case::Ceiling6 => frame6(&bed),
    };
    let count = match &l0_sink {
        Some((_, c)) => c,
        None => &bed.sink_count,
    };
    let k = case.delivered_counter();
    let (before, sent) = generate(&bed, dst, flows, secs, || sum(count, k))?;
    std::thread::sleep(Duration::from_millis(50));
    let got = sum(count, k)? - before;
    let all = sum(count, 0)?;
    ensure!(
        got > 0,
        "{}: nothing reached the sink ({all} frames seen there)",
        case.name()
    );
    Ok(Measured {
        pps: got as f64 / sent.secs,
        sent_pps: sent.sent as f64 / sent.secs,
    })
}

pub fn run(quick: bool, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let secs = Duration::from_millis(if quick { 1000 } else { 2000 });
    let reps = if quick { 1 } else { 3 };
    for flows in [1u32, 10_000] {
        let mut all: Vec<(Case, Vec<Measured>)> = Vec::new();
        for _ in 0..reps {
            for case in [
                Case::Ceiling,
                Case::Kernel,
                Case::Nft,
                Case::Xdp,
                Case::Ceiling6,
                Case::Nft6,
                Case::Xdp6,
            ] {
                let m = measure(case, flows, secs)?;
                eprintln!(
                    "   {flows} flows, {}: {:.3} Mpps delivered, {:.3} Mpps generated",
                    case.name(),
                    m.pps / 1e6,
                    m.sent_pps / 1e6
                );
                match all.iter_mut().find(|(c, _)| *c == case) {
                    Some((_, v)) => v.push(m),
                    None => all.push((case, vec![m])),
                }
            }
        }
        // The median run of each case, by delivered rate.
        let got: Vec<(Case, Measured)> = all
            .into_iter()
            .map(|(c, mut v)| {
                v.sort_by(|a, b| a.pps.total_cmp(&b.pps));
                let mid = v.len() / 2;
                (c, v.swap_remove(mid))
            })
            .collect();
        let find = |c: Case| got.iter().find(|(k, _)| *k == c).map(|(_, m)| m.pps);
        let (Some(x), Some(n), Some(k), Some(c), Some(x6), Some(n6), Some(c6)) = (
            find(Case::Xdp),
            find(Case::Nft),
            find(Case::Kernel),
            find(Case::Ceiling),
            find(Case::Xdp6),
            find(Case::Nft6),
            find(Case::Ceiling6),
        ) else {
            bail!("missing a case");
        };
        let fl = if flows == 1 {
            "1 flow".to_string()
        } else {
            format!("{flows} flows")
        };
        rows.push(
            Row::new(format!(
                "veth bed Mpps, 64 B UDP, {fl}: vip XDP LB (nat) vs nftables DNAT"
            ))
            .result(format!("{:.2} Mpps", x / 1e6))
            .baseline(format!("nft DNAT {:.2} Mpps", n / 1e6))
            .ratio(x / n),
        );
        rows.push(
            Row::new(format!(
                "veth bed Mpps, 64 B UDP, {fl}: vip XDP LB (nat) vs kernel forwarding"
            ))
            .result(format!("{:.2} Mpps", x / 1e6))
            .baseline(format!("kernel fwd {:.2} Mpps", k / 1e6))
            .ratio(x / k),
        );
        rows.push(
            Row::new(format!(
                "veth bed Mpps, 66 B UDP, {fl}: vip XDP LB (nat), IPv6 vs nftables IPv6 DNAT"
            ))
            .result(format!("{:.2} Mpps", x6 / 1e6))
            .baseline(format!("nft IPv6 DNAT {:.2} Mpps", n6 / 1e6))
            .ratio(x6 / n6),
        );
        let loss: Vec<String> = got
            .iter()
            .map(|(c, m)| {
                format!(
                    "{} {:.1} % of {:.2} Mpps generated",
                    c.name(),
                    100.0 * m.pps / m.sent_pps,
                    m.sent_pps / 1e6
                )
            })
            .collect();
        notes.push(format!("veth bed, {fl}: delivered {}", loss.join("; ")));
        // What the node adds per packet: the time per packet beyond the generator+sink ceiling.
        let node = |p: f64| (1e9 / p - 1e9 / c).max(0.0);
        notes.push(format!(
            "veth bed, {fl}: generator + sink alone (sink on l0, no node) {:.2} Mpps; so the node adds per packet (1/rate − 1/ceiling): vip XDP {:.0} ns, nftables DNAT {:.0} ns, kernel forwarding {:.0} ns",
            c / 1e6,
            node(x),
            node(n),
            node(k)
        ));
        let node6 = |p: f64| (1e9 / p - 1e9 / c6).max(0.0);
        notes.push(format!(
            "veth bed, {fl}, IPv6: generator + sink alone {:.2} Mpps; the node adds per packet: vip XDP {:.0} ns, nftables IPv6 DNAT {:.0} ns",
            c6 / 1e6,
            node6(x6),
            node6(n6)
        ));
    }
    notes.push(format!(
        "veth bed: generator = BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (batch {BATCH}) of `xdp_gen` on g0, \
         60-byte UDP frames (64 B with FCS), UDP checksum 0, 10,000 flows by source port; one generator thread pinned to CPU 1, \
         the kernel handles the frames in softirq on that CPU, so each figure is one core generating + forwarding + sinking; \
         sink = `xdp_sink` on the far veth counting UDP to the backend port (4 backends) and dropping; {:.1} s per case after a 200,000-frame warm-up (one call each: a call's page-pool setup costs milliseconds), \
         a fresh namespace bed per case. nftables: kube-proxy's layout (service-ips vmap, numgen random over endpoint chains, dnat, conntrack). \
         Kernel forwarding: no LB, frames addressed to one backend. \
         IPv6 rows: the same bed with IPv6 added, 62-byte UDP frames (66 B with FCS, no payload) to [fd00:a64::100]:9001 (port = the backends' port, \
         addresses differing from the backends' only in their first 4 bytes: `xdp_gen` rewrites 42 bytes of each recycled page), flows by source address; \
         vip's IPv6 service written by `testkit::lb6` (4 backends, table of 251); nftables: the same layout in an `ip6` table, with \
         `nf_conntrack_checksum=0` (the frames carry a UDP checksum, which IPv6 requires and vip's DNAT needs, right for the first flow only); \
         delivered = every frame the sink sees (its matcher reads IPv4 only; only balanced frames are routed to the backends' link). \
         Each case run {reps}× interleaved, the median delivered rate shown. When the kernel defers the softirq work to ksoftirqd the \
         generator outruns the node and the excess is dropped at the veth: the delivered rate (what the table shows) stays the node's.",
        secs.as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `xdp_gen` rewrites the first 42 bytes (up to byte 4 of the IPv6 destination): a page
    /// that comes back DNATed is again a frame to the VIP only if the rest agrees.
    #[test]
    fn ipv6_vip_and_backends_differ_only_where_xdp_gen_writes() {
        for b in BACKENDS6 {
            assert_eq!(b[4..], VIP6[4..]);
            assert_ne!(b[..4], VIP6[..4]);
            assert_eq!(
                &b[..3],
                &[0xfd, 0, 0x0b],
                "inside the node's fd00:b00::/24 route"
            );
        }
    }

    #[test]
    fn nft_rules6_is_an_ip6_table_with_every_backend() {
        let r = nft_rules6();
        assert!(r.starts_with("table ip6 "));
        assert!(r.contains("ip6 daddr . meta l4proto . th dport vmap @service-ips"));
        assert!(r.contains("fd00:a64::100 . udp . 9001"));
        for b in BACKENDS6 {
            assert!(r.contains(&format!("dnat to [{}]:9001", Ipv6Addr::from(b))));
        }
    }
}
