//! Failover: three nodes share one VIP; the owner is killed (SIGKILL of the daemon) or cut
//! off (its switch port down), again and again, and a prober in the client's namespace asks
//! for the VIP by ARP every millisecond, recording which MAC answers when.
//!
//! vip (Raft election, XDP, a dsr service to two backends) against keepalived (Debian's
//! package, VRRPv3, the VIP on the uplink) on the same bed, in the same run, at matching
//! intervals: keepalived's `advert_int` and our `heartbeat_ms` of 1 s, 100 ms and 20 ms.
//! Per case: time from the fault to the first reply from another node (p50/p99/max), the
//! longest window in which two nodes answered, and long-lived TCP connections through the
//! VIP that no longer work after the failover.
//!
//! Files: `prober` (the ARP prober, the instrument), `daemons` (starting vip and keepalived
//! on a node), `case` (one system at one interval: fault, time the takeover, repair),
//! `report` (summaries and the table rows), and for the `failover-load` section `stress`
//! (what loads the cores, and the stall meter) and `load` (the load cases).
mod case;
mod daemons;
mod load;
mod prober;
mod report;
mod stress;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use testbed::{Bed, TcpServer};

use crate::{table::Row, PREFIX};
use case::run_system;
pub use load::run_load;
use prober::Prober;
pub(crate) use report::{ms, percentile};
use report::{note, push_rows};

const VIP: &str = "192.0.2.100";
const PORT: u16 = 8080;
const RAFT_PORT: u16 = 7946;
const METRICS: &str = "127.0.0.1:9472";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const BACKENDS: [&str; 2] = ["be1", "be2"];
/// Long-lived connections through the VIP held across each failover.
const CONNS: usize = 8;
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// Two owners: both MACs answered within the same bucket of this width.
const BUCKET: Duration = Duration::from_millis(5);
/// The daemons' pins (removed by the bench and by xtask).
pub const PIN_DIR: &str = "/sys/fs/bpf/vip-bench-failover";

fn work_dir() -> PathBuf {
    std::env::temp_dir().join("vip-bench-failover")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Vip,
    Keepalived,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Vip => "vip (Raft)",
            System::Keepalived => "keepalived",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// SIGKILL of the owner's daemon (keepalived: its whole process group).
    Kill,
    /// The owner's switch port down (node and daemon keep running).
    Cut,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Cut => "link cut",
        }
    }
}

/// Our timing for a heartbeat `h`, proportional at every interval: election timeout
/// 2.5–3.5 h (keepalived's master-down interval is 3 adverts + skew, 3.61 at priority 100),
/// lease 1.75 h (must end 10 ms before the shortest election timeout).
#[derive(Clone, Copy, Debug)]
struct Timing {
    heartbeat: Duration,
    election: (Duration, Duration),
    lease: Duration,
}

fn timing(h: Duration) -> Timing {
    Timing {
        heartbeat: h,
        election: (h * 5 / 2, h * 7 / 2),
        lease: h * 7 / 4,
    }
}

pub fn run(
    quick: bool,
    vip_bin: Option<&Path>,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let vip_bin = crate::vip_bin(vip_bin)?;
    let iters = if quick { 3 } else { 20 };
    let intervals: Vec<Duration> = if quick {
        vec![Duration::from_millis(100), Duration::from_millis(20)]
    } else {
        vec![
            Duration::from_millis(1000),
            Duration::from_millis(100),
            Duration::from_millis(20),
        ]
    };
    let bed = fresh_bed()?;
    let mut servers = Vec::new();
    let listen: SocketAddr = format!("0.0.0.0:{PORT}").parse()?;
    for b in BACKENDS {
        let h = bed.host(b);
        testbed::make_dsr_backend(h, VIP);
        servers.push(TcpServer::start(&h.ns, listen, &format!("{b}\n")));
    }
    // keepalived has no load balancer: its connections end on the owner itself.
    for n in NODES {
        servers.push(TcpServer::start(&bed.host(n).ns, listen, &format!("{n}\n")));
    }
    let prober = Prober::start(bed.host("client"))?;
    let mut table = Vec::new();
    for h in &intervals {
        let t = timing(*h);
        let ours = run_system(&bed, &prober, System::Vip, t, vip_bin, iters)?;
        let theirs = run_system(&bed, &prober, System::Keepalived, t, vip_bin, iters)?;
        table.push((t, ours, theirs));
    }
    drop(prober);
    drop(servers);
    push_rows(&table, rows);
    notes.push(note(iters));
    Ok(())
}

/// The failover bed (client, three nodes, two backends on one bridge), with a fresh work
/// directory.
fn fresh_bed() -> Result<Bed> {
    let _ = std::fs::remove_dir_all(work_dir());
    std::fs::create_dir_all(work_dir())?;
    Ok(Bed::new(
        &format!("{PREFIX}f"),
        &[
            ("client", "192.0.2.10/24"),
            ("n1", "192.0.2.11/24"),
            ("n2", "192.0.2.12/24"),
            ("n3", "192.0.2.13/24"),
            ("be1", "192.0.2.21/24"),
            ("be2", "192.0.2.22/24"),
        ],
    ))
}
