//! `cargo xtask setup | build-ebpf | test | demo | bench`: everything an operator or CI runs.
mod bench;
mod demo;
mod ebpf;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (apt packages, rust-src, bpf-linker). Root.
    Setup,
    /// Build the eBPF object (nightly, bpfel-unknown-none, BTF).
    BuildEbpf {
        #[arg(long)]
        release: bool,
    },
    /// Setup, build-ebpf, fmt, clippy, unit tests, kernel tests. What CI runs.
    Test,
    /// Show vip on a namespace bed: XDP answering ARP, then the kernel fallback.
    Demo,
    /// Measure vip against its baselines and print one table (root). Without --quick the
    /// table is recorded in BENCHMARKS.md.
    Bench {
        /// Shorter runs, nothing recorded.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf { release } => ebpf::build(release),
        Cmd::Test => test(),
        Cmd::Demo => demo::run(),
        Cmd::Bench { quick } => bench::run(quick),
    }
}

fn test() -> Result<()> {
    let mut t = util::Timer::default();
    t.step("setup", setup::run)?;
    t.step("build-ebpf", || ebpf::build(true))?;
    t.step("fmt", || {
        util::cargo(&["fmt", "--all", "--", "--check"])?;
        ebpf::fmt_check()
    })?;
    t.step("clippy (userspace)", || {
        util::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    t.step("clippy (ebpf)", ebpf::clippy)?;
    let mut tally = util::Tally::default();
    let unit = t.step("unit tests", || {
        util::cargo_test(&["--workspace", "--lib", "--bins"], &mut tally)
    });
    let kernel = unit.and_then(|()| {
        t.step("kernel tests", || {
            util::cargo_test(
                &[
                    "-p",
                    "vip-userspace",
                    "--test",
                    "*",
                    "--",
                    "--test-threads=1",
                ],
                &mut tally,
            )
        })
    });
    t.summary();
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    kernel
}
