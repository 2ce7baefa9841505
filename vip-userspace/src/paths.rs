//! Every filesystem path the daemon touches, in one place.

/// Where bpffs is normally mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// Default directory for vip's pinned maps: `/sys/fs/bpf/vip/<map>`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/vip";
/// Default metrics/health listen address.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9472";
/// Device the VIP is bound on in XDP mode so local sockets accept it while the kernel never
/// answers ARP for it (XDP does, and drops it where we are not the owner).
pub const DEFAULT_LOCAL_DEVICE: &str = "lo";
/// Default directory of the Raft election's persisted term and vote (`raft-state.json`).
pub const DEFAULT_RAFT_STATE_DIR: &str = "/var/lib/vip";
