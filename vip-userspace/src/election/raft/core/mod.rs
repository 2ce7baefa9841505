//! The election state machine, without I/O: messages and clock ticks in, messages out.
//!
//! The caller (the I/O loop in `mod.rs`) must, after every `step`/`tick`:
//! 1. publish `lease_until()` to the fence (stepping down closes it at once),
//! 2. persist `hard_state()` if it changed,
//! 3. only then send `take_out()`.
//!
//! Raft's election subset, with no log: terms, one persisted vote per term, PreVote,
//! heartbeats (AppendEntries without entries), check-quorum, leader transfer (TimeoutNow).
//! Any member may win (there is no log to be up to date with).
//!
//! Why the fence holds. A leader's lease starts at the *send* time of the latest heartbeat a
//! majority (itself included) acknowledged, and lasts `lease`. Every member of that majority
//! received the heartbeat after it was sent, and refuses PreVote and Vote (without a leader
//! transfer) for `loyalty` after hearing from its leader. Any new leader needs a
//! majority of votes, which shares a member with the acknowledging majority, so it cannot
//! win before `send time + loyalty`, while the old leader's lease ended at `send time +
//! lease` and `lease + watchdog period <= loyalty <= election_min` (validated).
//!
//! Election timeouts are not uniformly random: each member has its own slot of the
//! `[election_min, election_max]` range by its rank among the members (plus jitter within
//! half the slot). Two followers of a dead leader then never time out together (a split
//! vote costs a whole second round, which made the tail of failover times), and the order
//! is predictable, like VRRP priorities: the lowest live id takes over first. A node also treats its
//! own start as "just heard from a leader", because a restarted node has forgotten when it
//! last did and might otherwise vote inside the lease of a leader it acknowledged before.
//!
//! A node's own stall does not count against its leader. When a timer of ours fires more
//! than half a heartbeat after it was due (`tick` sees it against its own deadline; the I/O
//! loop reports it for its other timers via `note_stall`), this node was not running: the
//! leader's heartbeats of that time either wait in our socket (the I/O loop reads them all
//! before `tick`) or were never sent because the whole machine stalled with us. For
//! `stall_grace` (a heartbeat and a half) after waking, a follower or candidate neither starts
//! a (pre-)vote nor grants one without a leader transfer, however long ago it last heard from
//! its leader, and a leader does not step down on check-quorum: a live leader's next
//! heartbeat, or a follower's next acknowledgement, arrives in that time. Only liveness
//! is delayed (by up to `stall_grace`, only when this node itself stalled); refusing votes
//! and campaigning later never endanger the fence. The lease is untouched: a leader that
//! stalled past `quorum_ack + lease` is already silent, and its acknowledgements must
//! come back before it speaks again.
//!
//! `types.rs` holds what the rest of the election shares with this machine (the wire
//! messages, the persisted state, the timings); `messages.rs` is the handling of each
//! message, one method per `Msg` variant, so `step` reads as the dispatch table.
mod messages;
mod types;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

pub use types::{HardState, Msg, Role, Timing};

pub struct Core {
    id: u64,
    others: Vec<u64>,
    majority: usize,
    timing: Timing,
    hs: HardState,
    role: Role,
    leader: Option<u64>,
    /// When we last heard from a leader of our term (or started): inside `election_min` of
    /// it we refuse votes (the other half of the fence).
    last_heard: Option<Instant>,
    election_deadline: Instant,
    heartbeat_due: Instant,
    /// Votes (or pre-votes) for us in the current round, ourselves included.
    grants: BTreeSet<u64>,
    // Leader only:
    seq: u64,
    /// (seq, send time) of heartbeats recent enough to still matter for the lease; an
    /// acknowledgement of anything older is dropped (that is the RPC timeout).
    sent: VecDeque<(u64, Instant)>,
    /// Per follower: send time of the newest heartbeat it acknowledged in this term.
    acked: BTreeMap<u64, Instant>,
    last_sent: Option<Instant>,
    leader_since: Option<Instant>,
    quorum_ack: Option<Instant>,
    last_seen: BTreeMap<u64, Instant>,
    /// Until when we were just stalled ourselves (see the module docs): no campaign, no
    /// (pre-)vote granted on a silent leader, no check-quorum step-down before it.
    stall_until: Option<Instant>,
    rng: fastrand::Rng,
    out: Vec<(u64, Msg)>,
}

impl Core {
    pub fn new(
        id: u64,
        members: &BTreeSet<u64>,
        timing: Timing,
        hs: HardState,
        now: Instant,
    ) -> Core {
        let mut c = Core {
            id,
            others: members.iter().copied().filter(|m| *m != id).collect(),
            majority: members.len() / 2 + 1,
            timing,
            hs,
            role: Role::Follower,
            leader: None,
            last_heard: Some(now),
            election_deadline: now,
            heartbeat_due: now,
            grants: BTreeSet::new(),
            seq: 0,
            sent: VecDeque::new(),
            acked: BTreeMap::new(),
            last_sent: None,
            leader_since: None,
            quorum_ack: None,
            last_seen: BTreeMap::new(),
            stall_until: None,
            rng: fastrand::Rng::new(),
            out: Vec::new(),
        };
        c.reset_election_timer(now);
        c
    }

    pub fn hard_state(&self) -> HardState {
        self.hs
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> u64 {
        self.hs.term
    }
    pub fn leader(&self) -> Option<u64> {
        self.leader
    }
    pub fn quorum_ack(&self) -> Option<Instant> {
        self.quorum_ack
    }

    /// Until when we may act as leader (None: not leader, or no quorum acknowledgement yet).
    pub fn lease_until(&self) -> Option<Instant> {
        if self.role != Role::Leader {
            return None;
        }
        self.quorum_ack.map(|t| t + self.timing.lease)
    }

    /// Peers we heard anything from within the longest election timeout.
    pub fn reachable(&self, now: Instant) -> Vec<u64> {
        self.last_seen
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) < self.timing.election_max)
            .map(|(p, _)| *p)
            .collect()
    }

    pub fn take_out(&mut self) -> Vec<(u64, Msg)> {
        std::mem::take(&mut self.out)
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Instant {
        match self.role {
            Role::Leader => {
                // Also wake when check-quorum would fire, even between heartbeats.
                let since = self
                    .quorum_ack
                    .or(self.leader_since)
                    .unwrap_or(self.heartbeat_due);
                self.heartbeat_due.min(self.quorum_check_at(since))
            }
            _ => self.campaign_at(),
        }
    }

    /// The election timer, held back while we give the others a heartbeat after a stall.
    fn campaign_at(&self) -> Instant {
        self.stall_until
            .map_or(self.election_deadline, |u| self.election_deadline.max(u))
    }

    /// A timer that fired later than this after it was due means we were not running.
    pub fn stall_margin(&self) -> Duration {
        self.timing.heartbeat / 2
    }

    /// How long after waking from a stall we give the others to be heard: a heartbeat (the
    /// leader's next one, or the acknowledgement of ours) plus the margin for its lateness.
    pub fn stall_grace(&self) -> Duration {
        self.timing.heartbeat + self.stall_margin()
    }

    /// We just woke from a stall (a timer fired more than `stall_margin` late): until
    /// `now + stall_grace` no campaign, no vote granted on a silent leader, no check-quorum
    /// step-down. Never touches the lease.
    pub fn note_stall(&mut self, now: Instant) {
        let until = now + self.stall_grace();
        if self.stall_until.is_some_and(|u| u >= until) {
            return;
        }
        tracing::debug!(
            id = self.id,
            term = self.hs.term,
            role = self.role.as_str(),
            "raft: woke late; giving the others a heartbeat before acting on silence"
        );
        self.stall_until = Some(until);
    }

    fn stalled(&self, now: Instant) -> bool {
        self.stall_until.is_some_and(|u| now < u)
    }

    fn quorum_check_at(&self, since: Instant) -> Instant {
        let at = since + self.timing.election_min;
        self.stall_until.map_or(at, |u| at.max(u))
    }

    pub fn tick(&mut self, now: Instant) {
        if now.saturating_duration_since(self.next_deadline()) > self.stall_margin() {
            self.note_stall(now);
        }
        match self.role {
            Role::Leader => {
                if now >= self.heartbeat_due {
                    self.broadcast_heartbeat(now);
                }
                // Check-quorum: a leader no majority has answered for a whole minimum
                // election timeout steps down (its lease ended long before). Not while we
                // give our followers a heartbeat after a stall of our own.
                let since = self.quorum_ack.or(self.leader_since).unwrap_or(now);
                if now.saturating_duration_since(since) >= self.timing.election_min
                    && !self.stalled(now)
                {
                    tracing::warn!(
                        id = self.id,
                        term = self.hs.term,
                        "raft: no quorum acknowledgement, stepping down"
                    );
                    self.become_follower(now, self.hs.term, None);
                    // We were the leader: no other leader to be loyal to.
                    self.last_heard = None;
                }
            }
            _ => {
                if now >= self.campaign_at() {
                    self.start_prevote(now);
                }
            }
        }
    }

    pub fn step(&mut self, now: Instant, from: u64, msg: Msg) {
        if !self.others.contains(&from) {
            tracing::debug!(
                id = self.id,
                from,
                "raft: message from a non-member, ignored"
            );
            return;
        }
        self.last_seen.insert(from, now);
        match msg {
            Msg::PreVote { term } => self.on_prevote(now, from, term),
            Msg::PreVoteResp {
                term,
                proposed,
                granted,
            } => self.on_prevote_resp(now, from, term, proposed, granted),
            Msg::Vote { term, transfer } => self.on_vote(now, from, term, transfer),
            Msg::VoteResp { term, granted } => self.on_vote_resp(now, from, term, granted),
            Msg::Heartbeat { term, seq } => self.on_heartbeat(now, from, term, seq),
            Msg::HeartbeatResp { term, seq, ok } => {
                self.on_heartbeat_resp(now, from, term, seq, ok)
            }
            Msg::TimeoutNow { term } => self.on_timeout_now(now, from, term),
        }
    }

    /// Leader stepping down for good (shutdown): ask the follower that answered most
    /// recently to campaign at once. The caller has already closed the fence.
    pub fn transfer(&mut self, now: Instant) -> Option<u64> {
        if self.role != Role::Leader {
            return None;
        }
        let target = self.acked.iter().max_by_key(|(_, t)| **t).map(|(p, _)| *p);
        self.become_follower(now, self.hs.term, None);
        if let Some(t) = target {
            self.send(t, Msg::TimeoutNow { term: self.hs.term });
        }
        target
    }

    fn in_lease(&self, now: Instant) -> bool {
        match self.role {
            // A live leader refuses to help depose itself; check-quorum makes a cut-off one
            // a follower within `election_min`; followers are loyal for `loyalty`, and
            // after a stall of their own for `stall_grace` more (the leader's silence may
            // be ours).
            Role::Leader => true,
            _ => self.last_heard.is_some_and(|t| {
                now.saturating_duration_since(t) < self.timing.loyalty || self.stalled(now)
            }),
        }
    }

    fn send(&mut self, to: u64, msg: Msg) {
        self.out.push((to, msg));
    }

    fn reset_election_timer(&mut self, now: Instant) {
        let min = self.timing.election_min.as_micros() as u64;
        let max = (self.timing.election_max.as_micros() as u64).max(min);
        let members = self.others.len() as u64 + 1;
        let rank = self.others.iter().filter(|o| **o < self.id).count() as u64;
        let slot = (max - min) / members;
        let at = min + slot * rank + self.rng.u64(0..=slot / 2);
        self.election_deadline = now + Duration::from_micros(at);
    }

    fn become_follower(&mut self, now: Instant, term: u64, leader: Option<u64>) {
        if term > self.hs.term {
            self.hs = HardState {
                term,
                voted_for: None,
            };
        }
        if self.role != Role::Follower || self.leader != leader {
            tracing::info!(id = self.id, term, ?leader, was = ?self.role, "raft: follower");
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.clear_leader_state();
        self.grants.clear();
        self.reset_election_timer(now);
    }

    fn start_prevote(&mut self, now: Instant) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.clear_leader_state();
        self.grants = BTreeSet::from([self.id]);
        self.reset_election_timer(now);
        tracing::debug!(id = self.id, term = self.hs.term, "raft: pre-vote");
        let term = self.hs.term.saturating_add(1);
        for p in self.others.clone() {
            self.send(p, Msg::PreVote { term });
        }
        if self.grants.len() >= self.majority {
            self.become_candidate(now, false);
        }
    }

    fn become_candidate(&mut self, now: Instant, transfer: bool) {
        self.hs = HardState {
            term: self.hs.term.saturating_add(1),
            voted_for: Some(self.id),
        };
        self.role = Role::Candidate;
        self.leader = None;
        self.grants = BTreeSet::from([self.id]);
        self.reset_election_timer(now);
        tracing::debug!(
            id = self.id,
            term = self.hs.term,
            transfer,
            "raft: candidate"
        );
        let term = self.hs.term;
        for p in self.others.clone() {
            self.send(p, Msg::Vote { term, transfer });
        }
        if self.grants.len() >= self.majority {
            self.become_leader(now);
        }
    }

    fn become_leader(&mut self, now: Instant) {
        tracing::info!(
            id = self.id,
            term = self.hs.term,
            "raft: leader (fenced until a quorum acknowledges)"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.clear_leader_state();
        self.leader_since = Some(now);
        self.broadcast_heartbeat(now);
    }

    fn clear_leader_state(&mut self) {
        self.sent.clear();
        self.acked.clear();
        self.last_sent = None;
        self.leader_since = None;
        self.quorum_ack = None;
    }

    fn broadcast_heartbeat(&mut self, now: Instant) {
        self.seq += 1;
        self.sent.push_back((self.seq, now));
        while self
            .sent
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) >= self.timing.lease)
        {
            self.sent.pop_front();
        }
        self.last_sent = Some(now);
        self.heartbeat_due = now + self.timing.heartbeat;
        let (term, seq) = (self.hs.term, self.seq);
        for p in self.others.clone() {
            self.send(p, Msg::Heartbeat { term, seq });
        }
        self.recompute_quorum();
    }

    /// The send time of the newest heartbeat a majority (us included) acknowledged.
    fn recompute_quorum(&mut self) {
        let mut times: Vec<Instant> = self.acked.values().copied().collect();
        times.extend(self.last_sent);
        times.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(t) = times.get(self.majority - 1) {
            self.quorum_ack = Some(self.quorum_ack.map_or(*t, |q| q.max(*t)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(20),
            election_min: Duration::from_millis(100),
            election_max: Duration::from_millis(200),
            lease: Duration::from_millis(80),
            loyalty: Duration::from_millis(90),
        }
    }

    fn members() -> BTreeSet<u64> {
        BTreeSet::from([1, 2, 3])
    }

    #[test]
    fn election_timeouts_take_one_slot_per_member_by_rank() {
        let t0 = Instant::now();
        for _ in 0..50 {
            let at: Vec<Duration> = [1, 2, 3]
                .iter()
                .map(|id| {
                    let c = Core::new(*id, &members(), timing(), HardState::default(), t0);
                    c.next_deadline() - t0
                })
                .collect();
            // Slots of 33.3 ms from 100 ms, jitter within the first half of each.
            for (rank, d) in at.iter().enumerate() {
                let lo = Duration::from_micros(100_000 + 33_333 * rank as u64);
                assert!(
                    *d >= lo && *d <= lo + Duration::from_micros(16_667),
                    "{at:?}"
                );
            }
        }
    }

    /// Deliver every queued message among `nodes` until quiet.
    fn pump(nodes: &mut [Core], now: Instant) {
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                let from = nodes[i].id;
                for (to, msg) in nodes[i].take_out() {
                    moved = true;
                    if let Some(n) = nodes.iter_mut().find(|n| n.id == to) {
                        n.step(now, from, msg);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn one_vote_per_term_even_when_asked_twice() {
        let t0 = Instant::now();
        let mut c = Core::new(1, &members(), timing(), HardState::default(), t0);
        let later = t0 + Duration::from_millis(150); // past the start-up lease
        c.step(
            later,
            2,
            Msg::Vote {
                term: 5,
                transfer: false,
            },
        );
        c.step(
            later,
            3,
            Msg::Vote {
                term: 5,
                transfer: true,
            },
        );
        c.step(
            later,
            2,
            Msg::Vote {
                term: 5,
                transfer: false,
            },
        );
        let out = c.take_out();
        let granted: Vec<(u64, bool)> = out
            .iter()
            .map(|(to, m)| match m {
                Msg::VoteResp { granted, .. } => (*to, *granted),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(granted, vec![(2, true), (3, false), (2, true)]);
        assert_eq!(
            c.hard_state(),
            HardState {
                term: 5,
                voted_for: Some(2)
            }
        );
    }

    #[test]
    fn refuses_votes_while_it_hears_from_a_leader() {
        let t0 = Instant::now();
        let mut c = Core::new(
            1,
            &members(),
            timing(),
            HardState {
                term: 3,
                voted_for: None,
            },
            t0,
        );
        // Start-up counts as having heard from a leader.
        c.step(
            t0 + Duration::from_millis(50),
            3,
            Msg::Vote {
                term: 4,
                transfer: false,
            },
        );
        c.step(t0 + Duration::from_millis(50), 3, Msg::PreVote { term: 4 });
        let t1 = t0 + Duration::from_millis(150);
        c.step(t1, 2, Msg::Heartbeat { term: 3, seq: 1 });
        // Within `loyalty` (90 ms) of the heartbeat.
        c.step(
            t1 + Duration::from_millis(85),
            3,
            Msg::Vote {
                term: 4,
                transfer: false,
            },
        );
        let out = c.take_out();
        assert!(matches!(
            out[0].1,
            Msg::VoteResp {
                granted: false,
                term: 3
            }
        ));
        assert!(matches!(out[1].1, Msg::PreVoteResp { granted: false, .. }));
        assert!(matches!(
            out[3].1,
            Msg::VoteResp {
                granted: false,
                term: 3
            }
        ));
        assert_eq!(c.term(), 3, "a refused vote must not bump the term");
        // A leader transfer skips the lease.
        c.step(
            t1 + Duration::from_millis(91),
            3,
            Msg::Vote {
                term: 4,
                transfer: true,
            },
        );
        assert!(matches!(
            c.take_out()[0].1,
            Msg::VoteResp {
                granted: true,
                term: 4
            }
        ));
    }

    #[test]
    fn three_cores_elect_one_leader_and_fence_follows_quorum() {
        let t0 = Instant::now();
        let mut nodes: Vec<Core> = (1..=3)
            .map(|i| Core::new(i, &members(), timing(), HardState::default(), t0))
            .collect();
        // Node 1 times out first (on time: a much later tick would be a stall of its own),
        // past the others' start-up loyalty (90 ms; its slot starts at 100 ms).
        let t1 = nodes[0].election_deadline;
        nodes[0].tick(t1);
        pump(&mut nodes, t1);
        assert_eq!(nodes[0].role(), Role::Leader);
        assert_eq!(nodes[0].term(), 1);
        assert_eq!(nodes[0].lease_until(), Some(t1 + timing().lease));
        assert!(nodes[1..].iter().all(|n| n.leader() == Some(1)));
        // Cut off: heartbeats go unanswered, the lease ends, check-quorum steps it down.
        let mut t = t1;
        while t < t1 + Duration::from_millis(100) {
            t += Duration::from_millis(5);
            nodes[0].tick(t);
            nodes[0].take_out();
        }
        assert_eq!(nodes[0].lease_until(), None);
        assert_eq!(nodes[0].role(), Role::Follower);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn prevotes(out: &[(u64, Msg)]) -> Vec<u64> {
        out.iter()
            .filter(|(_, m)| matches!(m, Msg::PreVote { .. }))
            .map(|(to, _)| *to)
            .collect()
    }

    /// Node 2, follower of node 1 in term 1 since `t0 + 10 ms`, and its election deadline.
    fn follower_of_1(t0: Instant) -> (Core, Instant) {
        let mut c = Core::new(
            2,
            &members(),
            timing(),
            HardState {
                term: 1,
                voted_for: None,
            },
            t0,
        );
        c.step(t0 + ms(10), 1, Msg::Heartbeat { term: 1, seq: 1 });
        c.take_out();
        assert_eq!(c.leader(), Some(1));
        let d = c.next_deadline();
        (c, d)
    }

    #[test]
    fn late_timer_waits_a_heartbeat_and_the_leaders_heartbeat_keeps_it() {
        let t0 = Instant::now();
        let (mut c, d) = follower_of_1(t0);
        // The timer fires 40 ms late (more than half a heartbeat): we were not running.
        let woke = d + ms(40);
        c.tick(woke);
        assert!(
            prevotes(&c.take_out()).is_empty(),
            "campaigned on its own stall"
        );
        assert_eq!(c.role(), Role::Follower);
        assert_eq!(
            c.next_deadline(),
            woke + c.stall_grace(),
            "held back by a heartbeat and a half"
        );
        // Long past loyalty, but inside the grace: a pre-vote (or vote) on the silence is
        // refused, the term kept.
        c.step(woke + ms(1), 3, Msg::PreVote { term: 2 });
        c.step(
            woke + ms(2),
            3,
            Msg::Vote {
                term: 2,
                transfer: false,
            },
        );
        let out = c.take_out();
        assert!(
            matches!(out[0].1, Msg::PreVoteResp { granted: false, .. }),
            "{out:?}"
        );
        assert!(
            matches!(
                out[1].1,
                Msg::VoteResp {
                    granted: false,
                    term: 1
                }
            ),
            "{out:?}"
        );
        c.tick(woke + ms(20));
        assert!(prevotes(&c.take_out()).is_empty());
        // The leader (stalled with us) is heard within the grace.
        let hb = woke + ms(25);
        c.step(hb, 1, Msg::Heartbeat { term: 1, seq: 2 });
        assert!(matches!(
            c.take_out()[0].1,
            Msg::HeartbeatResp { ok: true, .. }
        ));
        c.tick(woke + c.stall_grace());
        assert!(prevotes(&c.take_out()).is_empty());
        assert_eq!(
            (c.role(), c.leader(), c.term()),
            (Role::Follower, Some(1), 1)
        );
        assert!(c.next_deadline() >= hb + timing().election_min);
    }

    #[test]
    fn late_timer_with_a_silent_leader_campaigns_after_the_grace() {
        let t0 = Instant::now();
        let (mut c, d) = follower_of_1(t0);
        let woke = d + ms(40);
        c.tick(woke);
        assert!(prevotes(&c.take_out()).is_empty());
        // Woken on time at the held-back deadline: no stall any more, the leader is silent.
        let at = c.next_deadline();
        assert_eq!(at, woke + c.stall_grace());
        c.tick(at);
        assert_eq!(prevotes(&c.take_out()), vec![1, 3]);
        assert_eq!(c.role(), Role::PreCandidate);
        // And it now grants others' pre-votes on the silence, as before.
        c.step(at + ms(1), 3, Msg::PreVote { term: 2 });
        assert!(matches!(
            c.take_out()[0].1,
            Msg::PreVoteResp { granted: true, .. }
        ));
        // Without a stall the timer is not held back at all.
        let (mut c, d) = follower_of_1(t0);
        c.tick(d + c.stall_margin());
        assert_eq!(prevotes(&c.take_out()), vec![1, 3]);
    }

    /// Three cores, node 1 elected at the returned instant.
    fn elected(t0: Instant) -> (Vec<Core>, Instant) {
        let mut nodes: Vec<Core> = (1..=3)
            .map(|i| Core::new(i, &members(), timing(), HardState::default(), t0))
            .collect();
        let t1 = nodes[0].next_deadline();
        nodes[0].tick(t1);
        pump(&mut nodes, t1);
        assert_eq!(nodes[0].role(), Role::Leader);
        assert_eq!(nodes[0].lease_until(), Some(t1 + timing().lease));
        (nodes, t1)
    }

    #[test]
    fn stalled_leader_lease_still_lapses() {
        let t0 = Instant::now();
        let lease = timing().lease;
        // Cut off, and its thread stalls 200 ms (past the lease and check-quorum's 100 ms).
        let (mut nodes, t1) = elected(t0);
        let woke = t1 + ms(200);
        nodes[0].tick(woke);
        nodes[0].take_out();
        assert_eq!(
            nodes[0].lease_until(),
            Some(t1 + lease),
            "a stall must not extend the lease"
        );
        assert!(t1 + lease < woke, "so the fence is silent at once");
        assert_eq!(
            nodes[0].role(),
            Role::Leader,
            "check-quorum waits for the answers to the heartbeat it just sent"
        );
        // Nobody answers: it steps down once the grace is over, the lease never extended.
        let mut t = woke;
        while nodes[0].role() == Role::Leader && t < woke + ms(100) {
            assert!(nodes[0].lease_until().is_some_and(|u| u <= t1 + lease));
            t += ms(1);
            nodes[0].tick(t);
            nodes[0].take_out();
        }
        assert_eq!(nodes[0].role(), Role::Follower);
        assert_eq!(nodes[0].lease_until(), None);
        assert!(
            t <= woke + nodes[0].stall_grace() + ms(1),
            "stepped down {t:?}"
        );

        // The whole machine stalled (followers too): the followers' acknowledgements of
        // the new heartbeat bring the lease back from its send time; no election.
        let (mut nodes, t1) = elected(t0);
        let woke = t1 + ms(200);
        for n in nodes.iter_mut().rev() {
            n.tick(woke);
        }
        pump(&mut nodes, woke + ms(1));
        assert_eq!(nodes[0].role(), Role::Leader);
        assert_eq!(nodes[0].lease_until(), Some(woke + lease));
        assert!(nodes.iter().all(|n| n.term() == 1 && n.leader() == Some(1)));
    }

    #[test]
    fn stale_leader_steps_down_on_a_newer_term() {
        let t0 = Instant::now();
        let mut c = Core::new(1, &BTreeSet::from([1]), timing(), HardState::default(), t0);
        c.tick(c.next_deadline());
        assert_eq!(c.role(), Role::Leader, "a single member elects itself");
        assert!(c.lease_until().is_some());
        let mut c = Core::new(
            1,
            &members(),
            timing(),
            HardState {
                term: 7,
                voted_for: Some(1),
            },
            t0,
        );
        c.role = Role::Leader;
        c.step(
            t0,
            2,
            Msg::HeartbeatResp {
                term: 9,
                seq: 1,
                ok: false,
            },
        );
        assert_eq!(c.role(), Role::Follower);
        assert_eq!(
            c.hard_state(),
            HardState {
                term: 9,
                voted_for: None
            }
        );
    }
}
