//! Capabilities: what each one is for, and giving up the one needed only at start.
//!
//! | capability | what needs it                                              | when              |
//! |------------|------------------------------------------------------------|-------------------|
//! | BPF        | creating maps, loading BTF and programs, pinning           | start, and every data-plane restart (a replaced uplink) |
//! | PERFMON    | the verifier's pointer and helper checks for the programs  | same              |
//! | NET_ADMIN  | attaching XDP and tc (links or netlink), addresses, neighbours, per-interface settings (rtnetlink) | always |
//! | NET_RAW    | gratuitous ARP / unsolicited NA on a packet socket         | every announcement |
//! | SYS_ADMIN  | mounting bpffs at /sys/fs/bpf when the node has none       | start only        |
//! | SYS_NICE   | SCHED_FIFO (or a negative nice value) for the Raft election's threads; optional, they run at normal priority without it | start of the election |
//!
//! `drop_after_start` removes SYS_ADMIN from the effective, permitted and inheritable sets
//! (and the bounding and ambient sets, so no exec could get it back). Safe because:
//! - the mount happens before (`dataplane::load::mount_bpffs`, called by main first);
//!   later loads find the bpffs mounted and only create directories and pins on it, which
//!   file permissions govern;
//! - adopting a pinned link reads the running program's tag from the link's fdinfo, not by
//!   program id (`BPF_PROG_GET_FD_BY_ID` is the one bpf command that needs SYS_ADMIN);
//! - everything else the daemon does later (maps, programs, re-attaching XDP after an
//!   uplink replacement, netlink, packet sockets) is covered by the four kept above.
//!
//! Capabilities belong to threads, not processes: this must run while the process has one
//! thread (main calls it before building the tokio runtime), so every thread started later
//! inherits the reduced sets.
use caps::{CapSet, Capability};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("capabilities must be dropped before any thread starts ({threads} running)")]
    Threads { threads: usize },
    #[error("dropping {cap} from the {set} set")]
    Drop {
        cap: Capability,
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
}

/// Capabilities held only for the start and dropped by [`drop_after_start`].
pub const START_ONLY: [Capability; 1] = [Capability::CAP_SYS_ADMIN];

/// Drop [`START_ONLY`]; returns those that were held (none when the daemon never had them,
/// e.g. a container without SYS_ADMIN).
pub fn drop_after_start() -> Result<Vec<Capability>, PrivilegeError> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads > 1 {
        return Err(PrivilegeError::Threads { threads });
    }
    let mut dropped = Vec::new();
    for cap in START_ONLY {
        let held = caps::has_cap(None, CapSet::Permitted, cap).unwrap_or(true);
        // The bounding set needs CAP_SETPCAP to change; without it no exec of ours can
        // gain more than the bounding set allowed anyway.
        let _ = caps::drop(None, CapSet::Bounding, cap);
        // The kernel lowers the ambient set with the permitted or inheritable one.
        for (set, name) in [
            (CapSet::Effective, "effective"),
            (CapSet::Permitted, "permitted"),
            (CapSet::Inheritable, "inheritable"),
        ] {
            caps::drop(None, set, cap).map_err(|source| PrivilegeError::Drop {
                cap,
                set: name,
                source,
            })?;
        }
        if held {
            dropped.push(cap);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses_once_threads_run() {
        // The test harness runs this on a thread of its own: a drop here would leave the
        // other threads with SYS_ADMIN, so nothing is dropped.
        let other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(1)));
        assert!(matches!(
            super::drop_after_start(),
            Err(super::PrivilegeError::Threads { threads }) if threads >= 2
        ));
        other.join().unwrap();
    }
}
