//! The `vip` daemon as a child process in a host's namespace of a [`Bed`], for the kernel
//! tests: where the binary is, how it is started and logged, when it is ready, how it stops.
use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use testbed::{http_get, poll, Bed, Netns, Proc};

/// Where every test daemon serves its metrics and health, inside its own namespace.
pub const METRICS: &str = "127.0.0.1:9472";
/// The VIP of the single-VIP tests.
pub const VIP: &str = "192.0.2.100";

/// The `vip` binary the tests run: `$VIP_BIN` when set, else this build's, brought up to
/// date once per test process by `cargo build -p vip-userspace --bin vip` with the test's
/// own profile and target directory.
///
/// Why a build here: `env!("CARGO_BIN_EXE_vip")` exists only in the package that owns the
/// binary (vip-userspace), and depending on vip-userspace builds its library, not its
/// binary, so without this step a kernel test could run a stale or missing `vip`. Up to
/// date, the build is a no-op of about a second.
pub fn vip_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("VIP_BIN") {
            return PathBuf::from(p);
        }
        // <target>/<profile>/deps/<test>-<hash>: the profile directory is the binary's.
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("{}: not under <target>/<profile>/deps", exe.display()));
        let target_dir = profile_dir.parent().expect("a target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(p) => p,
            None => panic!("{}: no profile directory", profile_dir.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "-p", "vip-userspace", "--bin", "vip"])
            .args(["--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(&workspace)
            .status()
            .unwrap_or_else(|e| panic!("running {cargo:?} to build vip: {e}"));
        assert!(
            status.success(),
            "`cargo build -p vip-userspace --bin vip --profile {profile}` failed ({status}); \
             or set VIP_BIN to a vip binary"
        );
        let bin = profile_dir.join("vip");
        assert!(bin.exists(), "{}: not built", bin.display());
        bin
    })
}

/// A `vip` daemon on one host of a bed; killed when dropped (the [`Proc`]).
pub struct Daemon {
    pub proc: Proc,
    pub log: PathBuf,
}

impl Daemon {
    /// `vip run` on host `node` with `args`, ready.
    pub fn start(bed: &Bed, args: &[&str]) -> Daemon {
        Self::start_in(bed, "node", args)
    }

    /// The daemon on host `role` of the bed, with a fresh log, ready.
    pub fn start_in(bed: &Bed, role: &str, args: &[&str]) -> Daemon {
        Self::fresh_log(bed, role);
        Self::start_with_env(bed, role, args, &[])
    }

    /// The log of host `role`'s daemon (the launchers append to it).
    pub fn log_path(bed: &Bed, role: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{}-{role}-vip.log", bed.prefix))
    }

    /// `config` written to `path`, then the daemon on host `role` with `--config path`,
    /// a fresh log, ready.
    pub fn start_with_config(bed: &Bed, role: &str, path: &Path, config: &str) -> Daemon {
        std::fs::write(path, config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self::start_in(bed, role, &["--config", path.to_str().unwrap()])
    }

    /// Empty the log of host `role`'s daemon.
    pub fn fresh_log(bed: &Bed, role: &str) {
        File::create(Self::log_path(bed, role)).unwrap();
    }

    /// The daemon on host `role` with extra environment variables; its log is appended to
    /// (a restarted daemon's log follows its predecessor's).
    pub fn start_with_env(bed: &Bed, role: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut d = Self::spawn_with(bed, role, args, env, |_| {});
        d.wait_ready(bed, role);
        d
    }

    /// The daemon on host `role`, `configure` applied to its command, not waited for.
    pub fn spawn_with(
        bed: &Bed,
        role: &str,
        args: &[&str],
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> Daemon {
        let node = bed.host(role);
        let log = Self::log_path(bed, role);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = node.ns.command(vip_bin());
        cmd.arg("run")
            .args(["--interface", "eth0", "--metrics-addr", METRICS])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(f));
        configure(&mut cmd);
        Daemon {
            proc: Proc::spawn(cmd),
            log,
        }
    }

    /// Until `/readyz` answers 200 (10 s at most); panics with the log if it exits first.
    pub fn wait_ready(&mut self, bed: &Bed, role: &str) {
        let log = self.log.clone();
        let child = &mut self.proc.child;
        wait_ready(
            &bed.host(role).ns,
            METRICS.parse().unwrap(),
            || match child.try_wait() {
                Ok(Some(st)) => Some(st.to_string()),
                _ => None,
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }

    pub fn pid(&self) -> i32 {
        self.proc.child.id() as i32
    }

    /// XDP mode owning [`VIP`], maps pinned under `pins`.
    pub fn start_xdp(bed: &Bed, pins: &Path) -> Daemon {
        let pins = pins.to_str().unwrap();
        Daemon::start(bed, &["--vip", VIP, "--mode", "xdp", "--pin-dir", pins])
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit status within 10 s.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.proc.signal(libc::SIGTERM);
        self.proc
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("daemon did not exit on SIGTERM:\n{}", self.logs()))
    }
}

/// Polls `/readyz` at `metrics` in `ns` until it answers 200, for 10 s. `exited` says
/// whether (and how) the daemon ended, `logs` what it wrote; both go into the panic.
pub fn wait_ready(
    ns: &Netns,
    metrics: SocketAddr,
    mut exited: impl FnMut() -> Option<String>,
    logs: impl Fn() -> String,
) {
    let ready = poll(Duration::from_secs(10), || {
        if let Some(st) = exited() {
            panic!("daemon exited early ({st}):\n{}", logs());
        }
        match http_get(ns, metrics, "/readyz") {
            Ok((200, _)) => Some(()),
            _ => None,
        }
    });
    assert!(ready.is_some(), "daemon not ready in 10 s:\n{}", logs());
}
