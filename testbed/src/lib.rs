//! A namespace test bed, shared by the kernel tests and `cargo xtask demo`.
//!
//! ```text
//!  ns <prefix>-client ─veth─┐
//!  ns <prefix>-node   ─veth─┤ ns <prefix>-sw (bridge br0)
//! ```
//!
//! Every namespace is created here and deleted on drop; nothing touches the root namespace's
//! links or addresses. Commands run inside a namespace by `setns(CLONE_NEWNET)` only (not
//! `ip netns exec`, which also remounts /sys and would hide /sys/fs/bpf from the daemon).
//!
//! One file per concern: `netns` (a namespace and getting into it), `bed` (the bridge,
//! hosts and cable faults), `inspect` (reading a host's network), `ipv6` (NDP probes, the
//! IPv6 neighbour table, ping, address flags, NAs in a capture), `servers` (traffic from
//! inside namespaces, either family), `capture` (AF_PACKET capture), `process` (commands,
//! polling, child processes). Everything is re-exported here: callers write `testbed::Bed`.
//!
//! Every host also has an IPv6 twin of its address (`Host::addr6`, `2001:db8:1::10` for
//! 192.0.2.10; see `bed`).
#![allow(clippy::new_without_default)]

mod bed;
mod capture;
mod inspect;
mod ipv6;
mod netns;
mod process;
mod servers;

use std::path::{Path, PathBuf};

pub use bed::{make_dsr_backend, make_dsr_backend6, Bed, Host};
pub use capture::{Capture, Frame};
pub use inspect::{addrs, arping, has_xdp, link_mac, neighbour, parse_mac};
pub use ipv6::{
    addr6_flags, addrs6, flush_neighbour6, format_mac, mac_bytes, ndisc6, neighbor_adverts,
    neighbour6, ping6, set_neighbour6, stale_neighbour6, Advert, Neigh6,
};
pub use netns::{cleanup_prefix, scoped, Netns};
pub use process::{cpu_time, poll, sh, Proc};
pub use servers::{
    any6, http_get, sock6, tcp_request, tcp_requests, udp_request, LongConn, TcpServer, UdpServer,
};

/// Panics with a clear message unless we are root and the kernel lets us use BPF.
/// Kernel tests call this first: they must fail loudly, never skip.
pub fn require_root_and_bpf() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests need root (network namespaces, XDP, bpffs); run them as root: \
         `cargo test -p vip-kernel-tests -- --test-threads=1` or `cargo xtask test`"
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "kernel tests need a kernel with BPF and BTF (/sys/kernel/btf/vmlinux is missing)"
    );
}

/// Where `cargo xtask build-ebpf` leaves its objects.
pub fn ebpf_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VIP_EBPF_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/bpfel-unknown-none/release")
}
