//! Embeds the eBPF object built by `cargo xtask build-ebpf`. When it has not been built yet,
//! an empty placeholder is embedded so `cargo check`, clippy and unit tests still work; loading
//! then fails with a message telling the operator what to run.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let ebpf_dir = manifest.join("../target/ebpf/bpfel-unknown-none");
    println!("cargo:rerun-if-env-changed=VIP_EBPF_OBJ");
    let candidates: Vec<PathBuf> = match env::var_os("VIP_EBPF_OBJ") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![ebpf_dir.join("release/vip"), ebpf_dir.join("debug/vip")],
    };
    for c in &candidates {
        println!("cargo:rerun-if-changed={}", c.display());
    }
    let found = candidates
        .iter()
        .filter_map(|c| fs::metadata(c).ok().map(|m| (c, m)))
        .max_by_key(|(_, m)| m.modified().ok());
    let dst = out.join("vip.bpf.o");
    match found {
        Some((src, _)) => {
            fs::copy(src, &dst).expect("copy eBPF object");
        }
        None => {
            println!(
                "cargo:warning=eBPF object not built; run `cargo xtask build-ebpf` (loading will fail until then)"
            );
            fs::write(&dst, b"").expect("write placeholder");
        }
    }
}
