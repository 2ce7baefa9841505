//! `vip-bench`: the measurements behind `cargo xtask bench`. Prints one markdown table
//! (every figure beside its same-run baseline and the ratio) on stdout, then notes on how
//! each figure was taken; progress goes to stderr. Root only: it builds network namespaces
//! (all named `vb-*`, removed on exit, on failure and on Ctrl-C) and loads XDP programs.
//!
//! ```text
//! vip-bench [--quick] [--vip-bin PATH] [--only testrun|pps|conns|maglev|failover|failover-load|scale]...
//! ```
//!
//! `failover` (~15 min), `failover-load` (4 × `VIP_BENCH_LOAD_SECS`, default 30 min each)
//! and `scale` (~15 min) run only when asked for with `--only`.
mod conns;
mod failover;
mod maglev;
mod pps;
mod scale;
mod table;
mod testrun;

use std::{
    panic::AssertUnwindSafe,
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};

use table::Row;

/// Every namespace the bench makes starts with this.
pub const PREFIX: &str = "vb-";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Set by SIGINT/SIGTERM: measurement loops stop and unwind, so every guard cleans up.
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Pin the calling thread to one CPU (stable per-packet figures; the generator's core).
pub fn pin_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// ifindex of `dev` in the calling thread's namespace.
pub fn ifindex(dev: &str) -> Result<u32> {
    let c = std::ffi::CString::new(dev)?;
    // SAFETY: c is a valid NUL-terminated string for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no device {dev}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

/// Kill the child if the bench dies (even by SIGKILL), so nothing outlives it.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl in the forked child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The `vip` binary of `--vip-bin`, for the sections that run the daemon.
pub fn vip_bin(p: Option<&std::path::Path>) -> Result<&std::path::Path> {
    let p = p.context("--vip-bin PATH (the vip binary) is needed for this section")?;
    if !p.exists() {
        bail!(
            "{} missing: build it (`cargo build --release -p vip-userspace`)",
            p.display()
        );
    }
    Ok(p)
}

struct Args {
    quick: bool,
    vip_bin: Option<PathBuf>,
    only: Vec<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        vip_bin: None,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            "--vip-bin" => a.vip_bin = Some(it.next().context("--vip-bin PATH")?.into()),
            "--only" => a.only.push(it.next().context("--only SECTION")?),
            other => bail!(
                "unknown argument {other}; usage: vip-bench [--quick] [--vip-bin PATH] [--only testrun|pps|conns|maglev|failover|failover-load|scale]"
            ),
        }
    }
    Ok(a)
}

type Section<'a> = (
    &'static str,
    Box<dyn FnOnce(&mut Vec<Row>, &mut Vec<String>) -> Result<()> + 'a>,
);

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vip-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<bool> {
    let a = args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench builds network namespaces and loads XDP programs: run it as root");
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    // Leftovers of an interrupted run would make namespace creation fail.
    testbed::cleanup_prefix(PREFIX);
    let _ = std::fs::remove_dir_all(conns::PIN_DIR);
    let _ = std::fs::remove_dir_all(failover::PIN_DIR);
    let _ = std::fs::remove_dir_all(scale::PIN_DIR);
    let quick = a.quick;
    let vip_bin = a.vip_bin.clone();
    let vip_bin2 = a.vip_bin.clone();
    let vip_bin3 = a.vip_bin.clone();
    let vip_bin4 = a.vip_bin.clone();
    let sections: Vec<Section> = vec![
        ("testrun", Box::new(move |r, n| testrun::run(quick, r, n))),
        ("pps", Box::new(move |r, n| pps::run(quick, r, n))),
        (
            "conns",
            Box::new(move |r, n| conns::run(quick, vip_bin.as_deref(), r, n)),
        ),
        ("maglev", Box::new(move |r, _| maglev::run(quick, r))),
        (
            "failover",
            Box::new(move |r, n| failover::run(quick, vip_bin2.as_deref(), r, n)),
        ),
        (
            "failover-load",
            Box::new(move |r, n| failover::run_load(vip_bin4.as_deref(), r, n)),
        ),
        (
            "scale",
            Box::new(move |r, n| scale::run(quick, vip_bin3.as_deref(), r, n)),
        ),
    ];
    // Sections that run when none is named (failover, failover-load and scale take 15 min
    // and more each: only on request).
    let default = |name: &str| !["failover", "failover-load", "scale"].contains(&name);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut ok = true;
    for (name, f) in sections {
        let wanted = if a.only.is_empty() {
            default(name)
        } else {
            a.only.iter().any(|o| o == name)
        };
        if !wanted {
            continue;
        }
        if stopped() {
            ok = false;
            break;
        }
        eprintln!("== {name}");
        let t = std::time::Instant::now();
        // testbed panics on a failed command; its guards clean up while unwinding.
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut rows, &mut notes)));
        let err = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(p) => Some(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
            ),
        };
        if let Some(e) = err {
            eprintln!("== {name} FAILED: {e}");
            rows.push(Row::new(format!("{name}: FAILED")).result(e.replace('\n', " ")));
            ok = false;
        }
        eprintln!("== {name} took {:.1} s", t.elapsed().as_secs_f64());
    }
    testbed::cleanup_prefix(PREFIX);
    let _ = std::fs::remove_dir_all(conns::PIN_DIR);
    let _ = std::fs::remove_dir_all(failover::PIN_DIR);
    let _ = std::fs::remove_dir_all(scale::PIN_DIR);
    println!("{}", table::render(&rows));
    for n in &notes {
        println!("- {n}");
    }
    Ok(ok)
}
