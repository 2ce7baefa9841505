//! What a daemon costs, read from outside it: resident memory without its BPF map
//! mappings, BPF map memory as the kernel charges it, API requests by verb from the server's
//! log and when they go quiet, and the daemon's own "took long" log lines. Each reads
//! /proc, the kernel or the server, never the daemon's internals.
use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use fake_apiserver::FakeApiServer;
use serde_json::Value;

use super::report::mib;
use crate::stopped;

/// API requests of one client by verb, over a window.
#[derive(Default, Clone)]
pub(super) struct Verbs {
    pub(super) by: BTreeMap<&'static str, usize>,
    pub(super) secs: f64,
}

impl Verbs {
    pub(super) fn of(requests: &[String], secs: f64) -> Verbs {
        let mut by = BTreeMap::new();
        for r in requests {
            let (method, rest) = r.split_once(' ').unwrap_or((r, ""));
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let list = fake_apiserver::RESOURCES
                .iter()
                .any(|res| path.ends_with(&format!("/{}", res.plural)));
            let verb = match method {
                "GET"
                    if query
                        .split('&')
                        .any(|q| q == "watch=true" || q == "watch=1") =>
                {
                    "watch"
                }
                "GET" if list => "list",
                "GET" => "get",
                "POST" => "create",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "other",
            };
            *by.entry(verb).or_insert(0) += 1;
        }
        Verbs { by, secs }
    }

    pub(super) fn writes_per_s(&self) -> f64 {
        let w: usize = ["create", "update", "patch", "delete"]
            .iter()
            .map(|v| self.by.get(v).copied().unwrap_or(0))
            .sum();
        w as f64 / self.secs.max(1e-9)
    }

    pub(super) fn describe(&self) -> String {
        if self.by.is_empty() {
            return "none".into();
        }
        self.by
            .iter()
            .map(|(v, n)| format!("{v} {:.2}", *n as f64 / self.secs.max(1e-9)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Wait until the clients `tokens` made no API write other than to a Lease for `window`
/// (within `cap`); when that began, or None.
pub(super) fn quiet(
    server: &FakeApiServer,
    tokens: &[&str],
    window: Duration,
    cap: Duration,
) -> Option<Instant> {
    let writes = || -> usize {
        tokens
            .iter()
            .map(|t| {
                server
                    .requests_by(t)
                    .iter()
                    .filter(|r| !r.starts_with("GET") && !r.contains("/leases"))
                    .count()
            })
            .sum()
    };
    let start = Instant::now();
    let (mut last, mut since) = (writes(), Instant::now());
    while start.elapsed() < cap && !stopped() {
        std::thread::sleep(Duration::from_millis(250));
        let w = writes();
        if w != last {
            (last, since) = (w, Instant::now());
        } else if since.elapsed() >= window {
            return Some(since);
        }
    }
    None
}

/// New requests of `token` since the first `from` of them.
pub(super) fn requests_since(server: &FakeApiServer, token: &str, from: usize) -> Vec<String> {
    let all = server.requests_by(token);
    all.get(from..).unwrap_or_default().to_vec()
}

/// Resident memory of `pid` without its mappings of BPF maps (`anon_inode:bpf-map`: the
/// Maglev tables it writes in place are kernel memory the maps row already counts; VmRSS
/// would count them twice).
pub(super) fn rss_bytes(pid: i32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut total = 0u64;
    let mut in_map = false;
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        match f.next() {
            Some("Rss:") if !in_map => {
                total += f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
            }
            // A mapping's header line: "start-end perms offset dev inode [path]".
            Some(first)
                if first.contains('-')
                    && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
                    && !first.ends_with(':') =>
            {
                in_map = l.contains("bpf-map");
            }
            _ => {}
        }
    }
    total
}

/// BPF map memory held by `pid` as the kernel accounts it (`memlock` in the fdinfo of each
/// map fd, each map once): (total, per-CPU maps' share, the map ids).
pub(super) fn map_memlock(pid: i32) -> (u64, u64, HashSet<u64>) {
    let mut seen = HashSet::new();
    let (mut total, mut percpu) = (0u64, 0u64);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0, seen);
    };
    for fd in fds.flatten() {
        let is_map =
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("bpf-map"));
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |k: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        if !seen.insert(field("map_id:")) {
            continue;
        }
        let m = field("memlock:");
        total += m;
        // BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE.
        if matches!(field("map_type:"), 5 | 6 | 10 | 21) {
            percpu += m;
        }
    }
    (total, percpu, seen)
}

/// The largest of the maps `ids` by memlock, named (from `bpftool map show`).
pub(super) fn map_breakdown(ids: &HashSet<u64>) -> String {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output();
    let Ok(maps) = out.map(|o| serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap_or_default())
    else {
        return "bpftool unavailable".into();
    };
    let mut named: Vec<(u64, String)> = maps
        .iter()
        .filter(|m| m["id"].as_u64().is_some_and(|id| ids.contains(&id)))
        .map(|m| {
            (
                m["bytes_memlock"].as_u64().unwrap_or(0),
                m["name"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    named.sort_by(|a, b| b.cmp(a));
    named
        .iter()
        .take(6)
        .map(|(b, n)| format!("{n} {}", mib(*b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The daemon's "apply pass took long" and "view publication took long" lines (logged over
/// 5 ms) in `log`: how many, and p50/p99 of each part.
pub(super) fn change_costs(log: &str) -> String {
    let field = |l: &str, k: &str| -> Option<f64> {
        let i = l.find(&format!("{k}="))? + k.len() + 1;
        l[i..].split_whitespace().next()?.parse().ok()
    };
    let pct = |v: &mut Vec<f64>| -> String {
        if v.is_empty() {
            return "none".into();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        format!("p50 {:.1} ms / p99 {:.1} ms", at(0.5), at(0.99))
    };
    let (mut plan, mut converge, mut copy) = (Vec::new(), Vec::new(), Vec::new());
    for l in log.lines() {
        if l.contains("apply pass took long") {
            plan.extend(field(l, "plan_ms"));
            converge.extend(field(l, "converge_ms"));
        } else if l.contains("view publication took long") {
            copy.extend(field(l, "copy_ms"));
        }
    }
    if plan.is_empty() && copy.is_empty() {
        return String::new();
    }
    format!(
        "{} apply passes over 5 ms (planning {}, converging {}), {} view copies over 5 ms ({})",
        plan.len(),
        pct(&mut plan),
        pct(&mut converge),
        copy.len(),
        pct(&mut copy)
    )
}
