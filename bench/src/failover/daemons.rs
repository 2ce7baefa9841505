//! The daemons under test on a node: `vip run` with a Raft election at a given timing, or
//! keepalived (VRRPv3) in its own process group, each with its config written and its log
//! kept; and undoing what a killed keepalived leaves behind.
use std::{
    fs::File,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use testbed::{http_get, poll, Bed, Host, Proc};

use super::{work_dir, Timing, BACKENDS, METRICS, NODES, PIN_DIR, PORT, RAFT_PORT, VIP};
use crate::die_with_parent;

/// A node's daemon: `vip run`, or keepalived in its own process group (parent and VRRP
/// child are killed together, as a crash of the service would).
pub(super) struct NodeProc {
    pub(super) proc: Proc,
    pub(super) group: bool,
    pub(super) log: PathBuf,
}

impl NodeProc {
    pub(super) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(super) fn kill(&mut self) {
        let pid = self.proc.child.id() as i32;
        // SAFETY: signalling our own child (or its process group, which it leads).
        unsafe {
            libc::kill(if self.group { -pid } else { pid }, libc::SIGKILL);
        }
        let _ = self.proc.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.child.try_wait() {
            let pid = self.proc.child.id() as i32;
            // SAFETY: as in kill().
            unsafe {
                libc::kill(if self.group { -pid } else { pid }, libc::SIGTERM);
            }
            if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
                self.kill();
            }
        } else if self.group {
            // The parent is gone; a VRRP child may not be.
            // SAFETY: as in kill().
            unsafe {
                libc::kill(-(self.proc.child.id() as i32), libc::SIGKILL);
            }
        }
    }
}

pub(super) fn start_vip(bed: &Bed, i: usize, t: Timing, vip_bin: &Path) -> Result<NodeProc> {
    let node = bed.host(NODES[i]);
    let dir = work_dir();
    let backends: String = BACKENDS
        .iter()
        .map(|b| format!("      - {{addr: {}}}\n", bed.host(b).addr))
        .collect();
    let peers: Vec<String> = (0..3)
        .map(|j| format!("{}: \"{}:{RAFT_PORT}\"", j + 1, bed.host(NODES[j]).addr))
        .collect();
    let key = dir.join("raft-key");
    if !key.exists() {
        let k = vip_userspace::election::raft::RaftKey::generate()
            .map_err(|e| anyhow::anyhow!("no randomness for the Raft key: {e}"))?;
        std::fs::write(&key, k)?;
    }
    let cfg = dir.join(format!("{}.yaml", NODES[i]));
    std::fs::write(
        &cfg,
        format!(
            "interface: eth0\nmode: xdp\nmetrics_addr: {METRICS}\npin_dir: {PIN_DIR}/{}\nlog_level: warn\n\
             services:\n  - vip: {VIP}\n    port: {PORT}\n    protocol: tcp\n    mode: dsr\n    backends:\n{backends}\
             election:\n  mode: raft\n  raft:\n    id: {}\n    peers: {{{}}}\n    key_file: {}\n    state_dir: {}\n    heartbeat_ms: {}\n    election_timeout_min_ms: {}\n    election_timeout_max_ms: {}\n    lease_ms: {}\n{}",
            NODES[i],
            i + 1,
            peers.join(", "),
            key.display(),
            dir.join(NODES[i]).display(),
            t.heartbeat.as_millis(),
            t.election.0.as_millis(),
            t.election.1.as_millis(),
            t.lease.as_millis(),
            if priority_off() {
                "    realtime_priority: 0\n    nice: 0\n"
            } else {
                ""
            },
        ),
    )?;
    let log = dir.join(format!("{}-vip.log", NODES[i]));
    let mut cmd = node.ns.command(vip_bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            File::options().create(true).append(true).open(&log)?,
        ));
    die_with_parent(&mut cmd);
    let mut p = NodeProc {
        proc: Proc {
            child: cmd
                .spawn()
                .with_context(|| format!("starting {}", vip_bin.display()))?,
        },
        group: false,
        log,
    };
    let metrics: SocketAddr = METRICS.parse()?;
    let ready = poll(Duration::from_secs(15), || {
        if let Ok(Some(_)) = p.proc.child.try_wait() {
            return Some(false);
        }
        match http_get(&node.ns, metrics, "/readyz") {
            Ok((200, _)) => Some(true),
            _ => None,
        }
    });
    if ready != Some(true) {
        let logs = p.logs();
        p.kill();
        bail!("vip on {} not ready in 15 s:\n{logs}", NODES[i]);
    }
    Ok(p)
}

/// keepalived, VRRPv3, every node BACKUP at priority 100 with nopreempt (like our election:
/// whoever wins keeps it); the VIP on the uplink, answered by the kernel.
pub(super) fn start_keepalived(bed: &Bed, i: usize, advert: Duration) -> Result<NodeProc> {
    let node = bed.host(NODES[i]);
    let dir = work_dir();
    let cfg = dir.join(format!("{}-keepalived.conf", NODES[i]));
    std::fs::write(
        &cfg,
        format!(
            "global_defs {{\n    router_id {}\n    vrrp_version 3\n    vrrp_garp_master_delay 0\n    vrrp_garp_master_repeat 1\n    script_user root\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    nopreempt\n    interface eth0\n    virtual_router_id 51\n    priority 100\n    advert_int {}\n    virtual_ipaddress {{\n        {VIP}/32 dev eth0\n    }}\n}}\n",
            NODES[i],
            advert.as_secs_f64()
        ),
    )?;
    let log = dir.join(format!("{}-keepalived.log", NODES[i]));
    // A killed run's pid files (its VRRP child may not be reaped yet) would make keepalived
    // refuse to start ("daemon is already running").
    for f in ["keepalived", "vrrp"] {
        let _ = std::fs::remove_file(dir.join(format!("{}-{f}.pid", NODES[i])));
    }
    let mut cmd = node.ns.command("keepalived");
    cmd.args(["-n", "-l", "-D", "-P", "-G"])
        .arg("-f")
        .arg(&cfg)
        .arg("-p")
        .arg(dir.join(format!("{}-keepalived.pid", NODES[i])))
        .arg("-r")
        .arg(dir.join(format!("{}-vrrp.pid", NODES[i])))
        .stdout(Stdio::from(
            File::options().create(true).append(true).open(&log)?,
        ))
        .stderr(Stdio::from(
            File::options().create(true).append(true).open(&log)?,
        ))
        .process_group(0);
    die_with_parent(&mut cmd);
    let p = NodeProc {
        proc: Proc {
            child: cmd.spawn().context(
                "starting keepalived (`cargo xtask bench` installs the Debian package keepalived)",
            )?,
        },
        group: true,
        log,
    };
    Ok(p)
}

/// Take the VIP off a node's uplink (what a stopped keepalived leaves), if it is there.
pub(super) fn remove_vip(node: &Host) {
    let _ = Command::new("ip")
        .args(["-n", &node.ns.name])
        .args(["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])
        .stderr(Stdio::null())
        .status();
}

pub(super) fn keepalived_version() -> String {
    Command::new("keepalived")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .next()
                .unwrap_or("")
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// `VIP_BENCH_RAFT_PRIORITY=off`: the daemons without the election's raised priority
/// (`realtime_priority: 0, nice: 0`), to see what it buys.
pub(super) fn priority_off() -> bool {
    std::env::var("VIP_BENCH_RAFT_PRIORITY").is_ok_and(|v| v == "off")
}
