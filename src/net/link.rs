//! Outgoing connections: where they go (`Target`), the non-blocking connect, and `Link`, a
//! connection dialled again after it closes (the register links of gateways and workers).
//! A worker's links to gateways use `connect` and `connect_done` over their own `Conn`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use mio::net::{TcpStream, UnixStream};
use mio::{Registry, Token};

use super::conn::{Conn, ReadEnd};
use super::io::Io;
use crate::reactor::Ready;
use crate::stats::conns::ConnInfo;

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

/// Start a non-blocking connect to `target`.
pub fn connect(target: &Target) -> io::Result<Io> {
    Ok(match target {
        Target::Tcp(a) => {
            let s = TcpStream::connect(*a)?;
            super::inner_link_options(&s);
            Io::Tcp(s)
        }
        Target::Unix(p) => Io::Unix(UnixStream::connect(p)?),
    })
}

/// After a readiness event on a connecting socket: `Ok(true)` once the connect finished,
/// `Err` when it failed.
pub fn connect_done(io: &mut Io) -> io::Result<bool> {
    match io {
        Io::Tcp(s) => {
            if let Some(e) = s.take_error()? {
                return Err(e);
            }
            match s.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(e) => Err(e),
            }
        }
        Io::Unix(s) => match s.take_error()? {
            Some(e) => Err(e),
            None => Ok(true),
        },
        Io::Tls(_) => Ok(true),
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

/// One outgoing link, redialled in place.
pub struct Link {
    pub target: Target,
    pub token: Token,
    pub phase: Phase,
    /// The connection while dialling or connected.
    pub conn: Option<Conn>,
    /// Name shown by `connections`.
    pub protocol: &'static str,
}

impl Link {
    pub fn new(target: Target, token: Token, protocol: &'static str) -> Link {
        Link { target, token, phase: Phase::Idle, conn: None, protocol }
    }

    /// Start a non-blocking connect; `hello` is queued to go first once connected.
    pub fn dial(&mut self, reg: &Registry, hello: &[u8]) -> io::Result<()> {
        let mut conn = Conn::new(connect(&self.target)?);
        conn.register(reg, self.token)?;
        conn.out.extend(hello);
        self.conn = Some(conn);
        self.phase = Phase::Connecting;
        Ok(())
    }

    /// Fold in readiness; while connecting, find out whether the connect finished.
    /// Returns `Ok(true)` the moment the link becomes connected.
    pub fn on_ready(&mut self, ready: Ready) -> io::Result<bool> {
        let Some(conn) = self.conn.as_mut() else { return Ok(false) };
        conn.ready.insert(ready);
        if self.phase != Phase::Connecting || !connect_done(&mut conn.io)? {
            return Ok(false);
        }
        self.phase = Phase::Connected;
        Ok(true)
    }

    /// The connection, once connected.
    pub fn connected_mut(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut().filter(|_| self.phase == Phase::Connected)
    }

    /// Read into the input buffer until `WouldBlock`, EOF, or `cap` bytes are buffered.
    pub fn read(&mut self, cap: usize) -> io::Result<ReadEnd> {
        match self.connected_mut() {
            Some(c) => c.read(cap),
            None => Ok(ReadEnd::Drained),
        }
    }

    /// Write what is queued; `Ok(())` even when the socket blocks (bytes stay queued).
    pub fn flush(&mut self) -> io::Result<()> {
        match self.connected_mut() {
            Some(c) if !c.out.is_empty() => c.flush().map(drop),
            _ => Ok(()),
        }
    }

    /// Queue `bytes` and write them now, when connected.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(c) = self.connected_mut() {
            c.out.extend(bytes);
        }
        self.flush()
    }

    /// Close the socket and forget buffered bytes; the link can be dialled again.
    pub fn close(&mut self, reg: &Registry) {
        if let Some(mut conn) = self.conn.take() {
            conn.io.deregister(reg);
        }
        self.phase = Phase::Idle;
    }

    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// This link as a line of the `connections` command.
    pub fn conn_info(&self, id: u64) -> ConnInfo {
        let mut info = match &self.conn {
            Some(c) => c.info(id, self.protocol),
            None => ConnInfo {
                id,
                protocol: self.protocol,
                transport: if matches!(self.target, Target::Unix(_)) { "unix" } else { "tcp" },
                remote: self.target.to_string(),
                ..ConnInfo::default()
            },
        };
        info.state = match self.phase {
            Phase::Idle => "CLOSED",
            Phase::Connecting => "CONNECTING",
            Phase::Connected => "ESTABLISHED",
        };
        info
    }
}
