//! The anti-replay window kept per sender (RFC 4303 3.4.3, over `(epoch, seq)`): a
//! datagram reordered by the network is still taken once, anything at or below an accepted
//! counter is refused.

/// Datagrams below the newest accepted one that may still arrive (reordering).
const WINDOW: u64 = 64;

/// Anti-replay window for one sender: the newest accepted `(epoch, seq)` and which of the
/// `WINDOW` sequence numbers below it were accepted (bit i: `top - i`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Window {
    top: Option<(u64, u64)>,
    bits: u64,
}

impl Window {
    /// Whether `(epoch, seq)` is newer than every datagram accepted so far.
    pub(super) fn is_newest(&self, epoch: u64, seq: u64) -> bool {
        self.top.is_none_or(|t| (epoch, seq) > t)
    }

    pub(super) fn fresh(&self, epoch: u64, seq: u64) -> bool {
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

    pub(super) fn accept(&mut self, epoch: u64, seq: u64) {
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
