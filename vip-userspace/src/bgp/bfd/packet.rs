//! The BFD control packet (RFC 5880 4.1) and its session states: encoding, and the
//! reception checks that need no session state. Kept apart so the codec can be tested (and
//! read) without the sockets or the state machine.

/// The session state carried in every control packet (and reported to the BGP session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BfdState {
    AdminDown,
    Down,
    Init,
    Up,
}

impl BfdState {
    fn code(self) -> u8 {
        match self {
            BfdState::AdminDown => 0,
            BfdState::Down => 1,
            BfdState::Init => 2,
            BfdState::Up => 3,
        }
    }

    fn from_code(c: u8) -> Self {
        match c & 3 {
            0 => BfdState::AdminDown,
            1 => BfdState::Down,
            2 => BfdState::Init,
            _ => BfdState::Up,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BfdState::AdminDown => "admin-down",
            BfdState::Down => "down",
            BfdState::Init => "init",
            BfdState::Up => "up",
        }
    }
}

/// Diagnostic codes we send (RFC 5880 4.1).
pub(super) const DIAG_NONE: u8 = 0;
pub(super) const DIAG_DETECT_EXPIRED: u8 = 1;
pub(super) const DIAG_NEIGHBOR_DOWN: u8 = 3;

/// A BFD control packet (no authentication section: we neither send nor accept one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: u8,
    pub state: BfdState,
    pub poll: bool,
    pub fin: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
}

impl Packet {
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = (self.state.code() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.fin) << 4)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = 24;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b
    }

    /// The reception checks of RFC 5880 6.8.6 that need no session state.
    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < 24 || b[0] >> 5 != 1 {
            return None;
        }
        let len = usize::from(b[3]);
        let auth = b[1] & 0x04 != 0;
        let multipoint = b[1] & 0x01 != 0;
        if len < 24 || len > b.len() || auth || multipoint || b[2] == 0 {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = Packet {
            diag: b[0] & 0x1f,
            state: BfdState::from_code(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            fin: b[1] & 0x10 != 0,
            demand: b[1] & 0x02 != 0,
            detect_mult: b[2],
            my_discr: u32_at(4),
            your_discr: u32_at(8),
            desired_min_tx_us: u32_at(12),
            required_min_rx_us: u32_at(16),
        };
        if p.my_discr == 0 {
            return None;
        }
        if p.your_discr == 0 && !matches!(p.state, BfdState::Down | BfdState::AdminDown) {
            return None;
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_roundtrip_and_checks() {
        let p = Packet {
            diag: 3,
            state: BfdState::Up,
            poll: true,
            fin: false,
            demand: false,
            detect_mult: 3,
            my_discr: 7,
            your_discr: 9,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
        };
        assert_eq!(Packet::decode(&p.encode()), Some(p));
        let mut b = p.encode();
        b[2] = 0;
        assert_eq!(Packet::decode(&b), None, "zero multiplier");
        let up_without_your = Packet { your_discr: 0, ..p };
        assert_eq!(Packet::decode(&up_without_your.encode()), None);
        let mut b = p.encode();
        b[1] |= 0x04;
        assert_eq!(Packet::decode(&b), None, "authentication not supported");
    }
}
