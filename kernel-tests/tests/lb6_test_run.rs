//! The IPv6 load balancer through BPF_PROG_TEST_RUN: exact output bytes for dsr, nat and
//! local, conntrack, Packet Too Big, what goes to the stack, truncation, and the tc egress
//! program restoring a nat reply, and the FIB's rule that the ingress device must forward
//! IPv6. The services are written into the maps directly (`testkit::lb6`, ids and table
//! regions chosen here; the daemon's writer is tested in `lb_test_run` and `lb6_netns`);
//! checksums of rewritten frames are computed here from scratch, never by the program's
//! arithmetic.
//!
//! ```text
//!  client 2001:db8::10 ──► vip_xdp, ingress in0 (02::0a) or lo ──► backends, by MAC:
//!                          [2001:db8::100]:80/tcp 53/udp   dsr  2001:db8::21..23
//!                                          8080/tcp 5353/udp nat 2001:db8:1::21..23
//!                                          7000/tcp local; 9999 dsr, 9998 nat -> ::24
//!                                          (no neighbour); 9996 dsr, no backends
//! ```
use aya::{
    maps::{Array, MapData},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf,
};
use testbed::{require_root_and_bpf, Netns};
use testkit::{
    lb6::{self, dsr_be6, mac_of6, nat_be6, Svc6, CLIENT6, VIP6},
    packet::{checksum, Packet},
};
use vip_common::{flow6_hash, map_names, Config, Stats, PROTO_TCP, PROTO_UDP};

#[path = "common/test_run.rs"]
mod test_run;
use test_run::{loaded, run_on, stats, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};

const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0c];
const SEED: u32 = 0x7669_7036;
const LO: u32 = 1;

struct Fx {
    ebpf: Ebpf,
    rings: Array<MapData, u32>,
    ifindex: u32,
    svcs: Vec<Svc6>,
}

/// A namespace with `in0` on the IPv6 prefixes and the backends' neighbours; the object
/// loaded there with the fixture's services, on a thread pinned to CPU 0 (conntrack is
/// per-CPU).
fn with_fx<T: Send + 'static>(tag: &str, f: impl FnOnce(&mut Fx) -> T + Send + 'static) -> T {
    require_root_and_bpf();
    let ns = Netns::new(&format!("v6{tag}"));
    ns.ip(&["link", "add", "in0", "type", "veth", "peer", "name", "in1"]);
    ns.ip(&["link", "set", "in0", "address", "02:00:00:00:00:0a"]);
    for d in ["lo", "in0", "in1"] {
        ns.ip(&["link", "set", d, "up"]);
    }
    lb6::setup_netns(&ns, "in0");
    let out = ns.ip(&["-o", "link", "show", "dev", "in0"]);
    let ifindex: u32 = String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    ns.run(move || {
        pin_cpu0();
        let mut ebpf = loaded();
        {
            let mut cfg: Array<_, Config> =
                Array::try_from(ebpf.map_mut(map_names::CONFIG).unwrap()).unwrap();
            let c = Config {
                hash_seed: SEED,
                ..Config::default()
            };
            cfg.set(0, c, 0).unwrap();
        }
        let mut rings: Array<MapData, u32> =
            Array::try_from(ebpf.take_map(map_names::RINGS).unwrap()).unwrap();
        let mut filter: Array<MapData, u64> =
            Array::try_from(ebpf.take_map(map_names::VIP_FILTER).unwrap()).unwrap();
        let svcs = lb6::services6(rings.len());
        lb6::install(&mut ebpf, None, &mut rings, &mut filter, &svcs);
        let mut fx = Fx {
            ebpf,
            rings,
            ifindex,
            svcs,
        };
        f(&mut fx)
    })
}

fn pin_cpu0() {
    // SAFETY: cpu_set_t is plain data; this sets the calling thread's affinity only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl Fx {
    fn run(&self, f: &[u8]) -> (u32, Vec<u8>) {
        self.run_on(f, self.ifindex)
    }

    fn run_on(&self, f: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let r = run_on(&self.ebpf, f, ifindex)
            .unwrap_or_else(|e| panic!("test_run of {} bytes: {e}", f.len()));
        assert_ne!(r.0, XDP_ABORTED, "aborted: {f:02x?}");
        r
    }

    fn svc(&self, port: u16) -> &Svc6 {
        self.svcs.iter().find(|s| s.port == port).unwrap()
    }

    /// The backend (address, port) the service's table gives this client flow.
    fn pick(&self, port: u16, sport: u16, proto: u8) -> ([u8; 16], u16) {
        let h = flow6_hash(
            CLIENT6,
            sport.to_be_bytes(),
            port.to_be_bytes(),
            proto,
            SEED,
        );
        let (_, a, p) = self.svc(port).pick(h);
        (a, p)
    }

    fn stats(&self) -> Stats {
        stats(&self.ebpf)
    }
}

// ---- frames -------------------------------------------------------------------------

/// TCP [CLIENT6]:`sport` -> [VIP6]:`dport` with `flags`, seq 1, "data".
fn tcp6(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    Packet::eth(IN_MAC, CLIENT_MAC)
        .ipv6(CLIENT6, VIP6, 0)
        .tcp(sport, dport, flags)
        .seq(1)
        .payload(b"data")
        .build()
}

/// UDP [CLIENT6]:`sport` -> [VIP6]:`dport`, "ping"; `zero`: checksum 0 (invalid in IPv6).
fn udp6(sport: u16, dport: u16, zero: bool) -> Vec<u8> {
    let p = Packet::eth(IN_MAC, CLIENT_MAC)
        .ipv6(CLIENT6, VIP6, 0)
        .udp(sport, dport);
    let p = if zero { p.no_l4_checksum() } else { p };
    p.payload(b"ping").build()
}

/// ICMPv6 Packet Too Big (MTU 1280) from a router to the VIP about the reply
/// [VIP6]:`vport` -> [CLIENT6]:`cport` a dsr backend sent, quoting its header and ports.
fn ptb(proto: u8, vport: u16, cport: u16) -> Vec<u8> {
    let router = [0x20, 1, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let mut quoted = vec![0x60, 0, 0, 0, 0x05, 0xb4, proto, 63];
    quoted.extend_from_slice(&VIP6);
    quoted.extend_from_slice(&CLIENT6);
    quoted.extend_from_slice(&vport.to_be_bytes());
    quoted.extend_from_slice(&cport.to_be_bytes());
    quoted.extend_from_slice(&[0, 0, 0, 1]);
    Packet::eth(IN_MAC, CLIENT_MAC)
        .ipv6(router, VIP6, 0)
        .icmpv6(2, 0, 1280u32.to_be_bytes())
        .payload(&quoted)
        .build()
}

fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// The TCP/UDP checksum of the untagged IPv6 frame `f`, from scratch (RFC 8200 8.1).
fn l4_sum(f: &[u8]) -> u16 {
    let proto = f[20];
    let seg = &f[54..];
    let off = if proto == PROTO_TCP { 16 } else { 6 };
    let mut covered = Vec::new();
    covered.extend_from_slice(&f[22..54]);
    covered.extend_from_slice(&(seg.len() as u32).to_be_bytes());
    covered.extend_from_slice(&[0, 0, 0, proto]);
    let mut s = seg.to_vec();
    s[off..off + 2].copy_from_slice(&[0, 0]);
    covered.extend_from_slice(&s);
    match checksum(&covered) {
        0 if proto == PROTO_UDP => 0xffff,
        c => c,
    }
}

fn set_l4_sum(f: &mut [u8]) {
    let off = if f[20] == PROTO_TCP { 54 + 16 } else { 54 + 6 };
    let c = l4_sum(f);
    f[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

/// `f` DNATed to [addr]:port, MACs to `dmac`, the checksum recomputed from scratch.
fn dnat_expected(f: &[u8], addr: [u8; 16], port: u16, dmac: [u8; 6]) -> Vec<u8> {
    let mut e = with_macs(f.to_vec(), dmac, IN_MAC);
    e[38..54].copy_from_slice(&addr);
    e[56..58].copy_from_slice(&port.to_be_bytes());
    set_l4_sum(&mut e);
    e
}

// ---- cases --------------------------------------------------------------------------

struct Case {
    name: &'static str,
    input: Vec<u8>,
    verdict: u32,
    /// None: the frame leaves as it came.
    output: Option<Vec<u8>>,
}

#[test]
fn fixtures() {
    with_fx("fix", |fx| {
        let (be, _) = fx.pick(80, 40000, PROTO_TCP);
        let syn = tcp6(40000, 80, 0x02);
        let (ube, _) = fx.pick(53, 5000, PROTO_UDP);
        let u = udp6(5000, 53, false);
        let (nbe, nport) = fx.pick(8080, 40001, PROTO_TCP);
        assert_eq!(nport, 8080);
        let nat_syn = tcp6(40001, 8080, 0x02);
        let (nube, nuport) = fx.pick(5353, 5001, PROTO_UDP);
        let nat_udp = udp6(5001, 5353, false);
        let nat_udp0 = udp6(5002, 5353, true);
        let no_neigh_nat = tcp6(40002, 9998, 0x02);
        let mut no_neigh_out = dnat_expected(&no_neigh_nat, dsr_be6(4), 9998, IN_MAC);
        no_neigh_out[0..12].copy_from_slice(&no_neigh_nat[0..12]);
        let frag = {
            let p = Packet::eth(IN_MAC, CLIENT_MAC)
                .ipv6(CLIENT6, VIP6, 0)
                .fragment6(0, true, 7)
                .tcp(40003, 80, 0x10);
            p.payload(b"data").build()
        };
        let hbh = Packet::eth(IN_MAC, CLIENT_MAC)
            .ipv6(CLIENT6, VIP6, 0)
            .ext6(0, [1, 4, 0, 0, 0, 0])
            .tcp(40004, 80, 0x02)
            .build();
        let mut vlan = tcp6(40005, 80, 0x02);
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let mut big = tcp6(40006, 80, 0x02);
        big[18..20].copy_from_slice(&9000u16.to_be_bytes());
        let p = ptb(PROTO_TCP, 80, 40000);
        let cases = vec![
            Case {
                name: "dsr SYN -> MACs to the Maglev backend, XDP_TX",
                input: syn.clone(),
                verdict: XDP_TX,
                output: Some(with_macs(syn.clone(), mac_of6(be), IN_MAC)),
            },
            Case {
                name: "dsr UDP -> MACs to the Maglev backend",
                input: u.clone(),
                verdict: XDP_TX,
                output: Some(with_macs(u.clone(), mac_of6(ube), IN_MAC)),
            },
            Case {
                name: "Packet Too Big about the dsr flow -> that flow's backend",
                input: p.clone(),
                verdict: XDP_TX,
                output: Some(with_macs(p.clone(), mac_of6(be), IN_MAC)),
            },
            Case {
                name: "Packet Too Big about a nat flow -> pass",
                input: ptb(PROTO_TCP, 8080, 40001),
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "Packet Too Big about no service -> pass",
                input: ptb(PROTO_TCP, 81, 40000),
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "ICMPv6 echo to the VIP -> pass",
                input: Packet::eth(IN_MAC, CLIENT_MAC)
                    .ipv6(CLIENT6, VIP6, 0)
                    .icmpv6(128, 0, [0, 1, 0, 1])
                    .build(),
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "nat SYN -> DNAT to [backend]:8080, checksum from scratch",
                input: nat_syn.clone(),
                verdict: XDP_TX,
                output: Some(dnat_expected(&nat_syn, nbe, 8080, mac_of6(nbe))),
            },
            Case {
                name: "nat UDP -> DNAT to [backend]:53",
                input: nat_udp.clone(),
                verdict: XDP_TX,
                output: Some(dnat_expected(&nat_udp, nube, nuport, mac_of6(nube))),
            },
            Case {
                name: "nat UDP with checksum 0 (invalid in IPv6) -> pass untouched",
                input: nat_udp0,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "nat, backend without a neighbour -> rewritten, passed to the stack",
                input: no_neigh_nat,
                verdict: XDP_PASS,
                output: Some(no_neigh_out),
            },
            Case {
                name: "dsr, backend without a neighbour -> drop",
                input: tcp6(40007, 9999, 0x02),
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "dsr service without backends -> drop",
                input: tcp6(40008, 9996, 0x02),
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "local -> pass",
                input: tcp6(40009, 7000, 0x02),
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "no service on the port -> pass",
                input: tcp6(40010, 22, 0x02),
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "fragment header -> pass untouched",
                input: frag,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "hop-by-hop options -> pass untouched",
                input: hbh,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "VLAN-tagged -> pass",
                input: vlan,
                verdict: XDP_PASS,
                output: None,
            },
            Case {
                name: "larger than the route's MTU -> FIB refuses, drop",
                input: big,
                verdict: XDP_DROP,
                output: None,
            },
            Case {
                name: "truncated TCP header -> pass",
                input: syn[..54 + 12].to_vec(),
                verdict: XDP_PASS,
                output: None,
            },
        ];
        let before = fx.stats();
        let mut failed = Vec::new();
        for c in &cases {
            let (v, out) = fx.run(&c.input);
            let want = c.output.clone().unwrap_or_else(|| c.input.clone());
            if v != c.verdict || out != want {
                failed.push(format!(
                    "{}: verdict {v} (want {})\n out  {out:02x?}\n want {want:02x?}",
                    c.name, c.verdict
                ));
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n"));
        let s = fx.stats();
        assert_eq!(
            s.lb6_ext_header - before.lb6_ext_header,
            2,
            "fragment, hop-by-hop"
        );
        assert_eq!(s.icmp6_to_backend - before.icmp6_to_backend, 1);
        assert_eq!(s.lb_local - before.lb_local, 1);
        assert_eq!(s.fib_no_neigh - before.fib_no_neigh, 2);
        assert_eq!(s.lb_no_backend - before.lb_no_backend, 1);
        assert!(s.ipv6_to_vip - before.ipv6_to_vip >= 4, "{s:?}");
    });
}

/// A flow placed on an ingress other than the backend's link leaves by redirect.
#[test]
fn another_ingress_redirects() {
    with_fx("redir", |fx| {
        let (be, _) = fx.pick(80, 41000, PROTO_TCP);
        let syn = tcp6(41000, 80, 0x02);
        let (v, out) = fx.run_on(&syn, LO);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(out, with_macs(syn, mac_of6(be), IN_MAC));
    });
}

/// An established flow (conntrack hit) keeps its backend when the service's table changes;
/// a new SYN of the same tuple is placed by the new table; Packet Too Big follows the
/// conntrack entry.
#[test]
fn conntrack_keeps_the_backend_after_the_ring_changes() {
    with_fx("ct", |fx| {
        let (be, _) = fx.pick(80, 42000, PROTO_TCP);
        let (v, _) = fx.run(&tcp6(42000, 80, 0x02));
        assert_eq!(v, XDP_TX);
        // Every slot to another backend of the service.
        let svc = fx.svc(80).clone();
        let other = *svc.backends.iter().find(|b| b.1 != be).unwrap();
        for i in 0..svc.ring_size {
            fx.rings.set(svc.ring_off + i, other.0, 0).unwrap();
        }
        let hits = fx.stats().ct_hit;
        for flags in [0x10u8, 0x18] {
            let ack = tcp6(42000, 80, flags);
            let (v, out) = fx.run(&ack);
            assert_eq!((v, out), (XDP_TX, with_macs(ack, mac_of6(be), IN_MAC)));
        }
        assert_eq!(fx.stats().ct_hit - hits, 2);
        let p = ptb(PROTO_TCP, 80, 42000);
        let (v, out) = fx.run(&p);
        assert_eq!((v, out), (XDP_TX, with_macs(p, mac_of6(be), IN_MAC)));
        // A flow never seen goes by the new table.
        let fresh = tcp6(42001, 80, 0x10);
        let (v, out) = fx.run(&fresh);
        assert_eq!(
            (v, out),
            (XDP_TX, with_macs(fresh, mac_of6(other.1), IN_MAC))
        );
        // A SYN is placed anew, by the new table; its ACKs follow.
        let syn = tcp6(42000, 80, 0x02);
        let (v, out) = fx.run(&syn);
        assert_eq!((v, out), (XDP_TX, with_macs(syn, mac_of6(other.1), IN_MAC)));
        let ack = tcp6(42000, 80, 0x10);
        assert_eq!(fx.run(&ack).1[0..6], mac_of6(other.1));
    });
}

/// Every prefix of a service frame gets a safe answer: passed or dropped untouched, or
/// forwarded with exactly the rewrite the whole frame gets (applied to the bytes present).
#[test]
fn truncation_at_every_byte_is_safe() {
    with_fx("trunc", |fx| {
        let frames = [
            tcp6(43000, 80, 0x02),
            tcp6(43001, 8080, 0x02),
            udp6(43002, 5353, false),
            ptb(PROTO_TCP, 80, 43000),
            ptb(PROTO_UDP, 53, 43003),
        ];
        for full in frames {
            let (_, whole) = fx.run(&full);
            // BPF_PROG_TEST_RUN takes no XDP frame shorter than an Ethernet header.
            for len in 14..full.len() {
                let input = &full[..len];
                let (v, out) = fx.run(input);
                let ok = match v {
                    XDP_PASS | XDP_DROP => out == input,
                    XDP_TX => out == whole[..len],
                    _ => false,
                };
                assert!(
                    ok,
                    "{len} of {} bytes: verdict {v}\n in  {input:02x?}\n out {out:02x?}",
                    full.len()
                );
            }
        }
    });
}

/// tc egress restores [VIP]:port on a nat backend's reply (TCP and UDP), with a checksum
/// that verifies from scratch; other traffic leaves as it is.
#[test]
fn tc_egress_restores_the_vip_on_replies() {
    with_fx("tc", |fx| {
        let cases = [
            (tcp6(44000, 8080, 0x02), PROTO_TCP, 8080u16, 44000u16),
            (udp6(44001, 5353, false), PROTO_UDP, 5353, 44001),
        ];
        let tc: &mut SchedClassifier = fx
            .ebpf
            .program_mut(vip_common::TC_EGRESS_PROG)
            .unwrap()
            .try_into()
            .unwrap();
        tc.load().expect("verifier accepts vip_tc_egress");
        for (first, proto, vport, cport) in cases {
            let (be, bport) = fx.pick(vport, cport, proto);
            let (v, _) = fx.run(&first);
            assert_eq!(v, XDP_TX);
            let reply = |src: [u8; 16], sport: u16| {
                let p = Packet::eth(CLIENT_MAC, IN_MAC).ipv6(src, CLIENT6, 0);
                let p = if proto == PROTO_TCP {
                    p.tcp(sport, cport, 0x12).seq(9).ack(2)
                } else {
                    p.udp(sport, cport)
                };
                p.payload(b"pong").build()
            };
            let tc: &SchedClassifier = fx
                .ebpf
                .program(vip_common::TC_EGRESS_PROG)
                .unwrap()
                .try_into()
                .unwrap();
            let egress = |f: &[u8]| {
                let mut out = vec![0u8; f.len() + 64];
                let r = tc
                    .test_run(TestRunOptions {
                        data_in: Some(f),
                        data_out: Some(&mut out),
                        ..Default::default()
                    })
                    .unwrap();
                out.truncate(r.data_size_out as usize);
                (r.return_value, out)
            };
            let (rv, out) = egress(&reply(be, bport));
            assert_eq!(rv, 0, "TC_ACT_OK");
            let mut want = reply(VIP6, vport);
            set_l4_sum(&mut want);
            assert_eq!(out, want, "proto {proto}: source back to [VIP]:{vport}");
            assert_eq!(l4_sum(&out).to_be_bytes(), {
                let off = if proto == PROTO_TCP { 70 } else { 60 };
                [out[off], out[off + 1]]
            });
            // Not a reply of a nat flow: untouched.
            let stranger = reply(nat_be6(3), 1234);
            assert_eq!(egress(&stranger), (0, stranger.clone()));
        }
    });
}

/// The kernel fact the daemon's IPv6 forwarding setting rests on: `bpf_fib_lookup` for
/// AF_INET6 answers "forwarding disabled" unless the *ingress device* forwards IPv6
/// (`net.ipv6.conf.<dev>.forwarding`; `all` being on is not enough), so the daemon sets it
/// on the uplink for IPv6 dsr and nat services. The program drops such a frame, counted.
#[test]
fn the_fib_lookup_needs_the_ingress_device_to_forward_ipv6() {
    with_fx("fwd", |fx| {
        // This thread is in the fixture's namespace: its /proc/sys/net is the fixture's.
        let dev = "/proc/sys/net/ipv6/conf/in0/forwarding";
        let all = "/proc/sys/net/ipv6/conf/all/forwarding";
        std::fs::write(dev, "0").unwrap();
        assert_eq!(std::fs::read_to_string(all).unwrap().trim(), "1");
        let syn = tcp6(40100, 80, 0x02);
        let before = fx.stats().fib_fail;
        let (verdict, _) = fx.run(&syn);
        assert_eq!(verdict, XDP_DROP, "forwarding off on in0: no next hop");
        assert_eq!(fx.stats().fib_fail, before + 1);
        std::fs::write(dev, "1").unwrap();
        let (be, _) = fx.pick(80, 40100, PROTO_TCP);
        let (verdict, out) = fx.run(&syn);
        assert_eq!(verdict, XDP_TX, "forwarding on in0");
        assert_eq!(&out[0..6], &mac_of6(be));
    });
}
