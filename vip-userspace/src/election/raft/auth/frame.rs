//! The frame's layout (see the module comment of `auth`): its constants, reading the
//! header back out of a datagram, and writing one. Only the shape is handled here; what
//! the fields mean to a receiver is `session.rs`.
use super::{key::RaftKey, Reject};

const MAGIC: [u8; 4] = *b"vipR";
const VERSION: u8 = 1;
/// magic, version, key id, from, to, epoch, seq, peer epoch.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 8 * 5;
pub const TAG_LEN: usize = 32;
/// The key id of `insecure: true` frames (no key ever gets it).
pub(super) const INSECURE_ID: [u8; 4] = [0; 4];

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

/// A whole frame: `h` and `body`, tagged with `key` (a zero tag and key id 0 without one).
/// `h.key_id` is not read: the key decides it.
pub(super) fn write(h: &Header, body: &[u8], key: Option<&RaftKey>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&key.map_or(INSECURE_ID, |k| k.id()));
    for v in [h.from, h.to, h.epoch, h.seq, h.peer_epoch] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(body);
    match key {
        Some(k) => {
            let tag = k.sign(&out);
            out.extend_from_slice(tag.as_ref());
        }
        None => out.extend_from_slice(&[0u8; TAG_LEN]),
    }
    out
}
