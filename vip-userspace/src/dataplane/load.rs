//! Loading the object: bpffs, pins, the program, and aya-log forwarding.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use aya::{Ebpf, EbpfLoader};
use vip_common::{globals, map_names, pin_names};

use super::DataplaneError;
use crate::paths;

/// The object built by `cargo xtask build-ebpf`, embedded at compile time (empty if it was
/// not built).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vip.bpf.o"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// (symbol in the object, file name under the pin dir) for every pinned map.
pub const PINNED: [(&str, &str); 21] = [
    (map_names::VIPS, pin_names::VIPS),
    (map_names::IFACES, pin_names::IFACES),
    (map_names::STATS, pin_names::STATS),
    (map_names::VIP_STATS, pin_names::VIP_STATS),
    (map_names::CONFIG, pin_names::CONFIG),
    (map_names::SERVICES, pin_names::SERVICES),
    (map_names::BACKENDS, pin_names::BACKENDS),
    (map_names::RINGS, pin_names::RINGS),
    (map_names::CONNTRACK, pin_names::CONNTRACK),
    (map_names::REVNAT, pin_names::REVNAT),
    (map_names::SVC_STATS, pin_names::SVC_STATS),
    (map_names::BACKEND_STATS, pin_names::BACKEND_STATS),
    (map_names::VIP_FILTER, pin_names::VIP_FILTER),
    (map_names::NEXTHOP, pin_names::NEXTHOP),
    (map_names::DEADMAN, pin_names::DEADMAN),
    (map_names::VIPS6, pin_names::VIPS6),
    (map_names::VIP6_STATS, pin_names::VIP6_STATS),
    (map_names::SERVICES6, pin_names::SERVICES6),
    (map_names::BACKENDS6, pin_names::BACKENDS6),
    (map_names::CT6, pin_names::CT6),
    (map_names::REVNAT6, pin_names::REVNAT6),
];

/// Sizes that depend on configuration, applied before the maps are created.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Slots of the shared Maglev table map (`ring_slots`).
    pub ring_slots: u32,
    pub max_services: u32,
    /// Backend ids (`max_backends`): BACKENDS and its counters.
    pub max_backends: u32,
    /// VIP entries (`max_vips`): VIPS and VIP_STATS, and as many IPv6 VIPs (VIPS6,
    /// VIP6_STATS).
    pub max_vips: u32,
    /// Flows the conntrack table holds in total, over all CPUs (`conntrack_flows`).
    pub conntrack_flows: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            ring_slots: vip_common::RING_SLOTS,
            max_services: vip_common::MAX_SERVICES,
            max_backends: vip_common::MAX_BACKENDS,
            max_vips: vip_common::MAX_VIPS,
            conntrack_flows: vip_common::CT_FLOWS_DEFAULT,
        }
    }
}

/// CPUs the kernel sizes per-CPU maps by (`num_possible_cpus`), not the online ones.
pub fn possible_cpus() -> u32 {
    // aya's nr_cpus reads /sys/devices/system/cpu/possible.
    aya::util::nr_cpus().map_or(1, |n| n as u32).max(1)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; zeroed is valid, and c outlives the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Make sure the pin directory sits on a bpffs, mounting one at /sys/fs/bpf when the node
/// (or a fresh mount namespace) has none, as the kernel does not mount it by itself.
pub fn ensure_pin_dir(pin_dir: &Path) -> Result<(), DataplaneError> {
    mount_bpffs(pin_dir)?;
    std::fs::create_dir_all(pin_dir).map_err(|source| DataplaneError::PinDir {
        path: pin_dir.to_path_buf(),
        source,
    })?;
    if !is_bpffs(pin_dir) {
        return Err(DataplaneError::Bpffs(format!(
            "{} is not on a bpffs",
            pin_dir.display()
        )));
    }
    restrict(pin_dir)
}

/// Mount a bpffs at /sys/fs/bpf if `pin_dir` is under it and there is none: the one step
/// that needs CAP_SYS_ADMIN, so main does it before dropping that (`crate::privileges`).
pub fn mount_bpffs(pin_dir: &Path) -> Result<(), DataplaneError> {
    let root = Path::new(paths::BPFFS_ROOT);
    if pin_dir.starts_with(root) && !is_bpffs(root) {
        let src =
            CString::new("bpf").map_err(|e| DataplaneError::Bpffs(crate::Chain(&e).to_string()))?;
        let dst = CString::new(paths::BPFFS_ROOT)
            .map_err(|e| DataplaneError::Bpffs(crate::Chain(&e).to_string()))?;
        // SAFETY: all pointers are valid NUL-terminated strings for the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(DataplaneError::Bpffs(format!(
                "{} is not a bpffs and mounting one failed: {}",
                paths::BPFFS_ROOT,
                std::io::Error::last_os_error()
            )));
        }
        tracing::info!(path = paths::BPFFS_ROOT, "mounted bpffs");
    }
    Ok(())
}

/// The pins decide which addresses are answered and where traffic goes, and an open map
/// or link fd is enough to change them: the directory is the owner's alone (0700), also
/// when an earlier run or the operator made it wider. The pins themselves are created by
/// the kernel with 0600 minus the umask (`bpf_obj_do_pin`), so they never need widening or
/// narrowing; both belong to the daemon's user (root in the manifests). A pin dir that is
/// the bpffs root itself is shared with other programs and left as it is.
fn restrict(pin_dir: &Path) -> Result<(), DataplaneError> {
    use std::os::unix::fs::PermissionsExt;
    if pin_dir == Path::new(paths::BPFFS_ROOT) {
        return Ok(());
    }
    std::fs::set_permissions(pin_dir, std::fs::Permissions::from_mode(PIN_DIR_MODE)).map_err(
        |source| DataplaneError::PinDir {
            path: pin_dir.to_path_buf(),
            source,
        },
    )
}

/// Mode of the pin directory (see `restrict`).
pub const PIN_DIR_MODE: u32 = 0o700;

/// Set when the last `load` replaced a pinned map: the program running in an adopted link
/// still holds the old map, so it must be replaced even when its instructions are the same
/// (`attach` reads this). One daemon loads once; tests that load repeatedly load and attach
/// in turn.
static MAPS_REPLACED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the last `load` replaced a pinned map (see `MAPS_REPLACED`).
pub fn maps_replaced() -> bool {
    MAPS_REPLACED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Load the object, re-using maps already pinned under `pin_dir` (a restarted daemon keeps
/// the state the data plane had) and pinning new ones there.
///
/// A pinned map whose shape (type, key or value size, entries) is not the one these sizes
/// and this build give it cannot be reused: the loader would take it as it is and the
/// program would index it by the new layout. It is replaced, with a log line naming the map,
/// why, and what that costs (`super::memory::MapShape::on_replace`).
pub fn load(pin_dir: &Path, sizes: Sizes) -> Result<Ebpf, DataplaneError> {
    if OBJECT.is_empty() {
        return Err(DataplaneError::NotBuilt);
    }
    ensure_pin_dir(pin_dir)?;
    let ncpus = possible_cpus();
    let shapes = super::memory::shapes(&sizes, ncpus);
    let mut replaced = false;
    for want in &shapes {
        let Some(file) = want.pin else { continue };
        let p = pin_dir.join(file);
        let Ok(m) = aya::maps::MapData::from_pin(&p) else {
            continue;
        };
        let Some(why) = want.mismatch(&m) else {
            continue;
        };
        tracing::warn!(
            map = want.sym,
            reason = %why,
            effect = want.on_replace,
            "pinned map has another shape; replacing it"
        );
        let _ = std::fs::remove_file(&p);
        replaced = true;
        if want.sym == map_names::BACKENDS || want.sym == map_names::BACKENDS6 {
            // Flow entries name backends by id and generation (one id space for both
            // families): with the generations gone, an old entry could match a new holder.
            tracing::warn!(
                "backend ids start afresh; flow tables replaced too (established flows are placed by Maglev again)"
            );
            let _ = std::fs::remove_file(pin_dir.join(pin_names::CONNTRACK));
            let _ = std::fs::remove_file(pin_dir.join(pin_names::CT6));
        }
    }
    MAPS_REPLACED.store(replaced, std::sync::atomic::Ordering::Relaxed);
    let mut loader = EbpfLoader::new();
    let g = super::memory::Globals::new(&sizes, ncpus);
    configure(&mut loader, &sizes, &g);
    for (sym, file) in PINNED.iter().chain(std::iter::once(&LOG_MAP)) {
        loader.map_pin_path(sym, pin_dir.join(file));
    }
    Ok(loader.load(OBJECT)?)
}

/// Map sizes and globals as the daemon gives them (`g` from `memory::Globals::new(sizes,
/// possible_cpus())`), for any loader of the object: the bench's test_run loads it without
/// pins and should run the program the daemon runs (without globals the object adds to its
/// counters atomically, the path of a node with more CPUs than counter stripes).
pub fn configure<'a>(loader: &mut EbpfLoader<'a>, sizes: &Sizes, g: &'a super::memory::Globals) {
    for want in super::memory::shapes(sizes, g.ncpus) {
        if want.sized {
            loader.map_max_entries(want.sym, want.entries);
        }
    }
    loader
        .override_global(globals::CT_SET_MASK, &g.ct_set_mask, true)
        .override_global(globals::CT6_SET_MASK, &g.ct6_set_mask, true)
        .override_global(globals::STAT_STRIPE_MASK, &g.stat_stripe_mask, true)
        .override_global(globals::STAT_ATOMIC, &g.stat_atomic, true)
        .override_global(globals::SVC_STAT_ENTRIES, &g.svc_stat_entries, true)
        .override_global(globals::BACKEND_STAT_ENTRIES, &g.backend_stat_entries, true);
}

/// aya-log's ring buffer, pinned too: a program left running by an earlier daemon (adopted
/// unchanged) keeps logging into the buffer the new daemon reads.
pub const LOG_MAP: (&str, &str) = ("AYA_LOGS", "aya_logs");

/// Remove vip's pins (maps, and links, which detaches them) and the directory if nothing
/// else is in it.
pub fn remove_pins(pin_dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let maps = PINNED
        .iter()
        .chain(std::iter::once(&LOG_MAP))
        .map(|(_, file)| pin_dir.join(file));
    for p in super::attach::link_pins(pin_dir).into_iter().chain(maps) {
        if std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    // Fails (and is left) if something else was pinned there: not ours to delete.
    let _ = std::fs::remove_dir(pin_dir);
    removed
}

/// Forward the program's aya-log records to `tracing` (through the `log` bridge that the
/// subscriber installs). A missing log map only means the object logs nothing.
pub fn spawn_log_forwarder(ebpf: &mut Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        // SAFETY: the AsyncFd owns the logger, which owns the ring buffer's fd, so the fd
        // stays open for as long as it is registered.
        Ok(logger) => match unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        } {
            Ok(mut fd) => {
                tokio::spawn(async move {
                    loop {
                        let mut guard = match fd.readable_mut().await {
                            Ok(g) => g,
                            Err(e) => {
                                tracing::warn!(error = %crate::Chain(&e), "eBPF log forwarder stopped");
                                return;
                            }
                        };
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %crate::Chain(&e), "eBPF log forwarder not started"),
        },
        Err(e) => {
            tracing::debug!(error = %crate::Chain(&e), "no eBPF log map; program logs not forwarded")
        }
    }
}
