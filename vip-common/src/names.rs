//! Names both sides look things up by: the maps and programs in the object, the pins in
//! bpffs, the image. One place, so a rename cannot leave a reader behind.

/// Symbol names of the maps in the eBPF object (what aya looks them up by).
pub mod map_names {
    pub const VIPS: &str = "VIPS";
    pub const IFACES: &str = "IFACES";
    pub const STATS: &str = "STATS";
    pub const VIP_STATS: &str = "VIP_STATS";
    pub const CONFIG: &str = "CONFIG";
    pub const SERVICES: &str = "SERVICES";
    pub const BACKENDS: &str = "BACKENDS";
    pub const RINGS: &str = "RINGS";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const REVNAT: &str = "REVNAT";
    pub const SVC_STATS: &str = "SVC_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const BENCH_FRAME: &str = "BENCH_FRAME";
    pub const VIP_FILTER: &str = "VIP_FILTER";
    pub const NEXTHOP: &str = "NEXTHOP";
    pub const DEADMAN: &str = "DEADMAN";
    pub const VIPS6: &str = "VIPS6";
    pub const VIP6_STATS: &str = "VIP6_STATS";
    pub const SERVICES6: &str = "SERVICES6";
    pub const BACKENDS6: &str = "BACKENDS6";
    pub const CT6: &str = "CT6";
    pub const REVNAT6: &str = "REVNAT6";
}

/// File names under the pin directory (`/sys/fs/bpf/vip/`), lower case for operators.
pub mod pin_names {
    pub const VIPS: &str = "vips";
    pub const IFACES: &str = "ifaces";
    pub const STATS: &str = "stats";
    pub const VIP_STATS: &str = "vip_stats";
    pub const CONFIG: &str = "config";
    pub const SERVICES: &str = "services";
    pub const BACKENDS: &str = "backends";
    pub const RINGS: &str = "rings";
    pub const CONNTRACK: &str = "conntrack";
    pub const REVNAT: &str = "revnat";
    pub const SVC_STATS: &str = "svc_stats";
    pub const BACKEND_STATS: &str = "backend_stats";
    pub const VIP_FILTER: &str = "vip_filter";
    pub const NEXTHOP: &str = "nexthop";
    pub const DEADMAN: &str = "deadman";
    pub const VIPS6: &str = "vips6";
    pub const VIP6_STATS: &str = "vip6_stats";
    pub const SERVICES6: &str = "services6";
    pub const BACKENDS6: &str = "backends6";
    pub const CT6: &str = "conntrack6";
    pub const REVNAT6: &str = "revnat6";
}

/// The container image: `cargo xtask image` builds it, `vip manifest` names it, the container
/// test runs it. One name, tagged with the workspace version, so no manifest can name an
/// image the project does not build.
pub mod image {
    macro_rules! repository {
        () => {
            "ghcr.io/vip-project/vip"
        };
    }
    pub const REPOSITORY: &str = repository!();
    pub const TAG: &str = env!("CARGO_PKG_VERSION");
    /// `REPOSITORY:TAG`.
    pub const NAME: &str = concat!(repository!(), ":", env!("CARGO_PKG_VERSION"));
    /// Where the image's source lives (its `org.opencontainers.image.source` label).
    pub const SOURCE: &str = "https://github.com/vip-project/vip";
    /// The OCI archive `cargo xtask image` writes, relative to the workspace root.
    pub const ARCHIVE: &str = concat!("target/image/vip-", env!("CARGO_PKG_VERSION"), ".oci.tar");
}

/// Name of the XDP entry point in the object.
pub const XDP_PROG: &str = "vip_xdp";
/// Name of the tc egress program (reverse NAT for `nat` services).
pub const TC_EGRESS_PROG: &str = "vip_tc_egress";
/// Benchmark-only entries (never attached): restore the frame, then run vip_xdp / nothing.
pub const BENCH_PROG: &str = "vip_bench";
pub const BENCH_NOOP_PROG: &str = "vip_bench_noop";
