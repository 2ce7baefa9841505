//! `cargo xtask fuzz-parsers --seconds N`: every cargo-fuzz target in `fuzz/` for N
//! seconds, then one table (target, seconds, execs, corpus, crashes); fails on any crash.
//!
//! The targets are built once with `cargo +nightly fuzz build` and their binaries run
//! directly with what `cargo fuzz run <target> -- -max_total_time=N` passes them. Running
//! `cargo fuzz run` per target would build again each time, and vip-userspace's build
//! script (it watches for an eBPF object that may not exist) makes that a full rebuild of
//! the library under the sanitizer.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::util;

/// Every `[[bin]]` of fuzz/Cargo.toml.
pub const TARGETS: [&str; 5] = [
    "bgp_message",
    "raft_datagram",
    "config_yaml",
    "kube_vip_env",
    "k8s_annotations",
];

/// An input that takes longer than this is reported like a crash: a parser that hangs is a
/// denial of service.
const INPUT_TIMEOUT_S: u32 = 10;

struct Row {
    target: &'static str,
    seconds: u64,
    execs: u64,
    corpus: usize,
    crashes: Vec<PathBuf>,
}

pub fn run(seconds: u64) -> Result<()> {
    let dir = util::root().join("fuzz");
    util::run(
        Command::new("cargo")
            .args(["+nightly", "fuzz", "build"])
            .current_dir(&dir)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("cargo +nightly fuzz build failed (cargo xtask setup installs cargo-fuzz)")?;
    let bins = dir.join("target/x86_64-unknown-linux-gnu/release");
    let mut rows = Vec::new();
    for target in TARGETS {
        rows.push(run_target(&dir, &bins, target, seconds)?);
    }
    println!("| target | seconds | execs | corpus | crashes |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.target,
            r.seconds,
            r.execs,
            r.corpus,
            r.crashes.len()
        );
    }
    let crashed: Vec<String> = rows
        .iter()
        .flat_map(|r| r.crashes.iter().map(|p| p.display().to_string()))
        .collect();
    if !crashed.is_empty() {
        bail!(
            "fuzzing found {} crashing input(s): {crashed:?}; replay one with `cargo +nightly fuzz run <target> <file>` in fuzz/",
            crashed.len()
        );
    }
    Ok(())
}

fn files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn run_target(dir: &Path, bins: &Path, target: &'static str, seconds: u64) -> Result<Row> {
    let corpus = dir.join("corpus").join(target);
    let artifacts = dir.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let before = files(&artifacts);
    let bin = bins.join(target);
    eprintln!("fuzz-parsers: {target} for {seconds} s");
    let out = Command::new(&bin)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg("-print_final_stats=1")
        .arg(&corpus)
        // As cargo fuzz runs them (the sanitizer trips over Rust's duplicate symbols).
        .env("ASAN_OPTIONS", "detect_odr_violation=0")
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let execs = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let crashes: Vec<PathBuf> = files(&artifacts).difference(&before).cloned().collect();
    if !out.status.success() && crashes.is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{target} exited with {} and left no artifact:\n{}",
            out.status,
            tail.join("\n")
        );
    }
    if !crashes.is_empty() {
        // The panic and its stack, where the artifact alone would not say what broke.
        let from = log
            .find("panicked at")
            .or_else(|| log.find("==ERROR"))
            .unwrap_or(0);
        eprintln!("{}", &log[from..log.len().min(from + 4000)]);
    }
    Ok(Row {
        target,
        seconds,
        execs,
        corpus: files(&corpus).len(),
        crashes,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_fuzz_target_is_run() {
        let manifest = std::fs::read_to_string(crate::util::root().join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
        let bins: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "vip-fuzz")
            .collect();
        let mut want: Vec<&str> = super::TARGETS.to_vec();
        let mut bins = bins;
        want.sort();
        bins.sort();
        assert_eq!(bins, want, "fuzz/Cargo.toml's [[bin]]s and TARGETS differ");
    }
}
