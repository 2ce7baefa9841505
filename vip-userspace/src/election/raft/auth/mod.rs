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
//!
//! `frame.rs` is the frame's layout, `key.rs` the keys and their files, `window.rs` the
//! anti-replay window, and `session.rs` the checks above in order, with what a node knows
//! of each member. Everything here is pure: no sockets, no clock of its own.
mod frame;
mod key;
mod session;
mod window;

pub use frame::{parse, Header, HEADER_LEN, TAG_LEN};
pub use key::{KeyError, RaftAuth, RaftKey, MIN_KEY_LEN};
pub use session::{Opened, Session};

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
