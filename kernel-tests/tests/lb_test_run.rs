//! The load-balancer path through BPF_PROG_TEST_RUN: Katran-style fixtures with exact output
//! bytes (including the backend Maglev picks), and a fuzz run in which every frame must get
//! the same verdict and bytes from the kernel and from the reference model.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use testbed::{require_root_and_bpf, Netns};
use testkit::packet::{checksum, multicast_mac, solicited_node, Packet};
use testkit::refmodel::{self, Fib, FibTable, Model, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX};
use vip_userspace::{
    dataplane::{
        lb::LbMaps,
        load::{self, Sizes},
        maps::Maps,
    },
    maglev::Sizing,
    model::{Backend, LbMode, Proto, Service},
    reconcile::services::ServiceSync,
};

const VIP: [u8; 4] = [192, 0, 2, 100];
const NOT_OWNED: [u8; 4] = [192, 0, 2, 101];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0c];
/// IPv6 VIPs for the NDP responder: owned (any link), held elsewhere; and a client.
const VIP6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const NOT_OWNED6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
const CLIENT6: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const SEED: u32 = 0x7669_7031;
const M: u32 = 65537;

fn dsr_be(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 20 + i)
}
fn nat_be(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 20 + i)
}
fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [2, 0xbe, o[0], o[1], o[2], o[3]]
}

fn svc(port: u16, proto: Proto, mode: LbMode, backends: &[(Ipv4Addr, u16)]) -> Service {
    Service {
        vip: Ipv4Addr::from(VIP).into(),
        port,
        proto,
        mode,
        backends: backends
            .iter()
            .map(|(a, p)| Backend {
                addr: (*a).into(),
                port: *p,
                weight: 1,
            })
            .collect(),
    }
}

fn services() -> Vec<Service> {
    let dsr: Vec<_> = (1..=3).map(|i| (dsr_be(i), 80)).collect();
    let dsr53: Vec<_> = (1..=3).map(|i| (dsr_be(i), 53)).collect();
    let nat: Vec<_> = (1..=3).map(|i| (nat_be(i), 8080)).collect();
    let nat53: Vec<_> = (1..=3).map(|i| (nat_be(i), 53)).collect();
    vec![
        svc(80, Proto::Tcp, LbMode::Dsr, &dsr),
        svc(53, Proto::Udp, LbMode::Dsr, &dsr53),
        svc(8080, Proto::Tcp, LbMode::Nat, &nat),
        svc(5353, Proto::Udp, LbMode::Nat, &nat53),
        svc(7000, Proto::Tcp, LbMode::Local, &[]),
        // 192.0.2.24 is on-link with no neighbour entry; 203.0.113.9 has no route.
        svc(9999, Proto::Tcp, LbMode::Dsr, &[(dsr_be(4), 9999)]),
        svc(9998, Proto::Tcp, LbMode::Nat, &[(dsr_be(4), 9998)]),
        svc(
            9997,
            Proto::Tcp,
            LbMode::Dsr,
            &[(Ipv4Addr::new(203, 0, 113, 9), 9997)],
        ),
        svc(9996, Proto::Tcp, LbMode::Dsr, &[]),
    ]
}

/// Everything a case needs, living on one thread inside the fixture namespace (the program
/// resolves `ingress_ifindex` and its FIB lookups in the caller's namespace) and pinned to
/// CPU 0 (conntrack is per-CPU).
struct Fx {
    pins: PathBuf,
    ebpf: Ebpf,
    sync: ServiceSync,
    ifindex: u32,
}

/// A namespace with the ingress link `in0`, on-link backends with permanent neighbour
/// entries and forwarding on, so the FIB answers deterministically; then `f` runs there.
fn with_fixture<T: Send + 'static>(tag: &str, f: impl FnOnce(&mut Fx) -> T + Send + 'static) -> T {
    with_fixture_sized(tag, FIXTURE_RING_SLOTS, Sizing::fixed(M), f)
}

/// Slots of the fixture's table map: room for 16 tables pairs of the largest size.
const FIXTURE_RING_SLOTS: u32 = 16 * 2 * M;

/// `with_fixture` with a table map of `ring_slots` slots.
fn with_fixture_sized<T: Send + 'static>(
    tag: &str,
    ring_slots: u32,
    sizing: Sizing,
    f: impl FnOnce(&mut Fx) -> T + Send + 'static,
) -> T {
    with_fixture_at(tag, fixture_sizes(ring_slots), sizing, f)
}

/// The fixture's map sizes, with a table map of `ring_slots` slots.
fn fixture_sizes(ring_slots: u32) -> Sizes {
    Sizes {
        ring_slots,
        max_services: 16,
        ..Sizes::default()
    }
}

/// `with_fixture` with maps of `sizes`.
fn with_fixture_at<T: Send + 'static>(
    tag: &str,
    sizes: Sizes,
    sizing: Sizing,
    f: impl FnOnce(&mut Fx) -> T + Send + 'static,
) -> T {
    require_root_and_bpf();
    let ns = Netns::new(&format!("vfx{tag}"));
    ns.ip(&["link", "add", "in0", "type", "veth", "peer", "name", "in1"]);
    ns.ip(&["link", "set", "in0", "address", "02:00:00:00:00:0a"]);
    for d in ["in0", "in1"] {
        ns.ip(&["link", "set", d, "up"]);
    }
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "in0"]);
    ns.ip(&["addr", "add", "198.51.100.1/24", "dev", "in0"]);
    ns.sysctl("net.ipv4.conf.in0.forwarding", "1");
    // The IPv6 services' backends (the fuzz installs those services).
    testkit::lb6::setup_netns(&ns, "in0");
    for i in 1..=3 {
        for ip in [dsr_be(i), nat_be(i)] {
            let m = mac_of(ip);
            let mac = m
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            ns.ip(&[
                "neigh",
                "add",
                &ip.to_string(),
                "lladdr",
                &mac,
                "nud",
                "permanent",
                "dev",
                "in0",
            ]);
        }
    }
    let out = ns.ip(&["-o", "link", "show", "dev", "in0"]);
    let ifindex: u32 = String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pins = PathBuf::from(format!("/sys/fs/bpf/vip-test-fx{tag}"));
    ns.run(move || {
        pin_cpu0();
        load::remove_pins(&pins);
        let mut ebpf = load::load(&pins, sizes).expect("load");
        let prog: &mut Xdp = ebpf
            .program_mut(vip_common::XDP_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().expect("verifier accepts vip_xdp");
        let mut maps = Maps::take(&mut ebpf).unwrap();
        maps.set_iface(ifindex, IN_MAC).unwrap();
        maps.own(Ipv4Addr::from(VIP).into(), 0).unwrap();
        // Known to the cluster, held by another node.
        maps.vips
            .insert(
                vip_common::VipKey { addr_be: NOT_OWNED },
                vip_common::VipValue {
                    flags: 0,
                    ifindex: 0,
                },
                0,
            )
            .unwrap();
        maps.own(std::net::Ipv6Addr::from(VIP6).into(), 0).unwrap();
        maps.route(std::net::Ipv6Addr::from(NOT_OWNED6).into(), 0)
            .unwrap();
        let mut sync = ServiceSync::new(LbMaps::take(&mut ebpf).unwrap(), sizing, SEED).unwrap();
        // The tables go in by plain stores into the mapped array (BPF_F_MMAPABLE); every
        // packet test below reads them back through the program.
        assert!(sync.rings_mapped(), "RINGS mapped into the process");
        let ch = sync.apply(&services()).unwrap();
        assert!(ch.failed.is_empty(), "fixture services placed: {ch:?}");
        let mut fx = Fx {
            pins: pins.clone(),
            ebpf,
            sync,
            ifindex,
        };
        let r = f(&mut fx);
        drop(fx);
        load::remove_pins(&pins);
        r
    })
}

impl Fx {
    fn fib(&self) -> FibTable {
        let mut t = FibTable {
            mtu: 1500,
            ..Default::default()
        };
        for i in 1..=3 {
            for ip in [dsr_be(i), nat_be(i)] {
                let dmac = mac_of(ip);
                t.routes.insert(
                    ip.octets(),
                    Fib::Success {
                        ifindex: self.ifindex,
                        smac: IN_MAC,
                        dmac,
                    },
                );
            }
        }
        t.routes.insert(dsr_be(4).octets(), Fib::NoNeigh);
        t
    }

    fn model(&self) -> Model {
        refmodel::from_pins(&self.pins, self.fib()).expect("model from the pinned maps")
    }

    fn run(&self, f: &[u8]) -> (u32, Vec<u8>) {
        let prog: &Xdp = self
            .ebpf
            .program(vip_common::XDP_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        // xdp_md: data, data_end (must equal the frame length), data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(f.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&self.ifindex.to_ne_bytes());
        let mut out = vec![0u8; f.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("test_run of {} bytes: {e}", f.len()));
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }
}

fn pin_cpu0() {
    // SAFETY: cpu_set_t is plain data; this sets the calling thread's affinity only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

// ---- frames -------------------------------------------------------------------------

/// Recompute the IPv4 and TCP/UDP checksums from scratch (frame without VLAN tag, no options):
/// what a rewritten frame must carry.
fn fix_checksums(f: &mut [u8], udp_zero: bool) {
    f[24..26].copy_from_slice(&[0, 0]);
    let ipc = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&ipc.to_be_bytes());
    let proto = f[23];
    let seg_len = f.len() - 34;
    let off = if proto == 6 { 34 + 16 } else { 34 + 6 };
    f[off..off + 2].copy_from_slice(&[0, 0]);
    if proto == 17 && udp_zero {
        return;
    }
    let mut covered = Vec::new();
    covered.extend_from_slice(&f[26..34]);
    covered.extend_from_slice(&[0, proto]);
    covered.extend_from_slice(&(seg_len as u16).to_be_bytes());
    covered.extend_from_slice(&f[34..]);
    let mut c = checksum(&covered);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

/// TCP `src`:`sport` -> VIP:`dport` with `flags`, seq 1, "data".
fn tcp(src: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Packet::eth(IN_MAC, CLIENT_MAC)
        .ipv4(src, VIP)
        .ip_id(0x1234)
        .dont_fragment()
        .tcp(sport, dport, flags)
        .seq(1)
        .payload(b"data")
        .build()
}

/// UDP `src`:`sport` -> VIP:`dport`, "ping"; `zero_csum`: without a checksum.
fn udp(src: [u8; 4], sport: u16, dport: u16, zero_csum: bool) -> Vec<u8> {
    let p = Packet::eth(IN_MAC, CLIENT_MAC)
        .ipv4(src, VIP)
        .ip_id(0x1234)
        .udp(sport, dport);
    let p = if zero_csum { p.no_l4_checksum() } else { p };
    p.payload(b"ping").build()
}

/// ICMP `typ` from a router about the reply VIP:vport -> client:cport (what a dsr backend
/// sent), quoting its IPv4 header and first 8 bytes. No checksum is filled (the program
/// reads none of them).
fn icmp_about(typ: u8, proto: u8, vport: u16, client: [u8; 4], cport: u16) -> Vec<u8> {
    let mut quoted_l4 = Vec::new();
    quoted_l4.extend_from_slice(&vport.to_be_bytes());
    quoted_l4.extend_from_slice(&cport.to_be_bytes());
    quoted_l4.extend_from_slice(&[0, 0, 0, 0]);
    Packet::eth(IN_MAC, CLIENT_MAC)
        .ipv4([203, 0, 113, 1], VIP)
        .ip_id(1)
        .no_ip_checksum()
        .icmp(typ, 4, [0, 0, 0x05, 0xdc])
        .no_l4_checksum()
        .ipv4(VIP, client)
        .proto(proto)
        .ip_id(2)
        .dont_fragment()
        .ttl(63)
        .ip_total_len(0x05dc)
        .no_ip_checksum()
        .payload(&quoted_l4)
        .build()
}

/// ARP request from the client (192.0.2.10) for `tpa`.
fn arp_req(tpa: [u8; 4]) -> Vec<u8> {
    Packet::eth([0xff; 6], CLIENT_MAC)
        .arp(1, CLIENT_MAC, [192, 0, 2, 10], [0; 6], tpa)
        .build()
}

fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// The same frame DNATed to addr:port, checksums recomputed from scratch.
fn dnat_expected(f: &[u8], addr: Ipv4Addr, port: u16, dmac: [u8; 6], udp_zero: bool) -> Vec<u8> {
    let mut e = with_macs(f.to_vec(), dmac, IN_MAC);
    e[30..34].copy_from_slice(&addr.octets());
    e[36..38].copy_from_slice(&port.to_be_bytes());
    fix_checksums(&mut e, udp_zero);
    e
}

/// Which backend of `list` the userspace Maglev table (of the fixture's fixed size) and the
/// shared flow hash give a flow.
fn maglev_pick(
    list: &[Ipv4Addr],
    port: u16,
    src: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
) -> Ipv4Addr {
    maglev_pick_sized(Sizing::fixed(M), list, port, src, sport, dport, proto)
}

fn maglev_pick_sized(
    sizing: Sizing,
    list: &[Ipv4Addr],
    port: u16,
    src: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
) -> Ipv4Addr {
    let entries: Vec<_> = list
        .iter()
        .map(|a| vip_userspace::maglev::Entry {
            id: format!("{a}:{port}"),
            weight: 1,
        })
        .collect();
    // The size every node gives a table of this many backends.
    let m = sizing.size(list.len());
    let t = vip_userspace::maglev::build(&entries, m).unwrap();
    let h = vip_common::flow_hash(src, sport.to_be_bytes(), dport.to_be_bytes(), proto, SEED);
    list[t[(h % m) as usize] as usize]
}

// ---- fixtures -----------------------------------------------------------------------

struct Case {
    name: &'static str,
    input: Vec<u8>,
    verdict: u32,
    output: Option<Vec<u8>>,
}

const CLIENT: [u8; 4] = [192, 0, 2, 10];

#[test]
fn fixtures() {
    with_fixture("fix", |fx| {
        let dsr: Vec<_> = (1..=3).map(dsr_be).collect();
        let nat: Vec<_> = (1..=3).map(nat_be).collect();
        let syn = tcp(CLIENT, 40000, 80, 0x02);
        let be = maglev_pick(&dsr, 80, CLIENT, 40000, 80, 6);
        // Pinned: the hash and the table are part of the cluster contract (every node, every
        // version, must pick the same backend for the same flow).
        assert_eq!(
            be,
            dsr_be(1),
            "flow 192.0.2.10:40000 -> VIP:80 lands on 192.0.2.21"
        );
        let nat_syn = tcp(CLIENT, 40001, 8080, 0x02);
        let nbe = maglev_pick(&nat, 8080, CLIENT, 40001, 8080, 6);
        let u = udp(CLIENT, 5000, 5353, false);
        let ube = maglev_pick(&nat, 53, CLIENT, 5000, 5353, 17);
        let uz = udp(CLIENT, 5001, 5353, true);
        let uzbe = maglev_pick(&nat, 53, CLIENT, 5001, 5353, 17);
        let mut frag = tcp(CLIENT, 40002, 80, 0x10);
        frag[20] = 0x20; // MF
        let mut opts = tcp(CLIENT, 40003, 80, 0x10);
        opts[14] = 0x46;
        let mut vlan = tcp(CLIENT, 40004, 80, 0x10);
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let mut big = tcp(CLIENT, 40005, 80, 0x02);
        big[16..18].copy_from_slice(&9000u16.to_be_bytes());
        let short_tcp = tcp(CLIENT, 40006, 80, 0x02)[..34 + 12].to_vec();
        let mut reply = arp_req(VIP);
        reply = with_macs(reply, CLIENT_MAC, IN_MAC);
        reply[20..22].copy_from_slice(&[0, 2]);
        reply[22..28].copy_from_slice(&IN_MAC);
        reply[28..32].copy_from_slice(&VIP);
        reply[32..38].copy_from_slice(&CLIENT_MAC);
        reply[38..42].copy_from_slice(&CLIENT);
        // Rewritten but not re-addressed: the kernel resolves the neighbour and forwards.
        let no_neigh = tcp(CLIENT, 40009, 9998, 0x02);
        let mut no_neigh_out = dnat_expected(&no_neigh, dsr_be(4), 9998, IN_MAC, false);
        no_neigh_out[0..12].copy_from_slice(&no_neigh[0..12]);
        let frag_needed = icmp_about(3, 6, 80, CLIENT, 40000);
        // The flow 192.0.2.10:40000 -> VIP:80 went to `be` above; its ICMP follows it.
        let icmp_nat = icmp_about(3, 6, 8080, CLIENT, 40001);
        let cases = vec![
            Case {
                name: "ICMP frag-needed about a dsr flow -> that flow's backend",
                input: frag_needed.clone(),
                verdict: XDP_TX,
                output: Some(with_macs(frag_needed.clone(), mac_of(be), IN_MAC)),
            },
            Case {
                name: "ICMP about a nat flow -> pass",
                input: icmp_nat,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "ICMP echo to the VIP -> pass",
                input: {
                    let mut e = icmp_about(8, 6, 80, CLIENT, 40000);
                    e[34] = 8;
                    e
                },
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "ARP for owned VIP -> reply",
                input: arp_req(VIP),
                verdict: XDP_TX,
                output: Some(reply),
            },
            Case {
                name: "ARP for VIP held elsewhere -> drop",
                input: arp_req(NOT_OWNED),
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "dsr SYN -> MACs to the Maglev backend",
                input: syn.clone(),
                verdict: XDP_TX,
                output: Some(with_macs(syn.clone(), mac_of(be), IN_MAC)),
            },
            Case {
                name: "cached next hop does not skip the MTU check",
                input: {
                    let mut b = syn.clone();
                    b[16..18].copy_from_slice(&9000u16.to_be_bytes());
                    b
                },
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "nat SYN -> DNAT to backend:8080, checksums valid",
                input: nat_syn.clone(),
                verdict: XDP_TX,
                output: Some(dnat_expected(&nat_syn, nbe, 8080, mac_of(nbe), false)),
            },
            Case {
                name: "nat UDP -> DNAT to backend:53",
                input: u.clone(),
                verdict: XDP_TX,
                output: Some(dnat_expected(&u, ube, 53, mac_of(ube), false)),
            },
            Case {
                name: "nat UDP with checksum 0 keeps 0",
                input: uz.clone(),
                verdict: XDP_TX,
                output: Some(dnat_expected(&uz, uzbe, 53, mac_of(uzbe), true)),
            },
            Case {
                name: "local service -> pass",
                input: tcp(CLIENT, 40007, 7000, 0x02),
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "dsr backend without neighbour -> drop",
                input: tcp(CLIENT, 40008, 9999, 0x02),
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "nat backend without neighbour -> pass, already DNATed",
                input: no_neigh.clone(),
                verdict: XDP_PASS,
                output: Some(no_neigh_out),
            },
            Case {
                name: "backend without route -> drop",
                input: tcp(CLIENT, 40010, 9997, 0x02),
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "service without backends -> drop",
                input: tcp(CLIENT, 40011, 9996, 0x02),
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "fragment -> pass",
                input: frag,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "IP options -> pass",
                input: opts,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "VLAN-tagged service traffic -> pass",
                input: vlan,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "larger than the route MTU -> drop",
                input: big,
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "truncated TCP header -> pass",
                input: short_tcp,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "non-service port -> pass",
                input: tcp(CLIENT, 40012, 22, 0x02),
                verdict: XDP_PASS,
                output: None,
            },
        ];
        let mut failures = Vec::new();
        for c in &cases {
            let (v, out) = fx.run(&c.input);
            let want = c.output.as_ref().unwrap_or(&c.input);
            if v != c.verdict || &out != want {
                failures.push(format!(
                    "{}: verdict {v} (want {}),\n  got  {:02x?}\n  want {:02x?}",
                    c.name, c.verdict, out, want
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    });
}

#[test]
fn established_flows_keep_their_backend_and_removed_backends_get_nothing() {
    with_fixture("ct", |fx| {
        let dsr3: Vec<_> = (1..=3).map(dsr_be).collect();
        // Open 40 flows, remember where each went.
        let mut placed = Vec::new();
        for p in 0..40u16 {
            let (v, out) = fx.run(&tcp(CLIENT, 41000 + p, 80, 0x02));
            assert_eq!(v, XDP_TX);
            placed.push(out[0..6].to_vec());
        }
        // Grow the set: Maglev moves some slots to the new backend, but established flows
        // (ACKs, found in conntrack) stay where they are.
        let mut svcs = services();
        let mut more = svcs[0].backends.to_vec();
        more.push(Backend {
            addr: dsr_be(4).into(),
            port: 80,
            weight: 1,
        });
        svcs[0].backends = more.into();
        fx.sync.apply(&svcs).unwrap();
        let grown = [dsr3.clone(), vec![dsr_be(4)]].concat();
        let mut would_move = 0;
        for p in 0..40u16 {
            // ACK, FIN+ACK, RST: every non-SYN segment follows the flow's entry.
            let flags = [0x10u8, 0x11, 0x04][p as usize % 3];
            let (v, out) = fx.run(&tcp(CLIENT, 41000 + p, 80, flags));
            assert_eq!(v, XDP_TX);
            assert_eq!(
                out[0..6].to_vec(),
                placed[p as usize],
                "established flow {p} (flags {flags:#x}) kept its backend"
            );
            if mac_of(maglev_pick(&grown, 80, CLIENT, 41000 + p, 80, 6)).to_vec()
                != placed[p as usize]
            {
                would_move += 1;
            }
        }
        assert!(
            would_move > 0,
            "the grown table re-maps some of these flows, so the check above means something"
        );
        // Remove backend 1: its flows are re-placed (never sent to it), others untouched.
        let gone = mac_of(dsr_be(1)).to_vec();
        let mut svcs = services();
        svcs[0].backends = svcs[0]
            .backends
            .iter()
            .filter(|b| b.addr != std::net::IpAddr::from(dsr_be(1)))
            .cloned()
            .collect();
        fx.sync.apply(&svcs).unwrap();
        for p in 0..40u16 {
            let (v, out) = fx.run(&tcp(CLIENT, 41000 + p, 80, 0x10));
            assert_eq!(v, XDP_TX);
            let now = out[0..6].to_vec();
            assert_ne!(now, gone, "flow {p} still sent to the removed backend");
            if placed[p as usize] != gone {
                assert_eq!(
                    now, placed[p as usize],
                    "flow {p} on a remaining backend was disturbed"
                );
            }
        }
        assert!(
            fx.sync.backend_id(dsr_be(1).into(), 80).is_none(),
            "removed backend released"
        );
    });
}

// ---- fuzz ---------------------------------------------------------------------------

/// xorshift64*: reproducible from the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

fn random_frame(r: &mut Rng) -> Vec<u8> {
    let srcs = [CLIENT, [192, 0, 2, 11], [203, 0, 113, 5], [10, 1, 2, 3]];
    let ports = [80u16, 53, 8080, 5353, 7000, 9999, 9998, 9997, 9996, 22, 443];
    let src = r.pick(&srcs);
    let sport = 40000 + r.below(8) as u16;
    let mut f = match r.below(16) {
        13..=15 => ipv6_frame(r),
        0 => arp_req(r.pick(&[VIP, NOT_OWNED, [192, 0, 2, 200]])),
        11 | 12 => ndp_frame(r),
        10 => icmp_about(
            r.pick(&[3u8, 11, 12, 0, 8]),
            r.pick(&[6u8, 17, 1]),
            r.pick(&ports),
            src,
            sport,
        ),
        1..=4 => tcp(
            src,
            sport,
            r.pick(&ports),
            r.pick(&[0x02u8, 0x10, 0x12, 0x11, 0x04, 0x18]),
        ),
        5..=7 => udp(src, sport, r.pick(&ports), r.below(4) == 0),
        8 => {
            let mut f = tcp(src, sport, r.pick(&ports), 0x10);
            f[23] = r.pick(&[1u8, 47, 132, 255]);
            f
        }
        _ => {
            let mut f = vec![0u8; 14 + r.below(100) as usize];
            for b in f.iter_mut() {
                *b = r.next() as u8;
            }
            f
        }
    };
    // Mutations: VLAN tag, header fields, byte flips, truncation.
    if r.below(8) == 0 && f.len() >= 14 {
        f.splice(12..12, [0x81, 0x00, 0x00, r.next() as u8]);
    }
    if r.below(6) == 0 && f.len() >= 34 {
        let field = r.pick(&[14usize, 16, 17, 20, 21, 22, 23, 12, 13]);
        f[field] = r.next() as u8;
    }
    for _ in 0..r.below(3) {
        if r.below(3) == 0 && !f.is_empty() {
            let i = r.below(f.len() as u64) as usize;
            f[i] = r.next() as u8;
        }
    }
    if r.below(5) == 0 {
        let l = 14 + r.below(f.len().saturating_sub(13).max(1) as u64) as usize;
        f.truncate(l.min(f.len()).max(14));
    }
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

/// An NS or NA, mostly well-formed (the addressing rules picked at random), then mutated
/// where NDP's checks look: payload length, hop limit, code, checksum, the options.
fn ndp_frame(r: &mut Rng) -> Vec<u8> {
    const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let target = r.pick(&[VIP6, NOT_OWNED6, CLIENT6]);
    let src = r.pick(&[CLIENT6, CLIENT6, [0; 16], VIP6]);
    let dst = r.pick(&[solicited_node(target), target, ALL_NODES]);
    let eth_dst = if dst[0] == 0xff {
        multicast_mac(dst)
    } else {
        IN_MAC
    };
    let p = Packet::eth(eth_dst, r.pick(&[CLIENT_MAC, IN_MAC])).ipv6(src, dst, 0);
    let mut p = if r.below(4) == 0 {
        p.na(r.pick(&[0x20u8, 0x60, 0xe0, 0]), target)
    } else {
        p.ns(target)
    };
    for _ in 0..r.below(3) {
        p = match r.below(3) {
            0 => p.slla(CLIENT_MAC),
            1 => p.tlla(IN_MAC),
            _ => p.nd_option(14, &[r.next() as u8; 6]),
        };
    }
    if r.below(8) == 0 {
        p = p.pad_to(100 + r.below(40) as usize);
    }
    let mut f = p.build();
    if r.below(5) == 0 {
        let at = r.pick(&[
            14 + 4,
            14 + 5,
            14 + 7,
            54,
            54 + 1,
            54 + 2,
            54 + 4,
            54 + 24,
            54 + 25,
        ]);
        if at < f.len() {
            f[at] = r.next() as u8;
        }
    }
    f
}

/// IPv6 to the fixture's IPv6 services (`testkit::lb6::services6`): TCP, UDP (some without
/// checksum), Packet Too Big and other ICMPv6 quoting a reply, extension headers; then
/// mutated where the IPv6 path looks (next header, payload length, flags, ports).
fn ipv6_frame(r: &mut Rng) -> Vec<u8> {
    let srcs = [
        CLIENT6,
        [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11],
        [0x20, 1, 0x0d, 0xb8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
    ];
    let ports = [80u16, 53, 8080, 5353, 7000, 9999, 9998, 9996, 22];
    let src = r.pick(&srcs);
    let dst = r.pick(&[VIP6, VIP6, VIP6, NOT_OWNED6]);
    let sport = 40000 + r.below(8) as u16;
    let dport = r.pick(&ports);
    let p = Packet::eth(IN_MAC, CLIENT_MAC).ipv6(src, dst, 0);
    let mut f = match r.below(6) {
        0 | 1 => p
            .tcp(
                sport,
                dport,
                r.pick(&[0x02u8, 0x10, 0x12, 0x11, 0x04, 0x18]),
            )
            .seq(1)
            .payload(b"data")
            .build(),
        2 | 3 => {
            let p = p.udp(sport, dport);
            let p = if r.below(4) == 0 {
                p.no_l4_checksum()
            } else {
                p
            };
            p.payload(b"ping").build()
        }
        4 => {
            let proto = r.pick(&[6u8, 17, 17, 58]);
            let mut q = vec![0x60, 0, 0, 0, 0x05, 0xb4, proto, 63];
            q.extend_from_slice(&dst);
            q.extend_from_slice(&src);
            q.extend_from_slice(&dport.to_be_bytes());
            q.extend_from_slice(&sport.to_be_bytes());
            q.extend_from_slice(&[0, 0, 0, 1]);
            p.icmpv6(r.pick(&[2u8, 2, 1, 128]), 0, [0, 0, 5, 0])
                .payload(&q)
                .build()
        }
        _ => {
            let p = if r.below(2) == 0 {
                p.fragment6(r.below(2) as u16, r.below(2) == 0, 7)
            } else {
                p.ext6(r.pick(&[0u8, 43, 60]), [1, 4, 0, 0, 0, 0])
            };
            p.tcp(sport, dport, 0x10).payload(b"data").build()
        }
    };
    if r.below(6) == 0 {
        let at = r.pick(&[
            14 + 4,
            14 + 5,
            14 + 6,
            54 + 2,
            54 + 3,
            54 + 13,
            54 + 6,
            54 + 8,
        ]);
        if at < f.len() {
            f[at] = r.next() as u8;
        }
    }
    f
}

#[test]
fn fuzz_kernel_and_model_agree() {
    let frames: u64 = std::env::var("VIP_FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("VIP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234_abcd);
    fuzz("fz", fixture_sizes(FIXTURE_RING_SLOTS), frames, seed);
}

/// The model follows the table the daemon sized (not the object's `CT_SETS`): the smallest
/// table, where the set index is masked to 1024 sets.
#[test]
fn fuzz_kernel_and_model_agree_on_a_small_conntrack_table() {
    let sizes = Sizes {
        conntrack_flows: 1000,
        ..fixture_sizes(FIXTURE_RING_SLOTS)
    };
    fuzz("fzct", sizes, 20_000, 0x05ee_d0c7);
}

fn fuzz(tag: &str, sizes: Sizes, frames: u64, seed: u64) {
    with_fixture_at(tag, sizes, Sizing::fixed(M), move |fx| {
        let (mut rings, mut filter) = testkit::lb6::pinned_tables(&fx.pins);
        let svcs6 = testkit::lb6::services6(rings.len());
        testkit::lb6::install(
            &mut fx.ebpf,
            Some(&fx.pins),
            &mut rings,
            &mut filter,
            &svcs6,
        );
        let mut model = fx.model();
        refmodel::add_ipv6(&mut model, &fx.ebpf, &fx.pins).expect("IPv6 maps into the model");
        testkit::lb6::add_routes(&mut model.fib, fx.ifindex, IN_MAC);
        let mut r = Rng(seed | 1);
        let mut verdicts = [0u64; 5];
        let mut advertised = 0u64;
        let mut balanced6 = 0u64;
        for n in 0..frames {
            let input = random_frame(&mut r);
            let mut want = input.clone();
            let wv = model.run(&mut want, fx.ifindex);
            let (v, out) = fx.run(&input);
            assert_ne!(
                v, XDP_ABORTED,
                "frame {n} (seed {seed}) aborted: {input:02x?}"
            );
            assert!(
                v == wv && out == want,
                "frame {n} (seed {seed}): kernel {v} vs model {wv}\n in    {input:02x?}\n kern  {out:02x?}\n model {want:02x?}"
            );
            verdicts[v as usize] += 1;
            let ipv6 = |f: &[u8]| {
                f.get(12..14) == Some(&[0x86, 0xdd]) || f.get(16..18) == Some(&[0x86, 0xdd])
            };
            if v == XDP_TX && ipv6(&input) {
                // Untagged ICMPv6 NS (type 135) is answered; the rest was balanced.
                let ns = |f: &[u8], l3: usize| {
                    f.get(l3 + 6) == Some(&58) && f.get(l3 + 40) == Some(&135)
                };
                if ns(&input, 14) || ns(&input, 18) {
                    advertised += 1;
                } else {
                    balanced6 += 1;
                }
            }
        }
        // NDP was answered often enough to mean something (the NA's bytes, the resize).
        assert!(advertised > frames / 1000, "{advertised} NAs");
        // IPv6 service traffic was forwarded often enough to mean something.
        assert!(balanced6 > frames / 200, "{balanced6} IPv6 frames balanced");
        // The run must have exercised every outcome, or it proves little.
        assert!(verdicts[XDP_TX as usize] > frames / 20, "{verdicts:?}");
        assert!(verdicts[XDP_DROP as usize] > frames / 100, "{verdicts:?}");
        assert!(verdicts[XDP_PASS as usize] > frames / 10, "{verdicts:?}");
        println!(
            "{frames} frames (seed {seed}): pass {} drop {} tx {} (NA {advertised}, IPv6 balanced {balanced6})",
            verdicts[2], verdicts[1], verdicts[3]
        );
    });
}

/// Load the program and maps at `pins`, creating them or reusing those pinned there, as the
/// daemon does.
fn load_at(pins: &Path) -> Ebpf {
    load_sized(pins, FIXTURE_RING_SLOTS)
}

fn load_sized(pins: &Path, ring_slots: u32) -> Ebpf {
    load::load(pins, fixture_sizes(ring_slots)).expect("load")
}

/// The pinned service entries by port.
fn pinned_services(pins: &Path) -> std::collections::BTreeMap<u16, vip_common::ServiceValue> {
    let m: aya::maps::HashMap<_, vip_common::ServiceKey, vip_common::ServiceValue> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(
            aya::maps::MapData::from_pin(pins.join(vip_common::pin_names::SERVICES)).unwrap(),
        ))
        .unwrap();
    m.iter()
        .map(|e| {
            let (k, v) = e.unwrap();
            (u16::from_be_bytes(k.port_be), v)
        })
        .collect()
}

/// Slots the service entries' regions take (two tables each), checking that no two
/// regions overlap.
fn regions_in_use(svcs: &std::collections::BTreeMap<u16, vip_common::ServiceValue>) -> u32 {
    let mut regions: Vec<(u32, u32)> = svcs
        .values()
        .filter(|v| v.ring_size > 0)
        .map(|v| {
            let start = v.ring_off - u32::from(v.live) * v.ring_size;
            (start, start + 2 * v.ring_size)
        })
        .collect();
    regions.sort();
    for w in regions.windows(2) {
        assert!(w[0].1 <= w[1].0, "regions overlap: {regions:?}");
    }
    regions.iter().map(|(a, b)| b - a).sum()
}

fn dsr_svc(port: u16, n: u8) -> Service {
    let list: Vec<_> = (1..=n).map(|i| (dsr_be(i), port)).collect();
    svc(port, Proto::Tcp, LbMode::Dsr, &list)
}

/// A source port whose SYN to `port` Maglev gives one of the backends with a neighbour
/// entry (192.0.2.21-23), and that backend.
fn flow_to_a_resolved_backend(list: &[Ipv4Addr], port: u16) -> (u16, Ipv4Addr) {
    (41000..42000)
        .map(|sp| {
            let b = maglev_pick_sized(Sizing::by_need(M), list, port, CLIENT, sp, port, 6);
            (sp, b)
        })
        .find(|(_, b)| (1..=3).map(dsr_be).any(|r| r == *b))
        .unwrap()
}

/// `maglev_sizing: by-need`: tables are sized by the service's backend count
/// (`maglev::size_for`), `local` services take none, regions never overlap, and a service
/// whose size changes moves to a region of the new size (the old one freed) while
/// forwarding by the new table.
#[test]
fn tables_are_sized_by_need_and_local_services_take_none() {
    with_fixture_sized("size", FIXTURE_RING_SLOTS, Sizing::by_need(M), |fx| {
        let mut all = services();
        all.push(svc(7001, Proto::Tcp, LbMode::Local, &[(dsr_be(5), 7001)]));
        all.push(dsr_svc(81, 11));
        let ch = fx.sync.apply(&all).unwrap();
        assert!(ch.failed.is_empty(), "{ch:?}");
        assert_eq!(
            fx.sync.backend_id(dsr_be(5).into(), 7001),
            None,
            "a local service's endpoints take no backend id"
        );
        let svcs = pinned_services(&fx.pins);
        assert_eq!(svcs[&7001].ring_size, 0);
        assert_eq!(svcs[&7000].ring_size, 0, "local: no table");
        assert_eq!(svcs[&9996].ring_size, 0, "no backends: no table");
        assert_eq!(svcs[&80].ring_size, 1021, "3 backends");
        assert_eq!(svcs[&9999].ring_size, 251, "1 backend");
        assert_eq!(svcs[&81].ring_size, 4093, "11 backends");
        let used = regions_in_use(&svcs);
        assert_eq!(fx.sync.free_slots(), FIXTURE_RING_SLOTS - used);
        // 11 -> 10 backends: a table of 1021 in a new region, flipped to.
        let before = svcs[&81];
        all.pop();
        all.push(dsr_svc(81, 10));
        let ch = fx.sync.apply(&all).unwrap();
        assert!(ch.failed.is_empty() && ch.updated == 1, "{ch:?}");
        let svcs = pinned_services(&fx.pins);
        assert_eq!(svcs[&81].ring_size, 1021);
        assert_eq!(svcs[&81].id, before.id, "same service slot");
        let used = regions_in_use(&svcs);
        assert_eq!(
            fx.sync.free_slots(),
            FIXTURE_RING_SLOTS - used,
            "old region freed"
        );
        let list: Vec<_> = (1..=10).map(dsr_be).collect();
        let (sport, be) = flow_to_a_resolved_backend(&list, 81);
        let syn = tcp(CLIENT, sport, 81, 0x02);
        let (v, out) = fx.run(&syn);
        assert_eq!(v, XDP_TX);
        assert_eq!(
            out,
            with_macs(syn, mac_of(be), IN_MAC),
            "forwarded by the new table"
        );
        // Gone: its region is free again.
        all.pop();
        fx.sync.apply(&all).unwrap();
        let svcs = pinned_services(&fx.pins);
        assert_eq!(
            fx.sync.free_slots(),
            FIXTURE_RING_SLOTS - regions_in_use(&svcs)
        );
    });
}

/// A table map too small for one more service: that service fails alone (nothing of it
/// live), the others keep forwarding, and it is placed once room is freed.
#[test]
fn a_service_whose_tables_do_not_fit_fails_alone() {
    // The fixture's services take 2 × (4 × 1021 + 3 × 251) slots; room for one more
    // table pair of 1021.
    let slots = 2 * (4 * 1021 + 3 * 251) + 2 * 1021;
    with_fixture_sized("full", slots, Sizing::by_need(M), |fx| {
        let mut all = services();
        all.push(dsr_svc(81, 3));
        all.push(dsr_svc(82, 3));
        let ch = fx.sync.apply(&all).unwrap();
        assert_eq!(ch.failed.len(), 1, "{ch:?}");
        let (k, e) = &ch.failed[0];
        assert_eq!(k.port(), 82);
        assert!(e.to_string().contains("ring_slots"), "{e}");
        let svcs = pinned_services(&fx.pins);
        assert!(!svcs.contains_key(&82), "nothing of it live");
        assert_eq!(fx.sync.free_slots(), 0);
        // Everything else still forwards.
        let dsr: Vec<_> = (1..=3).map(dsr_be).collect();
        for port in [80, 81] {
            let syn = tcp(CLIENT, 40100, port, 0x02);
            let be = maglev_pick_sized(Sizing::by_need(M), &dsr, port, CLIENT, 40100, port, 6);
            let (v, out) = fx.run(&syn);
            assert_eq!(
                (v, out),
                (XDP_TX, with_macs(syn, mac_of(be), IN_MAC)),
                "port {port}"
            );
        }
        // Room freed: placed on the next pass.
        all.retain(|s| s.port != 81);
        let ch = fx.sync.apply(&all).unwrap();
        assert!(ch.failed.is_empty(), "{ch:?}");
        assert_eq!(pinned_services(&fx.pins)[&82].ring_size, 1021);
    });
}

/// The backends array pinned under `pins`.
fn pinned_backends(pins: &Path) -> aya::maps::Array<aya::maps::MapData, vip_common::BackendValue> {
    aya::maps::Array::try_from(aya::maps::Map::Array(
        aya::maps::MapData::from_pin(pins.join(vip_common::pin_names::BACKENDS)).unwrap(),
    ))
    .unwrap()
}

/// A restarted daemon (kept pins) deactivates the previous run's backends and continues
/// their generations: a flow pinned to id N by the old run must not follow N to a new
/// backend.
#[test]
fn restart_on_kept_pins_continues_backend_generations() {
    with_fixture("gen", |fx| {
        let before: Vec<_> = {
            let b = pinned_backends(&fx.pins);
            (0..4).map(|i| b.get(&i, 0).unwrap()).collect()
        };
        assert!(before
            .iter()
            .any(|b| b.gen == 1 && b.flags == vip_common::BACKEND_F_ACTIVE));
        let mut again = load_at(&fx.pins);
        let mut sync = ServiceSync::new(LbMaps::take(&mut again).unwrap(), M, SEED).unwrap();
        let b = pinned_backends(&fx.pins);
        assert!(
            (0..4).all(|i| b.get(&i, 0).unwrap().flags == 0),
            "old run's backends deactivated"
        );
        sync.apply(&[svc(80, Proto::Tcp, LbMode::Dsr, &[(nat_be(3), 80)])])
            .unwrap();
        let id = sync.backend_id(nat_be(3).into(), 80).unwrap();
        let now = b.get(&id, 0).unwrap();
        assert_eq!(
            now.gen,
            before[id as usize].gen + 1,
            "generation continues past the old run's"
        );
    });
}

/// A restarted daemon adopting the pins (hitless restart) changes nothing a packet could
/// notice: same backend ids, generations and flags, and applying the same services writes
/// no slot and flips no ring; a changed service is then updated as usual.
#[test]
fn adopting_kept_pins_changes_nothing_for_the_same_services() {
    with_fixture("adopt", |fx| {
        let backends = |pins: &std::path::Path| {
            let b = pinned_backends(pins);
            (0..16)
                .map(|i| {
                    let v = b.get(&i, 0).unwrap();
                    (v.addr_be, v.port_be, v.mode, v.flags, v.gen, v.svc)
                })
                .collect::<Vec<_>>()
        };
        let before = backends(&fx.pins);
        let id_before = fx.sync.backend_id(dsr_be(1).into(), 80).unwrap();
        let mut again = load_at(&fx.pins);
        let mut sync = ServiceSync::adopt(LbMaps::take(&mut again).unwrap(), M, SEED).unwrap();
        assert_eq!(
            backends(&fx.pins),
            before,
            "adoption leaves backends as they were"
        );
        let ch = sync.apply(&services()).unwrap();
        assert!(ch.is_empty(), "same services: nothing written: {ch:?}");
        assert_eq!(backends(&fx.pins), before);
        assert_eq!(sync.backend_id(dsr_be(1).into(), 80), Some(id_before));
        // Another ring size or seed is not adopted: rebuilt from scratch.
        let ch = sync
            .apply(&[svc(80, Proto::Tcp, LbMode::Dsr, &[(dsr_be(1), 80)])])
            .unwrap();
        assert_eq!((ch.updated, ch.removed), (1, services().len() - 1));
        let mut other =
            ServiceSync::adopt(LbMaps::take(&mut load_at(&fx.pins)).unwrap(), M, SEED ^ 1).unwrap();
        let ch = other
            .apply(&[svc(80, Proto::Tcp, LbMode::Dsr, &[(dsr_be(1), 80)])])
            .unwrap();
        assert_eq!(ch.added, 1, "another seed: services rebuilt");
    });
}

/// Conntrack is a per-CPU array of 2-way sets with LRU replacement: a third flow in a full
/// set evicts the least recently used one, never the one just used.
#[test]
fn conntrack_set_evicts_least_recently_used() {
    with_fixture("lru", |fx| {
        let flow = |src: [u8; 4], sport: u16| vip_common::FlowKey {
            src_be: src,
            dst_be: VIP,
            sport_be: sport.to_be_bytes(),
            dport_be: 80u16.to_be_bytes(),
            proto: 6,
            _pad: [0; 3],
        };
        // Three flows (client address, source port) that share one set.
        let first = ([198, 18, 0, 1], 20000u16);
        let target = vip_common::ct_set_index(&flow(first.0, first.1), vip_common::CT_SETS - 1);
        let mut same = vec![first];
        'search: for host in 1..=250u8 {
            for p in 20001..40000u16 {
                let src = [198, 18, 0, host];
                if vip_common::ct_set_index(&flow(src, p), vip_common::CT_SETS - 1) == target {
                    same.push((src, p));
                    if same.len() == 3 {
                        break 'search;
                    }
                }
            }
        }
        assert_eq!(same.len(), 3, "three colliding flows found");
        let (a, b, c) = (same[0], same[1], same[2]);
        for (src, p) in [a, b] {
            assert_eq!(fx.run(&tcp(src, p, 80, 0x02)).0, XDP_TX);
        }
        assert_eq!(fx.run(&tcp(a.0, a.1, 80, 0x10)).0, XDP_TX, "A used last");
        assert_eq!(fx.run(&tcp(c.0, c.1, 80, 0x02)).0, XDP_TX, "C placed");
        let ct: aya::maps::PerCpuArray<_, vip_common::CtSet> =
            aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(
                aya::maps::MapData::from_pin(fx.pins.join(vip_common::pin_names::CONNTRACK))
                    .unwrap(),
            ))
            .unwrap();
        let set = ct.get(&target, 0).unwrap()[0];
        let kept: Vec<([u8; 4], u16)> = set
            .ways
            .iter()
            .map(|w| (w.key.src_be, u16::from_be_bytes(w.key.sport_be)))
            .collect();
        assert!(
            kept.contains(&a) && kept.contains(&c),
            "A and C kept, B evicted: {kept:?}"
        );
        assert!(!kept.contains(&b));
    });
}

fn pinned<T: TryFrom<aya::maps::Map>>(
    pins: &Path,
    name: &str,
    wrap: fn(aya::maps::MapData) -> aya::maps::Map,
) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(wrap(aya::maps::MapData::from_pin(pins.join(name)).unwrap())).unwrap()
}

/// The conntrack table sized by `conntrack_flows` at load: its sets per CPU are the share of
/// the total, the program masks the set index to that size (a flow whose index in the
/// object's default table lies beyond it is found at the masked one), and established flows
/// hit.
#[test]
fn conntrack_sized_at_load_masks_the_set_index_and_hits() {
    let ncpus = load::possible_cpus();
    let sets = 2048u32;
    let sizes = Sizes {
        conntrack_flows: sets * vip_common::CT_WAYS * ncpus,
        ..fixture_sizes(FIXTURE_RING_SLOTS)
    };
    with_fixture_at("ctsz", sizes, Sizing::fixed(M), move |fx| {
        let ct: aya::maps::PerCpuArray<_, vip_common::CtSet> = pinned(
            &fx.pins,
            vip_common::pin_names::CONNTRACK,
            aya::maps::Map::PerCpuArray,
        );
        assert_eq!(ct.len(), sets, "sets per CPU from conntrack_flows / CPUs");
        let flow = |sport: u16| vip_common::FlowKey {
            src_be: CLIENT,
            dst_be: VIP,
            sport_be: sport.to_be_bytes(),
            dport_be: 80u16.to_be_bytes(),
            proto: 6,
            _pad: [0; 3],
        };
        // A flow the default (2^17-set) mask would put beyond this table.
        let sport = (30000..40000u16)
            .find(|p| vip_common::ct_set_index(&flow(*p), vip_common::CT_SETS - 1) >= sets)
            .expect("a flow indexed past the small table");
        let idx = vip_common::ct_set_index(&flow(sport), sets - 1);
        let stats: aya::maps::PerCpuArray<_, vip_common::Stats> = pinned(
            &fx.pins,
            vip_common::pin_names::STATS,
            aya::maps::Map::PerCpuArray,
        );
        let hits = || {
            stats
                .get(&0, 0)
                .unwrap()
                .iter()
                .map(|s| s.ct_hit)
                .sum::<u64>()
        };
        let (v, placed) = fx.run(&tcp(CLIENT, sport, 80, 0x02));
        assert_eq!(v, XDP_TX);
        let set = ct.get(&idx, 0).unwrap()[0];
        assert!(
            set.ways.iter().any(|w| w.gen != 0 && w.key == flow(sport)),
            "flow recorded in set {idx} (masked): {set:?}"
        );
        let before = hits();
        for _ in 0..3 {
            let (v, out) = fx.run(&tcp(CLIENT, sport, 80, 0x10));
            assert_eq!(v, XDP_TX);
            assert_eq!(out[0..6], placed[0..6], "established flow kept its backend");
        }
        assert_eq!(hits() - before, 3, "every ACK found in conntrack");
    });
}

/// Restarting with another `conntrack_flows` replaces the pinned table (established flows
/// are placed by Maglev again, on the same backend while the service is unchanged) and the
/// new program uses the new table; the same size adopts it with its flows.
#[test]
fn a_new_conntrack_size_replaces_the_pinned_table() {
    with_fixture("ctre", |fx| {
        let (v, placed) = fx.run(&tcp(CLIENT, 45000, 80, 0x02));
        assert_eq!(v, XDP_TX);
        let ct_id = |pins: &Path| {
            aya::maps::MapData::from_pin(pins.join(vip_common::pin_names::CONNTRACK))
                .unwrap()
                .info()
                .unwrap()
                .id()
        };
        let first = ct_id(&fx.pins);
        drop(load_at(&fx.pins));
        assert!(!load::maps_replaced(), "same sizes: every pin adopted");
        assert_eq!(ct_id(&fx.pins), first, "same size: the table is kept");
        let ncpus = load::possible_cpus();
        let sizes = Sizes {
            conntrack_flows: 4096 * vip_common::CT_WAYS * ncpus,
            ..fixture_sizes(FIXTURE_RING_SLOTS)
        };
        let mut again = load::load(&fx.pins, sizes).expect("load with another size");
        assert!(
            load::maps_replaced(),
            "the resized table counts as replaced"
        );
        assert_ne!(ct_id(&fx.pins), first, "another size: a new table");
        let ct: aya::maps::PerCpuArray<_, vip_common::CtSet> = pinned(
            &fx.pins,
            vip_common::pin_names::CONNTRACK,
            aya::maps::Map::PerCpuArray,
        );
        assert_eq!(ct.len(), 4096);
        let prog: &mut Xdp = again
            .program_mut(vip_common::XDP_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        prog.load().expect("verifier accepts the resized program");
        // The fixture's program still holds the old table: its flow is still there.
        let (v, out) = fx.run(&tcp(CLIENT, 45000, 80, 0x10));
        assert_eq!(v, XDP_TX);
        assert_eq!(out[0..6], placed[0..6]);
    });
}

/// `map_memory` is what the kernel charges: each pinned map's `memlock` in fdinfo, as the
/// daemon exports it (`vip_bpf_map_bytes`), equals the computed figure, with sizes off
/// every default (hash sizes not a power of two, a resized conntrack table).
#[test]
fn map_memory_matches_the_kernel_charge() {
    use vip_userspace::dataplane::memory;
    let sizes = Sizes {
        max_vips: 1000,
        max_backends: 5000,
        conntrack_flows: 100_000,
        ..fixture_sizes(FIXTURE_RING_SLOTS)
    };
    with_fixture_at("mem", sizes, Sizing::fixed(M), move |fx| {
        let want = memory::map_memory(&sizes, load::possible_cpus());
        let have = memory::pinned_bytes(&fx.pins);
        assert_eq!(
            have.len(),
            load::PINNED.len() + 1,
            "every pinned map read: {have:?}"
        );
        let mut wrong = Vec::new();
        for (m, b) in &have {
            let w = want.iter().find(|(n, _)| n == m).map(|(_, b)| *b);
            if w != Some(*b) {
                wrong.push(format!("{m}: kernel {b}, computed {w:?}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:?}");
    });
}

/// A whole table in one `BPF_MAP_UPDATE_BATCH` lands exactly as slot-by-slot updates would,
/// and reads back the same with `BPF_MAP_LOOKUP_BATCH` (the times of both ways are printed,
/// for the record; nothing is asserted about them).
#[test]
fn batched_ring_writes_land_like_single_updates() {
    require_root_and_bpf();
    use std::os::fd::AsFd;
    use vip_userspace::reconcile::batch;
    let pins = PathBuf::from("/sys/fs/bpf/vip-test-batch");
    load::remove_pins(&pins);
    let mut ebpf = load_sized(&pins, 4 * M);
    let mut lb = LbMaps::take(&mut ebpf).unwrap();
    let fd = lb.rings_fd.take().expect("a descriptor of RINGS");
    let table: Vec<u32> = (0..M)
        .map(|i| i.wrapping_mul(2_654_435_761) % 977)
        .collect();
    let t = std::time::Instant::now();
    batch::update_u32(fd.as_fd(), M + 3, &table).expect("batch update (kernel ≥ 5.6)");
    let batched = t.elapsed();
    let t = std::time::Instant::now();
    for (i, v) in table.iter().enumerate() {
        lb.rings.set(2 * M + 3 + i as u32, *v, 0).unwrap();
    }
    let single = t.elapsed();
    eprintln!("one {M}-slot table: batched {batched:?}, slot by slot {single:?}");
    for (i, v) in table.iter().enumerate() {
        assert_eq!(
            lb.rings.get(&(M + 3 + i as u32), 0).unwrap(),
            *v,
            "slot {i}"
        );
    }
    assert_eq!(
        lb.rings.get(&(M + 2), 0).unwrap(),
        0,
        "nothing before the table"
    );
    assert_eq!(lb.rings.get(&(2 * M + 3), 0).unwrap(), table[0]);
    let back = batch::lookup_u32(fd.as_fd(), M + 3, M).unwrap();
    assert_eq!(back, table);
    let head = batch::lookup_u32(fd.as_fd(), 0, 5).unwrap();
    assert_eq!(head, vec![0; 5]);
    drop(lb);
    drop(ebpf);
    load::remove_pins(&pins);
}

// ---- IPv6 services through the daemon's writer ----------------------------------------

/// An IPv6 service on `VIP6` (the fixture owns it; `testkit::lb6::setup_netns` gave `in0`
/// the prefixes and the backends' neighbours).
fn svc6(port: u16, proto: Proto, mode: LbMode, backends: &[([u8; 16], u16)]) -> Service {
    Service {
        vip: std::net::Ipv6Addr::from(VIP6).into(),
        port,
        proto,
        mode,
        backends: backends
            .iter()
            .map(|(a, p)| Backend {
                addr: std::net::Ipv6Addr::from(*a).into(),
                port: *p,
                weight: 1,
            })
            .collect(),
    }
}

fn v6(a: [u8; 16]) -> std::net::IpAddr {
    std::net::Ipv6Addr::from(a).into()
}

/// IPv6 twins of the fixture's dsr and nat services, and a local one (two more tables fit
/// the fixture's table map beside the IPv4 services').
fn services6() -> Vec<Service> {
    use testkit::lb6::{dsr_be6, nat_be6};
    let dsr: Vec<_> = (1..=3).map(|i| (dsr_be6(i), 80)).collect();
    let nat: Vec<_> = (1..=3).map(|i| (nat_be6(i), 8080)).collect();
    vec![
        svc6(80, Proto::Tcp, LbMode::Dsr, &dsr),
        svc6(8080, Proto::Tcp, LbMode::Nat, &nat),
        svc6(7000, Proto::Tcp, LbMode::Local, &[]),
    ]
}

/// The fixture's IPv4 services and the IPv6 ones, as one list.
fn both_families() -> Vec<Service> {
    let mut all = services();
    all.extend(services6());
    all
}

fn pinned_services6(pins: &Path) -> Vec<(vip_common::Service6Key, vip_common::ServiceValue)> {
    let m: aya::maps::HashMap<_, vip_common::Service6Key, vip_common::ServiceValue> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(
            aya::maps::MapData::from_pin(pins.join(vip_common::pin_names::SERVICES6)).unwrap(),
        ))
        .unwrap();
    let mut v: Vec<_> = m.iter().map(Result::unwrap).collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

fn pinned_backends6(
    pins: &Path,
) -> aya::maps::Array<aya::maps::MapData, vip_common::Backend6Value> {
    aya::maps::Array::try_from(aya::maps::Map::Array(
        aya::maps::MapData::from_pin(pins.join(vip_common::pin_names::BACKENDS6)).unwrap(),
    ))
    .unwrap()
}

/// The backend (id, address) the pinned live table of the IPv6 service on `port` gives the
/// client flow from `sport`: read back from the maps the writer filled, not recomputed.
fn live_pick6(pins: &Path, port: u16, sport: u16) -> (u32, [u8; 16]) {
    let (_, v) = pinned_services6(pins)
        .into_iter()
        .find(|(k, _)| u16::from_be_bytes(k.port_be) == port)
        .expect("service in SERVICES6");
    let h = vip_common::flow6_hash(
        CLIENT6,
        sport.to_be_bytes(),
        port.to_be_bytes(),
        vip_common::PROTO_TCP,
        SEED,
    );
    let rings: aya::maps::Array<_, u32> = aya::maps::Array::try_from(aya::maps::Map::Array(
        aya::maps::MapData::from_pin(pins.join(vip_common::pin_names::RINGS)).unwrap(),
    ))
    .unwrap();
    let id = rings.get(&v.ring_slot(h).unwrap(), 0).unwrap();
    (id, pinned_backends6(pins).get(&id, 0).unwrap().addr_be)
}

fn tcp6(sport: u16, dport: u16) -> Vec<u8> {
    Packet::eth(IN_MAC, CLIENT_MAC)
        .ipv6(CLIENT6, VIP6, 0)
        .tcp(sport, dport, 0x02)
        .seq(1)
        .payload(b"data")
        .build()
}

/// IPv6 services go into SERVICES6 and BACKENDS6 by the IPv4 rules and from the same
/// spaces: service ids (stats slots), `RINGS` regions and backend ids are each used once
/// over both families; the program then forwards by what the writer wrote (dsr: the frame
/// to the picked backend's MAC; nat: to its address), and `vip status` lists them.
#[test]
fn ipv6_services_share_ids_tables_and_backend_ids_with_ipv4() {
    with_fixture("six", |fx| {
        let ch = fx.sync.apply(&both_families()).unwrap();
        assert!(ch.failed.is_empty(), "{ch:?}");
        assert_eq!((ch.added, ch.updated, ch.removed), (3, 0, 0), "{ch:?}");
        let v4 = pinned_services(&fx.pins);
        let v6s = pinned_services6(&fx.pins);
        assert_eq!(v6s.len(), 3);
        let mut ids: Vec<u32> = v4
            .values()
            .map(|v| v.id)
            .chain(v6s.iter().map(|(_, v)| v.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), v4.len() + 3, "one service id space");
        // Regions (both tables of each service) never overlap across families.
        let mut regions: Vec<(u32, u32)> = v4
            .values()
            .chain(v6s.iter().map(|(_, v)| v))
            .filter(|v| v.ring_size > 0)
            .map(|v| {
                let off = v.ring_off - u32::from(v.live) * v.ring_size;
                (off, off + 2 * v.ring_size)
            })
            .collect();
        regions.sort_unstable();
        assert!(regions.windows(2).all(|w| w[0].1 <= w[1].0), "{regions:?}");
        assert_eq!(regions.len(), 9, "seven IPv4 tables, two IPv6");
        let local = v6s
            .iter()
            .find(|(k, _)| u16::from_be_bytes(k.port_be) == 7000)
            .unwrap();
        assert_eq!(local.1.ring_size, 0, "local: no table");
        // Backend ids: one space; an IPv6 backend's entry is in BACKENDS6 only.
        let b4 = pinned_backends(&fx.pins);
        let b6 = pinned_backends6(&fx.pins);
        let v4_ids: Vec<u32> = (0..64)
            .filter(|i| b4.get(i, 0).unwrap().flags != 0)
            .collect();
        let dsr6 = v6s
            .iter()
            .find(|(k, _)| u16::from_be_bytes(k.port_be) == 80)
            .unwrap();
        for i in 1..=3 {
            let id = fx
                .sync
                .backend_id(v6(testkit::lb6::dsr_be6(i)), 80)
                .unwrap();
            assert!(!v4_ids.contains(&id), "id {id} used by both families");
            let b = b6.get(&id, 0).unwrap();
            assert_eq!(b.addr_be, testkit::lb6::dsr_be6(i));
            assert_eq!(u16::from_be_bytes(b.port_be), 80);
            assert_eq!(b.flags, vip_common::BACKEND_F_ACTIVE);
            assert_eq!(b.svc, dsr6.1.id);
            assert!(b.gen >= 1);
            assert_eq!(b.mode, vip_common::MODE_DSR);
        }
        // The prefilter has the IPv6 VIP's bit (`Maps::own`).
        let (_, filter) = testkit::lb6::pinned_tables(&fx.pins);
        let (w, m) = vip_common::vip6_filter_slot(VIP6);
        assert_ne!(filter.get(&w, 0).unwrap() & m, 0, "VIP6's prefilter bit");

        // dsr: out of in0 again, to the picked backend's MAC, the packet otherwise as sent.
        for sport in [41000u16, 41001, 41002, 41003] {
            let f = tcp6(sport, 80);
            let (verdict, out) = fx.run(&f);
            let (_, be) = live_pick6(&fx.pins, 80, sport);
            assert_eq!(verdict, XDP_TX, "dsr {sport}");
            assert_eq!(
                &out[0..6],
                &testkit::lb6::mac_of6(be),
                "dsr {sport}: backend MAC"
            );
            assert_eq!(&out[6..12], &IN_MAC);
            assert_eq!(&out[12..], &f[12..], "dsr leaves the packet as it is");
        }
        // nat: to the picked backend's address and port.
        for sport in [42000u16, 42001, 42002] {
            let f = tcp6(sport, 8080);
            let (verdict, out) = fx.run(&f);
            let (_, be) = live_pick6(&fx.pins, 8080, sport);
            assert_eq!(verdict, XDP_TX, "nat {sport}");
            assert_eq!(&out[38..54], &be, "nat {sport}: destination rewritten");
            assert_eq!(&out[56..58], &8080u16.to_be_bytes());
            assert_eq!(&out[0..6], &testkit::lb6::mac_of6(be));
        }
        // `vip status` and the per-service metrics read both families.
        let snap = vip_userspace::dataplane::inspect::Snapshot::read(&fx.pins, true).unwrap();
        let names: Vec<String> = snap.services.iter().map(|s| s.name()).collect();
        for n in [
            "[2001:db8::100]:80/tcp",
            "[2001:db8::100]:8080/tcp",
            "[2001:db8::100]:7000/tcp",
            "192.0.2.100:80/tcp",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
        let dsr_view = snap
            .services
            .iter()
            .find(|s| s.name() == "[2001:db8::100]:80/tcp")
            .unwrap();
        assert_eq!(dsr_view.backends.len(), 3, "{dsr_view:?}");
        assert!(dsr_view
            .backends
            .iter()
            .all(|b| b.addr.is_ipv6() && b.active));
        let active =
            vip_userspace::dataplane::inspect::Snapshot::active_backends(&fx.pins).unwrap();
        assert!(active
            .iter()
            .any(|b| b.addr == v6(testkit::lb6::nat_be6(2)) && b.port == 8080));
        // Removing them takes them out of SERVICES6 and retires their backends.
        let ch = fx.sync.apply(&services()).unwrap();
        assert_eq!(ch.removed, 3, "{ch:?}");
        assert!(pinned_services6(&fx.pins).is_empty());
        assert!(fx
            .sync
            .backend_id(v6(testkit::lb6::dsr_be6(1)), 80)
            .is_none());
        assert!(
            (0..64).all(|i| b6.get(&i, 0).unwrap().flags == 0),
            "IPv6 backends retired"
        );
    });
}

/// One backend id space: an id retired by one family and handed to the other gets the
/// next generation (so a conntrack or next-hop entry made for its previous holder is not
/// followed), and its old family's entry is inactive.
#[test]
fn a_backend_id_moving_to_the_other_family_gets_a_new_generation() {
    with_fixture("gen6", |fx| {
        let four = [svc(80, Proto::Tcp, LbMode::Dsr, &[(dsr_be(1), 80)])];
        let six = [svc6(
            80,
            Proto::Tcp,
            LbMode::Dsr,
            &[(testkit::lb6::dsr_be6(1), 80)],
        )];
        fx.sync.apply(&four).unwrap();
        let id = fx.sync.backend_id(dsr_be(1).into(), 80).unwrap();
        let b4 = pinned_backends(&fx.pins);
        let b6 = pinned_backends6(&fx.pins);
        let g = b4.get(&id, 0).unwrap().gen;
        // Retired last, so it is the next id handed out.
        fx.sync.apply(&[]).unwrap();
        fx.sync.apply(&six).unwrap();
        assert_eq!(
            fx.sync.backend_id(v6(testkit::lb6::dsr_be6(1)), 80),
            Some(id)
        );
        let now = b6.get(&id, 0).unwrap();
        assert_eq!(now.gen, g + 1, "next generation in the other family");
        assert_eq!(now.flags, vip_common::BACKEND_F_ACTIVE);
        assert_eq!(
            b4.get(&id, 0).unwrap().flags,
            0,
            "old family's entry inactive"
        );
        // And back.
        fx.sync.apply(&[]).unwrap();
        fx.sync.apply(&four).unwrap();
        assert_eq!(fx.sync.backend_id(dsr_be(1).into(), 80), Some(id));
        assert_eq!(b4.get(&id, 0).unwrap().gen, g + 2);
        assert_eq!(b6.get(&id, 0).unwrap().flags, 0);
        // A restart on kept pins continues each id's generation from the later of its two
        // families' entries (the first id a fresh run hands out held IPv4 backends only).
        let gens: Vec<u32> = (0..64)
            .map(|i| b4.get(&i, 0).unwrap().gen.max(b6.get(&i, 0).unwrap().gen))
            .collect();
        let mut again = load_at(&fx.pins);
        let mut sync = ServiceSync::new(LbMaps::take(&mut again).unwrap(), M, SEED).unwrap();
        assert!(
            (0..64).all(|i| b4.get(&i, 0).unwrap().flags == 0 && b6.get(&i, 0).unwrap().flags == 0),
            "old run's backends of both families deactivated"
        );
        sync.apply(&six).unwrap();
        let id6 = sync.backend_id(v6(testkit::lb6::dsr_be6(1)), 80).unwrap();
        assert!(
            b4.get(&id6, 0).unwrap().gen > 0,
            "id {id6} held an IPv4 backend before"
        );
        assert_eq!(b6.get(&id6, 0).unwrap().gen, gens[id6 as usize] + 1);
    });
}

/// A hitless restart adopts the IPv6 services as the previous run left them: the same
/// services then write nothing, and their backends keep ids and generations.
#[test]
fn adopting_kept_pins_keeps_ipv6_services() {
    with_fixture("adopt6", |fx| {
        fx.sync.apply(&both_families()).unwrap();
        let before = pinned_services6(&fx.pins);
        let id = fx
            .sync
            .backend_id(v6(testkit::lb6::nat_be6(2)), 8080)
            .unwrap();
        let gen = pinned_backends6(&fx.pins).get(&id, 0).unwrap().gen;
        let mut again = load_at(&fx.pins);
        let mut sync = ServiceSync::adopt(LbMaps::take(&mut again).unwrap(), M, SEED).unwrap();
        let ch = sync.apply(&both_families()).unwrap();
        assert!(ch.is_empty(), "same services: nothing written: {ch:?}");
        assert_eq!(pinned_services6(&fx.pins), before);
        assert_eq!(
            sync.backend_id(v6(testkit::lb6::nat_be6(2)), 8080),
            Some(id)
        );
        let b = pinned_backends6(&fx.pins).get(&id, 0).unwrap();
        assert_eq!((b.gen, b.flags), (gen, vip_common::BACKEND_F_ACTIVE));
        // A changed IPv6 service is updated as usual.
        let mut changed = both_families();
        let last = changed
            .iter_mut()
            .find(|s| s.vip.is_ipv6() && s.port == 80)
            .unwrap();
        last.backends = std::sync::Arc::from(vec![Backend {
            addr: v6(testkit::lb6::dsr_be6(3)),
            port: 80,
            weight: 1,
        }]);
        let ch = sync.apply(&changed).unwrap();
        assert_eq!((ch.updated, ch.removed, ch.added), (1, 0, 0), "{ch:?}");
        assert!(sync.backend_id(v6(testkit::lb6::dsr_be6(1)), 80).is_none());
    });
}
