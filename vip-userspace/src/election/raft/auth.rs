//! Authenticated election datagrams: who may speak, and only once.
//!
//! # Frame
//! ```text
//!  0      4   5        9      17     25       33     41          49        n-32     n
//!  "vipR" | 1 | key id | from | to   | epoch  | seq  | peer epoch | msg JSON | HMAC |
//! ```
//! Integers are big-endian u64. The tag is HMAC-SHA-256 over every byte before it, with the
//! key the 4-byte key id names (the id is the first 4 bytes of HMAC(key, "vip raft key id"),
//! so nothing but the key itself has to be distributed, and logs can name a key without
//! showing it). An empty `msg` is a *hello* (below). `insecure: true` sends key id 0 and a
//! zero tag and accepts only that: a keyed node never takes an unkeyed datagram.
//!
//! A receiver checks, cheapest first: the frame's shape (`malformed`); that the datagram
//! came from the address `peers` gives the member it names (`wrong_source`); that it is
//! addressed to this node (`misdirected`, so one captured for another member cannot be
//! redirected here); the key id (`unknown_key`); the tag, in constant time (`bad_mac`);
//! freshness (`replay`, `stale`, below); then it parses the message. The tag is checked
//! before the JSON is parsed: an unauthenticated sender never reaches serde.
//!
//! # Replay, across restarts of either side
//! Every node has a boot *epoch*, persisted (fsync) in `raft-state.json` and raised on
//! every start before the first datagram leaves (to `max(previous + 1, unix seconds)`, so
//! even a lost state file does not bring an old epoch back), and a sequence number counting
//! its datagrams from 1 within the epoch. `(epoch, seq)` never repeats for a sender.
//!
//! - *Sender restarts.* The receiver keeps, per member, the highest `(epoch, seq)` it
//!   accepted and a 64-datagram window below it (RFC 4303's anti-replay window: a datagram
//!   reordered by the network is still taken once). Anything at or below an accepted
//!   counter is a `replay`; the restarted sender's new epoch is higher than every datagram
//!   it sent before, so those stay rejected.
//! - *Receiver restarts.* Its windows are gone, and persisting them would cost an fsync per
//!   datagram. Instead every datagram also carries the epoch the sender last saw *from the
//!   receiver* (`peer epoch`), and a receiver accepts a Raft message only if that is its own
//!   current epoch (`stale` otherwise). A datagram can carry the receiver's current epoch
//!   only if its sender had heard from the receiver since that epoch began, i.e. it was made
//!   after the receiver started, and everything the receiver accepted since it started is
//!   in its window. So nothing captured before a restart is accepted after it, with one
//!   persisted integer per node and no clock synchronisation.
//! - *Learning epochs.* A node tells members its new epoch with a *hello* (no Raft message):
//!   at start, and every heartbeat to members whose datagrams show a stale view of it.
//!   Hellos are accepted whatever peer epoch they carry, and are used only to learn the
//!   sender's epoch and key (never lowering what is known), so a replayed hello can at most
//!   delay contact until the sender's next real one.
//!
//! # Two keys (rotation)
//! `key_file` is the primary, `previous_key_file` a second key that is also accepted. A
//! node sends to each member with the key that member last used (both are trusted, so this
//! gives nothing away), and with the primary to members it has not heard from yet; a member
//! spoken to with the previous key also gets a hello under the primary every second, so two
//! nodes that both hold the new key move to it. Restarting the nodes one at a time with the
//! new key as primary and the old one as previous, and then once more without the old one,
//! therefore never leaves two members unable to understand each other.
use std::{
    collections::BTreeMap,
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::Engine;
use ring::hmac;

use super::core::Msg;

/// Shortest key accepted (after base64 decoding): the HMAC-SHA-256 block's security level.
pub const MIN_KEY_LEN: usize = 32;
/// A key file larger than this is a mistake (a wrong path, a device), not a key.
const MAX_KEY_FILE: u64 = 4096;
const MAGIC: [u8; 4] = *b"vipR";
const VERSION: u8 = 1;
/// magic, version, key id, from, to, epoch, seq, peer epoch.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 8 * 5;
pub const TAG_LEN: usize = 32;
/// Datagrams below the newest accepted one that may still arrive (reordering).
const WINDOW: u64 = 64;
/// How often a member spoken to with the previous key is offered the primary.
const PROBE_PERIOD: Duration = Duration::from_secs(1);
const INSECURE_ID: [u8; 4] = [0; 4];

/// Why a datagram was dropped: the label of `vip_raft_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    /// Too short, wrong magic or version, or an authenticated body that does not parse.
    Malformed,
    /// Not from the address `peers` gives the member it claims to be (or not a member).
    WrongSource,
    /// Addressed to another member.
    Misdirected,
    /// A key id this node does not hold (or keyed vs `insecure`).
    UnknownKey,
    /// The tag does not match: forged, corrupted, or another cluster's key.
    BadMac,
    /// A counter at or below one already accepted from that member.
    Replay,
    /// Made before this node's current start (a replay, or a member that has not yet heard
    /// this node's hello; the latter stops within a round trip).
    Stale,
}

impl Reject {
    pub const ALL: [Reject; 7] = [
        Reject::Malformed,
        Reject::WrongSource,
        Reject::Misdirected,
        Reject::UnknownKey,
        Reject::BadMac,
        Reject::Replay,
        Reject::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::WrongSource => "wrong_source",
            Reject::Misdirected => "misdirected",
            Reject::UnknownKey => "unknown_key",
            Reject::BadMac => "bad_mac",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is larger than {MAX_KEY_FILE} bytes: not a key file", path.display())]
    TooLarge { path: PathBuf },
    #[error("{} does not hold base64", path.display())]
    NotBase64 {
        path: PathBuf,
        #[source]
        source: base64::DecodeError,
    },
    #[error("{} holds a {len}-byte key; at least {MIN_KEY_LEN} bytes are needed (`vip raft-key` makes one)", path.display())]
    Short { path: PathBuf, len: usize },
}

/// A shared key. `Debug` shows only its id.
#[derive(Clone)]
pub struct RaftKey {
    id: [u8; 4],
    bytes: Vec<u8>,
    /// Boxed: ring's key holds the expanded state (over 200 bytes).
    key: std::sync::Arc<hmac::Key>,
}

impl PartialEq for RaftKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for RaftKey {}

impl std::fmt::Debug for RaftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaftKey({})", self.id_hex())
    }
}

fn engine() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

impl RaftKey {
    /// `bytes` must be at least [`MIN_KEY_LEN`] long (checked by [`RaftKey::from_file`]).
    pub fn from_bytes(bytes: &[u8]) -> RaftKey {
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let tag = hmac::sign(&key, b"vip raft key id");
        let mut id = [0u8; 4];
        id.copy_from_slice(&tag.as_ref()[..4]);
        if id == INSECURE_ID {
            // One key in 2^32: keep 0 for insecure mode (the id only selects, the tag decides).
            id = [0, 0, 0, 1];
        }
        RaftKey {
            id,
            bytes: bytes.to_vec(),
            key: std::sync::Arc::new(key),
        }
    }

    /// A key file: base64 (standard alphabet, padding optional; whitespace and line breaks
    /// anywhere are ignored, so `head -c 32 /dev/urandom | base64` and a Kubernetes Secret
    /// mounted as a file both work) decoding to at least [`MIN_KEY_LEN`] bytes.
    pub fn from_file(path: &Path) -> Result<RaftKey, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = Vec::new();
        std::fs::File::open(path)
            .map_err(read)?
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut text)
            .map_err(read)?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(KeyError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        text.retain(|b| !b.is_ascii_whitespace());
        let bytes = engine()
            .decode(&text)
            .map_err(|source| KeyError::NotBase64 {
                path: path.to_path_buf(),
                source,
            })?;
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::Short {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        Ok(RaftKey::from_bytes(&bytes))
    }

    /// A fresh random key as a key file's contents (base64 and a newline).
    pub fn generate() -> Result<String, ring::error::Unspecified> {
        let mut b = [0u8; MIN_KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)?;
        Ok(format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(b)
        ))
    }

    /// The id datagrams sealed with this key carry (in clear).
    pub fn id(&self) -> [u8; 4] {
        self.id
    }

    /// The id as hex, for logs (it reveals nothing about the key).
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// How datagrams are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftAuth {
    /// Send with `primary`; accept `primary` or `previous`.
    Keys {
        primary: RaftKey,
        previous: Option<RaftKey>,
    },
    /// `insecure: true`: no authentication (the replay and source checks still apply, but
    /// anyone who can send to the port can forge anything).
    Insecure,
}

impl RaftAuth {
    pub fn keyed(primary: RaftKey) -> RaftAuth {
        RaftAuth::Keys {
            primary,
            previous: None,
        }
    }

    fn keys(&self) -> Vec<&RaftKey> {
        match self {
            RaftAuth::Keys { primary, previous } => {
                std::iter::once(primary).chain(previous.iter()).collect()
            }
            RaftAuth::Insecure => Vec::new(),
        }
    }
}

/// The fixed part of a frame, as read (nothing in it is authenticated until the tag is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub key_id: [u8; 4],
    pub from: u64,
    pub to: u64,
    pub epoch: u64,
    pub seq: u64,
    pub peer_epoch: u64,
}

/// Split a datagram into header, message bytes and tag; only the shape is checked.
pub fn parse(data: &[u8]) -> Result<(Header, &[u8], &[u8]), Reject> {
    if data.len() < HEADER_LEN + TAG_LEN || data[..4] != MAGIC || data[4] != VERSION {
        return Err(Reject::Malformed);
    }
    let u = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let mut key_id = [0u8; 4];
    key_id.copy_from_slice(&data[5..9]);
    let h = Header {
        key_id,
        from: u(9),
        to: u(17),
        epoch: u(25),
        seq: u(33),
        peer_epoch: u(41),
    };
    let (signed, tag) = data.split_at(data.len() - TAG_LEN);
    Ok((h, &signed[HEADER_LEN..], tag))
}

/// Anti-replay window for one sender: the newest accepted `(epoch, seq)` and which of the
/// `WINDOW` sequence numbers below it were accepted (bit i: `top - i`).
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    top: Option<(u64, u64)>,
    bits: u64,
}

impl Window {
    fn fresh(&self, epoch: u64, seq: u64) -> bool {
        let Some((e, top)) = self.top else {
            return true;
        };
        if epoch != e {
            return epoch > e;
        }
        if seq > top {
            return true;
        }
        let d = top - seq;
        d < WINDOW && self.bits & (1 << d) == 0
    }

    fn accept(&mut self, epoch: u64, seq: u64) {
        match self.top {
            Some((e, top)) if e == epoch && seq <= top => self.bits |= 1 << (top - seq),
            Some((e, top)) if e == epoch => {
                let shift = seq - top;
                self.bits = if shift >= WINDOW {
                    0
                } else {
                    self.bits << shift
                } | 1;
                self.top = Some((epoch, seq));
            }
            _ => {
                self.top = Some((epoch, seq));
                self.bits = 1;
            }
        }
    }
}

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
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&key.map_or(INSECURE_ID, |k| k.id));
        for v in [self.id, to, self.epoch, self.seq, peer_epoch] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&body);
        match key {
            Some(k) => {
                let tag = hmac::sign(&k.key, &out);
                out.extend_from_slice(tag.as_ref());
            }
            None => out.extend_from_slice(&[0u8; TAG_LEN]),
        }
        Some(out)
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
        let key = match &self.auth {
            RaftAuth::Insecure if h.key_id == INSECURE_ID => None,
            RaftAuth::Insecure => return Err(Reject::UnknownKey),
            auth @ RaftAuth::Keys { .. } => Some(
                auth.keys()
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.id == h.key_id)
                    .find(|(_, k)| hmac::verify(&k.key, &data[..data.len() - TAG_LEN], tag).is_ok())
                    .map(|(i, _)| i)
                    .ok_or(if auth.keys().iter().any(|k| k.id == h.key_id) {
                        Reject::BadMac
                    } else {
                        Reject::UnknownKey
                    })?,
            ),
        };
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
        if peer.window.top.is_none_or(|t| (h.epoch, h.seq) > t) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn key_files() {
        let d = std::env::temp_dir().join(format!("vip-raft-keys-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("k");
        std::fs::write(&f, RaftKey::generate().unwrap()).unwrap();
        let k = RaftKey::from_file(&f).unwrap();
        assert_eq!(k.bytes.len(), 32);
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.bytes)));
        // 64 bytes wrapped by base64(1) at 76 columns, no padding, CRLF: still the key.
        let long = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        std::fs::write(
            &f,
            format!(
                "{}\r\n{}\r\n",
                &long[..76],
                long[76..].trim_end_matches('=')
            ),
        )
        .unwrap();
        assert_eq!(
            RaftKey::from_file(&f).unwrap(),
            RaftKey::from_bytes(&[7; 64])
        );
        std::fs::write(
            &f,
            base64::engine::general_purpose::STANDARD.encode([1u8; 31]),
        )
        .unwrap();
        assert!(matches!(
            RaftKey::from_file(&f),
            Err(KeyError::Short { len: 31, .. })
        ));
        std::fs::write(&f, "not base64!").unwrap();
        assert!(matches!(
            RaftKey::from_file(&f),
            Err(KeyError::NotBase64 { .. })
        ));
        std::fs::write(&f, vec![b'A'; 5000]).unwrap();
        assert!(matches!(
            RaftKey::from_file(&f),
            Err(KeyError::TooLarge { .. })
        ));
        assert!(matches!(
            RaftKey::from_file(&d.join("missing")),
            Err(KeyError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&d);
    }
}
