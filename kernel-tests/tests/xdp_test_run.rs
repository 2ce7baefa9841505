//! The XDP program, loaded into the kernel and run with BPF_PROG_TEST_RUN: table-driven
//! cases {name, maps, input frame, expected verdict, expected output frame}.
use aya::{
    maps::HashMap,
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use testkit::packet::Packet;
use vip_common::{map_names, VipKey, VipStats, VipValue, VIP_F_OWNED};

#[path = "common/test_run.rs"]
mod test_run;
use test_run::{loaded, run, set_iface, stats, IFINDEX, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX};

const NODE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0c];
const CLIENT_IP: [u8; 4] = [192, 0, 2, 10];
const OWNED: [u8; 4] = [192, 0, 2, 100];
const HELD_ELSEWHERE: [u8; 4] = [192, 0, 2, 101];
const OWNED_ON_OTHER_LINK: [u8; 4] = [192, 0, 2, 102];
const UNKNOWN: [u8; 4] = [192, 0, 2, 200];

fn load() -> Ebpf {
    let mut ebpf = loaded();
    set_iface(&mut ebpf, Some(NODE_MAC));
    {
        let mut vips: HashMap<_, VipKey, VipValue> =
            HashMap::try_from(ebpf.map_mut(map_names::VIPS).unwrap()).unwrap();
        for (addr, flags, ifindex) in [
            (OWNED, VIP_F_OWNED, IFINDEX),
            (HELD_ELSEWHERE, 0, 0),
            (OWNED_ON_OTHER_LINK, VIP_F_OWNED, 99),
        ] {
            vips.insert(VipKey { addr_be: addr }, VipValue { flags, ifindex }, 0)
                .unwrap();
        }
    }
    {
        // The daemon sets a VIP's prefilter bit with the VIP (Maps::own); do the same.
        let mut filter: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(ebpf.map_mut(map_names::VIP_FILTER).unwrap()).unwrap();
        for addr in [OWNED, HELD_ELSEWHERE, OWNED_ON_OTHER_LINK] {
            let (w, mask) = vip_common::vip_filter_slot(addr);
            let cur = filter.get(&w, 0).unwrap();
            filter.set(w, cur | mask, 0).unwrap();
        }
    }
    let mut vs: HashMap<_, VipKey, VipStats> =
        HashMap::try_from(ebpf.map_mut(map_names::VIP_STATS).unwrap()).unwrap();
    vs.insert(VipKey { addr_be: OWNED }, VipStats::default(), 0)
        .unwrap();
    ebpf
}

fn vip_stats(ebpf: &Ebpf, addr: [u8; 4]) -> VipStats {
    let m: HashMap<_, VipKey, VipStats> =
        HashMap::try_from(ebpf.map(map_names::VIP_STATS).unwrap()).unwrap();
    m.get(&VipKey { addr_be: addr }, 0).unwrap()
}

/// Ethernet (+ optional 802.1Q tag) + ARP (RFC 826).
#[allow(clippy::too_many_arguments)]
fn arp_frame(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    vlan: Option<u16>,
    oper: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let p = Packet::eth(eth_dst, eth_src);
    let p = match vlan {
        Some(id) => p.vlan(id),
        None => p,
    };
    p.arp(oper, sha, spa, tha, tpa).build()
}

fn request(tpa: [u8; 4], vlan: Option<u16>) -> Vec<u8> {
    arp_frame(
        [0xff; 6], CLIENT_MAC, vlan, 1, CLIENT_MAC, CLIENT_IP, [0; 6], tpa,
    )
}

fn reply_expected(vip: [u8; 4], vlan: Option<u16>) -> Vec<u8> {
    arp_frame(
        CLIENT_MAC, NODE_MAC, vlan, 2, NODE_MAC, vip, CLIENT_MAC, CLIENT_IP,
    )
}

/// UDP 192.0.2.10:12345 -> `dst`:80, no payload; neither checksum filled (the program
/// reads neither).
fn ipv4_udp(dst: [u8; 4]) -> Vec<u8> {
    Packet::eth(NODE_MAC, CLIENT_MAC)
        .ipv4([192, 0, 2, 10], dst)
        .ip_id(1)
        .no_ip_checksum()
        .udp(12345, 80)
        .no_l4_checksum()
        .build()
}

/// IPv6 with no next header, all-zero addresses.
fn ipv6_frame() -> Vec<u8> {
    Packet::eth(NODE_MAC, CLIENT_MAC)
        .ipv6([0; 16], [0; 16], 59)
        .build()
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    verdict: u32,
    /// None: the frame must come out unchanged.
    output: Option<Vec<u8>>,
}

#[test]
fn arp_and_passthrough_cases() {
    let ebpf = load();
    let mut bad_htype = request(OWNED, None);
    bad_htype[15] = 6; // htype 6 (IEEE 802)
    let mut bad_plen = request(OWNED, None);
    bad_plen[19] = 16;
    let cases = vec![
        Case {
            name: "request for owned VIP -> reply in place",
            input: request(OWNED, None),
            verdict: XDP_TX,
            output: Some(reply_expected(OWNED, None)),
        },
        Case {
            name: "unicast request for owned VIP (NUD) -> reply",
            input: arp_frame(
                NODE_MAC, CLIENT_MAC, None, 1, CLIENT_MAC, CLIENT_IP, NODE_MAC, OWNED,
            ),
            verdict: XDP_TX,
            output: Some(reply_expected(OWNED, None)),
        },
        Case {
            name: "VLAN-tagged request -> tagged reply",
            input: request(OWNED, Some(42)),
            verdict: XDP_TX,
            output: Some(reply_expected(OWNED, Some(42))),
        },
        Case {
            name: "request for VIP held elsewhere -> drop",
            input: request(HELD_ELSEWHERE, None),
            verdict: XDP_DROP,
            output: None,
        },
        Case {
            name: "request for VIP owned on another link -> drop",
            input: request(OWNED_ON_OTHER_LINK, None),
            verdict: XDP_DROP,
            output: None,
        },
        Case {
            name: "request for non-VIP -> pass",
            input: request(UNKNOWN, None),
            verdict: XDP_PASS,
            output: None,
        },
        Case {
            name: "ARP reply about owned VIP -> pass",
            input: arp_frame(
                NODE_MAC, CLIENT_MAC, None, 2, CLIENT_MAC, OWNED, NODE_MAC, CLIENT_IP,
            ),
            verdict: XDP_PASS,
            output: None,
        },
        Case {
            name: "gratuitous ARP for owned VIP from another host -> pass",
            input: arp_frame(
                [0xff; 6], CLIENT_MAC, None, 1, CLIENT_MAC, OWNED, [0; 6], OWNED,
            ),
            verdict: XDP_PASS,
            output: None,
        },
        Case {
            name: "ARP with non-Ethernet htype -> pass",
            input: bad_htype,
            verdict: XDP_PASS,
            output: None,
        },
        Case {
            name: "ARP with plen 16 -> pass",
            input: bad_plen,
            verdict: XDP_PASS,
            output: None,
        },
        Case {
            name: "IPv4 to owned VIP -> pass",
            input: ipv4_udp(OWNED),
            verdict: XDP_PASS,
            output: None,
        },
        Case {
            name: "IPv4 elsewhere -> pass",
            input: ipv4_udp(UNKNOWN),
            verdict: XDP_PASS,
            output: None,
        },
        Case {
            name: "IPv6 -> pass",
            input: ipv6_frame(),
            verdict: XDP_PASS,
            output: None,
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let (verdict, out) = run(&ebpf, &c.input).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let want = c.output.as_ref().unwrap_or(&c.input);
        if verdict != c.verdict || &out != want {
            failures.push(format!(
                "{}: verdict {verdict} (want {}), output {:02x?} (want {:02x?})",
                c.name, c.verdict, out, want
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn set_deadline(ebpf: &mut Ebpf, deadline_ns: u64) {
    let mut c: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(ebpf.map_mut(map_names::DEADMAN).unwrap()).unwrap();
    c.set(0, deadline_ns, 0).unwrap();
}

#[test]
fn dead_man_deadline_silences_owned_vips() {
    let mut ebpf = load();
    let now = vip_userspace::dataplane::maps::monotonic_ns();
    // Checked in recently: answered.
    set_deadline(&mut ebpf, now + 60_000_000_000);
    assert_eq!(run(&ebpf, &request(OWNED, None)).unwrap().0, XDP_TX);
    // The daemon stopped checking in: silent, counted, like a non-owner.
    set_deadline(&mut ebpf, now - 1);
    let before = stats(&ebpf);
    assert_eq!(run(&ebpf, &request(OWNED, None)).unwrap().0, XDP_DROP);
    assert_eq!(stats(&ebpf).arp_deadman - before.arp_deadman, 1);
    // Other traffic is not the dead-man's business.
    assert_eq!(run(&ebpf, &ipv4_udp(UNKNOWN)).unwrap().0, XDP_PASS);
    // 0: off.
    set_deadline(&mut ebpf, 0);
    assert_eq!(run(&ebpf, &request(OWNED, None)).unwrap().0, XDP_TX);
}

#[test]
fn foreign_claims_on_an_owned_vip_are_counted_and_passed() {
    let ebpf = load();
    const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
    let before = stats(&ebpf);
    // Another node's gratuitous ARP, its reply, and its probe from our VIP.
    let garp = arp_frame([0xff; 6], OTHER, None, 1, OTHER, OWNED, [0; 6], OWNED);
    let reply = arp_frame(
        CLIENT_MAC, OTHER, None, 2, OTHER, OWNED, CLIENT_MAC, CLIENT_IP,
    );
    let probe = arp_frame([0xff; 6], OTHER, None, 1, OTHER, OWNED, [0; 6], CLIENT_IP);
    for f in [&garp, &reply, &probe] {
        assert_eq!(run(&ebpf, f).unwrap().0, XDP_PASS);
    }
    // Our own announcement (our MAC) and claims on a VIP held elsewhere are no conflict.
    let ours = arp_frame([0xff; 6], NODE_MAC, None, 1, NODE_MAC, OWNED, [0; 6], OWNED);
    let elsewhere = arp_frame(
        [0xff; 6],
        OTHER,
        None,
        1,
        OTHER,
        HELD_ELSEWHERE,
        [0; 6],
        HELD_ELSEWHERE,
    );
    run(&ebpf, &ours).unwrap();
    run(&ebpf, &elsewhere).unwrap();
    assert_eq!(stats(&ebpf).arp_conflict - before.arp_conflict, 3);
    let v = vip_stats(&ebpf, OWNED);
    assert_eq!(v.arp_conflict, 3);
    assert_eq!(v.conflict_mac, OTHER);
}

#[test]
fn counters_follow_verdicts() {
    let ebpf = load();
    let before = stats(&ebpf);
    let vip_before = vip_stats(&ebpf, OWNED);
    run(&ebpf, &request(OWNED, None)).unwrap();
    run(&ebpf, &request(OWNED, None)).unwrap();
    run(&ebpf, &request(HELD_ELSEWHERE, None)).unwrap();
    run(&ebpf, &ipv4_udp(OWNED)).unwrap();
    let after = stats(&ebpf);
    assert_eq!(after.rx - before.rx, 4);
    assert_eq!(after.tx - before.tx, 2);
    assert_eq!(after.arp_reply - before.arp_reply, 2);
    assert_eq!(after.drop - before.drop, 1);
    assert_eq!(after.arp_drop_not_owner - before.arp_drop_not_owner, 1);
    assert_eq!(after.pass - before.pass, 1);
    assert_eq!(after.ipv4_to_vip - before.ipv4_to_vip, 1);
    let vip_after = vip_stats(&ebpf, OWNED);
    assert_eq!(vip_after.arp_reply - vip_before.arp_reply, 2);
    assert_eq!(vip_after.ipv4_pkts - vip_before.ipv4_pkts, 1);
}

#[test]
fn truncated_frames_pass_never_abort() {
    let ebpf = load();
    for full in [request(OWNED, None), request(OWNED, Some(7))] {
        for len in 0..full.len() {
            let input = &full[..len];
            match run(&ebpf, input) {
                Ok((verdict, out)) => {
                    assert_ne!(verdict, XDP_ABORTED, "len {len}");
                    assert_eq!(verdict, XDP_PASS, "len {len}: truncated frame must pass");
                    assert_eq!(out, input, "len {len}: frame must be untouched");
                }
                // The kernel itself refuses test frames shorter than an Ethernet header
                // (EINVAL), as no driver hands XDP one.
                Err(e) => assert!(len < 14, "len {len}: unexpected error {e}"),
            }
        }
    }
    let s = stats(&ebpf);
    assert!(s.arp_malformed > 0, "truncated ARP bodies are counted");
}

/// Collects log records, standing in for the daemon's `log` -> `tracing` bridge.
#[derive(Clone, Default)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<(log::Level, String)>>>);

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push((r.level(), r.args().to_string()));
    }
    fn flush(&self) {}
}

#[test]
fn owned_vip_without_interface_entry_passes_to_kernel_and_logs() {
    let mut ebpf = load();
    let records = Collect::default();
    let mut logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, records.clone())
        .expect("the program carries aya-log's ring buffer");
    set_iface(&mut ebpf, None);
    let input = request(OWNED, None);
    let (verdict, out) = run(&ebpf, &input).unwrap();
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, input);
    assert_eq!(stats(&ebpf).arp_no_iface, 1);
    logger.flush();
    let got = records.0.lock().unwrap().clone();
    assert!(
        got.iter().any(|(lvl, msg)| *lvl == log::Level::Warn
            && msg.contains("ifindex 1 has no entry in IFACES")),
        "the XDP program's warning reaches the userspace logger: {got:?}"
    );
}

/// The bench entry restores its input from BENCH_FRAME before every run, so repeated runs
/// (which reuse the rewritten buffer) all see the original frame.
#[test]
fn bench_entry_restores_the_frame_each_repeat() {
    use aya::maps::Array;
    let mut ebpf = load();
    for name in [vip_common::BENCH_PROG, vip_common::BENCH_NOOP_PROG] {
        let p: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load()
            .unwrap_or_else(|e| panic!("verifier rejects {name}: {e}"));
    }
    let mut req = request(OWNED, None);
    req.resize(64, 0);
    let mut frame = [0u8; 64];
    frame.copy_from_slice(&req);
    let mut bf: Array<_, [u8; 64]> =
        Array::try_from(ebpf.map_mut(vip_common::map_names::BENCH_FRAME).unwrap()).unwrap();
    bf.set(0, frame, 0).unwrap();
    let prog: &Xdp = ebpf
        .program(vip_common::BENCH_PROG)
        .unwrap()
        .try_into()
        .unwrap();
    let before = stats(&ebpf);
    let garbage = [0xaau8; 64];
    let mut out = [0u8; 64];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(&garbage),
            data_out: Some(&mut out),
            repeat: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(res.return_value, XDP_TX);
    let mut want = reply_expected(OWNED, None);
    want.resize(64, 0);
    assert_eq!(&out[..], &want[..]);
    assert_eq!(
        stats(&ebpf).arp_reply - before.arp_reply,
        1000,
        "every repeat answered"
    );
}
