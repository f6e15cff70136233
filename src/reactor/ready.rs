//! Readiness kept as data (sozu's `Readiness`): bits OR-ed in from epoll edges, cleared only
//! when an operation returns `WouldBlock`, so a connection paused by back-pressure is resumed
//! without waiting for a new edge.

use std::ops::{BitAnd, BitOr};

/// A small set of readiness bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready(u8);

impl Ready {
    pub const EMPTY: Ready = Ready(0);
    pub const READABLE: Ready = Ready(1);
    pub const WRITABLE: Ready = Ready(2);
    /// Peer hung up or the socket reported an error: reading will tell which.
    pub const HUP: Ready = Ready(4);

    /// The bits of one mio event.
    pub fn from_event(ev: &mio::event::Event) -> Ready {
        let mut r = Ready::EMPTY;
        if ev.is_readable() || ev.is_read_closed() {
            r.insert(Ready::READABLE);
        }
        if ev.is_writable() || ev.is_write_closed() {
            r.insert(Ready::WRITABLE);
        }
        if ev.is_error() || ev.is_read_closed() {
            r.insert(Ready::HUP | Ready::READABLE);
        }
        r
    }

    pub fn insert(&mut self, other: Ready) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: Ready) {
        self.0 &= !other.0;
    }

    pub fn contains(self, other: Ready) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
}

impl BitOr for Ready {
    type Output = Ready;
    fn bitor(self, rhs: Ready) -> Ready {
        Ready(self.0 | rhs.0)
    }
}

impl BitAnd for Ready {
    type Output = Ready;
    fn bitand(self, rhs: Ready) -> Ready {
        Ready(self.0 & rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_combine_and_clear() {
        let mut r = Ready::READABLE | Ready::WRITABLE;
        assert!(r.contains(Ready::READABLE) && r.contains(Ready::WRITABLE));
        r.remove(Ready::READABLE);
        assert!(!r.contains(Ready::READABLE));
        assert_eq!(r & Ready::WRITABLE, Ready::WRITABLE);
        assert!(!Ready::EMPTY.contains(Ready::EMPTY));
    }
}
