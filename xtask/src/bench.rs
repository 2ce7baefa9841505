//! `cargo xtask bench [--quick]`: builds the eBPF objects, `vip` and `vip-bench` (release),
//! runs the bench as root and prints its table. Without `--quick` the table, with the
//! machine and the date, replaces the generated part of BENCHMARKS.md (between the markers;
//! the analysis around it is kept). Namespaces and pins are removed even when the bench fails
//! or is interrupted.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{ebpf, setup, util};

const BEGIN: &str = "<!-- bench:begin (written by `cargo xtask bench`) -->";
const END: &str = "<!-- bench:end -->";
const FAILOVER_BEGIN: &str = "<!-- failover:begin (written by `cargo xtask bench failover`) -->";
const FAILOVER_END: &str = "<!-- failover:end -->";
const LOAD_BEGIN: &str =
    "<!-- failover-load:begin (written by `cargo xtask bench failover-load`) -->";
const LOAD_END: &str = "<!-- failover-load:end -->";
const SCALE_BEGIN: &str = "<!-- scale:begin (written by `cargo xtask bench scale`) -->";
const SCALE_END: &str = "<!-- scale:end -->";
const SECTIONS: [&str; 7] = [
    "testrun",
    "pps",
    "conns",
    "maglev",
    "failover",
    "failover-load",
    "scale",
];
/// Sections recorded in a part of their own, and run only on their own.
const APART: [(&str, &str, &str); 3] = [
    ("failover", FAILOVER_BEGIN, FAILOVER_END),
    ("failover-load", LOAD_BEGIN, LOAD_END),
    ("scale", SCALE_BEGIN, SCALE_END),
];

fn cleanup() {
    testbed::cleanup_prefix("vb-");
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/vip-bench");
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/vip-bench-failover");
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/vip-bench-scale");
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
}

fn machine() -> String {
    let text = |cmd: &mut Command| {
        util::output(cmd)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let file = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = file("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "?".into(), |m| m.trim().to_string());
    let os = file("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(|| "?".into(), |n| n.trim_matches('"').to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let git = |args: &[&str]| text(Command::new("git").args(args).current_dir(util::root()));
    format!(
        "Run {} on {cpus} CPUs ({cpu}), kernel {}, {os}; commit {}{}.",
        text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        file("/proc/sys/kernel/osrelease").trim(),
        git(&["rev-parse", "--short", "HEAD"]),
        if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
            ""
        } else {
            " (with uncommitted changes)"
        }
    )
}

/// Replace the part of BENCHMARKS.md between `begin` and `end` (appended if missing), so a
/// run of some sections leaves the others' figures alone.
fn record(table: &str, begin: &str, end: &str) -> Result<()> {
    let path = util::root().join("BENCHMARKS.md");
    let generated = format!("{begin}\n\n{}\n\n{table}\n{end}", machine());
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{generated}{}", &old[..a], &old[b + end.len()..])
        }
        _ if old.is_empty() => {
            format!("# Benchmarks\n\n`cargo xtask bench` (root).\n\n{generated}\n")
        }
        _ => format!("{}\n\n{generated}\n", old.trim_end()),
    };
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("recorded in {}", path.display());
    Ok(())
}

pub fn run(quick: bool, sections: &[String]) -> Result<()> {
    for s in sections {
        if !SECTIONS.contains(&s.as_str()) {
            bail!("unknown bench section {s}; one of {}", SECTIONS.join(", "));
        }
    }
    let apart = APART
        .iter()
        .find(|(name, _, _)| sections.iter().any(|s| s == name));
    if let Some((name, _, _)) = apart {
        if sections.len() > 1 {
            bail!("run `cargo xtask bench {name}` on its own (it is recorded in its own section)");
        }
    }
    if !util::is_root() {
        bail!("the bench builds network namespaces and loads XDP programs: run it as root");
    }
    // The bench child stops and cleans up by itself on Ctrl-C; xtask waits for it and then
    // removes anything left.
    ctrlc::set_handler(|| eprintln!("\ninterrupted: the bench is cleaning up"))
        .context("installing the Ctrl-C handler")?;
    setup::run()?;
    ebpf::build(true)?;
    util::cargo(&["build", "--release", "-p", "vip-userspace", "--bin", "vip"])?;
    util::cargo(&["build", "--release", "-p", "vip-bench"])?;
    let td = target_dir().join("release");
    let mut cmd = Command::new(td.join("vip-bench"));
    cmd.arg("--vip-bin").arg(td.join("vip"));
    if quick {
        cmd.arg("--quick");
    }
    for s in sections {
        cmd.arg("--only").arg(s);
    }
    eprintln!("+ {:?}", cmd);
    let out = cmd.stderr(Stdio::inherit()).output();
    cleanup();
    let out = out.context("running vip-bench")?;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    if !out.status.success() {
        bail!(
            "vip-bench failed ({}); BENCHMARKS.md left as it was",
            out.status
        );
    }
    if quick {
        return Ok(());
    }
    if let Some((_, begin, end)) = apart {
        record(table.trim_end(), begin, end)?;
    } else if sections.is_empty() {
        record(table.trim_end(), BEGIN, END)?;
    } else {
        eprintln!(
            "a run of some sections is not recorded (the table between the markers is a whole run)"
        );
    }
    Ok(())
}
