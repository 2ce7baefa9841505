//! Scheduling priority of the election's threads (the I/O loop and the fence watchdog).
//!
//! A busy node runs its workloads at normal priority: at 20 ms heartbeats a heartbeat that
//! waits behind them for a few CFS slices is a lapse of the leader's lease, and a few late in
//! a row an election. So each thread asks, for itself only (not the process):
//! 1. `SCHED_FIFO` at `realtime_priority` (1..=99), which needs CAP_SYS_NICE or a large
//!    enough RLIMIT_RTPRIO (and, with cgroup v1 and RT group scheduling, an RT budget);
//! 2. failing that (or with `realtime_priority: 0`), the nice value `nice` (-20..=19) on its
//!    thread id, which below the current value needs CAP_SYS_NICE or RLIMIT_NICE;
//! 3. failing that, it stays as it is.
//!
//! The loop's work per wake-up is a few microseconds (one datagram, one map write), so a
//! real-time thread here cannot starve the node.

/// What was asked for (`election.raft.realtime_priority`, `election.raft.nice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// SCHED_FIFO priority, 1..=99; 0: do not ask for real time.
    pub realtime: u8,
    /// The nice value to ask for when real time is off or refused; 0: leave it.
    pub nice: i8,
}

/// Low among real-time priorities: above every normal thread, below the kernel's own
/// threaded IRQ handlers (50) and anything an operator runs at real time on purpose.
pub const DEFAULT_REALTIME_PRIORITY: u8 = 10;
/// The fallback: a strong preference over normal threads (nice 0) without real time.
pub const DEFAULT_NICE: i8 = -10;

impl Default for Priority {
    fn default() -> Self {
        Priority {
            realtime: DEFAULT_REALTIME_PRIORITY,
            nice: DEFAULT_NICE,
        }
    }
}

/// What a thread obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtained {
    /// SCHED_FIFO at this priority.
    Fifo(u8),
    /// SCHED_OTHER at this nice value.
    Nice(i8),
    /// Unchanged (normal priority, whatever nice value it inherited).
    Normal,
}

impl Obtained {
    /// The `policy` label of `vip_election_sched`.
    pub fn policy(self) -> &'static str {
        match self {
            Obtained::Fifo(_) => "fifo",
            Obtained::Nice(_) => "nice",
            Obtained::Normal => "normal",
        }
    }

    /// The gauge value: the real-time priority, or the nice value, or 0.
    pub fn value(self) -> i64 {
        match self {
            Obtained::Fifo(p) => p as i64,
            Obtained::Nice(n) => n as i64,
            Obtained::Normal => 0,
        }
    }
}

/// Raise the calling thread's priority as far as `want` and the privileges allow.
/// Never fails: what could not be had is returned with the errors, for the log.
pub fn raise(want: Priority) -> (Obtained, Vec<String>) {
    let mut refused = Vec::new();
    if want.realtime > 0 {
        // musl's sched_param has more (sporadic-server) fields than glibc's: zeroed, then
        // the priority, builds with both.
        // SAFETY: sched_param is plain integers; all-zero is a valid value.
        let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
        param.sched_priority = want.realtime as libc::c_int;
        // SAFETY: a valid sched_param; pid 0 is the calling thread (Linux schedules
        // threads, and sched_setscheduler applies to the thread id given).
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if rc == 0 {
            return (Obtained::Fifo(want.realtime), refused);
        }
        refused.push(format!(
            "SCHED_FIFO {}: {}",
            want.realtime,
            std::io::Error::last_os_error()
        ));
    }
    if want.nice != 0 {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        // SAFETY: plain integers; PRIO_PROCESS with a thread id sets that thread only.
        let rc = unsafe {
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                want.nice as libc::c_int,
            )
        };
        if rc == 0 {
            return (Obtained::Nice(want.nice), refused);
        }
        refused.push(format!(
            "nice {}: {}",
            want.nice,
            std::io::Error::last_os_error()
        ));
    }
    (Obtained::Normal, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_leaves_the_thread_alone() {
        let got = std::thread::spawn(|| {
            raise(Priority {
                realtime: 0,
                nice: 0,
            })
        })
        .join()
        .unwrap();
        assert_eq!(got, (Obtained::Normal, vec![]));
    }

    #[test]
    fn a_higher_nice_value_is_always_allowed() {
        // Raising nice (lowering priority) needs no privilege: the fallback path works.
        let got = std::thread::spawn(|| {
            raise(Priority {
                realtime: 0,
                nice: 5,
            })
        })
        .join()
        .unwrap();
        assert_eq!(got.0, Obtained::Nice(5));
        assert_eq!((got.0.policy(), got.0.value()), ("nice", 5));
    }
}
