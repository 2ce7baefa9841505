//! What the BPF_PROG_TEST_RUN files (`xdp_test_run`, `ndp_test_run`, `lb6_test_run`) share: the object loaded
//! and verified, one run of `vip_xdp` on a frame, the summed counters, and the link entry.
//! Apart from `common/mod.rs` so these files do not build the namespace helpers they never use.
#![allow(dead_code)]
use aya::{
    maps::{HashMap, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use vip_common::{map_names, IfaceValue, Stats};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// BPF_PROG_TEST_RUN runs XDP on the namespace's loopback, so the ingress ifindex is 1.
pub const IFINDEX: u32 = 1;

/// The embedded object with `vip_xdp` loaded (the verifier has accepted it), maps empty.
pub fn loaded() -> Ebpf {
    testbed::require_root_and_bpf();
    let obj = vip_userspace::dataplane::load::OBJECT;
    assert!(
        !obj.is_empty(),
        "eBPF object not embedded: run `cargo xtask build-ebpf --release` and rebuild"
    );
    let mut ebpf = Ebpf::load(obj).expect("load object");
    let prog: &mut Xdp = ebpf
        .program_mut(vip_common::XDP_PROG)
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().expect("verifier accepts vip_xdp");
    ebpf
}

/// One run of `vip_xdp` on `input`: the verdict and the frame as it left (room for growth).
pub fn run(ebpf: &Ebpf, input: &[u8]) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
    let prog: &Xdp = ebpf
        .program(vip_common::XDP_PROG)
        .unwrap()
        .try_into()
        .unwrap();
    let mut out = vec![0u8; input.len() + 256];
    let res = prog.test_run(TestRunOptions {
        data_in: Some(input),
        data_out: Some(&mut out),
        ..Default::default()
    })?;
    out.truncate(res.data_size_out as usize);
    Ok((res.return_value, out))
}

/// `run` as if the frame arrived on `ifindex` (xdp_md's `ingress_ifindex`; `data_end` must
/// equal the frame's length).
pub fn run_on(
    ebpf: &Ebpf,
    input: &[u8],
    ifindex: u32,
) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
    let prog: &Xdp = ebpf
        .program(vip_common::XDP_PROG)
        .unwrap()
        .try_into()
        .unwrap();
    // xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(input.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; input.len() + 256];
    let res = prog.test_run(TestRunOptions {
        data_in: Some(input),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        ..Default::default()
    })?;
    out.truncate(res.data_size_out as usize);
    Ok((res.return_value, out))
}

/// The verdict counters summed over CPUs.
pub fn stats(ebpf: &Ebpf) -> Stats {
    let m: PerCpuArray<_, Stats> =
        PerCpuArray::try_from(ebpf.map(map_names::STATS).unwrap()).unwrap();
    let mut t = Stats::default();
    for s in m.get(&0, 0).unwrap().iter() {
        t.add(s);
    }
    t
}

/// Describe the test's link (`IFINDEX`) with `mac`, or remove its entry (`None`).
pub fn set_iface(ebpf: &mut Ebpf, mac: Option<[u8; 6]>) {
    let mut ifaces: HashMap<_, u32, IfaceValue> =
        HashMap::try_from(ebpf.map_mut(map_names::IFACES).unwrap()).unwrap();
    match mac {
        Some(mac) => ifaces
            .insert(IFINDEX, IfaceValue { mac, _pad: [0; 2] }, 0)
            .unwrap(),
        None => {
            ifaces.remove(&IFINDEX).unwrap();
        }
    }
}
