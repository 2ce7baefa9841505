//! Three real `vip` daemons (XDP) in `election.mode: raft` on a namespace bed: node1..3 at
//! 192.0.2.11-13, a client at .10, and whatever other hosts a test adds. Shared by
//! `raft_daemon` (fencing, restarts) and `raft_auth` (forgery, replay, rotation).
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use testbed::{http_get, parse_mac, poll, require_root_and_bpf, Bed};

use super::{gauge, metric, Daemon, METRICS, VIP};

pub const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Election port and timing of a cluster.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub port: u16,
    pub heartbeat_ms: u64,
    pub election_ms: (u64, u64),
    pub lease_ms: u64,
}

pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 11 + i as u8)
}

pub struct Cluster {
    pub bed: Bed,
    pub dir: PathBuf,
    pub daemons: Vec<Option<Daemon>>,
    pub t: Timing,
    /// More `election.raft` lines for every node (each indented by four spaces).
    pub raft_extra: String,
    /// The `vips:` list every node holds (default: [`VIP`]).
    pub vips: String,
}

impl Cluster {
    /// Key files `keys` (fresh random keys, in `dir`) and three nodes started with the first
    /// (`""`: `insecure: true`); `extra` hosts join the bed.
    pub fn new(prefix: &str, t: Timing, keys: &[&str], extra: &[(&str, &str)]) -> Cluster {
        Cluster::with_raft(prefix, t, keys, extra, "")
    }

    /// As `new`, with `raft_extra` added to every node's `election.raft`.
    pub fn with_raft(
        prefix: &str,
        t: Timing,
        keys: &[&str],
        extra: &[(&str, &str)],
        raft_extra: &str,
    ) -> Cluster {
        Cluster::with_vips(prefix, t, keys, extra, raft_extra, VIP)
    }

    /// As `with_raft`, every node holding `vips` (a YAML list's items, e.g. `a, 'b'`).
    pub fn with_vips(
        prefix: &str,
        t: Timing,
        keys: &[&str],
        extra: &[(&str, &str)],
        raft_extra: &str,
        vips: &str,
    ) -> Cluster {
        require_root_and_bpf();
        let mut hosts = vec![
            ("client", "192.0.2.10/24"),
            ("node1", "192.0.2.11/24"),
            ("node2", "192.0.2.12/24"),
            ("node3", "192.0.2.13/24"),
        ];
        hosts.extend_from_slice(extra);
        let bed = Bed::new(prefix, &hosts);
        let dir = std::env::temp_dir().join(format!("{prefix}-raft"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for k in keys.iter().filter(|k| !k.is_empty()) {
            std::fs::write(
                dir.join(k),
                vip_userspace::election::raft::RaftKey::generate().unwrap(),
            )
            .unwrap();
        }
        let mut c = Cluster {
            bed,
            dir,
            daemons: Vec::new(),
            t,
            raft_extra: raft_extra.to_string(),
            vips: vips.to_string(),
        };
        let first = keys.first().copied().unwrap_or("");
        for i in 0..3 {
            let d = c.start(i, first, None);
            c.daemons.push(Some(d));
        }
        c
    }

    pub fn pins(&self, i: usize) -> PathBuf {
        PathBuf::from(format!(
            "/sys/fs/bpf/vip-test-{}-{}",
            self.bed.prefix, NODES[i]
        ))
    }

    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(NODES[i])
    }

    /// Node `i` with key file `key` as primary (`""`: `insecure: true`) and `previous` also
    /// accepted (file names in `dir`).
    pub fn start(&self, i: usize, key: &str, previous: Option<&str>) -> Daemon {
        let t = self.t;
        let peers: Vec<String> = (0..3)
            .map(|j| format!("{}: \"{}:{}\"", j + 1, node_ip(j), t.port))
            .collect();
        let key = if key.is_empty() {
            "    insecure: true\n".to_string()
        } else {
            format!("    key_file: {}\n", self.dir.join(key).display())
        };
        let previous = previous
            .map(|p| format!("    previous_key_file: {}\n", self.dir.join(p).display()))
            .unwrap_or_default();
        let cfg = self.dir.join(format!("{}.yaml", NODES[i]));
        Daemon::start_with_config(&self.bed, NODES[i], &cfg, &format!(
                "interface: eth0\nmode: xdp\npin_dir: {}\nvips: [{}]\nelection:\n  mode: raft\n  raft:\n    id: {}\n    peers: {{{}}}\n{key}{previous}    state_dir: {}\n    heartbeat_ms: {}\n    election_timeout_min_ms: {}\n    election_timeout_max_ms: {}\n    lease_ms: {}\n{}",
                self.pins(i).display(),
                self.vips,
                i + 1,
                peers.join(", "),
                self.state_dir(i).display(),
                t.heartbeat_ms,
                t.election_ms.0,
                t.election_ms.1,
                t.lease_ms,
                self.raft_extra,
            ))
    }

    /// SIGTERM node `i` (it must exit 0).
    pub fn stop(&mut self, i: usize) {
        let mut d = self.daemons[i].take().expect("running");
        assert!(d.stop().success(), "{}", d.logs());
    }

    pub fn restart(&mut self, i: usize, key: &str, previous: Option<&str>) {
        self.stop(i);
        self.daemons[i] = Some(self.start(i, key, previous));
    }

    pub fn metrics(&self, i: usize) -> Option<String> {
        match http_get(
            &self.bed.host(NODES[i]).ns,
            METRICS.parse().unwrap(),
            "/metrics",
        ) {
            Ok((200, b)) => Some(b),
            _ => None,
        }
    }

    pub fn mac(&self, i: usize) -> [u8; 6] {
        parse_mac(&self.bed.host(NODES[i]).mac)
    }

    pub fn node_of(&self, mac: [u8; 6]) -> usize {
        (0..3).find(|i| self.mac(*i) == mac).expect("a node's MAC")
    }

    /// Nodes whose metrics say "fenced leader" (running daemons only).
    pub fn fenced_leaders(&self) -> Vec<usize> {
        (0..3)
            .filter(|i| self.daemons[*i].is_some())
            .filter(|i| {
                self.metrics(*i)
                    .is_some_and(|m| metric(&m, "vip_raft_fenced_leader") == 1)
            })
            .collect()
    }

    /// (leader index, term) once all three nodes run, name the same leader, and exactly
    /// that node is the fenced leader.
    pub fn settled(&self, timeout: Duration) -> (usize, u64) {
        poll(timeout, || {
            let ms: Vec<String> = (0..3)
                .map(|i| self.daemons[i].as_ref().and_then(|_| self.metrics(i)))
                .collect::<Option<_>>()?;
            // Absent (the election starts after the metrics server) or -1 (no leader
            // known): not settled.
            let ids: Vec<i64> = ms
                .iter()
                .map(|m| gauge(m, "vip_raft_leader_id").filter(|l| *l > 0))
                .collect::<Option<_>>()?;
            let fenced: Vec<usize> = (0..3)
                .filter(|i| metric(&ms[*i], "vip_raft_fenced_leader") == 1)
                .collect();
            (ids.iter().all(|l| *l == ids[0])
                && fenced.len() == 1
                && fenced[0] as i64 + 1 == ids[0])
                .then(|| (fenced[0], metric(&ms[fenced[0]], "vip_raft_term")))
        })
        .unwrap_or_else(|| panic!("no settled leader:\n{}", self.logs()))
    }

    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .flatten()
            .map(|d| d.logs())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().flatten() {
            d.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
