//! `Conn`: one non-blocking connection of any kind (a gateway's client or inner link, a
//! register connection, a worker's link to a gateway). It owns the socket, its readiness kept
//! as data, the input and output buffers, the closing state and the byte counters; the
//! protocol on top (codec, packets, lines) belongs to the type that wraps it.

use std::io::{self, Write};

use super::io::Io;
use crate::reactor::{InBuf, OutBuf, Ready, interrupted, would_block};
use crate::stats::conns::ConnInfo;

/// Bytes asked for per read into `inbuf`.
pub const CHUNK: usize = 64 * 1024;

/// How a read pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// Drained to `WouldBlock` (or a short read that empties the socket).
    Drained,
    /// Stopped because `inbuf` reached the caller's cap; READABLE stays set.
    Full,
    /// The peer closed.
    Eof,
}

/// One connection.
pub struct Conn {
    pub io: Io,
    /// Readiness seen and not used up yet (edge-triggered: kept until `WouldBlock`).
    pub ready: Ready,
    /// Received bytes not consumed yet.
    pub inbuf: InBuf,
    /// Bytes queued for the socket, written once per loop turn.
    pub out: OutBuf,
    /// Close once `out` is written.
    pub closing: bool,
    /// Queued for removal at the end of the turn.
    pub dead: bool,
    /// In its table's dirty list already.
    pub dirty: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl Conn {
    pub fn new(io: Io) -> Conn {
        Conn {
            io,
            ready: Ready::EMPTY,
            inbuf: InBuf::default(),
            out: OutBuf::default(),
            closing: false,
            dead: false,
            dirty: false,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    /// Account for one read that asked for `asked` bytes and got `n` (> 0).
    pub fn count_read(&mut self, n: usize, asked: usize) {
        self.bytes_read += n as u64;
        // A short read emptied the socket: the next one would only say WouldBlock. Not after
        // a hang-up: the FIN came with the same edge, and only a read that returns 0 sees it.
        if n < asked && self.io.short_read_drains() && !self.ready.contains(Ready::HUP) {
            self.ready.remove(Ready::READABLE);
        }
    }

    /// Read into `inbuf` until `WouldBlock`, EOF, or `inbuf` holds `cap` bytes.
    pub fn read(&mut self, cap: usize) -> io::Result<ReadEnd> {
        while self.ready.contains(Ready::READABLE) {
            if self.inbuf.len() >= cap {
                return Ok(ReadEnd::Full);
            }
            match self.inbuf.read_from(&mut self.io, CHUNK) {
                Ok(0) => return Ok(ReadEnd::Eof),
                Ok(n) => self.count_read(n, CHUNK),
                Err(e) if would_block(&e) => self.ready.remove(Ready::READABLE),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ReadEnd::Drained)
    }

    /// Write queued bytes: `Ok(true)` all written, `Ok(false)` the socket blocked (wait for
    /// WRITABLE), `Err` the connection is broken.
    pub fn flush(&mut self) -> io::Result<bool> {
        let before = self.out.len();
        let res = self.out.write_to(&mut self.io);
        self.bytes_written += (before - self.out.len()) as u64;
        match res.and_then(|()| self.io.flush()) {
            Ok(()) => Ok(true),
            Err(e) if would_block(&e) => {
                self.ready.remove(Ready::WRITABLE);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Transport name for the `connections` command.
    pub fn transport(&self) -> &'static str {
        match self.io {
            Io::Tcp(_) => "tcp",
            Io::Unix(_) => "unix",
            Io::Tls(_) => "ssl",
        }
    }

    /// This connection as a line of the `connections` command.
    pub fn info(&self, id: u64, protocol: &'static str) -> ConnInfo {
        let (local, remote) = crate::net::io::addrs(&self.io);
        ConnInfo {
            id,
            protocol,
            transport: self.transport(),
            recv_q: self.inbuf.len(),
            send_q: self.out.len(),
            bytes_read: self.bytes_read,
            bytes_written: self.bytes_written,
            state: if self.closing || self.dead { "CLOSING" } else { "ESTABLISHED" },
            local,
            remote,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn pair() -> (Conn, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut c = Conn::new(Io::Unix(mio::net::UnixStream::from_std(a)));
        c.ready = Ready::READABLE | Ready::WRITABLE;
        (c, b)
    }

    #[test]
    fn read_stops_at_the_cap_then_drains_then_sees_eof() {
        let (mut c, mut peer) = pair();
        peer.write_all(&[7u8; 300]).unwrap();
        // The cap is checked before each read: one read takes what is there.
        assert_eq!(c.read(0).unwrap(), ReadEnd::Full);
        assert_eq!(c.read(1000).unwrap(), ReadEnd::Drained);
        assert_eq!((c.inbuf.len(), c.bytes_read), (300, 300));
        assert!(!c.ready.contains(Ready::READABLE), "a short read drains a plain socket");
        assert_eq!(c.read(1000).unwrap(), ReadEnd::Drained, "no READABLE bit, no read");
        drop(peer);
        c.ready.insert(Ready::READABLE);
        assert_eq!(c.read(1000).unwrap(), ReadEnd::Eof);
    }

    #[test]
    fn flush_keeps_what_the_socket_does_not_take() {
        let (mut c, mut peer) = pair();
        let big = vec![1u8; 4 << 20];
        c.out.extend(&big);
        assert!(!c.flush().unwrap(), "a peer that does not read blocks us");
        assert!(!c.ready.contains(Ready::WRITABLE));
        let queued = c.out.len();
        assert!(queued > 0 && c.bytes_written == (big.len() - queued) as u64);
        let mut got = vec![0u8; big.len()];
        let mut read = 0;
        while read < big.len() {
            if !c.out.is_empty() {
                c.ready.insert(Ready::WRITABLE);
                c.flush().unwrap();
            }
            read += peer.read(&mut got[read..]).unwrap();
        }
        assert!(c.out.is_empty() && got == big);
        assert_eq!(c.info(9, "Text").send_q, 0);
    }
}
