//! One BFD session's state machine (RFC 5880 6.8.6, asynchronous mode) without sockets or
//! clocks: `Machine::step(Event) -> Vec<Action>`, the same split as `bgp/fsm.rs`.
//!
//! `task.rs` turns the transmit timer, the detection timer and received packets into
//! [`Event`]s and carries out the returned [`Action`]s in order; it also adds the jitter
//! to [`Action::NextTx`], so everything here is deterministic.
use std::time::Duration;

use super::{
    packet::{BfdState, Packet, DIAG_DETECT_EXPIRED, DIAG_NEIGHBOR_DOWN, DIAG_NONE},
    BfdConfig,
};

/// While a session is not Up, RFC 5880 6.8.3 wants at least one second between packets.
const SLOW_TX_US: u32 = 1_000_000;

pub(super) enum Event {
    /// The periodic transmit timer fired.
    TxDue,
    /// The detection timer fired.
    DetectExpired,
    /// A packet the hub routed to this session.
    Received(Packet),
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Transmit this packet now.
    Send(Packet),
    /// Schedule the next periodic transmission this long from now, before jitter.
    NextTx(Duration),
    /// (Re)arm the detection timer this long from now.
    ArmDetect(Duration),
    /// Stop the detection timer.
    DisarmDetect,
    /// The detection time expired while Init or Up: the session is Down.
    Expired,
    /// A received packet moved the session from `from` to `to`.
    Changed { from: BfdState, to: BfdState },
}

pub(super) struct Machine {
    discr: u32,
    fast_tx_us: u32,
    min_rx_us: u32,
    multiplier: u8,
    local: BfdState,
    diag: u8,
    remote_discr: u32,
    remote_state: BfdState,
    remote_min_rx_us: u32,
    remote_desired_tx_us: u32,
    remote_mult: u8,
    /// Poll sequence in progress (our timing parameters changed).
    polling: bool,
}

impl Machine {
    pub(super) fn new(discr: u32, cfg: &BfdConfig) -> Machine {
        Machine {
            discr,
            fast_tx_us: cfg.min_tx_ms.saturating_mul(1000),
            min_rx_us: cfg.min_rx_ms.saturating_mul(1000),
            multiplier: cfg.multiplier,
            local: BfdState::Down,
            diag: DIAG_NONE,
            remote_discr: 0,
            remote_state: BfdState::Down,
            remote_min_rx_us: 1,
            remote_desired_tx_us: SLOW_TX_US,
            remote_mult: 1,
            polling: false,
        }
    }

    pub(super) fn step(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::TxDue => self.tx_due(),
            Event::DetectExpired => self.detect_expired(),
            Event::Received(p) => self.received(&p),
        }
    }

    fn desired_tx(&self) -> u32 {
        if self.local == BfdState::Up {
            self.fast_tx_us
        } else {
            self.fast_tx_us.max(SLOW_TX_US)
        }
    }

    fn packet(&self, fin: bool) -> Packet {
        Packet {
            diag: self.diag,
            state: self.local,
            poll: self.polling && !fin,
            fin,
            demand: false,
            detect_mult: self.multiplier,
            my_discr: self.discr,
            your_discr: self.remote_discr,
            desired_min_tx_us: self.desired_tx(),
            required_min_rx_us: self.min_rx_us,
        }
    }

    fn tx_due(&self) -> Vec<Action> {
        // RFC 5880 6.8.7: the interval is the larger of what we want to send and what the
        // peer can receive (jittered down by up to 25 % by the caller).
        let iv = u64::from(self.desired_tx().max(self.remote_min_rx_us));
        vec![
            Action::Send(self.packet(false)),
            Action::NextTx(Duration::from_micros(iv)),
        ]
    }

    fn detect_expired(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.local, BfdState::Init | BfdState::Up) {
            self.local = BfdState::Down;
            self.diag = DIAG_DETECT_EXPIRED;
            self.remote_discr = 0;
            self.polling = false;
            out.push(Action::Expired);
        }
        out.push(Action::DisarmDetect);
        out
    }

    fn received(&mut self, p: &Packet) -> Vec<Action> {
        if p.your_discr != 0 && p.your_discr != self.discr {
            return Vec::new();
        }
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_min_rx_us = p.required_min_rx_us;
        self.remote_desired_tx_us = p.desired_min_tx_us;
        self.remote_mult = p.detect_mult;
        if p.fin {
            self.polling = false;
        }
        let before = self.local;
        match (self.local, p.state) {
            (BfdState::AdminDown, _) => return Vec::new(),
            (BfdState::Down, BfdState::AdminDown) => {}
            (BfdState::Down, BfdState::Down) => self.local = BfdState::Init,
            (BfdState::Down, BfdState::Init) => self.local = BfdState::Up,
            (BfdState::Init, BfdState::Init | BfdState::Up) => self.local = BfdState::Up,
            (_, BfdState::AdminDown) | (BfdState::Up, BfdState::Down) => {
                self.local = BfdState::Down;
                self.diag = DIAG_NEIGHBOR_DOWN;
            }
            _ => {}
        }
        // Detection time (async mode): the peer's multiplier times the agreed interval of
        // its transmissions to us.
        let agreed = u64::from(self.min_rx_us.max(self.remote_desired_tx_us));
        let mut out = vec![Action::ArmDetect(Duration::from_micros(
            agreed * u64::from(self.remote_mult),
        ))];
        if self.local != before {
            if self.local == BfdState::Up {
                self.diag = DIAG_NONE;
                // Our desired TX interval drops from the 1 s used while down.
                self.polling = true;
            }
            out.push(Action::Changed {
                from: before,
                to: self.local,
            });
            out.push(Action::Send(self.packet(false)));
        }
        if p.poll {
            out.push(Action::Send(self.packet(true)));
        }
        out
    }
}
