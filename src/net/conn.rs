//! `Conn`: one non-blocking connection of any kind (a gateway's client or inner link, a
//! register connection, a worker's link to a gateway). It owns the socket, its readiness kept
//! as data, the input and output buffers, the closing state and the byte counters; the
//! protocol on top (codec, packets, lines) belongs to the type that wraps it.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};

use mio::{Registry, Token};

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
    /// Write interest of a Unix stream, switched on only while its output blocks.
    watch: Option<WriteInterest>,
}

/// A Unix stream between a gateway and a business worker on one host wakes its writer up each
/// time the peer reads from it (the send buffer drained: a WRITABLE edge) although there is
/// usually nothing left to write. Measured in W2 (one gateway, one worker, Unix links): 0.22
/// context switches per message with WRITABLE always on, 0.11-0.17 without, 10 % less CPU
/// per message (`bench/RESULTS.md`, "Fewer wake-ups"). So such a stream is registered for
/// both directions (a non-blocking connect is confirmed by WRITABLE), drops WRITABLE after its
/// first complete flush, and takes it back when a write would block, until its output is
/// written. The switch is the `epoll_ctl(EPOLL_CTL_MOD)` mio's `reregister` makes, with mio's
/// flags, done here because the connection is flushed from places that hold no `Registry`.
struct WriteInterest {
    epoll: RawFd,
    fd: RawFd,
    token: u64,
    writable: bool,
}

impl WriteInterest {
    fn set(&mut self, writable: bool) -> io::Result<()> {
        if self.writable == writable {
            return Ok(());
        }
        let mut events = (libc::EPOLLET | libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if writable {
            events |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event { events, u64: self.token };
        // SAFETY: both descriptors are open (the stream is owned by the connection, the epoll
        // instance by the process's reactor) and `ev` is a valid event.
        if unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_MOD, self.fd, &mut ev) } < 0 {
            let e = io::Error::last_os_error();
            // Deregistered already (the connection is being dropped): no events either way.
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
        }
        self.writable = writable;
        Ok(())
    }
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
            watch: None,
        }
    }

    /// Register with the reactor as `token`; a Unix stream keeps WRITABLE only while its
    /// output blocks (see `WriteInterest`).
    pub fn register(&mut self, reg: &Registry, token: Token) -> io::Result<()> {
        self.io.register(reg, token)?;
        if let Some(fd) = self.io.unix_fd() {
            let epoll = reg.as_raw_fd();
            self.watch = Some(WriteInterest { epoll, fd, token: token.0 as u64, writable: true });
        }
        Ok(())
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
            Ok(()) => {
                if let Some(w) = &mut self.watch {
                    w.set(false)?;
                }
                Ok(true)
            }
            Err(e) if would_block(&e) => {
                self.ready.remove(Ready::WRITABLE);
                if let Some(w) = &mut self.watch {
                    w.set(true)?;
                }
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

    /// WRITABLE events of `token` within `wait` (a negative answer waits that long).
    fn writable_events(poll: &mut mio::Poll, token: Token, wait: std::time::Duration) -> bool {
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(wait)).unwrap();
        events.iter().any(|e| e.token() == token && e.is_writable())
    }

    #[test]
    fn a_unix_stream_is_woken_for_writing_only_while_its_output_blocks() {
        use std::time::Duration;
        let mut poll = mio::Poll::new().unwrap();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut c = Conn::new(Io::Unix(mio::net::UnixStream::from_std(a)));
        let token = Token(7);
        c.register(poll.registry(), token).unwrap();
        // A complete flush drops WRITABLE: the peer reading it wakes nobody.
        c.out.extend(b"hello");
        assert!(c.flush().unwrap());
        let mut got = [0u8; 5];
        b.read_exact(&mut got).unwrap();
        assert!(!writable_events(&mut poll, token, Duration::from_millis(100)));
        // Fill the socket until a write would block: WRITABLE is back, and the peer draining
        // the socket wakes the writer.
        while c.flush().unwrap() {
            c.out.extend(&[7u8; 64 * 1024]);
        }
        let queued = c.out.len();
        let reader = std::thread::spawn(move || {
            let mut sink = [0u8; 64 * 1024];
            let mut total = 0;
            while let Ok(n) = b.read(&mut sink) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        assert!(writable_events(&mut poll, token, Duration::from_secs(10)), "no wake-up to write the rest");
        while !c.flush().unwrap() {
            assert!(
                writable_events(&mut poll, token, Duration::from_secs(10)),
                "stalled with {} bytes",
                c.out.len()
            );
        }
        assert!(c.out.is_empty() && queued > 0);
        drop(c);
        assert!(reader.join().unwrap() > 0);
    }
}
