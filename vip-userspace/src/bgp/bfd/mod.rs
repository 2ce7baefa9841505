//! Single-hop asynchronous BFD (RFC 5880, RFC 5881) for BGP peers.
//!
//! A [`Hub`] owns the receive sockets on UDP port 3784 (one per address family, so every
//! session of the speaker shares them) and hands each valid packet to its session by
//! "your discriminator" (or by source address while the peer does not know ours yet).
//! Each [`Session`] sends from its own socket (source port 49152–65535, TTL 255) and runs
//! the state machine of RFC 5880 6.8.6. Received packets must carry TTL/hop limit 255
//! (GTSM, RFC 5881 5): anything else came from further away and is dropped.
//!
//! ```text
//!  shared, per family           one task per BGP peer with BFD
//!  hub::rx_loop ──mpsc<Packet>──▶ task::run_session ──try_send──▶ its own UDP socket
//!   (TTL 255, decode, route         │ timers and packets → machine::Event
//!    by discriminator)              │ Machine::step → Vec<Action> → the I/O above
//!                                   └──watch<BfdState>──▶ Session::changed (bgp/session.rs)
//! ```
//!
//! `packet.rs` is the codec, `machine.rs` the state machine without sockets, `task.rs`
//! one session's timers and sends, `hub.rs` the shared receive side, `sock.rs` the
//! socket set-up and `recvmsg`.
mod hub;
mod machine;
mod packet;
mod sock;
mod task;

use std::{
    hash::{BuildHasher, Hasher},
    io,
    net::IpAddr,
};

pub use hub::{Hub, Session};
pub use packet::{BfdState, Packet};

use super::{config::BfdConfig, Control};

pub const CONTROL_PORT: u16 = 3784;

#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("binding the BFD receive socket on UDP port {port} ({family})")]
    Bind {
        port: u16,
        family: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("BFD socket from {local} to {peer}")]
    Socket {
        local: IpAddr,
        peer: IpAddr,
        #[source]
        source: io::Error,
    },
}

fn random_u64() -> u64 {
    // RandomState is seeded from the OS per instance: enough for discriminators, source
    // ports and jitter, none of which need cryptographic strength.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}
