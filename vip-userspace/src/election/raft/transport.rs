//! The election's datagrams: sealing and sending, reading and authenticating, and what
//! happens to the ones that fail. Apart from the loop because it changes with the wire
//! (framing, logging of rejects), not with the order in which a turn does things.
//!
//! UDP datagrams: a binary header, the message as JSON (`serde_json`, already a dependency;
//! messages are < 100 bytes) and an HMAC-SHA-256 tag (`auth.rs`: frame, keys, and the
//! replay protection that holds across restarts of either side).
//! UDP because every message is idempotent and superseded by the next one: no connections
//! to re-establish after a partition heals, no head-of-line blocking or retransmission
//! back-off delaying a heartbeat. Every request has a timeout: an acknowledgement counts only
//! if its heartbeat was sent less than `lease` ago, votes only for the current round, which
//! the next election timeout ends. Sends never block (`try_send_to`); a peer that is down
//! just never answers. A datagram that fails authentication is dropped before the state
//! machine sees it, counted by reason and logged at most once per reason every 10 s.
//!
//! HMAC with ring (0.17, already compiled in for rustls): no new crypto crate in the
//! binary, and `ring::hmac::verify` compares tags in constant time.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;

use super::{
    auth::{Opened, Session},
    status::Rejected,
    Msg, Reject,
};

/// A rejected datagram is logged at most once per reason in this period.
pub(super) const REJECT_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Most datagrams read in one drain: a flood cannot hold the loop (and its timers) forever.
const DRAIN_MAX: usize = 256;

/// Per reason: when it was last logged, and how many went unlogged since.
#[derive(Default)]
struct RejectLog([(Option<Instant>, u64); Reject::ALL.len()]);

impl RejectLog {
    /// How many were suppressed before this one, if this one is to be logged.
    fn due(&mut self, r: Reject, now: Instant) -> Option<u64> {
        let (last, suppressed) = &mut self.0[r.index()];
        if last.is_some_and(|t| now.saturating_duration_since(t) < REJECT_LOG_PERIOD) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

/// This node's end of the datagrams: the authenticated session, where each member
/// listens, and the count of what was refused.
pub(super) struct Transport {
    id: u64,
    session: Session,
    peers: BTreeMap<u64, SocketAddr>,
    rejected: Arc<Rejected>,
    reject_log: RejectLog,
}

impl Transport {
    pub(super) fn new(
        id: u64,
        session: Session,
        peers: BTreeMap<u64, SocketAddr>,
        rejected: Arc<Rejected>,
    ) -> Transport {
        Transport {
            id,
            session,
            peers,
            rejected,
            reject_log: RejectLog::default(),
        }
    }

    /// Read what is queued, non-blocking, on the second handle (the reactor may not have
    /// reported it yet), into `batch`.
    pub(super) fn read_queued(
        &mut self,
        raw: &std::net::UdpSocket,
        buf: &mut [u8],
        batch: &mut Vec<(u64, Msg)>,
    ) {
        for _ in 0..DRAIN_MAX {
            match raw.recv_from(buf) {
                Ok((n, src)) => self.open(&buf[..n], src, batch),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => tracing::trace!(id = self.id, error = %crate::Chain(&e), "raft: recv"),
            }
        }
    }

    /// Authenticate one datagram; a message goes to `batch` for the loop to step.
    pub(super) fn open(&mut self, data: &[u8], src: SocketAddr, batch: &mut Vec<(u64, Msg)>) {
        match self.session.open(src, data) {
            Ok(Opened::Msg { from, msg }) => batch.push((from, msg)),
            Ok(Opened::Hello { from }) => tracing::trace!(id = self.id, from, "raft: hello"),
            Err(r) => self.reject(r, src),
        }
    }

    fn reject(&mut self, r: Reject, src: SocketAddr) {
        self.rejected.count(r);
        if let Some(suppressed) = self.reject_log.due(r, Instant::now()) {
            let reason = r.as_str();
            // After a member restarts a few of its peers' datagrams are stale until
            // they hear its hello: expected, so not a warning.
            if r == Reject::Stale {
                tracing::info!(id = self.id, %src, reason, suppressed, "raft: datagram rejected");
            } else {
                tracing::warn!(id = self.id, %src, reason, suppressed, "raft: datagram rejected (logged once per reason every 10 s; vip_raft_rejected_total counts all)");
            }
        }
    }

    /// Send the hellos the session has due (see `Session::hellos`).
    pub(super) fn send_hellos(&mut self, socket: &UdpSocket) {
        for (to, bytes) in self.session.hellos(Instant::now()) {
            self.send_bytes(socket, to, &bytes);
        }
    }

    pub(super) fn send(&mut self, socket: &UdpSocket, to: u64, msg: Msg) {
        match self.session.seal(to, Some(&msg)) {
            Some(bytes) => self.send_bytes(socket, to, &bytes),
            None => tracing::warn!(id = self.id, to, "raft: cannot encode for a non-member"),
        }
    }

    fn send_bytes(&self, socket: &UdpSocket, to: u64, bytes: &[u8]) {
        let Some(addr) = self.peers.get(&to) else {
            return;
        };
        // Never wait for the socket: a datagram that can't go now is lost like any other.
        if let Err(e) = socket.try_send_to(bytes, *addr) {
            tracing::trace!(id = self.id, to, error = %crate::Chain(&e), "raft: send");
        }
    }
}
