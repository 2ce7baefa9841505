//! One `vip run` daemon of a case and what the bench reads from it directly: its process
//! and log, its pinned VIPS/SERVICES/RINGS/BACKENDS maps, its `vip_services_unplaced`
//! gauge, and an optional `perf record` of it over a phase.
use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Result;
use aya::maps::{Array, HashMap as BpfHash, Map, MapData};
use testbed::{Bed, Proc};
use vip_common::{
    pin_names, BackendValue, ServiceKey, ServiceValue, VipKey, VipValue, RING_EMPTY, VIP_F_OWNED,
};

use super::cluster::Mode;

/// `perf record` of some daemons over one phase, when `VIP_BENCH_SCALE_PERF` names a
/// directory (`<phase>-<mode>-<n>.data` there; read with `perf report -i`).
pub(super) struct Profile(std::process::Child);

impl Profile {
    pub(super) fn start(phase: &str, n: usize, mode: Mode, nodes: &[Node]) -> Option<Profile> {
        let dir = std::env::var_os("VIP_BENCH_SCALE_PERF")?;
        let pids: Vec<String> = nodes.iter().map(|nd| nd.pid().to_string()).collect();
        let out = Path::new(&dir).join(format!("{phase}-{}-{n}.data", mode.name()));
        let child = std::process::Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(pids.join(","))
            .arg("-o")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Profile(child))
    }

    pub(super) fn stop(mut self) {
        // SIGINT: perf writes its file and exits.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// `vip run` on one node, stopped with SIGTERM (then killed) when dropped.
pub(super) struct Node {
    pub(super) proc: Proc,
    pub(super) log: PathBuf,
    pub(super) pins: PathBuf,
    pub(super) token: &'static str,
    pub(super) mac: [u8; 6],
}

impl Node {
    pub(super) fn pid(&self) -> i32 {
        self.proc.child.id() as i32
    }

    pub(super) fn alive(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    pub(super) fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub(super) fn stop(&mut self) {
        if self.alive() {
            self.proc.signal(libc::SIGTERM);
            // Removing thousands of addresses and pins takes a while.
            if self.proc.wait_timeout(Duration::from_secs(30)).is_none() {
                let _ = self.proc.child.kill();
                let _ = self.proc.child.wait();
            }
        }
    }

    pub(super) fn vips(&self) -> Option<BpfHash<MapData, VipKey, VipValue>> {
        let m = MapData::from_pin(self.pins.join(pin_names::VIPS)).ok()?;
        BpfHash::try_from(Map::HashMap(m)).ok()
    }

    pub(super) fn services(&self) -> Option<BpfHash<MapData, ServiceKey, ServiceValue>> {
        let m = MapData::from_pin(self.pins.join(pin_names::SERVICES)).ok()?;
        BpfHash::try_from(Map::HashMap(m)).ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// Owned VIPs in a node's VIPS map, and services with a table in its SERVICES map.
pub(super) fn dataplane_counts(node: &Node) -> (usize, usize) {
    let owned = node.vips().map_or(0, |m| {
        m.iter()
            .filter_map(|e| e.ok())
            .filter(|(_, v)| v.flags & VIP_F_OWNED != 0)
            .count()
    });
    let tables = node.services().map_or(0, |m| {
        m.iter()
            .filter_map(|e| e.ok())
            .filter(|(_, v)| v.ring_size > 0)
            .count()
    });
    (owned, tables)
}

/// `vip_services_unplaced` of the daemon on `node` (None: metrics not served yet).
pub(super) fn unplaced(bed: &Bed, node: &str) -> Option<u64> {
    let (code, body) = testbed::http_get(
        &bed.host(node).ns,
        "127.0.0.1:9472".parse().ok()?,
        "/metrics",
    )
    .ok()?;
    if code != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("vip_services_unplaced "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Whether the table `v` points at holds a backend with address `want`.
pub(super) fn ring_holds(pins: &Path, v: &ServiceValue, want: Ipv4Addr) -> Result<bool> {
    let rings: Array<_, u32> =
        Array::try_from(Map::Array(MapData::from_pin(pins.join(pin_names::RINGS))?))?;
    let backends: Array<_, BackendValue> = Array::try_from(Map::Array(MapData::from_pin(
        pins.join(pin_names::BACKENDS),
    )?))?;
    let mut ids = HashSet::new();
    for slot in v.ring_off..v.ring_off + v.ring_size {
        if let Ok(id) = rings.get(&slot, 0) {
            if id != RING_EMPTY {
                ids.insert(id);
            }
        }
    }
    Ok(ids.into_iter().any(|id| {
        backends
            .get(&id, 0)
            .is_ok_and(|b| Ipv4Addr::from(b.addr_be) == want)
    }))
}
