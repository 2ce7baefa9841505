//! `cargo xtask setup | build-ebpf | image | test | demo | bench | fuzz | fuzz-parsers`:
//! everything an operator or CI runs.
mod bench;
mod demo;
mod ebpf;
mod fuzz_parsers;
mod image;
mod setup;
mod tools;
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
    /// Install what building, testing, the demo and the bench need: the Debian packages of
    /// every program they spawn (xtask/src/tools.rs), rust-src, rustfmt, clippy, the musl
    /// target and bpf-linker. Root when something is missing.
    Setup,
    /// Build the eBPF object (nightly, bpfel-unknown-none, BTF).
    BuildEbpf {
        #[arg(long)]
        release: bool,
    },
    /// The container image: static `vip` (musl) with the eBPF object embedded, from scratch,
    /// written to target/image/vip-<version>.oci.tar (buildah; nothing downloaded).
    Image,
    /// Setup, build-ebpf, fmt, clippy, unit tests, the integration tests that need no root,
    /// image, the kernel tier (kernel-tests/, root), a short parser fuzz run. What CI runs.
    Test,
    /// Show vip on a namespace bed: XDP answering ARP, the kernel fallback, load balancing,
    /// then three Raft nodes with the owner SIGKILLed (longest gap, one owner at a time).
    Demo,
    /// Measure vip against its baselines and print one table (root). Without --quick the
    /// table is recorded in BENCHMARKS.md.
    Bench {
        /// Shorter runs, nothing recorded.
        #[arg(long)]
        quick: bool,
        /// Sections to run (testrun, pps, conns, maglev, failover, failover-load, scale);
        /// none: all but failover, failover-load and scale, which (15 min and more each) are
        /// recorded in parts of their own of BENCHMARKS.md. failover-load runs
        /// `VIP_BENCH_LOAD_SECS` (default 1800) per case, four cases.
        sections: Vec<String>,
    },
    /// Random and mutated frames through the kernel and the reference model (root): verdicts
    /// and bytes must agree. `cargo xtask test` runs 100,000; this runs as many as asked.
    Fuzz {
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// Seed (default: from the clock; printed, so a failure can be replayed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Coverage-guided fuzzing of the parsers (BGP, Raft, config, kube-vip env, Kubernetes
    /// annotations): each cargo-fuzz target in fuzz/ for N seconds, then a table of execs,
    /// corpus and crashes. Fails on any crash. `cargo xtask test` runs 20 s each.
    FuzzParsers {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf { release } => ebpf::build(release),
        Cmd::Image => image::build(),
        Cmd::Test => test(),
        Cmd::Demo => demo::run(),
        Cmd::Bench { quick, sections } => bench::run(quick, &sections),
        Cmd::Fuzz { frames, seed } => fuzz(frames, seed),
        Cmd::FuzzParsers { seconds } => {
            setup::run()?;
            fuzz_parsers::run(seconds)
        }
    }
}

fn fuzz(frames: u64, seed: Option<u64>) -> Result<()> {
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("fuzz: {frames} frames, seed {seed} (replay with --seed {seed})");
    setup::run()?;
    ebpf::build(true)?;
    util::run(
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "test",
                "--release",
                "-p",
                "vip-kernel-tests",
                "--test",
                "lb_test_run",
            ])
            .args([
                "fuzz_kernel_and_model_agree",
                "--",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VIP_FUZZ_FRAMES", frames.to_string())
            .env("VIP_FUZZ_SEED", seed.to_string())
            .current_dir(util::root()),
    )
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
        util::cargo_test(&["--workspace", "--lib", "--bins"], &mut tally)?;
        // The fake API server driven by kube-rs (no root needed).
        util::cargo_test(&["-p", "fake-apiserver", "--test", "*"], &mut tally)
    });
    // vip-userspace/tests: what a plain `cargo test` runs besides the unit tests. One at a
    // time, as the kernel tier: the electors' timings are tuned for an otherwise idle
    // machine.
    let plain = unit.and_then(|()| {
        t.step("integration tests (no root)", || {
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
    // The container test runs the image; up to date, this costs a no-op cargo build.
    let image = plain.and_then(|()| t.step("image", image::build));
    let kernel = image.and_then(|()| {
        t.step("kernel tests", || {
            // The binary the tests spawn (testkit::daemon::vip_bin would build it too, in
            // the first test that needs it; built here, a compile error is its own step).
            util::cargo(&["build", "-p", "vip-userspace", "--bin", "vip"])?;
            util::cargo_test(
                &[
                    "-p",
                    "vip-kernel-tests",
                    "--test",
                    "*",
                    "--",
                    "--test-threads=1",
                ],
                &mut tally,
            )
        })
    });
    // Independent of the tests above: a crash is reported even when a kernel test failed.
    let fuzzed = t.step("fuzz parsers (20 s per target)", || fuzz_parsers::run(20));
    t.summary();
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    kernel.and(fuzzed)
}
