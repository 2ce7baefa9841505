//! One system (vip or keepalived) at one interval on the bed: the three daemons, and the
//! measurement loop that faults the owner, times the takeover from the prober's replies,
//! checks the long-lived connections and repairs, again and again.
use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use testbed::{http_get, parse_mac, poll, Bed, LongConn};

use super::{
    daemons::{remove_vip, start_keepalived, start_vip, NodeProc},
    prober::{two_owner_window, Prober},
    report::ms,
    work_dir, Fault, System, Timing, CONNS, METRICS, NODES, PIN_DIR, PORT, VIP,
};
use crate::stopped;

pub(super) struct Sample {
    pub(super) takeover: Duration,
    pub(super) two_owners: Duration,
    /// Two owners still answering when the observation ended (before the repair).
    pub(super) two_owners_at_end: bool,
    pub(super) lost: usize,
}

pub(super) struct Case<'a> {
    pub(super) bed: &'a Bed,
    pub(super) prober: &'a Prober,
    pub(super) system: System,
    pub(super) timing: Timing,
    pub(super) vip_bin: &'a Path,
    pub(super) procs: Vec<Option<NodeProc>>,
}

impl<'a> Case<'a> {
    /// The three daemons of `system` started; vip on a fresh cluster (no term or pins from
    /// an earlier one).
    pub(super) fn start_all(
        bed: &'a Bed,
        prober: &'a Prober,
        system: System,
        timing: Timing,
        vip_bin: &'a Path,
    ) -> Result<Case<'a>> {
        let mut case = Case {
            bed,
            prober,
            system,
            timing,
            vip_bin,
            procs: vec![None, None, None],
        };
        if system == System::Vip {
            // A fresh cluster: no term or pins from the previous interval.
            let _ = std::fs::remove_dir_all(PIN_DIR);
            for n in NODES {
                let _ = std::fs::remove_dir_all(work_dir().join(n));
            }
        }
        for i in 0..3 {
            case.start(i)?;
        }
        Ok(case)
    }

    pub(super) fn start(&mut self, i: usize) -> Result<()> {
        let p = match self.system {
            System::Vip => start_vip(self.bed, i, self.timing, self.vip_bin)?,
            System::Keepalived => start_keepalived(self.bed, i, self.timing.heartbeat)?,
        };
        self.procs[i] = Some(p);
        Ok(())
    }

    pub(super) fn node_of(&self, mac: [u8; 6]) -> Option<usize> {
        (0..3).find(|i| parse_mac(&self.bed.host(NODES[*i]).mac) == mac)
    }

    /// Wait until exactly one node answers, steadily; its index.
    pub(super) fn stable_owner(&self) -> Result<usize> {
        let window = Duration::from_millis(200).max(self.timing.heartbeat);
        let owner = poll(Duration::from_secs(20) + self.timing.heartbeat * 10, || {
            if stopped() {
                return Some(None);
            }
            self.prober.sole_owner(window).map(Some)
        })
        .flatten();
        let Some(mac) = owner else {
            bail!(
                "{}: no single owner answering\n{}",
                self.system.name(),
                self.logs()
            );
        };
        self.node_of(mac).context("an unknown MAC answers")
    }

    pub(super) fn logs(&self) -> String {
        self.procs
            .iter()
            .flatten()
            .map(|p| {
                let l = p.logs();
                l[l.len().saturating_sub(3000)..].to_string()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    /// Where flows through the VIP went when some were lost: the client's neighbour entry
    /// and each node's forwarding counters (stderr).
    pub(super) fn diagnose(&self) {
        let client = self.bed.host("client");
        let n = client.ns.ip(&["neigh", "show", VIP]);
        eprintln!(
            "   client neigh: {}",
            String::from_utf8_lossy(&n.stdout).trim()
        );
        for (i, node) in NODES.iter().enumerate() {
            let h = self.bed.host(node);
            let m = http_get(
                &h.ns,
                METRICS.parse().unwrap_or(([127, 0, 0, 1], 9472).into()),
                "/metrics",
            )
            .map(|r| r.1)
            .unwrap_or_default();
            let pick: Vec<&str> = m
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.starts_with("vip_lb_")
                            || l.starts_with("vip_raft_fenced")
                            || l.starts_with("vip_vips_owned")
                            || l.starts_with("vip_xdp_verdicts"))
                })
                .collect();
            eprintln!(
                "   {node} ({}): {}",
                self.bed.host(NODES[i]).mac,
                pick.join(", ")
            );
            let neigh = h.ns.ip(&["neigh", "show"]);
            eprintln!(
                "   {node} neigh: {}",
                String::from_utf8_lossy(&neigh.stdout).replace('\n', "; ")
            );
        }
    }

    /// One failover: fault the owner, time the takeover, check the connections, repair.
    pub(super) fn once(&mut self, fault: Fault) -> Result<Sample> {
        let owner = self.stable_owner()?;
        let old_mac = parse_mac(&self.bed.host(NODES[owner]).mac);
        let (conns, refused) = self.open_conns()?;
        let t0 = Instant::now();
        self.prober.forget_before(t0 - Duration::from_secs(1));
        match fault {
            Fault::Kill => {
                if let Some(p) = self.procs[owner].as_mut() {
                    p.kill();
                }
            }
            Fault::Cut => self.bed.cut(NODES[owner]),
        }
        let first_new = self.first_new_reply(fault, t0, old_mac)?;
        let fault_at = self.fault_instant(fault, t0, old_mac, first_new);
        let settle = (self.timing.heartbeat * 2).max(Duration::from_millis(300));
        std::thread::sleep(settle);
        let lost = refused + lost_conns(conns);
        if lost > 0 && self.system == System::Vip {
            self.diagnose();
        }
        let at_end = self.two_owners_now(t0);
        self.repair(fault, owner, settle)?;
        let all = self.prober.since(t0);
        Ok(Sample {
            takeover: first_new.saturating_duration_since(fault_at),
            two_owners: two_owner_window(&all),
            two_owners_at_end: at_end,
            lost,
        })
    }

    /// `CONNS` long-lived connections through the VIP, and how many were refused.
    fn open_conns(&self) -> Result<(Vec<LongConn>, usize)> {
        let client = self.bed.host("client");
        let vip: SocketAddr = format!("{VIP}:{PORT}").parse()?;
        let mut conns = Vec::new();
        let mut refused = 0;
        for _ in 0..CONNS {
            match LongConn::open(&client.ns, vip) {
                Ok(c) => conns.push(c),
                Err(e) => {
                    refused += 1;
                    eprintln!("   connecting through the VIP before the fault: {e}");
                }
            }
        }
        Ok((conns, refused))
    }

    /// When a node other than the old owner first answered after `t0`.
    fn first_new_reply(&self, fault: Fault, t0: Instant, old_mac: [u8; 6]) -> Result<Instant> {
        let limit = self.timing.heartbeat * 10 + Duration::from_secs(5);
        let first_new = poll(limit, || {
            self.prober
                .since(t0)
                .into_iter()
                .find(|r| r.1 != old_mac)
                .map(|r| r.0)
        });
        let Some(first_new) = first_new else {
            bail!(
                "{} {}: no takeover within {limit:?}\n{}",
                self.system.name(),
                fault.name(),
                self.logs()
            );
        };
        Ok(first_new)
    }

    /// A cut is done somewhere inside `ip link set`: no frame of the old owner can reach
    /// the client after it, so its last reply bounds the instant from below.
    fn fault_instant(
        &self,
        fault: Fault,
        t0: Instant,
        old_mac: [u8; 6],
        first_new: Instant,
    ) -> Instant {
        match fault {
            Fault::Kill => t0,
            Fault::Cut => self
                .prober
                .since(t0)
                .iter()
                .filter(|r| r.1 == old_mac && r.0 < first_new)
                .map(|r| r.0)
                .max()
                .unwrap_or(t0)
                .max(t0),
        }
    }

    /// Two owners still answering in the last 50 ms (before the repair).
    fn two_owners_now(&self, t0: Instant) -> bool {
        let before_repair = self.prober.since(t0);
        let end_window = Instant::now() - Duration::from_millis(50);
        before_repair
            .iter()
            .filter(|r| r.0 > end_window)
            .map(|r| r.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 2
    }

    /// Undo the fault on `owner`, and let it settle before the next one.
    fn repair(&mut self, fault: Fault, owner: usize, settle: Duration) -> Result<()> {
        // Repair: what a crashed keepalived leaves (the VIP on the uplink) goes by hand.
        match fault {
            Fault::Kill => {
                if self.system == System::Keepalived {
                    remove_vip(self.bed.host(NODES[owner]));
                }
                self.start(owner)?;
            }
            Fault::Cut => self.bed.heal(NODES[owner]),
        }
        std::thread::sleep(settle);
        // A node cut off lost its neighbour entries; its first datagrams to a peer after the
        // heal wait for ARP (retried every second). Let that settle before the next fault,
        // or the next election may wait on it (unicast Raft; VRRP adverts are multicast).
        if fault == Fault::Cut {
            std::thread::sleep(Duration::from_millis(1200));
        }
        Ok(())
    }
}

/// Of the held connections, those whose echo no longer comes back.
fn lost_conns(mut conns: Vec<LongConn>) -> usize {
    let mut lost = 0;
    for c in conns.iter_mut() {
        let _ = c.stream.set_read_timeout(Some(Duration::from_secs(2)));
        match c.echo("still there") {
            Ok(s) if s == "still there" => {}
            _ => lost += 1,
        }
    }
    drop(conns);
    lost
}

pub(super) fn run_system(
    bed: &Bed,
    prober: &Prober,
    system: System,
    t: Timing,
    vip_bin: &Path,
    iters: usize,
) -> Result<Vec<(Fault, Vec<Sample>)>> {
    let mut case = Case::start_all(bed, prober, system, t, vip_bin)?;
    let mut out = Vec::new();
    for fault in [Fault::Kill, Fault::Cut] {
        let mut samples = Vec::new();
        for k in 0..iters {
            if stopped() {
                bail!("interrupted");
            }
            let s = case.once(fault)?;
            eprintln!(
                "   {} {:>4} ms {} #{k}: takeover {}, two owners {}, lost {}",
                system.name(),
                t.heartbeat.as_millis(),
                fault.name(),
                ms(s.takeover),
                ms(s.two_owners),
                s.lost
            );
            samples.push(s);
        }
        out.push((fault, samples));
    }
    drop(case);
    // keepalived's VIP must not outlive its run (a clean stop removes it; be sure).
    for n in NODES {
        remove_vip(bed.host(n));
    }
    Ok(out)
}
