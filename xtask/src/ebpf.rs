//! Building and linting the eBPF crate: nightly, `-Z build-std=core`, bpfel-unknown-none,
//! BTF emitted so bpftool prints map fields by name.
use std::process::Command;

use anyhow::Result;

use crate::util::{root, run};

const TARGET: &str = "bpfel-unknown-none";

/// `rustup run nightly cargo ...` in vip-ebpf, with the outer cargo's environment removed so
/// the stable toolchain that runs xtask does not leak into the nightly build.
fn nightly_cargo(args: &[&str]) -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"]).args(args);
    for v in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(v);
    }
    c.env(
        "CARGO_ENCODED_RUSTFLAGS",
        ["-C", "debuginfo=2", "-C", "link-arg=--btf"].join("\x1f"),
    );
    c.current_dir(root().join("vip-ebpf"));
    c
}

fn target_dir() -> String {
    root().join("target/ebpf").display().to_string()
}

pub fn build(release: bool) -> Result<()> {
    let td = target_dir();
    let mut args = vec![
        "build",
        "-Z",
        "build-std=core",
        "--target",
        TARGET,
        "--target-dir",
        &td,
    ];
    if release {
        args.push("--release");
    }
    run(&mut nightly_cargo(&args))?;
    let profile = if release { "release" } else { "debug" };
    eprintln!("eBPF objects: {}/{TARGET}/{profile}/{{vip,xdp-pass}}", td);
    Ok(())
}

pub fn clippy() -> Result<()> {
    let td = target_dir();
    run(&mut nightly_cargo(&[
        "clippy",
        "-Z",
        "build-std=core",
        "--target",
        TARGET,
        "--target-dir",
        &td,
        "--release",
        "--",
        "-D",
        "warnings",
    ]))
}

pub fn fmt_check() -> Result<()> {
    run(&mut nightly_cargo(&["fmt", "--", "--check"]))
}
