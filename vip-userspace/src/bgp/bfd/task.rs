//! The task of one BFD session: its transmit and detection timers and its send socket
//! around the pure [`Machine`]. The only decisions made here are the transmit jitter and
//! what to log; everything else comes from `machine.rs`.
use std::{net::IpAddr, time::Duration};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{debug, info};

use super::{
    machine::{Action, Event, Machine},
    packet::{BfdState, Packet},
    random_u64,
};

pub(super) async fn run_session(
    sock: UdpSocket,
    mut rx: mpsc::Receiver<Packet>,
    mut machine: Machine,
    state_tx: watch::Sender<BfdState>,
    peer: IpAddr,
) {
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut timers = Timers {
        next_tx: Instant::now(),
        detect_at: far,
        far,
    };
    loop {
        let event = tokio::select! {
            _ = tokio::time::sleep_until(timers.next_tx) => Event::TxDue,
            _ = tokio::time::sleep_until(timers.detect_at), if timers.detect_at != far => {
                Event::DetectExpired
            }
            p = rx.recv() => {
                let Some(p) = p else { return };
                Event::Received(p)
            }
        };
        for action in machine.step(event) {
            perform(action, &sock, &state_tx, &mut timers, peer);
        }
    }
}

struct Timers {
    next_tx: Instant,
    /// `far` while the detection timer is not armed.
    detect_at: Instant,
    far: Instant,
}

fn perform(
    action: Action,
    sock: &UdpSocket,
    state_tx: &watch::Sender<BfdState>,
    timers: &mut Timers,
    peer: IpAddr,
) {
    match action {
        Action::Send(p) => {
            let b = p.encode();
            if let Err(e) = sock.try_send(&b) {
                debug!(%peer, error = %crate::Chain(&e), "BFD send");
            }
        }
        Action::NextTx(iv) => {
            // RFC 5880 6.8.7: jittered down by up to 25 %.
            let jitter = 75 + random_u64() % 26;
            let us = u64::try_from(iv.as_micros()).unwrap_or(u64::MAX);
            timers.next_tx = Instant::now() + Duration::from_micros(us * jitter / 100);
        }
        Action::ArmDetect(d) => timers.detect_at = Instant::now() + d,
        Action::DisarmDetect => timers.detect_at = timers.far,
        Action::Expired => {
            info!(%peer, "BFD down: detection time expired");
            let _ = state_tx.send(BfdState::Down);
        }
        Action::Changed { from, to } => {
            info!(%peer, from = from.as_str(), to = to.as_str(), "BFD state");
            let _ = state_tx.send(to);
        }
    }
}
