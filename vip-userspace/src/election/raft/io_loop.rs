//! The election thread's loop: turns datagrams and timers into steps of the core, and the
//! core's output into durable state, datagrams, the fence and the dead-man. The order of a
//! turn (`run`) and of its output (`flush`) is the safety argument, so it lives in one place.
//!
//! # A node's own stall
//! On a VM the whole guest (all three daemons on a test bed) can be descheduled for tens of
//! milliseconds, which no priority inside it prevents. Such a stall must not look like a
//! silent leader to the follower that was not running either:
//! - on every wake the I/O loop first reads every datagram already queued on the socket
//!   (non-blocking, until `WouldBlock`), steps heartbeats before anything else, and only
//!   then lets the core act on an expired election timer;
//! - a wake more than half a heartbeat after one of its timers was due is a stall of this
//!   node (`Core::note_stall`): for a heartbeat and a half from then it neither campaigns,
//!   nor grants a (pre-)vote to someone else on its leader's silence, nor (as leader) steps
//!   down on check-quorum. A live leader's next heartbeat, or the acknowledgements of the
//!   one the leader sends as it wakes, arrive in that time.
//!
//! The cost: when a follower was itself stalled, failover of a genuinely dead leader takes
//! up to a heartbeat and a half longer (30 ms at 20 ms heartbeats); nothing changes for a
//! follower that was running. Delaying a campaign or refusing a vote only ever costs
//! liveness. The lease is not relaxed: a leader whose stall outlasted `quorum_ack + lease`
//! is silent when it wakes (the watchdog, a separate thread, closed the fence on time if it
//! ran, and `flush` publishes the lapsed lease at once if it did not) and speaks again only
//! after a majority acknowledged a heartbeat sent after the stall.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, oneshot},
};

use super::{
    check_in::CheckIn,
    core::Core,
    fence::Fence,
    status::Snapshot,
    store::Store,
    transport::{Transport, REJECT_LOG_PERIOD},
    HardState, Msg,
};

pub(super) struct IoLoop {
    pub(super) id: u64,
    pub(super) core: Core,
    pub(super) transport: Transport,
    pub(super) heartbeat: Duration,
    pub(super) store: Store,
    /// The term and vote last made durable.
    pub(super) persisted: HardState,
    pub(super) fence: Arc<Fence>,
    pub(super) snapshot: Arc<Mutex<Snapshot>>,
    pub(super) check_in: Arc<CheckIn>,
    /// The lease last written to the dead-man (None: not yet).
    pub(super) pushed: Option<Option<Instant>>,
    pub(super) late: Lateness,
}

/// Timers that fired late by more than half a heartbeat: this thread did not get the CPU
/// (no real-time priority, or something above it). Logged at most once per
/// `REJECT_LOG_PERIOD` with the count and the worst since the last line.
#[derive(Default)]
pub(super) struct Lateness {
    logged: Option<Instant>,
    count: u64,
    worst: Duration,
}

impl Lateness {
    fn note(&mut self, id: u64, late: Duration, heartbeat: Duration) {
        if late <= heartbeat / 2 {
            return;
        }
        self.count += 1;
        self.worst = self.worst.max(late);
        let now = Instant::now();
        if self
            .logged
            .is_some_and(|t| now.saturating_duration_since(t) < REJECT_LOG_PERIOD)
        {
            return;
        }
        tracing::warn!(id, count = self.count, worst = ?self.worst, ?heartbeat, "raft: timers fired late (the election thread did not get the CPU in time)");
        self.logged = Some(now);
        self.count = 0;
        self.worst = Duration::ZERO;
    }
}

/// What woke the I/O loop.
enum Wake {
    Stop,
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Timer,
    Stall(Duration),
    Hello,
}

impl IoLoop {
    /// Every wake: note whether we were stalled (a timer of ours was due more than half a
    /// heartbeat ago), read everything already queued on the socket, hand it to the core
    /// heartbeats first, and only then act on the election timer. A leader's heartbeats
    /// sent while this node was not running are thus seen before its silence is judged.
    pub(super) async fn run(
        mut self,
        socket: UdpSocket,
        raw: std::net::UdpSocket,
        mut stop: oneshot::Receiver<()>,
        mut stall: mpsc::UnboundedReceiver<Duration>,
    ) {
        let socket = &socket;
        let mut buf = vec![0u8; 2048];
        let mut batch = Vec::new();
        // Hellos carry no Raft state (nothing to persist first): members learn our epoch.
        let mut hello_at = tokio::time::Instant::now();
        loop {
            let deadline = tokio::time::Instant::from_std(self.core.next_deadline());
            let wake = tokio::select! {
                biased;
                _ = &mut stop => Wake::Stop,
                r = socket.recv_from(&mut buf) => Wake::Datagram(r),
                _ = tokio::time::sleep_until(deadline) => Wake::Timer,
                Some(d) = stall.recv() => Wake::Stall(d),
                _ = tokio::time::sleep_until(hello_at) => Wake::Hello,
            };
            let now = tokio::time::Instant::now();
            self.note_lateness(now, deadline.min(hello_at));
            match wake {
                Wake::Stop => break,
                Wake::Stall(d) => {
                    std::thread::sleep(d);
                    continue;
                }
                Wake::Datagram(Ok((n, src))) => self.transport.open(&buf[..n], src, &mut batch),
                // e.g. ICMP unreachable reported on the socket: the peer is down.
                Wake::Datagram(Err(e)) => {
                    tracing::trace!(id = self.id, error = %crate::Chain(&e), "raft: recv")
                }
                Wake::Timer => {}
                Wake::Hello => {
                    // After a stall, one hello now rather than one per missed period.
                    hello_at = (hello_at + self.heartbeat).max(now + self.heartbeat / 2);
                    self.transport.send_hellos(socket);
                }
            }
            self.drain(&raw, &mut buf, &mut batch);
            // The election timer last: whatever was queued has been heard first.
            if Instant::now() >= self.core.next_deadline() {
                self.core.tick(Instant::now());
            }
            self.flush(socket).await;
        }
        self.hand_over(socket).await;
    }

    /// Woken at `now` for something `due` then: a wake late enough is this node's stall.
    fn note_lateness(&mut self, now: tokio::time::Instant, due: tokio::time::Instant) {
        let late = now.saturating_duration_since(due);
        self.late.note(self.id, late, self.heartbeat);
        if late > self.core.stall_margin() {
            self.core.note_stall(now.into_std());
        }
    }

    /// The fence is already closed (stop() did it). A leader hands over.
    async fn hand_over(&mut self, socket: &UdpSocket) {
        if let Some(to) = self.core.transfer(Instant::now()) {
            tracing::info!(
                id = self.id,
                to,
                "raft: stopping leader hands over (TimeoutNow)"
            );
        }
        self.flush(socket).await;
    }

    /// Read what is queued, then step it all, heartbeats first: a pre-vote queued before
    /// the leader's heartbeat must not be granted on a silence that was only ours. UDP
    /// keeps no order anyway, so this is an order the network could have delivered.
    fn drain(&mut self, raw: &std::net::UdpSocket, buf: &mut [u8], batch: &mut Vec<(u64, Msg)>) {
        self.transport.read_queued(raw, buf, batch);
        batch.sort_by_key(|(_, m)| !matches!(m, Msg::Heartbeat { .. }));
        for (from, msg) in batch.drain(..) {
            self.core.step(Instant::now(), from, msg);
        }
    }

    /// Fence first, then durable state, then messages (see core.rs). The fence is lowered
    /// before anything else, but raised or extended only once the term it belongs to is on
    /// disk, and after the status snapshot, so `status()` never lags a published `true`.
    async fn flush(&mut self, socket: &UdpSocket) {
        let lease = self.core.lease_until();
        if lease.is_none() {
            self.fence.set(None);
            self.push(None);
        }
        let durable = self.persist().await;
        let out = self.core.take_out();
        if durable {
            for (to, msg) in out {
                self.transport.send(socket, to, msg);
            }
        }
        self.publish_snapshot();
        let lease = if durable { lease } else { None };
        self.fence.set(lease);
        self.push(lease);
    }

    /// Make the term and vote durable if they changed; false if they are not, and nothing
    /// that depends on them may leave.
    async fn persist(&mut self) -> bool {
        let hs = self.core.hard_state();
        if hs == self.persisted {
            return true;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.save(&hs)).await {
            Ok(Ok(())) => {
                self.persisted = hs;
                true
            }
            Ok(Err(e)) => {
                tracing::error!(id = self.id, error = %crate::Chain(&e), "raft: term/vote not persisted; not sending");
                false
            }
            Err(e) => {
                tracing::error!(id = self.id, error = %crate::Chain(&e), "raft: persist task failed; not sending");
                false
            }
        }
    }

    fn publish_snapshot(&self) {
        let snap = Snapshot {
            term: self.core.term(),
            leader: self.core.leader(),
            role: self.core.role(),
            quorum_ack: self.core.quorum_ack(),
            reachable: self.core.reachable(Instant::now()),
        };
        // Readers (metrics scrapes, at normal priority) hold this lock for a copy; one that
        // was preempted holding it must not stall this thread. Written on the next turn
        // (at the latest the next heartbeat or hello) instead.
        match self.snapshot.try_lock() {
            Ok(mut s) => *s = snap,
            Err(std::sync::TryLockError::Poisoned(p)) => *p.into_inner() = snap,
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
    }

    /// The dead-man follows the fence: pushed whenever the lease changes (every
    /// quorum-acknowledged heartbeat while leading), and retried if the last push was
    /// skipped. The fence is published first, so the map never runs ahead of `leader()`.
    fn push(&mut self, lease: Option<Instant>) {
        if self.pushed == Some(lease) {
            return;
        }
        if self.check_in.push(lease) {
            self.pushed = Some(lease);
        }
    }
}
