//! `cargo xtask setup`: idempotent and quick when nothing is missing.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::util::{self, is_root, output};

/// Debian packages the build, the tests and the demo use.
const APT: &[&str] = &[
    "iproute2",
    "bpftool",
    "arping",
    "util-linux",
    "gcc",
    "libc6-dev",
    // Real BGP peers for vip-userspace/tests/bgp_peers.rs (FRR: bgpd and vtysh only,
    // started by the test without zebra).
    "bird2",
    "gobgpd",
    "frr",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    let t = std::time::Instant::now();
    apt()?;
    rust_src()?;
    bpf_linker()?;
    eprintln!(
        "setup: everything present ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; run `cargo xtask setup` as root (or apt-get install them)"
        );
    }
    util::run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: is the Debian mirror reachable?")?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {missing:?} failed"))?;
    Ok(())
}

fn nightly_present() -> Result<()> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup not found: vip builds its eBPF side with a rustup nightly toolchain")?;
    if !list.lines().any(|l| l.starts_with("nightly")) {
        util::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "-c",
            "rust-src,rustfmt,clippy",
        ]))
        .context("installing the nightly toolchain failed (no network to the Rust registries?)")?;
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    nightly_present()?;
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    for c in ["rust-src", "rustfmt", "clippy"] {
        if !comps.lines().any(|l| l.starts_with(c)) {
            util::run(Command::new("rustup").args([
                "component",
                "add",
                c,
                "--toolchain",
                "nightly",
            ]))
            .with_context(|| format!("rustup component add {c} failed (no network?)"))?;
        }
    }
    Ok(())
}

/// bpf-linker must link the same LLVM as nightly rustc emits, so it is built against the
/// toolchain's own libLLVM through a prefix folder of symlinks.
fn bpf_linker() -> Result<()> {
    if let Ok(v) = output(Command::new("bpf-linker").arg("--version")) {
        if v.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
    }
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("cannot read the LLVM version from `rustc +nightly -vV`")?
        .to_string();
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    // bpf-linker keeps this folder as its RUNPATH, so it must outlive the build.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let prefix = cargo_home.join(format!("vip-llvm-{major}"));
    let plib = prefix.join("lib");
    std::fs::create_dir_all(&plib)?;
    let mut versioned = None;
    for e in std::fs::read_dir(&lib)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") {
            let link = plib.join(&name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(lib.join(&name), &link)?;
            if name.starts_with("libLLVM.so.") {
                versioned = Some(name);
            }
        }
    }
    let versioned = versioned.with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let generic = plib.join("libLLVM.so");
    let _ = std::fs::remove_file(&generic);
    std::os::unix::fs::symlink(lib.join(&versioned), &generic)?;
    util::run(
        Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            .env("RUSTFLAGS", format!("-L {}", plib.display()))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("building bpf-linker failed (no network to crates.io, or LLVM mismatch)")?;
    Ok(())
}
