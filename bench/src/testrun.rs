//! Per-packet cost of the real XDP program through BPF_PROG_TEST_RUN, with the bench entry
//! that restores the frame before every repeat, beside the same entry with a no-op inner.
//!
//! Runs in a namespace of its own with a veth `v0` whose ifindex is the run's ingress, so the
//! load balancer's bpf_fib_lookup finds on-link backends with permanent neighbour entries and
//! answers XDP_TX. Every case's verdict, output frame and counters are checked, so a broken
//! setup cannot yield a fast-looking number.
//!
//! The IPv6 cases (NDP, the IPv6 load balancer) use `testkit::lb6`'s services, written into
//! the same object's maps beside the daemon's IPv4 ones (the daemon does not carry IPv6
//! services yet). Their frames are longer than the 64 bytes `vip_bench` restores: each case
//! is chosen so that what lies past byte 64 either stays as it came in or is never read (see
//! `cases`), and what the restore cannot show (the L4 checksum after DNAT) is checked on a
//! single run before the timed ones.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
};

use anyhow::{bail, ensure, Context, Result};
use aya::{
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use testbed::Netns;
use testkit::{
    lb6::{self, dsr_be6, mac_of6, nat_be6, Svc6, CLIENT6, VIP6},
    packet::{checksum, l4_checksum_ok6, multicast_mac, solicited_node, Packet},
};
use vip_common::{map_names, Stats};
use vip_userspace::{
    counters,
    dataplane::lb::LbMaps,
    model::{Backend, LbMode, Proto, Service},
    reconcile::services::ServiceSync,
};

use crate::{pin_cpu, stopped, table::Row};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const NODE_IP: [u8; 4] = [10, 0, 0, 1];
const CLIENT_IP: [u8; 4] = [198, 18, 0, 10];
const VIP: [u8; 4] = [10, 0, 0, 100];
const NOT_A_VIP: [u8; 4] = [10, 0, 0, 200];
const NAT_PORT: u16 = 80;
const DSR_PORT: u16 = 81;
const BACKEND_PORT: u16 = 8080;
const N_BACKENDS: u8 = 10;
const SPORT: u16 = 40000;

/// The `testkit::lb6` services this bench times: dsr on 80/TCP, nat on 8080/TCP (to 8080).
const DSR6_PORT: u16 = 80;
const NAT6_PORT: u16 = 8080;

fn backend_ip(i: u8) -> [u8; 4] {
    [10, 0, 0, 11 + i]
}

fn backend_mac(i: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0xbe, i]
}

/// `p` padded to the 64-byte frames every IPv4 case runs.
fn frame64(p: Packet) -> [u8; 64] {
    p.pad_to(64)
        .build()
        .try_into()
        .expect("a case's frame fits 64 bytes")
}

/// Bytes `vip_bench` restores before every repeat (the eBPF side's `BENCH_LEN`).
const RESTORED: usize = 64;

fn udp_to(dst: [u8; 4]) -> [u8; 64] {
    frame64(
        Packet::eth(NODE_MAC, CLIENT_MAC)
            .ipv4(CLIENT_IP, dst)
            .ip_id(1)
            .dont_fragment()
            .udp(40000, 53)
            .no_l4_checksum(),
    )
}

fn arp_request(tpa: [u8; 4]) -> [u8; 64] {
    frame64(Packet::eth([0xff; 6], CLIENT_MAC).arp(1, CLIENT_MAC, [10, 0, 0, 10], [0; 6], tpa))
}

/// A Neighbor Solicitation from the client for `target`, to its solicited-node group (address
/// resolution), whose one option is the target link-layer option the answer carries: the
/// advertisement is written over the frame, and past the 64 restored bytes it leaves exactly
/// what was there (the rest of the target, then `[2, 1, node MAC]`), so every repeat sees the
/// same 86 bytes. A source link-layer option there (as a host sends it) would be overwritten
/// by the first answer and fail the checksum from the second repeat on; the program walks and
/// sums one option unit either way.
fn ns_for(target: [u8; 16]) -> Vec<u8> {
    let group = solicited_node(target);
    Packet::eth(multicast_mac(group), CLIENT_MAC)
        .ipv6(CLIENT6, group, 0)
        .ns(target)
        .tlla(NODE_MAC)
        .build()
}

/// TCP [CLIENT6]:SPORT -> [VIP6]:`dport` (74 bytes: the TCP checksum lies past the restored
/// 64; the program never reads it, and after a DNAT it drifts from repeat to repeat).
fn tcp6_to(dport: u16, flags: u8) -> Vec<u8> {
    Packet::eth(NODE_MAC, CLIENT_MAC)
        .ipv6(CLIENT6, VIP6, 0)
        .tcp(SPORT, dport, flags)
        .seq(1)
        .build()
}

fn tcp_to(dport: u16, flags: u8) -> [u8; 64] {
    frame64(
        Packet::eth(NODE_MAC, CLIENT_MAC)
            .ipv4(CLIENT_IP, VIP)
            .ip_id(1)
            .dont_fragment()
            .tcp(SPORT, dport, flags)
            .seq(1)
            .no_l4_checksum(),
    )
}

/// A check of one run's output frame.
type OutputCheck = fn(&[u8]) -> Result<()>;

struct Case {
    name: &'static str,
    prog: &'static str,
    /// 64 bytes or more; the first 64 are restored before every repeat.
    frame: Vec<u8>,
    verdict: u32,
    /// Checks the output frame and the counter deltas over `n` timed repeats.
    check: fn(&[u8], &Stats, u64) -> Result<()>,
    /// Checks the output of one run (repeat 1, before timing) for what repeats cannot show:
    /// the bytes past the restored 64.
    once: Option<OutputCheck>,
    /// Run once before timing (to put the flow into conntrack).
    prime: bool,
    goal: Option<f64>,
}

fn lb_out(out: &[u8], nat: bool) -> Result<u8> {
    let dst_mac: [u8; 6] = out[0..6].try_into()?;
    let i = (0..N_BACKENDS)
        .find(|&i| backend_mac(i) == dst_mac)
        .with_context(|| format!("dst MAC {dst_mac:02x?} is no backend's"))?;
    ensure!(out[6..12] == NODE_MAC[..], "src MAC is not the node's");
    if nat {
        ensure!(
            out[30..34] == backend_ip(i),
            "DNAT: dst IP is not backend {i}"
        );
        ensure!(
            out[36..38] == BACKEND_PORT.to_be_bytes(),
            "DNAT: dst port is not the backend port"
        );
        let csum = checksum(&out[14..34]);
        ensure!(csum == 0, "IPv4 checksum wrong after DNAT");
    } else {
        ensure!(out[30..34] == VIP, "dsr keeps the VIP as destination");
    }
    Ok(i)
}

/// The IPv6 twin of `lb_out`: which of the 3 fixture backends the frame went to.
fn lb_out6(out: &[u8], nat: bool) -> Result<u8> {
    let be = if nat { nat_be6 } else { dsr_be6 };
    let dst_mac: [u8; 6] = out[0..6].try_into()?;
    let i = (1..=3u8)
        .find(|&i| mac_of6(be(i)) == dst_mac)
        .with_context(|| format!("dst MAC {dst_mac:02x?} is no backend's"))?;
    ensure!(out[6..12] == NODE_MAC[..], "src MAC is not the node's");
    if nat {
        ensure!(out[38..54] == be(i), "DNAT: dst IP is not backend {i}");
        ensure!(
            out[56..58] == NAT6_PORT.to_be_bytes(),
            "DNAT: dst port is not the backend port"
        );
    } else {
        ensure!(out[38..54] == VIP6, "dsr keeps the VIP as destination");
    }
    Ok(i)
}

fn l4_sum_right(out: &[u8]) -> Result<()> {
    ensure!(l4_checksum_ok6(out), "TCP checksum wrong");
    Ok(())
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "no-op (restore only)",
            prog: vip_common::BENCH_NOOP_PROG,
            frame: udp_to(NOT_A_VIP).to_vec(),
            verdict: XDP_PASS,
            check: |_, d, _| {
                ensure!(d.rx == 0, "no-op must not run the program");
                Ok(())
            },
            once: None,
            prime: false,
            goal: None,
        },
        Case {
            name: "non-VIP IPv4 pass-through",
            prog: vip_common::BENCH_PROG,
            frame: udp_to(NOT_A_VIP).to_vec(),
            verdict: XDP_PASS,
            check: |out, d, n| {
                ensure!(out == udp_to(NOT_A_VIP), "frame changed");
                // The bench entry skips the verdict counters; rx counts every run.
                ensure!(d.rx == n, "rx counter {} != {n}", d.rx);
                ensure!(d.ipv4_to_vip == 0, "counted as VIP traffic");
                Ok(())
            },
            once: None,
            prime: false,
            goal: Some(1.2),
        },
        Case {
            name: "ARP reply for an owned VIP",
            prog: vip_common::BENCH_PROG,
            frame: arp_request(VIP).to_vec(),
            verdict: XDP_TX,
            check: |out, d, n| {
                ensure!(out[20..22] == [0, 2], "not an ARP reply");
                ensure!(out[22..28] == NODE_MAC, "reply does not carry the node MAC");
                ensure!(out[28..32] == VIP, "reply sender is not the VIP");
                ensure!(d.arp_reply == n, "arp_reply {} != {n}", d.arp_reply);
                Ok(())
            },
            once: None,
            prime: false,
            goal: None,
        },
        Case {
            name: "NA reply (NDP) for an owned IPv6 VIP",
            prog: vip_common::BENCH_PROG,
            frame: ns_for(VIP6),
            verdict: XDP_TX,
            check: |out, d, n| {
                ensure!(out.len() == 86, "NA length {}", out.len());
                ensure!(out[54] == 136, "not a Neighbor Advertisement");
                ensure!(out[0..6] == CLIENT_MAC, "NA not sent to the asker's MAC");
                ensure!(out[6..12] == NODE_MAC, "NA not from the node MAC");
                ensure!(out[22..38] == VIP6, "NA source is not the VIP");
                ensure!(out[38..54] == CLIENT6, "NA not addressed to the asker");
                ensure!(out[62..78] == VIP6, "NA target is not the VIP");
                ensure!(
                    out[78..80] == [2, 1] && out[80..86] == NODE_MAC,
                    "NA does not carry the node MAC as target link-layer address"
                );
                ensure!(l4_checksum_ok6(out), "ICMPv6 checksum wrong");
                ensure!(d.ndp_reply == n, "ndp_reply {} != {n}", d.ndp_reply);
                Ok(())
            },
            once: None,
            prime: false,
            goal: None,
        },
        Case {
            name: "LB new flow (TCP SYN, nat)",
            prog: vip_common::BENCH_PROG,
            frame: tcp_to(NAT_PORT, 0x02).to_vec(),
            verdict: XDP_TX,
            check: |out, d, n| {
                lb_out(out, true)?;
                ensure!(d.ct_new == n, "ct_new {} != {n}", d.ct_new);
                ensure!(d.lb_forward == n, "lb_forward {} != {n}", d.lb_forward);
                Ok(())
            },
            once: None,
            prime: false,
            goal: Some(3.5),
        },
        Case {
            name: "LB new flow (TCP SYN, nat), IPv6",
            prog: vip_common::BENCH_PROG,
            frame: tcp6_to(NAT6_PORT, 0x02),
            verdict: XDP_TX,
            check: |out, d, n| {
                lb_out6(out, true)?;
                ensure!(d.ct_new == n, "ct_new {} != {n}", d.ct_new);
                ensure!(d.lb_forward == n, "lb_forward {} != {n}", d.lb_forward);
                Ok(())
            },
            once: Some(l4_sum_right),
            prime: false,
            goal: Some(3.5),
        },
        Case {
            name: "LB conntrack hit (TCP ACK, nat)",
            prog: vip_common::BENCH_PROG,
            frame: tcp_to(NAT_PORT, 0x10).to_vec(),
            verdict: XDP_TX,
            check: |out, d, n| {
                lb_out(out, true)?;
                ensure!(d.ct_hit == n, "ct_hit {} != {n}", d.ct_hit);
                ensure!(d.lb_forward == n, "lb_forward {} != {n}", d.lb_forward);
                Ok(())
            },
            once: None,
            prime: true,
            goal: Some(2.0),
        },
        Case {
            name: "LB conntrack hit (TCP ACK, nat), IPv6",
            prog: vip_common::BENCH_PROG,
            frame: tcp6_to(NAT6_PORT, 0x10),
            verdict: XDP_TX,
            check: |out, d, n| {
                lb_out6(out, true)?;
                ensure!(d.ct_hit == n, "ct_hit {} != {n}", d.ct_hit);
                ensure!(d.lb_forward == n, "lb_forward {} != {n}", d.lb_forward);
                Ok(())
            },
            once: Some(l4_sum_right),
            prime: true,
            goal: Some(2.0),
        },
        Case {
            name: "LB new flow (TCP SYN, dsr)",
            prog: vip_common::BENCH_PROG,
            frame: tcp_to(DSR_PORT, 0x02).to_vec(),
            verdict: XDP_TX,
            check: |out, d, n| {
                lb_out(out, false)?;
                ensure!(d.ct_new == n, "ct_new {} != {n}", d.ct_new);
                Ok(())
            },
            once: None,
            prime: false,
            goal: Some(3.5),
        },
        Case {
            name: "LB new flow (TCP SYN, dsr), IPv6",
            prog: vip_common::BENCH_PROG,
            frame: tcp6_to(DSR6_PORT, 0x02),
            verdict: XDP_TX,
            check: |out, d, n| {
                lb_out6(out, false)?;
                ensure!(d.ct_new == n, "ct_new {} != {n}", d.ct_new);
                Ok(())
            },
            once: Some(l4_sum_right),
            prime: false,
            goal: Some(3.5),
        },
        Case {
            name: "LB conntrack hit (TCP ACK, dsr)",
            prog: vip_common::BENCH_PROG,
            frame: tcp_to(DSR_PORT, 0x10).to_vec(),
            verdict: XDP_TX,
            check: |out, d, n| {
                lb_out(out, false)?;
                ensure!(d.ct_hit == n, "ct_hit {} != {n}", d.ct_hit);
                Ok(())
            },
            once: None,
            prime: true,
            goal: Some(2.0),
        },
        Case {
            name: "LB conntrack hit (TCP ACK, dsr), IPv6",
            prog: vip_common::BENCH_PROG,
            frame: tcp6_to(DSR6_PORT, 0x10),
            verdict: XDP_TX,
            check: |out, d, n| {
                lb_out6(out, false)?;
                ensure!(d.ct_hit == n, "ct_hit {} != {n}", d.ct_hit);
                Ok(())
            },
            once: Some(l4_sum_right),
            prime: true,
            goal: Some(2.0),
        },
    ]
}

fn stats(ebpf: &Ebpf) -> Result<Stats> {
    let m: PerCpuArray<_, Stats> =
        PerCpuArray::try_from(ebpf.map(map_names::STATS).context("STATS map")?)?;
    let mut t = Stats::default();
    for s in m.get(&0, 0)?.iter() {
        t.add(s);
    }
    Ok(t)
}

/// A second handle on the object's array map `name`, for writing it after the daemon's map
/// types have taken the object's own.
fn array_handle<V: aya::Pod>(ebpf: &Ebpf, name: &str) -> Result<Array<MapData, V>> {
    let Some(Map::Array(d)) = ebpf.map(name) else {
        bail!("no array map {name} in the vip object");
    };
    let fd = d
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the fd of {name}"))?;
    Ok(Array::try_from(Map::Array(MapData::from_fd(fd)?))?)
}

/// The embedded vip object with `progs` loaded, its maps written by the daemon's own calls for
/// a node on `ifindex` (MAC `mac`) that owns `vips` (IPv4 ones with their prefilter bit, all
/// with their counters) and serves `services`; then the IPv6 services `services6` gives for a
/// `RINGS` of that many slots, written by `testkit::lb6` (tables at the top of `RINGS`, the
/// daemon's at the bottom). The userspace map handles are dropped here; the maps stay in the
/// kernel with the loaded programs that use them.
pub fn load_vip(
    progs: &[&str],
    ifindex: u32,
    mac: [u8; 6],
    vips: &[IpAddr],
    services: &[Service],
    services6: fn(u32) -> Vec<Svc6>,
) -> Result<Ebpf> {
    let obj = vip_userspace::dataplane::load::OBJECT;
    ensure!(
        !obj.is_empty(),
        "eBPF object not embedded: run `cargo xtask build-ebpf --release` and rebuild"
    );
    // Sized and configured as the daemon loads it (map sizes, conntrack mask, counter
    // stripes for this machine's CPUs), so the figures are of the program that runs.
    use vip_userspace::dataplane::{
        load::{self, Sizes},
        memory::Globals,
    };
    let sizes = Sizes::default();
    let globals = Globals::new(&sizes, load::possible_cpus());
    let mut loader = aya::EbpfLoader::new();
    load::configure(&mut loader, &sizes, &globals);
    let mut ebpf = loader.load(obj).context("loading the vip object")?;
    for &name in progs {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        p.load()
            .with_context(|| format!("verifier rejects {name}"))?;
    }
    let mut rings: Array<MapData, u32> = array_handle(&ebpf, map_names::RINGS)?;
    let mut filter: Array<MapData, u64> = array_handle(&ebpf, map_names::VIP_FILTER)?;
    let mut maps = vip_userspace::dataplane::maps::Maps::take(&mut ebpf)?;
    maps.set_iface(ifindex, mac)?;
    for &vip in vips {
        maps.own(vip, ifindex)?;
    }
    // The IPv6 maps `LbMaps` takes out of the object stay reachable for `testkit::lb6`
    // through pins of their own, removed once written.
    let pins6 =
        std::path::PathBuf::from(format!("/sys/fs/bpf/vip-bench-lb6-{}", std::process::id()));
    std::fs::create_dir_all(&pins6).with_context(|| format!("creating {}", pins6.display()))?;
    for (name, pin) in [
        (map_names::SERVICES6, vip_common::pin_names::SERVICES6),
        (map_names::BACKENDS6, vip_common::pin_names::BACKENDS6),
    ] {
        ebpf.map(name)
            .with_context(|| format!("no map {name}"))?
            .pin(pins6.join(pin))
            .with_context(|| format!("pinning {name}"))?;
    }
    let mut sync = ServiceSync::new(
        LbMaps::take(&mut ebpf)?,
        vip_userspace::maglev::DEFAULT_M,
        0x5eed,
    )?;
    sync.apply(services)?;
    // After every prefilter write of `Maps` and the writer (they rewrite whole words from
    // their own copy, which has none of these services' bits).
    let svcs6 = services6(rings.len());
    if !svcs6.is_empty() {
        lb6::install(&mut ebpf, Some(&pins6), &mut rings, &mut filter, &svcs6);
    }
    let _ = std::fs::remove_dir_all(&pins6);
    Ok(ebpf)
}

fn load(ifindex: u32) -> Result<Ebpf> {
    let backends: Vec<Backend> = (0..N_BACKENDS)
        .map(|i| Backend {
            addr: Ipv4Addr::from(backend_ip(i)).into(),
            port: BACKEND_PORT,
            weight: 1,
        })
        .collect();
    let dsr_backends: Vec<Backend> = backends
        .iter()
        .map(|b| Backend {
            port: DSR_PORT,
            ..b.clone()
        })
        .collect();
    load_vip(
        &[vip_common::BENCH_PROG, vip_common::BENCH_NOOP_PROG],
        ifindex,
        NODE_MAC,
        &[Ipv4Addr::from(VIP).into(), Ipv6Addr::from(VIP6).into()],
        &[
            Service {
                vip: Ipv4Addr::from(VIP).into(),
                port: NAT_PORT,
                proto: Proto::Tcp,
                mode: LbMode::Nat,
                backends: backends.into(),
            },
            Service {
                vip: Ipv4Addr::from(VIP).into(),
                port: DSR_PORT,
                proto: Proto::Tcp,
                mode: LbMode::Dsr,
                backends: dsr_backends.into(),
            },
        ],
        lb6::services6,
    )
}

/// xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
/// data_end is the frame length: the kernel takes it as where the frame ends.
pub fn xdp_md(ifindex: u32, len: u32) -> [u8; 24] {
    let mut c = [0u8; 24];
    c[4..8].copy_from_slice(&len.to_ne_bytes());
    c[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    c
}

pub struct Timing {
    pub name: &'static str,
    pub ns: u64,
    pub goal: Option<f64>,
}

/// The cases' timings, and the breakdown's (empty program, one FIB lookup).
fn measure(ifindex: u32, repeat: u32, calls: usize) -> Result<(Vec<Timing>, Vec<Timing>)> {
    pin_cpu(1);
    let mut ebpf = load(ifindex)?;
    let mut out = Vec::new();
    for case in cases() {
        let len = case.frame.len();
        let ctx = xdp_md(ifindex, len as u32);
        let head: [u8; RESTORED] = case
            .frame
            .get(..RESTORED)
            .and_then(|h| h.try_into().ok())
            .with_context(|| format!("{}: frame shorter than {RESTORED} bytes", case.name))?;
        let mut bf: Array<_, [u8; RESTORED]> = Array::try_from(
            ebpf.map_mut(map_names::BENCH_FRAME)
                .context("BENCH_FRAME")?,
        )?;
        bf.set(0, head, 0)?;
        let prog: &Xdp = ebpf
            .program(case.prog)
            .context("bench program")?
            .try_into()?;
        let mut buf = vec![0u8; len];
        let run = |repeat: u32, buf: &mut [u8]| {
            prog.test_run(TestRunOptions {
                data_in: Some(&case.frame),
                data_out: Some(buf),
                ctx_in: Some(&ctx),
                repeat,
                ..Default::default()
            })
        };
        if let Some(once) = case.once {
            let r = run(1, &mut buf).context("single run")?;
            ensure!(
                r.return_value == case.verdict && r.data_size_out as usize == len,
                "{}: single run: verdict {}, {} bytes",
                case.name,
                r.return_value,
                r.data_size_out
            );
            once(&buf).with_context(|| format!("{}: single run's output", case.name))?;
        }
        if case.prime {
            let r = run(1, &mut buf).context("priming run")?;
            ensure!(
                r.return_value == case.verdict,
                "{}: priming verdict",
                case.name
            );
        }
        let mut ns = Vec::new();
        for _ in 0..calls {
            if stopped() {
                bail!("interrupted");
            }
            let before = stats(&ebpf)?;
            let r = run(repeat, &mut buf).with_context(|| format!("test_run {}", case.name))?;
            let d = counters::delta(counters::TOTALS, &before, &stats(&ebpf)?);
            ensure!(
                r.return_value == case.verdict,
                "{}: verdict {} (want {}); counters moved: {}",
                case.name,
                r.return_value,
                case.verdict,
                counters::nonzero(counters::TOTALS, &d),
            );
            ensure!(
                r.data_size_out as usize == len,
                "{}: output length",
                case.name
            );
            (case.check)(&buf, &d, repeat as u64).with_context(|| {
                format!(
                    "{}: output or counters wrong (counters moved: {})",
                    case.name,
                    counters::nonzero(counters::TOTALS, &d)
                )
            })?;
            // The kernel reports the mean time of one repeat, in ns.
            ns.push(r.duration.as_nanos() as u64);
        }
        ns.sort_unstable();
        out.push(Timing {
            name: case.name,
            ns: ns[ns.len() / 2],
            goal: case.goal,
        });
    }
    Ok((out, breakdown(&xdp_md(ifindex, 64), repeat, calls)?))
}

/// For explaining the figures: an empty program, and one bpf_fib_lookup as the load balancer
/// makes it (to an on-link backend with a permanent neighbour), from `xdp-gen`; in that order.
fn breakdown(ctx: &[u8; 24], repeat: u32, calls: usize) -> Result<Vec<Timing>> {
    let path = testbed::ebpf_dir().join("xdp-gen");
    let mut ebpf = Ebpf::load_file(&path).with_context(|| {
        format!(
            "loading {} (cargo xtask build-ebpf --release)",
            path.display()
        )
    })?;
    let to_backend = frame64(
        Packet::eth(NODE_MAC, CLIENT_MAC)
            .ipv4(CLIENT_IP, backend_ip(0))
            .ip_id(1)
            .dont_fragment()
            .tcp(40000, 8080, 0x10)
            .seq(1)
            .window(0)
            .no_l4_checksum(),
    );
    let mut out = Vec::new();
    for (name, prog, verdict) in [
        ("empty program (xdp_noop)", "xdp_noop", XDP_PASS),
        ("one bpf_fib_lookup (xdp_fib)", "xdp_fib", XDP_TX),
    ] {
        let p: &mut Xdp = ebpf
            .program_mut(prog)
            .with_context(|| format!("no {prog}"))?
            .try_into()?;
        p.load()
            .with_context(|| format!("verifier rejects {prog}"))?;
        let mut ns = Vec::new();
        for _ in 0..calls {
            let r = p.test_run(TestRunOptions {
                data_in: Some(&to_backend),
                ctx_in: Some(ctx),
                repeat,
                ..Default::default()
            })?;
            ensure!(
                r.return_value == verdict,
                "{name}: verdict {} (want {verdict})",
                r.return_value
            );
            ns.push(r.duration.as_nanos() as u64);
        }
        ns.sort_unstable();
        out.push(Timing {
            name,
            ns: ns[ns.len() / 2],
            goal: None,
        });
    }
    Ok(out)
}

pub fn run(quick: bool, rows: &mut Vec<Row>, notes: &mut Vec<String>) -> Result<()> {
    let (repeat, calls) = if quick { (100_000, 3) } else { (1_000_000, 5) };
    let ns = Netns::new("vb-tr");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&[
        "addr",
        "add",
        &format!("{}/24", Ipv4Addr::from(NODE_IP)),
        "dev",
        "v0",
    ]);
    // The node MAC in IFACES is v0's own, as the daemon writes it; bpf_fib_lookup gives it too.
    ns.ip(&["link", "set", "v0", "address", "02:00:00:00:00:0a"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.sysctl("net.ipv4.conf.all.forwarding", "1");
    ns.sysctl("net.ipv4.conf.v0.forwarding", "1");
    // The IPv6 fixture's prefixes, backends' neighbours and forwarding.
    lb6::setup_netns(&ns, "v0");
    for i in 0..N_BACKENDS {
        let mac = backend_mac(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ns.ip(&[
            "neigh",
            "add",
            &Ipv4Addr::from(backend_ip(i)).to_string(),
            "lladdr",
            &mac,
            "dev",
            "v0",
            "nud",
            "permanent",
        ]);
    }
    let (cases, breakdown) = ns.run(move || {
        let ifindex = crate::ifindex("v0")?;
        measure(ifindex, repeat, calls)
    })?;
    let noop = cases
        .iter()
        .find(|t| t.name.starts_with("no-op"))
        .context("no-op timing")?;
    let [empty, fib] = &breakdown[..] else {
        bail!("breakdown: {} timings, want 2", breakdown.len());
    };
    for t in &cases {
        let ratio = t.ns as f64 / noop.ns as f64;
        let mut row = Row::new(format!("test_run ns/pkt: {}", t.name))
            .result(format!("{} ns", t.ns))
            .baseline(format!("no-op {} ns", noop.ns))
            .ratio(ratio);
        if let Some(g) = t.goal {
            row = row.goal_at_most(ratio, g, &format!("{g}× no-op"));
        }
        rows.push(row);
    }
    for t in [noop, fib] {
        rows.push(
            Row::new(format!(
                "test_run ns/pkt, breakdown: {} vs an empty program",
                t.name
            ))
            .result(format!("{} ns", t.ns))
            .baseline(format!("empty {} ns", empty.ns))
            .ratio(t.ns as f64 / empty.ns as f64),
        );
    }
    notes.push(format!(
        "test_run: median of {calls} calls × repeat {repeat} per case (kernel-reported mean per repeat, whole ns), \
         entries `vip_bench` / `vip_bench_noop` restore the 64-byte frame before every repeat; thread pinned to CPU 1; \
         ingress = a veth in a private namespace (forwarding on, 10 on-link backends with permanent neighbours); \
         verdict, output frame and counters checked for every call. \
         IPv6 rows: `testkit::lb6`'s services on [2001:db8::100] (dsr 80/TCP, nat 8080/TCP, 3 on-link backends each) in the same object, \
         74-byte TCP frames and an 86-byte NS (to the VIP's solicited-node group, one 8-byte option) of which the first 64 bytes are restored; \
         the NS's option is the target link-layer option the NA writes in its place, so every repeat sees the same frame; \
         the TCP checksum (past byte 64) is checked on one run before the timed ones. Breakdown rows: `xdp_noop` (returns XDP_PASS) and `xdp_fib` \
         (one bpf_fib_lookup to an on-link backend, as the LB makes it per forwarded packet) from the bench's xdp-gen object."
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_holds_the_restored_bytes() {
        for c in cases() {
            assert!(
                c.frame.len() >= RESTORED,
                "{}: {} bytes",
                c.name,
                c.frame.len()
            );
        }
    }

    /// Past the restored 64 bytes the NS holds exactly what the NA leaves there (the rest of
    /// the target, then the target link-layer option with the node MAC), and is a valid NS.
    #[test]
    fn ns_tail_is_what_the_na_writes() {
        let f = ns_for(VIP6);
        assert_eq!(f.len(), 86);
        assert!(l4_checksum_ok6(&f));
        assert_eq!(f[54], 135);
        assert_eq!(&f[62..78], &VIP6);
        assert_eq!(&f[78..80], &[2, 1]);
        assert_eq!(&f[80..86], &NODE_MAC);
    }

    #[test]
    fn ipv6_tcp_frames_are_valid() {
        for flags in [0x02, 0x10] {
            let f = tcp6_to(NAT6_PORT, flags);
            assert_eq!(f.len(), 74);
            assert!(l4_checksum_ok6(&f));
        }
    }
}
