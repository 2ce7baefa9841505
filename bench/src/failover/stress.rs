//! What the `failover-load` section runs against the daemons: the load on every core (busy
//! loops, or the pps bench's veth flood in softirq), and the stall meter, a SCHED_FIFO 10
//! thread per core that tells the machine stalling apart from the load.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

/// What keeps both cores busy in a load case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Load {
    /// A plain busy loop per core at normal priority (a node running workloads).
    Busy,
    /// The veth traffic generator of the pps bench on every core: frames forwarded by the
    /// kernel, so the cores spend their time in softirq.
    Softirq,
}

impl Load {
    pub(super) fn name(self) -> &'static str {
        match self {
            Load::Busy => "busy loops",
            Load::Softirq => "softirq (veth flood)",
        }
    }
}

/// A running load, stopped when dropped.
pub(super) enum LoadGuard {
    Busy(Arc<AtomicBool>, Vec<JoinHandle<()>>),
    Softirq(Box<crate::pps::Flood>),
}

impl LoadGuard {
    pub(super) fn start(load: Load) -> Result<LoadGuard> {
        Ok(match load {
            Load::Busy => {
                let stop = Arc::new(AtomicBool::new(false));
                let n = std::thread::available_parallelism().map_or(2, |n| n.get());
                let threads = (0..n)
                    .map(|cpu| {
                        let stop = stop.clone();
                        std::thread::spawn(move || {
                            crate::pin_cpu(cpu);
                            let mut x = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                x = std::hint::black_box(x.wrapping_add(1));
                            }
                        })
                    })
                    .collect();
                LoadGuard::Busy(stop, threads)
            }
            Load::Softirq => LoadGuard::Softirq(Box::new(crate::pps::Flood::start()?)),
        })
    }

    /// Stop; what was generated (frames; 0 for busy loops).
    pub(super) fn stop(self) -> Result<u64> {
        match self {
            LoadGuard::Busy(stop, threads) => {
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                Ok(0)
            }
            LoadGuard::Softirq(f) => f.stop(),
        }
    }
}

/// How late a thread at the election's priority woke over a load case: a SCHED_FIFO 10
/// thread sleeps 1 ms at a time and records each wake's lateness, per CPU it is pinned to.
/// A wake tens of milliseconds late at that priority is the machine stalling (a VM's vCPU
/// descheduled by the host, or kernel work that does not reach a preemption point on this
/// `PREEMPT_NONE` kernel), not the load: nothing else on it runs at real-time priority.
pub(super) struct StallMeter {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) threads: Vec<JoinHandle<Stalls>>,
    pub(super) steal0: u64,
}

#[derive(Default, Clone, Copy)]
pub(super) struct Stalls {
    pub(super) over_10ms: u64,
    pub(super) over_35ms: u64,
    pub(super) max: Duration,
}

/// The machine's steal time so far (`/proc/stat`, the `cpu` line's 8th field, in 1/100 s).
pub(super) fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(8).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

impl StallMeter {
    pub(super) fn start() -> StallMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|cpu| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    crate::pin_cpu(cpu);
                    let p = libc::sched_param { sched_priority: 10 };
                    // SAFETY: a valid sched_param; pid 0 is the calling thread.
                    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
                    let mut st = Stalls::default();
                    while !stop.load(Ordering::Relaxed) {
                        let want = Instant::now() + Duration::from_millis(1);
                        std::thread::sleep(Duration::from_millis(1));
                        let late = Instant::now().saturating_duration_since(want);
                        if late > Duration::from_millis(10) {
                            st.over_10ms += 1;
                        }
                        if late > Duration::from_millis(35) {
                            st.over_35ms += 1;
                        }
                        st.max = st.max.max(late);
                    }
                    st
                })
            })
            .collect();
        StallMeter {
            stop,
            threads,
            steal0: steal_ticks(),
        }
    }

    /// Stalls summed over the CPUs (longest of any), and steal time in seconds.
    pub(super) fn stop(self) -> (Stalls, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Stalls::default();
        for t in self.threads {
            if let Ok(s) = t.join() {
                all.over_10ms += s.over_10ms;
                all.over_35ms += s.over_35ms;
                all.max = all.max.max(s.max);
            }
        }
        let steal = steal_ticks().saturating_sub(self.steal0) as f64 / 100.0;
        (all, steal)
    }
}
