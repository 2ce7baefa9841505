//! How [`Core`] handles each message: one method per [`Msg`] variant, called by
//! `Core::step` after it has checked the sender is a member. The checks here are Raft's
//! (terms, one vote per term, PreVote, loyalty to a live leader); the fence argument they
//! serve is in the module comment of `core`.
use std::time::Instant;

use super::{Core, Msg, Role};

impl Core {
    pub(super) fn on_prevote(&mut self, now: Instant, from: u64, term: u64) {
        let granted = term > self.hs.term && !self.in_lease(now);
        self.send(
            from,
            Msg::PreVoteResp {
                term: self.hs.term,
                proposed: term,
                granted,
            },
        );
    }

    pub(super) fn on_prevote_resp(
        &mut self,
        now: Instant,
        from: u64,
        term: u64,
        proposed: u64,
        granted: bool,
    ) {
        if term > self.hs.term {
            self.become_follower(now, term, None);
        } else if self.role == Role::PreCandidate
            && granted
            && proposed == self.hs.term.saturating_add(1)
        {
            self.grants.insert(from);
            if self.grants.len() >= self.majority {
                self.become_candidate(now, false);
            }
        }
    }

    pub(super) fn on_vote(&mut self, now: Instant, from: u64, term: u64, transfer: bool) {
        let granted = if term < self.hs.term || (!transfer && self.in_lease(now)) {
            // Refused without adopting the term: a node that merely lost contact
            // with the leader must not depose it.
            false
        } else {
            if term > self.hs.term {
                self.become_follower(now, term, None);
            }
            let free = self.hs.voted_for.is_none_or(|v| v == from);
            if free {
                self.hs.voted_for = Some(from);
                self.reset_election_timer(now);
            }
            free
        };
        tracing::debug!(id = self.id, from, term, granted, "raft: vote request");
        self.send(
            from,
            Msg::VoteResp {
                term: self.hs.term,
                granted,
            },
        );
    }

    pub(super) fn on_vote_resp(&mut self, now: Instant, from: u64, term: u64, granted: bool) {
        if term > self.hs.term {
            self.become_follower(now, term, None);
        } else if self.role == Role::Candidate && term == self.hs.term && granted {
            self.grants.insert(from);
            if self.grants.len() >= self.majority {
                self.become_leader(now);
            }
        }
    }

    pub(super) fn on_heartbeat(&mut self, now: Instant, from: u64, term: u64, seq: u64) {
        if term < self.hs.term {
            // Tell the stale leader the term so it steps down.
            self.send(
                from,
                Msg::HeartbeatResp {
                    term: self.hs.term,
                    seq,
                    ok: false,
                },
            );
            return;
        }
        if term == self.hs.term && self.role == Role::Leader {
            // Impossible while votes are persisted: one vote per node per term.
            tracing::error!(
                id = self.id,
                from,
                term,
                "raft: another leader in our term; ignoring it"
            );
            return;
        }
        if term > self.hs.term || self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(now, term, Some(from));
        }
        self.last_heard = Some(now);
        self.reset_election_timer(now);
        self.send(
            from,
            Msg::HeartbeatResp {
                term,
                seq,
                ok: true,
            },
        );
    }

    pub(super) fn on_heartbeat_resp(
        &mut self,
        now: Instant,
        from: u64,
        term: u64,
        seq: u64,
        ok: bool,
    ) {
        if term > self.hs.term {
            self.become_follower(now, term, None);
        } else if self.role == Role::Leader && term == self.hs.term && ok {
            if let Some((_, sent_at)) = self.sent.iter().find(|(s, _)| *s == seq).copied() {
                let e = self.acked.entry(from).or_insert(sent_at);
                *e = (*e).max(sent_at);
                self.recompute_quorum();
            }
        }
    }

    pub(super) fn on_timeout_now(&mut self, now: Instant, from: u64, term: u64) {
        if term == self.hs.term && self.role == Role::Follower && self.leader == Some(from) {
            tracing::info!(
                id = self.id,
                term,
                "raft: leader handed over, campaigning now"
            );
            self.become_candidate(now, true);
        }
    }
}
