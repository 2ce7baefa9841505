//! Loading the object: bpffs, pins, the program, and aya-log forwarding.
use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use aya::{Ebpf, EbpfLoader};
use vip_common::{map_names, pin_names};

use super::DataplaneError;
use crate::paths;

/// The object built by `cargo xtask build-ebpf`, embedded at compile time (empty if it was
/// not built).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vip.bpf.o"));

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// (symbol in the object, file name under the pin dir) for every pinned map.
pub const PINNED: [(&str, &str); 15] = [
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
];

/// Sizes that depend on configuration, applied before the maps are created.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Slots of the shared Maglev table map (`ring_slots`).
    pub ring_slots: u32,
    pub max_services: u32,
    /// Backend ids (`max_backends`): BACKENDS and its per-CPU companions.
    pub max_backends: u32,
    /// VIP entries (`max_vips`): VIPS and VIP_STATS.
    pub max_vips: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            ring_slots: vip_common::RING_SLOTS,
            max_services: vip_common::MAX_SERVICES,
            max_backends: vip_common::MAX_BACKENDS,
            max_vips: vip_common::MAX_VIPS,
        }
    }
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
        let src = CString::new("bpf").map_err(|e| DataplaneError::Bpffs(e.to_string()))?;
        let dst =
            CString::new(paths::BPFFS_ROOT).map_err(|e| DataplaneError::Bpffs(e.to_string()))?;
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

/// Load the object, re-using maps already pinned under `pin_dir` (a restarted daemon keeps
/// the state the data plane had) and pinning new ones there.
pub fn load(pin_dir: &Path, sizes: Sizes) -> Result<Ebpf, DataplaneError> {
    if OBJECT.is_empty() {
        return Err(DataplaneError::NotBuilt);
    }
    ensure_pin_dir(pin_dir)?;
    let rings = sizes.ring_slots;
    // A kept pin of another size cannot be reused: the loader would refuse it. Such maps hold
    // only what the reconciler writes again, so they are replaced.
    for (sym, file, want) in [
        (map_names::RINGS, pin_names::RINGS, rings),
        (
            map_names::SVC_STATS,
            pin_names::SVC_STATS,
            sizes.max_services,
        ),
        (map_names::SERVICES, pin_names::SERVICES, sizes.max_services),
        (map_names::BACKENDS, pin_names::BACKENDS, sizes.max_backends),
        (
            map_names::BACKEND_STATS,
            pin_names::BACKEND_STATS,
            sizes.max_backends,
        ),
        (map_names::NEXTHOP, pin_names::NEXTHOP, sizes.max_backends),
        (map_names::VIPS, pin_names::VIPS, sizes.max_vips),
        (map_names::VIP_STATS, pin_names::VIP_STATS, sizes.max_vips),
    ] {
        let p = pin_dir.join(file);
        if let Ok(m) = aya::maps::MapData::from_pin(&p) {
            // An older build's service entries (another value layout) cannot be reused
            // either: the program would read past them.
            let layout = sym != map_names::SERVICES
                || m.info().map(|i| i.value_size()).ok()
                    == Some(std::mem::size_of::<vip_common::ServiceValue>() as u32);
            if m.info().map(|i| i.max_entries()).ok() != Some(want) || !layout {
                tracing::info!(map = sym, "pinned map has another size; replacing it");
                let _ = std::fs::remove_file(&p);
                if sym == map_names::BACKENDS {
                    // Flow entries name backends by id and generation: with the
                    // generations gone, an old entry could match a new holder of its id.
                    tracing::info!("backend ids start afresh; flow table replaced too");
                    let _ = std::fs::remove_file(pin_dir.join(pin_names::CONNTRACK));
                }
            }
        }
    }
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(map_names::RINGS, rings)
        .map_max_entries(map_names::SVC_STATS, sizes.max_services)
        .map_max_entries(map_names::SERVICES, sizes.max_services)
        .map_max_entries(map_names::BACKENDS, sizes.max_backends)
        .map_max_entries(map_names::BACKEND_STATS, sizes.max_backends)
        .map_max_entries(map_names::NEXTHOP, sizes.max_backends)
        .map_max_entries(map_names::VIPS, sizes.max_vips)
        .map_max_entries(map_names::VIP_STATS, sizes.max_vips);
    for (sym, file) in PINNED.iter().chain(std::iter::once(&LOG_MAP)) {
        loader.map_pin_path(sym, pin_dir.join(file));
    }
    Ok(loader.load(OBJECT)?)
}

/// aya-log's ring buffer, pinned too: a program left running by an earlier daemon (adopted
/// unchanged) keeps logging into the buffer the new daemon reads.
const LOG_MAP: (&str, &str) = ("AYA_LOGS", "aya_logs");

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
                                tracing::warn!(error = %e, "eBPF log forwarder stopped");
                                return;
                            }
                        };
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "eBPF log forwarder not started"),
        },
        Err(e) => tracing::debug!(error = %e, "no eBPF log map; program logs not forwarded"),
    }
}
