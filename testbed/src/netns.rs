//! One network namespace and how code gets into it: `ip -n`, a command entered by
//! `setns(CLONE_NEWNET)`, a thread that entered it, and its sysctls. The naming
//! (`VIP_NETNS_PREFIX`) and cleanup of leftovers live here too, since every namespace the
//! bed makes goes through them.
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread::JoinHandle,
};

use crate::process::ip;

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let name = &scoped(name);
        // A leftover from an interrupted run would make `add` fail.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that will run inside this namespace (network namespace only).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let path = self.path();
        // SAFETY: pre_exec runs in the forked child before exec; it only opens a file and
        // calls setns, both async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || {
                let f = File::open(&path)?;
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Run `f` on a thread that has entered this namespace; sockets it opens live here.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
            // SAFETY: setns on the current thread with a valid namespace fd.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

impl Netns {
    /// Write a sysctl inside this namespace (`net.ipv4...`, `net.ipv6...`).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let v = value.to_string();
        self.run(move || std::fs::write(&path, v).unwrap_or_else(|e| panic!("{path}: {e}")));
    }

    /// Read a sysctl inside this namespace (`net.ipv4...`, `net.ipv6...`), trimmed.
    pub fn sysctl_value(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(move || {
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .trim()
                .to_string()
        })
    }
}

/// `VIP_NETNS_PREFIX` (default empty) before a namespace name: two checkouts can run the
/// same kernel tests at once without deleting each other's namespaces.
pub fn scoped(name: &str) -> String {
    let pre = std::env::var("VIP_NETNS_PREFIX").unwrap_or_default();
    if name.starts_with(&pre) {
        name.to_string()
    } else {
        format!("{pre}{name}")
    }
}

/// Delete every namespace whose name starts with `prefix` (Ctrl-C cleanup, leftovers).
pub fn cleanup_prefix(prefix: &str) {
    let prefix = &scoped(prefix);
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(prefix) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
