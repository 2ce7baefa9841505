//! `cargo xtask image`: the `vip` container image, built from scratch.
//!
//! The image holds one file, a static `vip` (musl, release, the release eBPF object
//! embedded), as `/vip`, its entrypoint: no base image, no shell, nothing downloaded, no
//! daemon. buildah assembles it in a private store under target/image/ (removed afterwards)
//! and commits it straight to an OCI archive, `vip_common::image::ARCHIVE`, named
//! `vip_common::image::NAME`: the name `vip manifest` writes into the manifests and the
//! container test (kernel-tests/tests/container.rs) runs.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use vip_common::image;

use crate::{
    ebpf, setup, tools,
    util::{output, root, run},
};

/// Installed by `cargo xtask setup`.
const TARGET: &str = setup::MUSL;

/// Programs this task runs besides cargo, rustup and date; their packages are in the one
/// table, `tools::TOOLS`.
const PROGRAMS: &[&str] = &["buildah", "musl-gcc", "git"];

const DESCRIPTION: &str = "Floating virtual IPs for bare-metal clusters, answered from XDP";

pub fn build() -> Result<()> {
    let t = Instant::now();
    check_tools()?;
    ebpf::build(true)?;
    let bin = build_static()?;
    let archive = root().join(image::ARCHIVE);
    let rev = revision()?;
    let epoch = created_epoch(&rev, &bin)?;
    let labels = labels(&rev, &rfc3339(epoch)?);
    // Rebuilt when the binary or a label changed; `cargo build` above is the only cost
    // otherwise.
    let stamp = archive.with_extension("tar.inputs");
    let inputs = inputs(&bin, &labels)?;
    if archive.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&inputs) {
        eprintln!("image: {} up to date ({})", archive.display(), image::NAME);
        return Ok(());
    }
    let dir = archive.parent().context("archive path has no parent")?;
    std::fs::create_dir_all(dir)?;
    let store = Store::new(dir)?;
    let tmp = archive.with_extension("tar.tmp");
    store.commit(&bin, &labels, epoch, &tmp)?;
    std::fs::rename(&tmp, &archive)?;
    std::fs::write(&stamp, inputs)?;
    let size = std::fs::metadata(&archive)?.len();
    eprintln!(
        "image: {} ({}, {:.1} MiB, built in {:.1} s)\n  load on a node: ctr -n k8s.io images import {0}   |   podman load -i {0}\n  push:           skopeo copy oci-archive:{0} docker://<registry>/vip:{}",
        archive.display(),
        image::NAME,
        size as f64 / (1024.0 * 1024.0),
        t.elapsed().as_secs_f64(),
        image::TAG,
    );
    Ok(())
}

fn check_tools() -> Result<()> {
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|p| !tools::found(p))
        .map(|p| {
            let pkgs = tools::TOOLS
                .iter()
                .find(|t| t.program == *p)
                .map_or_else(|| "?".to_string(), |t| t.packages.join(" "));
            format!("`{p}` (Debian package {pkgs})")
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "`cargo xtask image` needs {}: run `cargo xtask setup` as root, or apt-get install them",
            missing.join(", ")
        );
    }
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup not found: the image's static binary needs the musl target")?;
    if !targets.lines().any(|l| l.trim() == TARGET) {
        bail!("the Rust target {TARGET} is not installed: run `rustup target add {TARGET}`");
    }
    Ok(())
}

/// `vip` for musl in release, the release eBPF object embedded (never a newer debug one,
/// which the build would otherwise pick).
fn build_static() -> Result<PathBuf> {
    let obj = root().join("target/ebpf/bpfel-unknown-none/release/vip");
    if !obj.is_file() {
        bail!("{} missing after build-ebpf", obj.display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args(["build", "--release", "--target", TARGET])
        .args(["-p", "vip-userspace", "--bin", "vip"])
        .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
        .env("VIP_EBPF_OBJ", &obj)
        .current_dir(root()))?;
    let bin = root().join(format!("target/{TARGET}/release/vip"));
    if has_interpreter(&bin)? {
        bail!(
            "{} is dynamically linked: an image from scratch has no loader",
            bin.display()
        );
    }
    Ok(bin)
}

/// Whether an ELF64 executable names a program interpreter (PT_INTERP): a dynamic binary.
fn has_interpreter(path: &Path) -> Result<bool> {
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        bail!("{} is not an ELF64 file", path.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{}: truncated ELF header", path.display());
    };
    const PT_INTERP: u32 = 3;
    Ok((0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        elf.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP)
    }))
}

/// The commit built, `-dirty` when tracked files differ from it.
fn revision() -> Result<String> {
    let git = |args: &[&str]| output(Command::new("git").args(args).current_dir(root()));
    let head = git(&["rev-parse", "HEAD"])?.trim().to_string();
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?
        .trim()
        .is_empty();
    Ok(if dirty { format!("{head}-dirty") } else { head })
}

/// The commit's time for a clean tree, so rebuilding a commit gives the same image; for a
/// dirty one, when the binary was built (a rerun with nothing changed is still up to date).
fn created_epoch(rev: &str, bin: &Path) -> Result<u64> {
    if rev.ends_with("-dirty") {
        let built = std::fs::metadata(bin)?.modified()?;
        return Ok(built
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()));
    }
    let s = output(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(root()),
    )?;
    s.trim()
        .parse()
        .with_context(|| format!("not a Unix time: {s:?}"))
}

fn rfc3339(epoch: u64) -> Result<String> {
    Ok(output(Command::new("date").args([
        "-u",
        "-d",
        &format!("@{epoch}"),
        "+%Y-%m-%dT%H:%M:%SZ",
    ]))?
    .trim()
    .to_string())
}

/// The standard OCI labels (org.opencontainers.image.*), set as config labels and as
/// manifest annotations alike.
fn labels(rev: &str, created: &str) -> Vec<(String, String)> {
    [
        ("title", "vip"),
        ("version", image::TAG),
        ("revision", rev),
        ("source", image::SOURCE),
        ("licenses", env!("CARGO_PKG_LICENSE")),
        ("created", created),
        ("description", DESCRIPTION),
    ]
    .into_iter()
    .map(|(k, v)| (format!("org.opencontainers.image.{k}"), v.to_string()))
    .collect()
}

fn inputs(bin: &Path, labels: &[(String, String)]) -> Result<String> {
    let m = std::fs::metadata(bin)?;
    let mtime = m
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut s = format!("{} {} {mtime}\n", bin.display(), m.len());
    for (k, v) in labels {
        s.push_str(&format!("{k}={v}\n"));
    }
    Ok(s)
}

/// A buildah store of its own (vfs: plain directories, nothing mounted), so building the
/// image touches neither the machine's container storage nor its images; removed on drop.
struct Store {
    dir: PathBuf,
}

impl Store {
    fn new(parent: &Path) -> Result<Store> {
        let dir = parent.join(format!(".buildah-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Store { dir })
    }

    fn buildah(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    /// `/vip` from `bin` on an empty image, configured and committed to `archive`.
    fn commit(
        &self,
        bin: &Path,
        labels: &[(String, String)],
        epoch: u64,
        archive: &Path,
    ) -> Result<()> {
        let ctr = output(self.buildah().args(["from", "--quiet", "scratch"]))?
            .trim()
            .to_string();
        run(self
            .buildah()
            .args(["copy", "--quiet", "--chmod", "0755", &ctr])
            .arg(bin)
            .arg("/vip"))?;
        let mut config = self.buildah();
        config
            .arg("config")
            .args(["--entrypoint", r#"["/vip"]"#])
            .args(["--os", "linux", "--arch", "amd64", "--workingdir", "/"])
            .args(["--created-by", "cargo xtask image"]);
        for (k, v) in labels {
            config.arg("--label").arg(format!("{k}={v}"));
            config.arg("--annotation").arg(format!("{k}={v}"));
        }
        run(config.arg(&ctr))?;
        run(self
            .buildah()
            .args(["commit", "--quiet", "--rm", "--format", "oci"])
            // gzip layers: what a registry would store anyway, a third of the size.
            .arg("--disable-compression=false")
            .args(["--timestamp", &epoch.to_string()])
            .arg(&ctr)
            .arg(format!("oci-archive:{}:{}", archive.display(), image::NAME)))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
