//! `cargo xtask setup`: idempotent and quick when nothing is missing.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{
    tools::{self, TOOLS},
    util::{self, is_root, output},
};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// `cargo xtask fuzz-parsers` (and its short run in `cargo xtask test`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The target of the static `vip` in the container image.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

pub fn run() -> Result<()> {
    let t = std::time::Instant::now();
    // Started first, read after the nightly checks: rustup takes ~70 ms per list.
    let stable = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .stdout(Stdio::piped())
        .spawn()
        .context("rustup not found: vip builds with rustup toolchains")?;
    apt()?;
    rust_src()?;
    stable_parts(stable)?;
    bpf_linker()?;
    cargo_fuzz()?;
    eprintln!(
        "setup: everything present ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The packages of `pkgs` that are not installed, with one dpkg-query for all of them (it
/// prints what it knows and complains on stderr about packages it never saw).
fn missing_packages(pkgs: &[&'static str]) -> Result<Vec<&'static str>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(pkgs)
        .output()
        .context("cannot run dpkg-query: setup needs a Debian system")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ok: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(" install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    Ok(pkgs.iter().copied().filter(|p| !ok.contains(p)).collect())
}

/// Install the packages of `tools::TOOLS` that are missing, then check that every program
/// of the table can be spawned.
fn apt() -> Result<()> {
    let missing = missing_packages(&tools::packages())?;
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages {missing:?}; run `cargo xtask setup` as root (or apt-get install them)"
            );
        }
        for t in TOOLS
            .iter()
            .filter(|t| t.packages.iter().any(|p| missing.contains(p)))
        {
            eprintln!("setup: {} ({}): {}", t.program, t.packages.join(" "), t.why);
        }
        // Other apt users (unattended upgrades, a parallel setup) hold the lock for a while.
        let apt = |args: &[&str]| {
            util::run(
                Command::new("apt-get")
                    .args(["-o", "DPkg::Lock::Timeout=300"])
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        };
        apt(&["update", "-qq"])
            .context("apt-get update failed: is the Debian mirror reachable?")?;
        let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
        install.extend(&missing);
        apt(&install).with_context(|| format!("apt-get install {missing:?} failed"))?;
    }
    let absent: Vec<String> = TOOLS
        .iter()
        .filter(|t| !tools::found(t.program))
        .map(|t| format!("{} (package {})", t.program, t.packages.join(" ")))
        .collect();
    if !absent.is_empty() {
        bail!("installed, but not found in PATH, /usr/sbin or /sbin: {absent:?}");
    }
    Ok(())
}

/// What the stable toolchain running xtask needs: rustfmt and clippy (`cargo xtask test`)
/// and the musl target of the static `vip` in the image.
fn stable_parts(list: Child) -> Result<()> {
    let out = list.wait_with_output()?;
    if !out.status.success() {
        bail!("rustup component list failed ({})", out.status);
    }
    let installed = String::from_utf8_lossy(&out.stdout);
    for c in ["rustfmt", "clippy"] {
        if !installed.lines().any(|l| l.starts_with(c)) {
            util::run(Command::new("rustup").args(["component", "add", c]))
                .with_context(|| format!("rustup component add {c} failed (no network?)"))?;
        }
    }
    if !installed
        .lines()
        .any(|l| l.starts_with(&format!("rust-std-{MUSL}")))
    {
        util::run(Command::new("rustup").args(["target", "add", MUSL]))
            .with_context(|| format!("rustup target add {MUSL} failed (no network?)"))?;
    }
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

/// cargo-fuzz drives libFuzzer for the parser fuzz targets in fuzz/ (built with nightly,
/// which `rust_src` makes sure of).
fn cargo_fuzz() -> Result<()> {
    if let Ok(v) = output(Command::new("cargo").args(["fuzz", "--version"])) {
        if v.contains(CARGO_FUZZ_VERSION) {
            return Ok(());
        }
    }
    util::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("installing cargo-fuzz failed (no network to crates.io?)")?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn one_dpkg_query_tells_missing_packages_apart() {
        // dpkg is on every Debian system; dpkg-query complains about the other and goes on.
        assert_eq!(
            super::missing_packages(&["dpkg", "vip-no-such-package"]).unwrap(),
            vec!["vip-no-such-package"]
        );
    }
}
