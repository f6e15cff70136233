//! An outgoing connection that is dialled again after it closes: register links (gateway and
//! worker side) and a worker's links to gateways. Non-blocking connect, buffers, readiness.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use mio::net::{TcpStream, UnixStream};
use mio::{Registry, Token};

use crate::net::io::Io;
use crate::reactor::{InBuf, OutBuf, Ready, would_block};

/// Bytes asked for per read.
const CHUNK: usize = 64 * 1024;

/// Where a link goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Connection phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No socket: waiting for the retry timer (or never dialled).
    Idle,
    /// connect() issued, not confirmed yet.
    Connecting,
    Connected,
}

/// What reading produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// Drained to `WouldBlock`.
    Drained,
    /// Stopped because `inbuf` reached the caller's limit; the ready bit stays set.
    Full,
    /// The peer closed.
    Eof,
}

/// One outgoing link.
pub struct Link {
    pub target: Target,
    pub token: Token,
    pub io: Option<Io>,
    pub phase: Phase,
    pub ready: Ready,
    pub inbuf: InBuf,
    pub out: OutBuf,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Name shown by `connections` (`Text` for register links).
    pub protocol: &'static str,
}

impl Link {
    pub fn new(target: Target, token: Token) -> Link {
        Link {
            target,
            token,
            io: None,
            phase: Phase::Idle,
            ready: Ready::EMPTY,
            inbuf: InBuf::default(),
            out: OutBuf::default(),
            bytes_read: 0,
            bytes_written: 0,
            protocol: "Text",
        }
    }

    /// Start a non-blocking connect. Bytes already in `out` go first once connected.
    pub fn dial(&mut self, reg: &Registry) -> io::Result<()> {
        let mut io = match &self.target {
            Target::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                crate::net::inner_link_options(&s);
                Io::Tcp(s)
            }
            Target::Unix(p) => Io::Unix(UnixStream::connect(p)?),
        };
        io.register(reg, self.token)?;
        self.io = Some(io);
        self.phase = Phase::Connecting;
        self.ready = Ready::EMPTY;
        Ok(())
    }

    /// Fold in readiness; while connecting, find out whether the connect finished.
    /// Returns `Ok(true)` the moment the link becomes connected.
    pub fn on_ready(&mut self, ready: Ready) -> io::Result<bool> {
        self.ready.insert(ready);
        if self.phase != Phase::Connecting {
            return Ok(false);
        }
        let Some(io) = self.io.as_mut() else { return Ok(false) };
        let done = match io {
            Io::Tcp(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                match s.peer_addr() {
                    Ok(_) => true,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => false,
                    Err(e) => return Err(e),
                }
            }
            Io::Unix(s) => {
                if let Some(e) = s.take_error()? {
                    return Err(e);
                }
                true
            }
            Io::Tls(_) => true,
        };
        if done {
            self.phase = Phase::Connected;
        }
        Ok(done)
    }

    /// Read into `inbuf` until `WouldBlock`, EOF, or `inbuf` holds `limit` bytes.
    pub fn read(&mut self, limit: usize) -> io::Result<ReadEnd> {
        let Some(io) = self.io.as_mut() else { return Ok(ReadEnd::Drained) };
        if self.phase != Phase::Connected {
            return Ok(ReadEnd::Drained);
        }
        while self.ready.contains(Ready::READABLE) {
            if self.inbuf.len() >= limit {
                return Ok(ReadEnd::Full);
            }
            match self.inbuf.read_from(io, CHUNK) {
                Ok(0) => return Ok(ReadEnd::Eof),
                Ok(n) => {
                    self.bytes_read += n as u64;
                    // A short read emptied the socket: no need to hear WouldBlock. Not after a
                    // hang-up: the FIN came with the same edge, and only a read sees it.
                    if n < CHUNK && io.short_read_drains() && !self.ready.contains(Ready::HUP) {
                        self.ready.remove(Ready::READABLE);
                    }
                }
                Err(e) if would_block(&e) => self.ready.remove(Ready::READABLE),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ReadEnd::Drained)
    }

    /// Write what is queued; `Ok(())` even when the socket blocks (bytes stay queued).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.phase != Phase::Connected || self.out.is_empty() {
            return Ok(());
        }
        let Some(io) = self.io.as_mut() else { return Ok(()) };
        let before = self.out.len();
        let res = self.out.write_to(io);
        self.bytes_written += (before - self.out.len()) as u64;
        match res {
            Ok(()) => Ok(()),
            Err(e) if would_block(&e) => {
                self.ready.remove(Ready::WRITABLE);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Close the socket and forget buffered bytes; the link can be dialled again.
    pub fn close(&mut self, reg: &Registry) {
        if let Some(mut io) = self.io.take() {
            io.deregister(reg);
        }
        self.phase = Phase::Idle;
        self.ready = Ready::EMPTY;
        self.inbuf = InBuf::default();
        self.out.clear();
    }

    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// This link as a line of the `connections` command.
    pub fn conn_info(&self, id: u64) -> crate::stats::conns::ConnInfo {
        let (local, remote) = match &self.io {
            Some(io) => crate::net::io::addrs(io),
            None => (String::new(), self.target.to_string()),
        };
        crate::stats::conns::ConnInfo {
            id,
            protocol: self.protocol,
            transport: if matches!(self.target, Target::Unix(_)) { "unix" } else { "tcp" },
            recv_q: self.inbuf.len(),
            send_q: self.out.len(),
            bytes_read: self.bytes_read,
            bytes_written: self.bytes_written,
            state: match self.phase {
                Phase::Idle => "CLOSED",
                Phase::Connecting => "CONNECTING",
                Phase::Connected => "ESTABLISHED",
            },
            local,
            remote,
        }
    }
}
