//! This node's side of the authenticated channel ([`Session`]): sealing what it sends,
//! the receiver's checks in the order the module comment of `auth` gives, and what it
//! knows of each member (address, epoch, window, key in use) that those checks need.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{
    frame::{self, parse, Header, INSECURE_ID, TAG_LEN},
    key::RaftAuth,
    window::Window,
    Reject,
};
use crate::election::raft::core::Msg;

/// How often a member spoken to with the previous key is offered the primary.
const PROBE_PERIOD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    window: Window,
    /// The member's epoch as far as we know (0: not heard from since we started).
    epoch: u64,
    /// Its last authenticated datagram carried our current epoch.
    knows_us: bool,
    /// Index into the keys of the key it last used (None: not heard from).
    key: Option<usize>,
    last_probe: Option<Instant>,
}

/// A datagram that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Msg { from: u64, msg: Msg },
    Hello { from: u64 },
}

/// This node's side of the authenticated channel to every other member: seals what it
/// sends, opens what it receives. Pure: no sockets, no clock of its own.
pub struct Session {
    id: u64,
    epoch: u64,
    seq: u64,
    auth: RaftAuth,
    peers: BTreeMap<u64, Peer>,
}

impl Session {
    /// `epoch`: this start's persisted boot epoch (≥ 1). `peers`: every member (this node's
    /// own entry is ignored).
    pub fn new(id: u64, epoch: u64, auth: RaftAuth, peers: &BTreeMap<u64, SocketAddr>) -> Session {
        Session {
            id,
            epoch,
            seq: 0,
            auth,
            peers: peers
                .iter()
                .filter(|(p, _)| **p != id)
                .map(|(p, addr)| {
                    (
                        *p,
                        Peer {
                            addr: *addr,
                            window: Window::default(),
                            epoch: 0,
                            knows_us: false,
                            key: None,
                            last_probe: None,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A Raft message (or a hello: `None`) for member `to`, with the key it last used.
    pub fn seal(&mut self, to: u64, msg: Option<&Msg>) -> Option<Vec<u8>> {
        let key = self.peers.get(&to)?.key.unwrap_or(0);
        self.seal_with(to, msg, key)
    }

    fn seal_with(&mut self, to: u64, msg: Option<&Msg>, key: usize) -> Option<Vec<u8>> {
        let peer_epoch = self.peers.get(&to)?.epoch;
        let body = match msg {
            Some(m) => serde_json::to_vec(m).ok()?,
            None => Vec::new(),
        };
        let keys = self.auth.keys();
        let key = keys.get(key).or(keys.first()).copied();
        self.seq += 1;
        let h = Header {
            key_id: INSECURE_ID,
            from: self.id,
            to,
            epoch: self.epoch,
            seq: self.seq,
            peer_epoch,
        };
        Some(frame::write(&h, &body, key))
    }

    /// Hellos due now: to members that have not shown they know our epoch (every call; the
    /// I/O loop calls once per heartbeat), under every key while their key is unknown; and
    /// under the primary, once per [`PROBE_PERIOD`], to members still using the previous key.
    pub fn hellos(&mut self, now: Instant) -> Vec<(u64, Vec<u8>)> {
        let nkeys = self.auth.keys().len().max(1);
        let mut due = Vec::new();
        for (p, st) in &mut self.peers {
            if !st.knows_us {
                match st.key {
                    Some(k) => due.push((*p, k)),
                    None => due.extend((0..nkeys).map(|k| (*p, k))),
                }
            } else if st.key.is_some_and(|k| k > 0)
                && st
                    .last_probe
                    .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_PERIOD)
            {
                st.last_probe = Some(now);
                due.push((*p, 0));
            }
        }
        due.into_iter()
            .filter_map(|(p, k)| self.seal_with(p, None, k).map(|b| (p, b)))
            .collect()
    }

    /// Check a datagram from `src` (see the module comment for the order and reasons).
    pub fn open(&mut self, src: SocketAddr, data: &[u8]) -> Result<Opened, Reject> {
        let (h, body, tag) = parse(data)?;
        let peer = self.peers.get(&h.from).ok_or(Reject::WrongSource)?;
        if peer.addr != src {
            return Err(Reject::WrongSource);
        }
        if h.to != self.id {
            return Err(Reject::Misdirected);
        }
        let key = self.authenticate(&h, &data[..data.len() - TAG_LEN], tag)?;
        if !peer.window.fresh(h.epoch, h.seq) {
            return Err(Reject::Replay);
        }
        let msg = if body.is_empty() {
            None
        } else {
            Some(serde_json::from_slice::<Msg>(body).map_err(|_| Reject::Malformed)?)
        };
        let my_epoch = self.epoch;
        let Some(peer) = self.peers.get_mut(&h.from) else {
            return Err(Reject::WrongSource);
        };
        // Authentic and not seen before: learn its epoch even if stale for us, and, from
        // the newest datagram only (an older one must not override it), whether it knows
        // our epoch and which key it uses.
        peer.epoch = peer.epoch.max(h.epoch);
        if peer.window.is_newest(h.epoch, h.seq) {
            peer.knows_us = h.peer_epoch == my_epoch;
            if key.is_some() {
                peer.key = key;
            }
        }
        match msg {
            None => {
                peer.window.accept(h.epoch, h.seq);
                Ok(Opened::Hello { from: h.from })
            }
            Some(_) if h.peer_epoch != my_epoch => Err(Reject::Stale),
            Some(msg) => {
                peer.window.accept(h.epoch, h.seq);
                Ok(Opened::Msg { from: h.from, msg })
            }
        }
    }

    /// The key id and the tag over `signed`: the index of the key that made it (None in
    /// insecure mode, where only key id 0 is taken).
    fn authenticate(&self, h: &Header, signed: &[u8], tag: &[u8]) -> Result<Option<usize>, Reject> {
        match &self.auth {
            RaftAuth::Insecure if h.key_id == INSECURE_ID => Ok(None),
            RaftAuth::Insecure => Err(Reject::UnknownKey),
            auth @ RaftAuth::Keys { .. } => {
                let keys = auth.keys();
                let i = keys
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.id() == h.key_id)
                    .find(|(_, k)| k.verify(signed, tag))
                    .map(|(i, _)| i)
                    .ok_or(if keys.iter().any(|k| k.id() == h.key_id) {
                        Reject::BadMac
                    } else {
                        Reject::UnknownKey
                    })?;
                Ok(Some(i))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::raft::auth::{RaftKey, HEADER_LEN};

    fn key(b: u8) -> RaftKey {
        RaftKey::from_bytes(&[b; 32])
    }

    fn addr(i: u64) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i as u8], 7946))
    }

    fn peers() -> BTreeMap<u64, SocketAddr> {
        (1..=3).map(|i| (i, addr(i))).collect()
    }

    fn hb(term: u64) -> Msg {
        Msg::Heartbeat { term, seq: 1 }
    }

    /// Nodes 1 and 2, each having heard the other's hello.
    fn pair(a: RaftAuth, b: RaftAuth) -> (Session, Session) {
        let mut s1 = Session::new(1, 10, a, &peers());
        let mut s2 = Session::new(2, 20, b, &peers());
        introduce(&mut s1, &mut s2);
        (s1, s2)
    }

    fn introduce(s1: &mut Session, s2: &mut Session) {
        for (to, d) in s1.hellos(Instant::now()) {
            if to == 2 {
                let _ = s2.open(addr(1), &d);
            }
        }
        for (to, d) in s2.hellos(Instant::now()) {
            if to == 1 {
                let _ = s1.open(addr(2), &d);
            }
        }
    }

    #[test]
    fn a_sealed_message_opens_once() {
        let (mut s1, mut s2) = pair(RaftAuth::keyed(key(1)), RaftAuth::keyed(key(1)));
        let d = s1.seal(2, Some(&hb(5))).unwrap();
        assert_eq!(
            s2.open(addr(1), &d),
            Ok(Opened::Msg {
                from: 1,
                msg: hb(5)
            })
        );
        assert_eq!(s2.open(addr(1), &d), Err(Reject::Replay));
    }

    #[test]
    fn each_check_has_its_reason() {
        let (mut s1, mut s2) = pair(RaftAuth::keyed(key(1)), RaftAuth::keyed(key(1)));
        let d = s1.seal(2, Some(&hb(5))).unwrap();
        // Another cluster's key, same frame.
        let (mut f1, _) = pair(RaftAuth::keyed(key(9)), RaftAuth::keyed(key(9)));
        let forged = f1.seal(2, Some(&hb(1005))).unwrap();
        assert_eq!(s2.open(addr(1), &forged), Err(Reject::UnknownKey));
        let mut flipped = d.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        assert_eq!(s2.open(addr(1), &flipped), Err(Reject::BadMac));
        let mut bad_tag = d.clone();
        let n = bad_tag.len();
        bad_tag[n - 1] ^= 1;
        assert_eq!(s2.open(addr(1), &bad_tag), Err(Reject::BadMac));
        assert_eq!(s2.open(addr(3), &d), Err(Reject::WrongSource));
        assert_eq!(
            s2.open(SocketAddr::from(([10, 0, 0, 1], 1)), &d),
            Err(Reject::WrongSource)
        );
        let to3 = s1.seal(3, Some(&hb(5))).unwrap();
        assert_eq!(s2.open(addr(1), &to3), Err(Reject::Misdirected));
        for junk in [
            &b""[..],
            &b"{\"from\":1,\"to\":2,\"msg\":{\"Heartbeat\":{\"term\":9,\"seq\":1}}}"[..],
            &d[..HEADER_LEN + TAG_LEN - 1],
        ] {
            assert_eq!(s2.open(addr(1), junk), Err(Reject::Malformed));
        }
        // An unkeyed datagram to a keyed node, and the other way round.
        let (mut i1, mut i2) = pair(RaftAuth::Insecure, RaftAuth::Insecure);
        let plain = i1.seal(2, Some(&hb(5))).unwrap();
        assert_eq!(s2.open(addr(1), &plain), Err(Reject::UnknownKey));
        assert_eq!(i2.open(addr(1), &d), Err(Reject::UnknownKey));
        assert!(matches!(i2.open(addr(1), &plain), Ok(Opened::Msg { .. })));
        // None of that spoiled the real one.
        assert!(matches!(s2.open(addr(1), &d), Ok(Opened::Msg { .. })));
    }

    #[test]
    fn window_takes_reordered_datagrams_once() {
        let (mut s1, mut s2) = pair(RaftAuth::keyed(key(1)), RaftAuth::keyed(key(1)));
        let ds: Vec<_> = (0..100)
            .map(|t| s1.seal(2, Some(&hb(t))).unwrap())
            .collect();
        assert!(s2.open(addr(1), &ds[99]).is_ok());
        // Within the window: once each; beyond it: too old.
        assert!(s2.open(addr(1), &ds[98]).is_ok());
        assert!(s2.open(addr(1), &ds[40]).is_ok());
        assert_eq!(s2.open(addr(1), &ds[40]), Err(Reject::Replay));
        assert_eq!(s2.open(addr(1), &ds[10]), Err(Reject::Replay));
        assert_eq!(s2.open(addr(1), &ds[99]), Err(Reject::Replay));
    }

    #[test]
    fn restarted_sender_old_datagrams_stay_rejected() {
        let (mut s1, mut s2) = pair(RaftAuth::keyed(key(1)), RaftAuth::keyed(key(1)));
        let old: Vec<_> = (0..5).map(|t| s1.seal(2, Some(&hb(t))).unwrap()).collect();
        assert!(s2.open(addr(1), &old[4]).is_ok());
        // Node 1 restarts with a higher epoch; its sequence starts over.
        let mut s1 = Session::new(1, 11, RaftAuth::keyed(key(1)), &peers());
        introduce(&mut s1, &mut s2);
        let new = s1.seal(2, Some(&hb(7))).unwrap();
        assert!(s2.open(addr(1), &new).is_ok());
        for d in &old {
            assert_eq!(s2.open(addr(1), d), Err(Reject::Replay));
        }
    }

    #[test]
    fn restarted_receiver_rejects_what_was_captured_before() {
        let (mut s1, mut s2) = pair(RaftAuth::keyed(key(1)), RaftAuth::keyed(key(1)));
        let captured: Vec<_> = (0..5).map(|t| s1.seal(2, Some(&hb(t))).unwrap()).collect();
        assert!(s2.open(addr(1), &captured[0]).is_ok());
        // Node 2 restarts: its windows are empty, its epoch is higher.
        let mut s2 = Session::new(2, 21, RaftAuth::keyed(key(1)), &peers());
        for d in &captured {
            assert_eq!(s2.open(addr(1), d), Err(Reject::Stale));
        }
        // Node 1's next datagram is stale too until it hears node 2's hello...
        let before = s1.seal(2, Some(&hb(6))).unwrap();
        assert_eq!(s2.open(addr(1), &before), Err(Reject::Stale));
        for (to, d) in s2.hellos(Instant::now()) {
            if to == 1 {
                assert_eq!(s1.open(addr(2), &d), Ok(Opened::Hello { from: 2 }));
            }
        }
        // ...and is accepted after it; the captured ones still are not.
        let after = s1.seal(2, Some(&hb(6))).unwrap();
        assert!(s2.open(addr(1), &after).is_ok());
        for d in &captured {
            assert!(s2.open(addr(1), d).is_err());
        }
        // Once node 1's datagrams show it knows epoch 21, node 2 stops saying hello.
        assert!(s2.hellos(Instant::now()).iter().all(|(to, _)| *to != 1));
    }

    #[test]
    fn replayed_hello_does_not_lower_what_is_known() {
        let (mut s1, mut s2) = pair(RaftAuth::keyed(key(1)), RaftAuth::keyed(key(1)));
        let old_hello = s2.seal(1, None).unwrap();
        let mut s2 = Session::new(2, 21, RaftAuth::keyed(key(1)), &peers());
        introduce(&mut s1, &mut s2);
        assert_eq!(s1.open(addr(2), &old_hello), Err(Reject::Replay));
        let d = s1.seal(2, Some(&hb(1))).unwrap();
        assert!(s2.open(addr(1), &d).is_ok());
    }

    #[test]
    fn rotation_one_node_at_a_time_keeps_everyone_talking() {
        let (old, new) = (key(1), key(2));
        let rotated = RaftAuth::Keys {
            primary: new.clone(),
            previous: Some(old.clone()),
        };
        // Node 1 rotated, node 2 not yet: each understands what the other sends.
        let (mut s1, mut s2) = pair(rotated.clone(), RaftAuth::keyed(old.clone()));
        for _ in 0..3 {
            let d = s1.seal(2, Some(&hb(1))).unwrap();
            assert!(s2.open(addr(1), &d).is_ok());
            let d = s2.seal(1, Some(&hb(1))).unwrap();
            assert!(s1.open(addr(2), &d).is_ok());
        }
        // Node 2 rotated too (restart: new epoch): both move to the new key.
        let mut s2 = Session::new(2, 21, rotated.clone(), &peers());
        introduce(&mut s1, &mut s2);
        for _ in 0..3 {
            for (to, d) in s1.hellos(Instant::now()) {
                if to == 2 {
                    let _ = s2.open(addr(1), &d);
                }
            }
            let d = s2.seal(1, Some(&hb(1))).unwrap();
            assert!(s1.open(addr(2), &d).is_ok());
            let d = s1.seal(2, Some(&hb(1))).unwrap();
            assert_eq!(&d[5..9], &new.id);
            assert!(s2.open(addr(1), &d).is_ok());
        }
        // The old key dropped on node 2: node 1 still talks to it.
        let mut s2 = Session::new(2, 22, RaftAuth::keyed(new.clone()), &peers());
        introduce(&mut s1, &mut s2);
        let d = s1.seal(2, Some(&hb(1))).unwrap();
        assert!(s2.open(addr(1), &d).is_ok());
    }
}
